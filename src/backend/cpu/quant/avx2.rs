//! AVX2 + FMA dot products of one quantized weight row with up to 4 f32 rows. Weights are
//! decoded to f32 in registers, 8 at a time (exact: small integers), multiplied with the
//! activations and scaled once per block, so results equal f32 math on the dequantised
//! weights up to summation order.

use crate::op::DType;
use std::arch::x86_64::*;

/// f16 bits at `p` as f32 (F16C).
#[inline(always)]
unsafe fn half(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 8 signed bytes as f32 lanes.
#[inline(always)]
unsafe fn i8x8(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// Sums q[v] * x[r][off[v]..+8] over four 8-weight vectors into one vector per row.
#[inline(always)]
unsafe fn dot4<const R: usize>(q: [__m256; 4], x: &[*const f32; R], off: [usize; 4]) -> [__m256; R] {
    let mut t = [_mm256_setzero_ps(); R];
    for r in 0..R {
        let mut s = _mm256_mul_ps(q[0], _mm256_loadu_ps(x[r].add(off[0])));
        s = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(x[r].add(off[1])), s);
        s = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(x[r].add(off[2])), s);
        t[r] = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(x[r].add(off[3])), s);
    }
    t
}

/// Low and high nibbles of 16 bytes, each minus `zero` (signed bytes).
#[inline(always)]
unsafe fn nibbles(p: *const u8, zero: __m128i) -> (__m128i, __m128i) {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_sub_epi8(_mm_and_si128(raw, m4), zero);
    let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), zero);
    (lo, hi)
}

#[inline(always)]
unsafe fn split16(v: __m128i) -> (__m256, __m256) {
    (i8x8(v), i8x8(_mm_srli_si128(v, 8)))
}

use crate::backend::cpu::simd::hsum256 as hsum;

/// out[r] = sum_k w[k] * x[r][k] over `blocks` blocks of `dt` at `w`.
///
/// # Safety
/// AVX2, FMA and F16C must be present; `w` holds `blocks` blocks and each `x[r]` the
/// matching `blocks * block_elems` floats.
#[target_feature(enable = "avx2,fma,f16c")]
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

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn blocks_of<const R: usize, const T: usize>(
    w: *const u8,
    x: [*const f32; R],
    blocks: usize,
) -> [f32; R] {
    let dt = TYPES[T];
    let mut acc = [_mm256_setzero_ps(); R];
    // q4_1's minimum multiplies the block's activation sum.
    let mut macc = [_mm256_setzero_ps(); R];
    let (be, bb) = dt.block();
    for b in 0..blocks {
        let p = w.add(b * bb);
        // Weights stream from memory: fetch them ahead (as the int8 kernels do).
        _mm_prefetch::<_MM_HINT_T0>(p.add(2048) as *const i8);
        let mut xb = x;
        for r in 0..R {
            xb[r] = x[r].add(b * be);
        }
        let d = _mm256_set1_ps(half(p));
        match dt {
            DType::Q8_0 => {
                let (q0, q1) = split16(_mm_loadu_si128(p.add(2) as *const __m128i));
                let (q2, q3) = split16(_mm_loadu_si128(p.add(18) as *const __m128i));
                let t = dot4([q0, q1, q2, q3], &xb, [0, 8, 16, 24]);
                for r in 0..R {
                    acc[r] = _mm256_fmadd_ps(t[r], d, acc[r]);
                }
            }
            DType::Q4_0 | DType::Q4_1 => {
                let zero = _mm_set1_epi8(if dt == DType::Q4_0 { 8 } else { 0 });
                let (lo, hi) = nibbles(p.add(if dt == DType::Q4_0 { 2 } else { 4 }), zero);
                let ((q0, q1), (q2, q3)) = (split16(lo), split16(hi));
                let t = dot4([q0, q1, q2, q3], &xb, [0, 8, 16, 24]);
                for r in 0..R {
                    acc[r] = _mm256_fmadd_ps(t[r], d, acc[r]);
                }
                if dt == DType::Q4_1 {
                    let m = _mm256_set1_ps(half(p.add(2)));
                    for r in 0..R {
                        let s01 = _mm256_add_ps(_mm256_loadu_ps(xb[r]), _mm256_loadu_ps(xb[r].add(8)));
                        let s23 =
                            _mm256_add_ps(_mm256_loadu_ps(xb[r].add(16)), _mm256_loadu_ps(xb[r].add(24)));
                        macc[r] = _mm256_fmadd_ps(_mm256_add_ps(s01, s23), m, macc[r]);
                    }
                }
            }
            _ => {
                // q4_g128: bytes 16c..16c+16 hold weights 16c.. (low) and 64+16c.. (high).
                let zero = _mm_set1_epi8(*p.add(2) as i8);
                let mut t = [_mm256_setzero_ps(); R];
                for c in 0..4 {
                    let (lo, hi) = nibbles(p.add(4 + 16 * c), zero);
                    let ((q0, q1), (q2, q3)) = (split16(lo), split16(hi));
                    let o = 16 * c;
                    let s = dot4([q0, q1, q2, q3], &xb, [o, o + 8, 64 + o, 72 + o]);
                    for r in 0..R {
                        t[r] = _mm256_add_ps(t[r], s[r]);
                    }
                }
                for r in 0..R {
                    acc[r] = _mm256_fmadd_ps(t[r], d, acc[r]);
                }
            }
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = hsum(_mm256_add_ps(acc[r], macc[r]));
    }
    out
}
