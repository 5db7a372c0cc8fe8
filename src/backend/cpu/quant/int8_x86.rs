//! x86 integer dot products of one quantized weight row (q8_0 / q4_0 / q4_1) with up to 4
//! int8 activation rows (`q8act.rs`). Per 32-weight block: the weights as 32 bytes (4-bit
//! ones as unsigned nibbles, q8_0 ones as |w| with their sign moved onto x), one unsigned x
//! signed byte dot product into 8 i32 lanes (exact: no saturation for these ranges), then
//! one f32 multiply-add by d_w * d_x. q4_0's -8 and q4_1's minimum are applied once per
//! block through d_x * sum(x_q), so the nibbles need no offset in the inner loop.
// The VNNI kernel is built only with `nh_avx512` (Rust >= 1.89, where it is stable).
#![allow(clippy::incompatible_msrv)]

use super::q8act::{IntIsa, Q8Row, QK};
use crate::op::DType;
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn half(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Unsigned x signed byte dot products, 4 bytes into each of 8 i32 lanes.
trait ByteDot {
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
}

struct Avx2Dot;
impl ByteDot for Avx2Dot {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        // Pairs as i16 (|15 * 127 * 2| and |128 * 127 * 2| fit), then pairs of pairs as i32.
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
}

#[cfg(nh_avx512)]
struct VnniDot;
#[cfg(nh_avx512)]
impl ByteDot for VnniDot {
    #[inline(always)]
    unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
}

/// out[j * R + r] = w_j . x[r] for weight rows j < n of `blocks` blocks of `dt`, `stride`
/// bytes apart from `w`.
///
/// # Safety
/// `isa` (not Scalar) was detected on this CPU; the n rows lie at `w`; each x[r] holds
/// blocks * 32 int8 values and `blocks` scales and sums; `out` holds n * R floats.
#[allow(clippy::too_many_arguments)]
pub unsafe fn dots<const R: usize>(
    isa: IntIsa,
    dt: DType,
    w: *const u8,
    stride: usize,
    n: usize,
    x: [Q8Row; R],
    blocks: usize,
    out: *mut f32,
) {
    let rows = Rows { w, stride, n, blocks, out };
    match isa {
        #[cfg(nh_avx512)]
        IntIsa::Vnni => vnni::<R>(dt, &rows, x),
        _ => avx2::<R>(dt, &rows, x),
    }
}

/// The weight rows and where their results go.
struct Rows {
    w: *const u8,
    stride: usize,
    n: usize,
    blocks: usize,
    out: *mut f32,
}

/// Every row of `rows` through `body`.
#[inline(always)]
unsafe fn each<D: ByteDot, const R: usize, const T: usize>(rows: &Rows, x: &[Q8Row; R]) {
    for j in 0..rows.n {
        let o = body::<D, R, T>(rows.w.add(j * rows.stride), x, rows.blocks);
        std::ptr::copy_nonoverlapping(o.as_ptr(), rows.out.add(j * R), R);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2<const R: usize>(dt: DType, rows: &Rows, x: [Q8Row; R]) {
    match dt {
        DType::Q8_0 => each::<Avx2Dot, R, 0>(rows, &x),
        DType::Q4_0 => each::<Avx2Dot, R, 1>(rows, &x),
        _ => each::<Avx2Dot, R, 2>(rows, &x),
    }
}

#[cfg(nh_avx512)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn vnni<const R: usize>(dt: DType, rows: &Rows, x: [Q8Row; R]) {
    match dt {
        DType::Q8_0 => each::<VnniDot, R, 0>(rows, &x),
        DType::Q4_0 => each::<VnniDot, R, 1>(rows, &x),
        _ => each::<VnniDot, R, 2>(rows, &x),
    }
}

/// Bytes ahead of the current block that are prefetched (past the row's end: the next rows).
const PREFETCH: usize = 2048;

const TYPES: [DType; 3] = [DType::Q8_0, DType::Q4_0, DType::Q4_1];

/// 16 bytes of nibbles as 32 unsigned bytes: the low nibbles (weights 0..16), then the high.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Accumulators of one pass: f32 lanes and the per-block offsets' sum, per row.
#[derive(Clone, Copy)]
struct Acc<const R: usize> {
    v: [__m256; R],
    off: [f32; R],
}

/// Block `b` into `acc`.
#[inline(always)]
unsafe fn block<D: ByteDot, const R: usize, const T: usize>(
    w: *const u8,
    x: &[Q8Row; R],
    b: usize,
    acc: &mut Acc<R>,
) {
    let dt = TYPES[T];
    let p = w.add(b * dt.size());
    // Decode streams weights at a few GB/s per thread: ask for them well ahead, so the
    // memory latency overlaps the dot products instead of adding to them.
    _mm_prefetch::<_MM_HINT_T0>(p.add(PREFETCH) as *const i8);
    let dw = half(p);
    // Unsigned weight bytes; q8_0's sign goes onto x (sign_epi8: x * sign(w)).
    let (u, signs) = match dt {
        DType::Q8_0 => {
            let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
            (_mm256_abs_epi8(q), Some(q))
        }
        DType::Q4_0 => (nibbles(p.add(2)), None),
        _ => (nibbles(p.add(4)), None),
    };
    let m = if dt == DType::Q4_1 { half(p.add(2)) } else { 0.0 };
    // Rows index three arrays at once.
    #[allow(clippy::needless_range_loop)]
    for r in 0..R {
        let mut xq = _mm256_loadu_si256(x[r].qs.add(b * QK) as *const __m256i);
        if let Some(q) = signs {
            xq = _mm256_sign_epi8(xq, q);
        }
        let dots = _mm256_cvtepi32_ps(D::dot(u, xq));
        acc.v[r] = _mm256_fmadd_ps(dots, _mm256_set1_ps(dw * *x[r].d.add(b)), acc.v[r]);
        match dt {
            DType::Q4_0 => acc.off[r] += dw * *x[r].s.add(b),
            DType::Q4_1 => acc.off[r] += m * *x[r].s.add(b),
            _ => {}
        }
    }
}

use crate::backend::cpu::simd::hsum256 as hsum;

/// Two passes over even and odd blocks, so consecutive blocks' multiply-adds do not wait
/// for each other.
#[inline(always)]
unsafe fn body<D: ByteDot, const R: usize, const T: usize>(
    w: *const u8,
    x: &[Q8Row; R],
    blocks: usize,
) -> [f32; R] {
    let zero = Acc::<R> { v: [_mm256_setzero_ps(); R], off: [0.0; R] };
    let (mut a0, mut a1) = (zero, zero);
    let mut b = 0;
    while b + 2 <= blocks {
        block::<D, R, T>(w, x, b, &mut a0);
        block::<D, R, T>(w, x, b + 1, &mut a1);
        b += 2;
    }
    if b < blocks {
        block::<D, R, T>(w, x, b, &mut a0);
    }
    let mut out = [0.0f32; R];
    for (r, o) in out.iter_mut().enumerate() {
        let off = a0.off[r] + a1.off[r];
        let off = if TYPES[T] == DType::Q4_0 { -8.0 * off } else { off };
        *o = hsum(_mm256_add_ps(a0.v[r], a1.v[r])) + off;
    }
    out
}
