//! Matrix-vector products (m = 1), which are memory bound: stream B once, split across
//! threads. Two layouts: B rows contiguous (y += a[k] * B[k, :], "axpy") or B columns
//! contiguous (y[j] = a . B[:, j], i.e. a transposed weight, "dot"). f16 / bf16 B is
//! converted in L1-sized pieces as it streams, so it moves half the bytes of f32. The inner
//! loops are built twice (`dispatch_avx2!`): 8-lane AVX2 with fused multiply-adds, chosen at
//! run time, and a portable baseline x86-64 fallback.

use super::super::halfconv;
use super::super::simd::dispatch_avx2;
use super::iter::TASK_ELEMS;
use super::math::madd;
use super::matmul::{Gemm, Mat};
use crate::op::DType;
use half::{bf16, f16};
use rayon::prelude::*;

/// The GEMV kernels need one of B's strides to be 1.
pub(super) fn streams(b: &Mat) -> bool {
    b.cs == 1 || b.rs == 1
}

dispatch_avx2! {
    /// acc[j] += sum_k a[k] * B[k, j] for a block of columns; `b` points at B[0, block start].
    fn axpy_block<FMA>(acc: &mut [f32], a: &[f32], b: *const f32, rs: usize) {
        let n = acc.len();
        // SAFETY: rows 0..a.len() of the block lie in B (validated view or scratch).
        let row = |kk: usize| unsafe { std::slice::from_raw_parts(b.add(kk * rs), n) };
        let mut kk = 0;
        while kk + 4 <= a.len() {
            let (b0, b1, b2, b3) = (row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
            let (a0, a1, a2, a3) = (a[kk], a[kk + 1], a[kk + 2], a[kk + 3]);
            for j in 0..n {
                let s = madd::<FMA>(a0, b0[j], madd::<FMA>(a1, b1[j], acc[j]));
                acc[j] = madd::<FMA>(a2, b2[j], madd::<FMA>(a3, b3[j], s));
            }
            kk += 4;
        }
        while kk < a.len() {
            let (b0, a0) = (row(kk), a[kk]);
            for j in 0..n {
                acc[j] = madd::<FMA>(a0, b0[j], acc[j]);
            }
            kk += 1;
        }
    }
}

dispatch_avx2! {
    /// a . col with 16 independent accumulators (vectorises without fast-math).
    fn dot<FMA>(a: &[f32], col: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let (ac, bc) = (a.chunks_exact(16), col.chunks_exact(16));
        let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ac.zip(bc) {
            for i in 0..16 {
                acc[i] = madd::<FMA>(x[i], y[i], acc[i]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// Converts `n` contiguous elements of an f16 / bf16 B starting at element `off` into `dst`.
///
/// # Safety
/// The elements lie inside B's validated view.
unsafe fn convert_run(b: *mut u8, dtype: DType, off: usize, dst: &mut [f32]) {
    let n = dst.len();
    match dtype {
        DType::F16 => halfconv::f16_to_f32(std::slice::from_raw_parts((b as *const f16).add(off), n), dst),
        DType::BF16 => halfconv::bf16_to_f32(std::slice::from_raw_parts((b as *const bf16).add(off), n), dst),
        _ => dst.copy_from_slice(std::slice::from_raw_parts((b as *const f32).add(off), n)),
    }
}

/// Row-contiguous B ("axpy" form): each task takes a range of k and streams whole rows of B,
/// four at a time (four parallel memory streams, long runs the prefetcher follows), into its
/// own partial y; the partial sums are added at the end. f16 / bf16 rows are converted in
/// column chunks into L1-sized scratch first.
fn rows_split(g: &Gemm, bi: usize, a: &[f32], n: usize) -> Vec<f32> {
    const ROWS: usize = 4;
    const CHUNK: usize = 1024;
    let k = a.len();
    let tasks = if k * n <= TASK_ELEMS { 1 } else { (rayon::current_num_threads() * 2).min(k.div_ceil(64)) };
    let per_task = k.div_ceil(tasks).next_multiple_of(ROWS);
    let b = &g.b;
    let partial = |t: usize| {
        let mut y = vec![0.0f32; n];
        let mut scratch = vec![0.0f32; ROWS * CHUNK];
        let ks = (t * per_task).min(k)..((t + 1) * per_task).min(k);
        for k0 in ks.clone().step_by(ROWS) {
            let kn = ROWS.min(ks.end - k0);
            let a_rows = &a[k0..k0 + kn];
            for c0 in (0..n).step_by(CHUNK) {
                let cn = CHUNK.min(n - c0);
                let y = &mut y[c0..c0 + cn];
                if g.b_dtype == DType::F32 {
                    axpy_block(y, a_rows, b.at(bi, k0, c0), b.rs);
                } else if !half_rows_avx2(g, bi, a_rows, k0, c0, y) {
                    for (i, row) in scratch.chunks_mut(cn).take(kn).enumerate() {
                        // SAFETY: row k0 + i, columns c0.., lie in B (validated view).
                        unsafe { convert_run(b.ptr.0, g.b_dtype, b.offset(bi, k0 + i, c0), row) };
                    }
                    axpy_block(y, a_rows, scratch.as_ptr(), cn);
                }
            }
        }
        y
    };
    if tasks == 1 {
        return partial(0);
    }
    let parts: Vec<Vec<f32>> = (0..tasks).into_par_iter().map(partial).collect();
    let mut parts = parts.into_iter();
    let mut y = parts.next().unwrap_or_default();
    for p in parts {
        y.iter_mut().zip(&p).for_each(|(y, p)| *y += p);
    }
    y
}

/// y += a_rows . B[k0.., c0..] for f16 / bf16 B straight from memory (F16C / shifts, FMA),
/// when the CPU has AVX2; false leaves it to the portable path.
fn half_rows_avx2(g: &Gemm, bi: usize, a_rows: &[f32], k0: usize, c0: usize, y: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if super::super::simd::has_avx2_fma() {
        let b = &g.b;
        let mut coef = [0.0f32; 4];
        coef[..a_rows.len()].copy_from_slice(a_rows);
        // Missing rows of a short group get coefficient 0 and repeat a valid row.
        let rows: [*const u16; 4] = std::array::from_fn(|i| {
            let row = k0 + i.min(a_rows.len() - 1);
            (b.ptr.0 as *const u16).wrapping_add(b.offset(bi, row, c0))
        });
        // SAFETY: features detected; each row has y.len() elements from column c0 in B.
        unsafe {
            if g.b_dtype == DType::BF16 {
                x86::axpy4_half::<true>(y, coef, rows)
            } else {
                x86::axpy4_half::<false>(y, coef, rows)
            }
        }
        return true;
    }
    false
}

/// a . column for an f16 / bf16 column of B at element `off`, converted in registers (one
/// pass, no scratch), when the CPU has AVX2 + F16C; None leaves it to the portable path.
fn dot_half_avx2(a: &[f32], b: *mut u8, dtype: DType, off: usize) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if super::super::simd::has_avx2_fma() {
        let col = (b as *const u16).wrapping_add(off);
        // SAFETY: features detected; the column is a.len() contiguous elements of B.
        return Some(unsafe {
            if dtype == DType::BF16 {
                x86::dot_half::<true>(a, col)
            } else {
                x86::dot_half::<false>(a, col)
            }
        });
    }
    let _ = (a, b, dtype, off);
    None
}

/// y[j] = a . column j for columns in groups of four (element offsets from `off`), when the
/// CPU has AVX2 + F16C; returns how many leading outputs it wrote (a multiple of 4, or 0).
fn dot4_half_avx2(
    a: &[f32],
    b: *mut u8,
    dtype: DType,
    off: impl Fn(usize) -> usize,
    ys: &mut [f32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if super::super::simd::has_avx2_fma() {
        let done = ys.len() / 4 * 4;
        let size = dtype.size();
        for j in (0..done).step_by(4) {
            let cols: [*const u16; 4] =
                std::array::from_fn(|c| b.wrapping_add(off(j + c) * size) as *const u16);
            // SAFETY: features detected; each column is a.len() contiguous elements of B.
            let r = unsafe {
                match dtype {
                    DType::BF16 => x86::dot4_half::<true>(a, cols),
                    DType::F16 => x86::dot4_half::<false>(a, cols),
                    _ => x86::dot4_f32(a, cols.map(|p| p as *const f32)),
                }
            };
            ys[j..j + 4].copy_from_slice(&r);
        }
        return done;
    }
    let _ = (a, b, dtype, off, ys);
    0
}

/// Column-contiguous B ("dot" form, transposed weights): columns split across tasks, each
/// column one contiguous dot product over k.
fn columns_split(g: &Gemm, bi: usize, a: &[f32], n: usize) -> Vec<f32> {
    let k = a.len();
    let b = &g.b;
    let mut y = vec![0.0f32; n];
    let nb = n.div_ceil(rayon::current_num_threads() * 4).max(16);
    let block = |(t, ys): (usize, &mut [f32])| {
        let mut col = vec![0.0f32; if g.b_dtype == DType::F32 { 0 } else { k }];
        // Columns four at a time: four memory streams per thread, `a` loaded once.
        let four = dot4_half_avx2(a, b.ptr.0, g.b_dtype, |j| b.offset(bi, 0, t * nb + j), ys);
        for (j, o) in ys.iter_mut().enumerate().skip(four) {
            let off = b.offset(bi, 0, t * nb + j);
            *o = if g.b_dtype == DType::F32 {
                // SAFETY: the column is k contiguous f32 elements of B.
                dot(a, unsafe { std::slice::from_raw_parts((b.ptr.0 as *const f32).add(off), k) })
            } else if let Some(v) = dot_half_avx2(a, b.ptr.0, g.b_dtype, off) {
                v
            } else {
                // SAFETY: the column is k contiguous elements of B.
                unsafe { convert_run(b.ptr.0, g.b_dtype, off, &mut col) };
                dot(a, &col)
            };
        }
    };
    if k * n <= TASK_ELEMS {
        y.chunks_mut(nb).enumerate().for_each(block);
    } else {
        y.par_chunks_mut(nb).enumerate().for_each(block);
    }
    y
}

pub(super) fn gemv(g: &Gemm, batch: usize, n: usize) {
    let k = g.k;
    for bi in 0..batch {
        let a0 = g.a.at(bi, 0, 0);
        // SAFETY: row 0 of op(A) has k elements at stride cs inside the validated view.
        let a: Vec<f32> = (0..k).map(|kk| unsafe { *a0.add(kk * g.a.cs) }).collect();
        let y = if g.b.cs == 1 { rows_split(g, bi, &a, n) } else { columns_split(g, bi, &a, n) };
        let c = g.c.at(bi, 0, 0);
        for (j, v) in y.iter().enumerate() {
            // SAFETY: C's only row has n elements at stride cs.
            unsafe {
                let dst = c.add(j * g.c.cs);
                *dst = if g.p.beta == 0.0 { g.p.alpha * v } else { g.p.alpha * v + g.p.beta * *dst };
            }
        }
        g.epilogue(bi, 0..1, 0..n);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// a . col_c for four f32 columns.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_f32(a: &[f32], cols: [*const f32; 4]) -> [f32; 4] {
        let k = a.len();
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i + 16 <= k {
            let a0 = _mm256_loadu_ps(a.as_ptr().add(i));
            let a1 = _mm256_loadu_ps(a.as_ptr().add(i + 8));
            for (c, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm256_fmadd_ps(a0, _mm256_loadu_ps(cols[c].add(i)), acc[0]);
                acc[1] = _mm256_fmadd_ps(a1, _mm256_loadu_ps(cols[c].add(i + 8)), acc[1]);
            }
            i += 16;
        }
        let mut out = [0.0f32; 4];
        for (c, o) in out.iter_mut().enumerate() {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[c][0], acc[c][1]));
            *o = lanes.iter().sum();
            for (j, x) in a.iter().enumerate().skip(i) {
                *o += x * *cols[c].add(j);
            }
        }
        out
    }

    /// a . col_c for four columns of 16-bit floats (bf16 when `BF16`, else f16).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_half<const BF16: bool>(a: &[f32], cols: [*const u16; 4]) -> [f32; 4] {
        let k = a.len();
        let widen = |h: __m128i| {
            if BF16 {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            } else {
                _mm256_cvtph_ps(h)
            }
        };
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        let mut i = 0;
        while i + 16 <= k {
            let a0 = _mm256_loadu_ps(a.as_ptr().add(i));
            let a1 = _mm256_loadu_ps(a.as_ptr().add(i + 8));
            for (c, acc) in acc.iter_mut().enumerate() {
                let x0 = widen(_mm_loadu_si128(cols[c].add(i) as *const __m128i));
                let x1 = widen(_mm_loadu_si128(cols[c].add(i + 8) as *const __m128i));
                acc[0] = _mm256_fmadd_ps(a0, x0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a1, x1, acc[1]);
            }
            i += 16;
        }
        let mut out = [0.0f32; 4];
        for (c, o) in out.iter_mut().enumerate() {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[c][0], acc[c][1]));
            *o = lanes.iter().sum();
            for (j, x) in a.iter().enumerate().skip(i) {
                let bits = *cols[c].add(j);
                let v = if BF16 {
                    f32::from_bits((bits as u32) << 16)
                } else {
                    half::f16::from_bits(bits).to_f32()
                };
                *o += x * v;
            }
        }
        out
    }

    /// a . col over 16-bit floats (bf16 when `BF16`, else f16), four 8-lane accumulators.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_half<const BF16: bool>(a: &[f32], col: *const u16) -> f32 {
        let k = a.len();
        let widen = |h: __m128i| {
            if BF16 {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            } else {
                _mm256_cvtph_ps(h)
            }
        };
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= k {
            for (u, acc) in acc.iter_mut().enumerate() {
                let x = widen(_mm_loadu_si128(col.add(i + 8 * u) as *const __m128i));
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8 * u)), x, *acc);
            }
            i += 32;
        }
        while i + 8 <= k {
            let x = widen(_mm_loadu_si128(col.add(i) as *const __m128i));
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), x, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), s);
        let mut total: f32 = lanes.iter().sum();
        for (j, x) in a.iter().enumerate().skip(i) {
            let bits = *col.add(j);
            let v =
                if BF16 { f32::from_bits((bits as u32) << 16) } else { half::f16::from_bits(bits).to_f32() };
            total += x * v;
        }
        total
    }

    /// acc[j] += sum_r coef[r] * row_r[j] over four rows of 16-bit floats (bf16 when `BF16`,
    /// else f16), converted in registers: 8 columns per step, one FMA per row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy4_half<const BF16: bool>(acc: &mut [f32], coef: [f32; 4], rows: [*const u16; 4]) {
        let n = acc.len();
        let c = coef.map(|v| _mm256_set1_ps(v));
        let mut j = 0;
        while j + 8 <= n {
            let mut y = _mm256_loadu_ps(acc.as_ptr().add(j));
            for r in 0..4 {
                let h = _mm_loadu_si128(rows[r].add(j) as *const __m128i);
                let x = if BF16 {
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                } else {
                    _mm256_cvtph_ps(h)
                };
                y = _mm256_fmadd_ps(c[r], x, y);
            }
            _mm256_storeu_ps(acc.as_mut_ptr().add(j), y);
            j += 8;
        }
        for (jj, out) in acc.iter_mut().enumerate().skip(j) {
            for r in 0..4 {
                let bits = *rows[r].add(jj);
                let x = if BF16 {
                    f32::from_bits((bits as u32) << 16)
                } else {
                    half::f16::from_bits(bits).to_f32()
                };
                *out += coef[r] * x;
            }
        }
    }
}
