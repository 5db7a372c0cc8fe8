//! Matrix-vector products (m = 1), which are memory bound: stream B once, split its columns
//! across threads. Two layouts: B rows contiguous (y += a[k] * B[k, :], "axpy") or B columns
//! contiguous (y[j] = a . B[:, j], "dot", i.e. a transposed weight).

use super::super::simd::dispatch_avx2;
use super::matmul::Gemm;
use rayon::prelude::*;

/// The GEMV kernels need one of B's strides to be 1.
pub(super) fn applies(g: &Gemm) -> bool {
    g.b.cs == 1 || g.b.rs == 1
}

dispatch_avx2! {
    /// acc[j] += sum_k a[k] * B[k, j] for a block of columns; `b` points at B[0, block start].
    fn axpy_block(acc: &mut [f32], a: &[f32], b: *const f32, rs: usize) {
        let n = acc.len();
        // SAFETY: rows 0..a.len() of the block lie in B (validated view).
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
    /// out[j] = a . B[:, j] for a block of columns whose k elements are contiguous.
    fn dot_block(out: &mut [f32], a: &[f32], b: *const f32, cs: usize) {
        let k = a.len();
        for (j, o) in out.iter_mut().enumerate() {
            // SAFETY: column j of the block lies in B (validated view).
            let col = unsafe { std::slice::from_raw_parts(b.add(j * cs), k) };
            let mut acc = [0.0f32; 16];
            let (ac, bc) = (a.chunks_exact(16), col.chunks_exact(16));
            let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
            for (x, y) in ac.zip(bc) {
                for i in 0..16 {
                    acc[i] += x[i] * y[i];
                }
            }
            *o = acc.iter().sum::<f32>() + tail;
        }
    }
}

/// Columns per task: enough tasks to balance, each long enough to stream efficiently.
fn column_block(n: usize) -> usize {
    let tasks = rayon::current_num_threads() * 4;
    n.div_ceil(tasks).next_multiple_of(16).max(64)
}

pub(super) fn gemv(g: &Gemm, batch: usize, n: usize) {
    let k = g.k;
    for bi in 0..batch {
        let a0 = g.a.at(bi, 0, 0);
        // SAFETY: row 0 of op(A) has k elements at stride cs inside the validated view.
        let a: Vec<f32> = (0..k).map(|kk| unsafe { *a0.add(kk * g.a.cs) }).collect();
        let nb = column_block(n);
        (0..n.div_ceil(nb)).into_par_iter().for_each(|t| {
            let cols = t * nb..((t + 1) * nb).min(n);
            let mut y = vec![0.0f32; cols.len()];
            let b = g.b.at(bi, 0, cols.start) as *const f32;
            if g.b.cs == 1 {
                axpy_block(&mut y, &a, b, g.b.rs);
            } else {
                dot_block(&mut y, &a, b, g.b.cs);
            }
            let c = g.c.at(bi, 0, cols.start);
            for (j, v) in y.iter().enumerate() {
                // SAFETY: this task owns these columns of C's only row.
                unsafe {
                    let dst = c.add(j * g.c.cs);
                    *dst = if g.p.beta == 0.0 { g.p.alpha * v } else { g.p.alpha * v + g.p.beta * *dst };
                }
            }
            g.epilogue(bi, 0..1, cols);
        });
    }
}
