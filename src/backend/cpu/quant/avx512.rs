//! AVX-512 dot products of one quantized weight row with up to 4 f32 rows: the AVX2
//! kernels' scheme (decode to f32 in registers, scale once per block) with 16 lanes, so a
//! 32-weight block is two vectors.
// Built only with `nh_avx512` (Rust >= 1.89, where these intrinsics are stable).
#![allow(clippy::incompatible_msrv)]

use crate::op::DType;
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn half(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 signed bytes as f32 lanes.
#[inline(always)]
unsafe fn i8x16(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
}

/// Low and high nibbles of 16 bytes, each minus `zero`, as f32 lanes.
#[inline(always)]
unsafe fn nibbles(p: *const u8, zero: __m128i) -> (__m512, __m512) {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_sub_epi8(_mm_and_si128(raw, m4), zero);
    let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), zero);
    (i8x16(lo), i8x16(hi))
}

/// Sums q0 * x[r][o0..+16] + q1 * x[r][o1..+16] per row.
#[inline(always)]
unsafe fn dot2<const R: usize>(
    q0: __m512,
    q1: __m512,
    x: &[*const f32; R],
    o0: usize,
    o1: usize,
) -> [__m512; R] {
    let mut t = [_mm512_setzero_ps(); R];
    for r in 0..R {
        let s = _mm512_mul_ps(q0, _mm512_loadu_ps(x[r].add(o0)));
        t[r] = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x[r].add(o1)), s);
    }
    t
}

/// out[r] = sum_k w[k] * x[r][k] over `blocks` blocks of `dt` at `w`.
///
/// # Safety
/// AVX-512F/BW/VL and F16C must be present; `w` holds `blocks` blocks and each `x[r]` the
/// matching `blocks * block_elems` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub unsafe fn dot<const R: usize>(dt: DType, w: *const u8, x: [*const f32; R], blocks: usize) -> [f32; R] {
    // One loop per type, so the per-block branch on the type is resolved at compile time.
    match dt {
        DType::Q8_0 => blocks_of::<R, 0>(w, x, blocks),
        DType::Q4_0 => blocks_of::<R, 1>(w, x, blocks),
        DType::Q4_1 => blocks_of::<R, 2>(w, x, blocks),
        _ => blocks_of::<R, 3>(w, x, blocks),
    }
}

const TYPES: [DType; 4] = [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4G128];

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn blocks_of<const R: usize, const T: usize>(
    w: *const u8,
    x: [*const f32; R],
    blocks: usize,
) -> [f32; R] {
    let dt = TYPES[T];
    let mut acc = [_mm512_setzero_ps(); R];
    let mut macc = [_mm512_setzero_ps(); R];
    let (be, bb) = dt.block();
    for b in 0..blocks {
        let p = w.add(b * bb);
        // Weights stream from memory: fetch them ahead (as the int8 kernels do).
        _mm_prefetch::<_MM_HINT_T0>(p.add(2048) as *const i8);
        let mut xb = x;
        for r in 0..R {
            xb[r] = x[r].add(b * be);
        }
        let d = _mm512_set1_ps(half(p));
        match dt {
            DType::Q8_0 => {
                let q0 = i8x16(_mm_loadu_si128(p.add(2) as *const __m128i));
                let q1 = i8x16(_mm_loadu_si128(p.add(18) as *const __m128i));
                let t = dot2(q0, q1, &xb, 0, 16);
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(t[r], d, acc[r]);
                }
            }
            DType::Q4_0 | DType::Q4_1 => {
                let zero = _mm_set1_epi8(if dt == DType::Q4_0 { 8 } else { 0 });
                let (q0, q1) = nibbles(p.add(if dt == DType::Q4_0 { 2 } else { 4 }), zero);
                let t = dot2(q0, q1, &xb, 0, 16);
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(t[r], d, acc[r]);
                }
                if dt == DType::Q4_1 {
                    let m = _mm512_set1_ps(half(p.add(2)));
                    for r in 0..R {
                        let s = _mm512_add_ps(_mm512_loadu_ps(xb[r]), _mm512_loadu_ps(xb[r].add(16)));
                        macc[r] = _mm512_fmadd_ps(s, m, macc[r]);
                    }
                }
            }
            _ => {
                // q4_g128: bytes 16c..16c+16 hold weights 16c.. (low) and 64+16c.. (high).
                let zero = _mm_set1_epi8(*p.add(2) as i8);
                let mut t = [_mm512_setzero_ps(); R];
                for c in 0..4 {
                    let (q0, q1) = nibbles(p.add(4 + 16 * c), zero);
                    let s = dot2(q0, q1, &xb, 16 * c, 64 + 16 * c);
                    for r in 0..R {
                        t[r] = _mm512_add_ps(t[r], s[r]);
                    }
                }
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(t[r], d, acc[r]);
                }
            }
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r], macc[r]));
    }
    out
}
