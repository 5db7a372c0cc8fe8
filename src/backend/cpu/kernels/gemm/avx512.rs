//! The packed GEMM's AVX-512 parts: a 12 x 32 micro-kernel (24 zmm accumulators, broadcast
//! A, two vector loads of B per depth) and the vector packing of B (masked loads, F16C /
//! shift widening, gathers for transposed f32 weights).
//!
//! Built only with `nh_avx512` (build.rs: rustc >= 1.89, where AVX-512 intrinsics are stable),
//! hence the MSRV lint (1.82) is off here.
#![allow(clippy::incompatible_msrv)]

use super::super::super::simd::Isa;
use super::Micro;
use crate::op::DType;
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;
/// How far ahead (in depths of a B panel) the micro-kernel prefetches.
const PREFETCH_DEPTHS: usize = 12;

pub(super) struct Avx512;

impl Micro for Avx512 {
    const ISA: Isa = Isa::Avx512;
    const MR: usize = MR;
    const NR: usize = NR;
    /// A B micro-panel is 256 x 32 floats = 32 KiB (L1).
    const KC: usize = 256;
    /// 384 x 256 floats of A = 384 KiB (L2 of 1-2 MiB).
    const MC_MAX: usize = 32 * MR;
    /// 256 x 3072 floats = 3 MiB.
    const NC: usize = 96 * NR;
    /// 1 MiB: at k = 1536 this read B 7 times at 256 rows instead of 22.
    const A_BLOCK_FLOATS: usize = 256 * 1024;

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
        kernel(kc, a, b, c, rs_c, mr, nr, alpha, beta)
    }
}

/// Masks of the two 16-lane halves of an NR-wide row with `nr` valid columns.
#[inline(always)]
fn lane_masks(nr: usize) -> (__mmask16, __mmask16) {
    let mask = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    };
    (mask(nr), mask(nr.saturating_sub(16)))
}

/// `pack_b` for B with contiguous rows: per depth, two (masked) 16-lane loads, converted in
/// registers for f16 (F16C) and bf16 (shift).
///
/// # Safety
/// AVX-512F/BW/VL present; `first` is B's element (p0, j0); rows p0..p0+kc have nr elements
/// from there, `rs` elements apart; dst holds kc x NR floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_b_rows(first: *const u8, dtype: DType, rs: usize, nr: usize, kc: usize, dst: *mut f32) {
    let (m0, m1) = lane_masks(nr);
    for k in 0..kc {
        let d = dst.add(k * NR);
        let (x0, x1) = match dtype {
            DType::F32 => {
                let p = (first as *const f32).wrapping_add(k * rs);
                (_mm512_maskz_loadu_ps(m0, p), _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)))
            }
            _ => {
                let p = (first as *const i16).wrapping_add(k * rs);
                let h0 = _mm256_maskz_loadu_epi16(m0, p);
                let h1 = _mm256_maskz_loadu_epi16(m1, p.wrapping_add(16));
                if dtype == DType::F16 {
                    (_mm512_cvtph_ps(h0), _mm512_cvtph_ps(h1))
                } else {
                    let widen =
                        |h: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                    (widen(h0), widen(h1))
                }
            }
        };
        _mm512_storeu_ps(d, x0);
        _mm512_storeu_ps(d.add(16), x1);
    }
}

/// `pack_b` for f32 B with contiguous columns (transposed weights, element (k, j) at
/// k + j * cs): per depth, two 16-lane gathers instead of 32 scalar scattered stores.
///
/// # Safety
/// As `pack_b_rows`; `NR * cs` fits in an i32.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_columns(first: *const f32, cs: usize, nr: usize, kc: usize, dst: *mut f32) {
    let (m0, m1) = lane_masks(nr);
    let idx = |base: i32| {
        let c = cs as i32;
        _mm512_mullo_epi32(
            _mm512_add_epi32(
                _mm512_set1_epi32(base),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            ),
            _mm512_set1_epi32(c),
        )
    };
    let (i0, i1) = (idx(0), idx(16));
    let zero = _mm512_setzero_ps();
    for k in 0..kc {
        let p = first.wrapping_add(k);
        let x0 = _mm512_mask_i32gather_ps::<4>(zero, m0, i0, p);
        let x1 = _mm512_mask_i32gather_ps::<4>(zero, m1, i1, p);
        let d = dst.add(k * NR);
        _mm512_storeu_ps(d, x0);
        _mm512_storeu_ps(d.add(16), x1);
    }
}

/// C[0..mr, 0..nr] = alpha * A_panel B_panel + beta * C (C not read when beta is 0).
///
/// # Safety
/// AVX-512F present; `a` holds kc x MR and `b` kc x NR packed floats; C's rows mr x nr lie
/// inside its view and belong to the caller.
#[allow(clippy::too_many_arguments)]
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
    // Only the rows that exist are computed: a sentence of 13 tokens is 12 + 1 rows, not 24.
    let run = match mr {
        12.. => kernel_rows::<12>,
        11 => kernel_rows::<11>,
        10 => kernel_rows::<10>,
        9 => kernel_rows::<9>,
        8 => kernel_rows::<8>,
        7 => kernel_rows::<7>,
        6 => kernel_rows::<6>,
        5 => kernel_rows::<5>,
        4 => kernel_rows::<4>,
        3 => kernel_rows::<3>,
        2 => kernel_rows::<2>,
        _ => kernel_rows::<1>,
    };
    run(kc, a, b, c, rs_c, nr, alpha, beta)
}

/// `kernel` for exactly R (<= MR) rows of the panel.
#[target_feature(enable = "avx512f")]
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
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // A prepacked B panel streams from L3 once: ask for it a few depths ahead (at 256
        // rows this took the GEMM from 27.5 to 23.4 ms per MiniLM forward's matmuls).
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_DEPTHS * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_DEPTHS * NR + 16) as *const i8);
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let (m0, m1) = lane_masks(nr);
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (r, acc) in acc.iter().enumerate() {
        let p0 = c.add(r * rs_c);
        let p1 = p0.wrapping_add(16);
        let mut x0 = _mm512_mul_ps(va, acc[0]);
        let mut x1 = _mm512_mul_ps(va, acc[1]);
        if beta != 0.0 {
            x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, p0), x0);
            x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, p1), x1);
        }
        _mm512_mask_storeu_ps(p0, m0, x0);
        _mm512_mask_storeu_ps(p1, m1, x1);
    }
}
