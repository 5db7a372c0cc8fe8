//! Matrix-vector products (m = 1), which are memory bound: stream B once, split its columns
//! across threads. Two layouts: B rows contiguous (y += a[k] * B[k, :], "axpy") or B columns
//! contiguous (y[j] = a . B[:, j], i.e. a transposed weight, "dot"). f16 / bf16 B is
//! converted in L1-sized pieces as it streams, so it moves half the bytes of f32.

use super::super::halfconv;
use super::super::simd::dispatch_avx2;
use super::iter::TASK_ELEMS;
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
    fn axpy_block(acc: &mut [f32], a: &[f32], b: *const f32, rs: usize) {
        let n = acc.len();
        // SAFETY: rows 0..a.len() of the block lie in B (validated view or scratch).
        let row = |kk: usize| unsafe { std::slice::from_raw_parts(b.add(kk * rs), n) };
        let mut kk = 0;
        while kk + 4 <= a.len() {
            let (b0, b1, b2, b3) = (row(kk), row(kk + 1), row(kk + 2), row(kk + 3));
            let (a0, a1, a2, a3) = (a[kk], a[kk + 1], a[kk + 2], a[kk + 3]);
            for j in 0..n {
                acc[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
            }
            kk += 4;
        }
        while kk < a.len() {
            let (b0, a0) = (row(kk), a[kk]);
            for j in 0..n {
                acc[j] += a0 * b0[j];
            }
            kk += 1;
        }
    }
}

dispatch_avx2! {
    /// a . col with 16 independent accumulators (vectorises without fast-math).
    fn dot(a: &[f32], col: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let (ac, bc) = (a.chunks_exact(16), col.chunks_exact(16));
        let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ac.zip(bc) {
            for i in 0..16 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// Converts `n` contiguous elements of an f16 / bf16 B starting at element `off` into `dst`.
///
/// # Safety
/// The elements lie inside B's validated view.
unsafe fn convert_run(b: *const u8, dtype: DType, off: usize, dst: &mut [f32]) {
    let n = dst.len();
    match dtype {
        DType::F16 => halfconv::f16_to_f32(std::slice::from_raw_parts((b as *const f16).add(off), n), dst),
        DType::BF16 => halfconv::bf16_to_f32(std::slice::from_raw_parts((b as *const bf16).add(off), n), dst),
        _ => dst.copy_from_slice(std::slice::from_raw_parts((b as *const f32).add(off), n)),
    }
}

/// Rows of B converted per step in the axpy form (with <= 512 columns: 32 KiB of scratch).
const K_STEP: usize = 16;

/// y = a . B[:, cols] for one block of columns.
fn block(g: &Gemm, bi: usize, a: &[f32], cols: std::ops::Range<usize>, y: &mut [f32]) {
    let (b, nb) = (&g.b, cols.len());
    if g.b_dtype == DType::F32 {
        let p = b.at(bi, 0, cols.start) as *const f32;
        if b.cs == 1 {
            axpy_block(y, a, p, b.rs);
        } else {
            for (j, o) in y.iter_mut().enumerate() {
                // SAFETY: column j of the block is k contiguous elements of B.
                *o = dot(a, unsafe { std::slice::from_raw_parts(p.add(j * b.cs), a.len()) });
            }
        }
        return;
    }
    let base = b.ptr.0 as *const u8;
    if b.cs == 1 {
        let mut scratch = vec![0.0f32; K_STEP * nb];
        for k0 in (0..a.len()).step_by(K_STEP) {
            let kn = K_STEP.min(a.len() - k0);
            for (i, row) in scratch.chunks_mut(nb).take(kn).enumerate() {
                // SAFETY: row k0 + i of the block lies in B.
                unsafe { convert_run(base, g.b_dtype, b.offset(bi, k0 + i, cols.start), row) };
            }
            axpy_block(y, &a[k0..k0 + kn], scratch.as_ptr(), nb);
        }
    } else {
        let mut col = vec![0.0f32; a.len()];
        for (j, o) in y.iter_mut().enumerate() {
            // SAFETY: column cols.start + j lies in B, contiguous along k.
            unsafe { convert_run(base, g.b_dtype, b.offset(bi, 0, cols.start + j), &mut col) };
            *o = dot(a, &col);
        }
    }
}

/// Columns per task: enough tasks to balance, each short enough for L1 scratch.
fn column_block(n: usize) -> usize {
    let tasks = rayon::current_num_threads() * 4;
    n.div_ceil(tasks).next_multiple_of(16).clamp(64, 512)
}

pub(super) fn gemv(g: &Gemm, batch: usize, n: usize) {
    let k = g.k;
    for bi in 0..batch {
        let a0 = g.a.at(bi, 0, 0);
        // SAFETY: row 0 of op(A) has k elements at stride cs inside the validated view.
        let a: Vec<f32> = (0..k).map(|kk| unsafe { *a0.add(kk * g.a.cs) }).collect();
        let nb = column_block(n);
        let run_block = |t: usize| {
            let cols = t * nb..((t + 1) * nb).min(n);
            let mut y = vec![0.0f32; cols.len()];
            block(g, bi, &a, cols.clone(), &mut y);
            let c = g.c.at(bi, 0, cols.start);
            for (j, v) in y.iter().enumerate() {
                // SAFETY: this task owns these columns of C's only row.
                unsafe {
                    let dst = c.add(j * g.c.cs);
                    *dst = if g.p.beta == 0.0 { g.p.alpha * v } else { g.p.alpha * v + g.p.beta * *dst };
                }
            }
            g.epilogue(bi, 0..1, cols);
        };
        if k * n <= TASK_ELEMS {
            (0..n.div_ceil(nb)).for_each(run_block);
        } else {
            (0..n.div_ceil(nb)).into_par_iter().for_each(run_block);
        }
    }
}
