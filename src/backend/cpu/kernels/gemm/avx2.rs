//! The packed GEMM's AVX2 + FMA parts, for CPUs without AVX-512 (Zen 2/3, Intel Core before
//! and after the AVX-512 years): a 6 x 16 micro-kernel (12 ymm accumulators, two vector loads
//! of B and one broadcast of A per depth: 15 of the 16 registers) and the vector packing of
//! B (F16C / shift widening, gathers for transposed f32 weights).
//!
//! Block sizes for a 32 KiB L1 and a 512 KiB L2 (Zen 3; Intel cores have more).

use super::super::super::simd::Isa;
use super::Micro;
use crate::op::DType;
use std::arch::x86_64::*;

const MR: usize = 6;
const NR: usize = 16;
/// How far ahead (in depths of a B panel, one 64-byte line each) the kernel prefetches.
const PREFETCH_DEPTHS: usize = 16;

pub(super) struct Avx2;

impl Micro for Avx2 {
    const ISA: Isa = Isa::Avx2;
    const MR: usize = MR;
    const NR: usize = NR;
    /// A B micro-panel is 256 x 16 floats = 16 KiB: half of L1, the rest for A and C.
    const KC: usize = 256;
    /// 192 x 256 floats of A = 192 KiB (under half of a 512 KiB L2).
    const MC_MAX: usize = 32 * MR;
    /// 256 x 3072 floats = 3 MiB, shared by the threads in L3.
    const NC: usize = 192 * NR;
    /// 256 KiB (half of a Zen 3 L2).
    const A_BLOCK_FLOATS: usize = 64 * 1024;

    unsafe fn pack_b_rows(first: *const u8, dtype: DType, rs: usize, nr: usize, kc: usize, dst: *mut f32) {
        pack_b_rows(first, dtype, rs, nr, kc, dst)
    }

    unsafe fn pack_b_columns(first: *const f32, cs: usize, nr: usize, kc: usize, dst: *mut f32) {
        pack_b_columns(first, cs, nr, kc, dst)
    }

    unsafe fn kernel(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        rs_c: usize,
        mr: usize,
        nr: usize,
        alpha: f32,
        beta: f32,
    ) {
        // Only the rows that exist are computed: 13 tokens are 6 + 6 + 1 rows, not 18.
        let run = match mr {
            6.. => kernel_rows::<6>,
            5 => kernel_rows::<5>,
            4 => kernel_rows::<4>,
            3 => kernel_rows::<3>,
            2 => kernel_rows::<2>,
            _ => kernel_rows::<1>,
        };
        run(kc, a, b, c, rs_c, nr, alpha, beta)
    }
}

/// Lane masks (all bits set in the first `n` of 8 lanes) of the two halves of an NR-wide row
/// with `nr` valid columns.
#[inline(always)]
unsafe fn lane_masks(nr: usize) -> (__m256i, __m256i) {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes);
    (mask(nr), mask(nr.saturating_sub(8)))
}

/// 16 halves (f16 or bf16) from `p` widened to two 8-lane f32 vectors.
#[inline(always)]
unsafe fn widen16(p: *const u16, dtype: DType) -> (__m256, __m256) {
    let h0 = _mm_loadu_si128(p as *const __m128i);
    let h1 = _mm_loadu_si128(p.add(8) as *const __m128i);
    if dtype == DType::F16 {
        (_mm256_cvtph_ps(h0), _mm256_cvtph_ps(h1))
    } else {
        let widen = |h: __m128i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
        (widen(h0), widen(h1))
    }
}

/// `Micro::pack_b_rows`: per depth two 8-lane loads (masked at the edge), halves widened in
/// registers (F16C for f16, a shift for bf16).
///
/// # Safety
/// As `Micro::pack_b_rows`, with AVX2, FMA and F16C present.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_b_rows(first: *const u8, dtype: DType, rs: usize, nr: usize, kc: usize, dst: *mut f32) {
    let (m0, m1) = lane_masks(nr);
    for k in 0..kc {
        let d = dst.add(k * NR);
        let (x0, x1) = match dtype {
            DType::F32 => {
                let p = (first as *const f32).wrapping_add(k * rs);
                if nr == NR {
                    (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                } else {
                    (_mm256_maskload_ps(p, m0), _mm256_maskload_ps(p.wrapping_add(8), m1))
                }
            }
            _ => {
                let p = (first as *const u16).wrapping_add(k * rs);
                if nr == NR {
                    widen16(p, dtype)
                } else {
                    // No 16-bit masked load in AVX2: the edge goes through a padded copy.
                    let mut tmp = [0u16; NR];
                    std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), nr);
                    widen16(tmp.as_ptr(), dtype)
                }
            }
        };
        _mm256_storeu_ps(d, x0);
        _mm256_storeu_ps(d.add(8), x1);
    }
}

/// `Micro::pack_b_columns`: per depth two 8-lane gathers instead of 16 scattered stores.
///
/// # Safety
/// As `Micro::pack_b_columns`, with AVX2 present.
#[target_feature(enable = "avx2")]
unsafe fn pack_b_columns(first: *const f32, cs: usize, nr: usize, kc: usize, dst: *mut f32) {
    let (m0, m1) = lane_masks(nr);
    let (m0, m1) = (_mm256_castsi256_ps(m0), _mm256_castsi256_ps(m1));
    let c = cs as i32;
    let i0 = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(c));
    let i1 = _mm256_add_epi32(i0, _mm256_set1_epi32(8 * c));
    let zero = _mm256_setzero_ps();
    for k in 0..kc {
        let p = first.wrapping_add(k);
        let x0 = _mm256_mask_i32gather_ps::<4>(zero, p, i0, m0);
        let x1 = _mm256_mask_i32gather_ps::<4>(zero, p, i1, m1);
        let d = dst.add(k * NR);
        _mm256_storeu_ps(d, x0);
        _mm256_storeu_ps(d.add(8), x1);
    }
}

/// `Micro::kernel` for exactly R (<= MR) rows of the panel.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_rows<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // A prepacked B panel streams from memory once: ask for it ahead.
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_DEPTHS * NR) as *const i8);
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    let (m0, m1) = lane_masks(nr);
    for (r, acc) in acc.iter().enumerate() {
        let p0 = c.add(r * rs_c);
        let p1 = p0.wrapping_add(8);
        let mut x0 = _mm256_mul_ps(va, acc[0]);
        let mut x1 = _mm256_mul_ps(va, acc[1]);
        if nr == NR {
            if beta != 0.0 {
                x0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p0), x0);
                x1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p1), x1);
            }
            _mm256_storeu_ps(p0, x0);
            _mm256_storeu_ps(p1, x1);
        } else {
            if beta != 0.0 {
                x0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(p0, m0), x0);
                x1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(p1, m1), x1);
            }
            _mm256_maskstore_ps(p0, m0, x0);
            _mm256_maskstore_ps(p1, m1, x1);
        }
    }
}
