//! Matmuls whose B is a block-quantized weight (`[n, k]`, trans_b, blocks along k; see
//! `crate::quant`). Few rows of A (decode): each weight row is decoded in registers once
//! for up to 4 rows of A (`dot.rs`, AVX-512 / AVX2 / scalar), or, when the op allows q8
//! activations, A is rounded to int8 blocks and dotted in integers (`q8act.rs`). Many rows
//! (prefill): the packed GEMM dequantises B while packing its panels (AVX2 / AVX-512), else
//! a slice of weight rows is dequantised into f32 scratch for `matrixmultiply`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(all(target_arch = "x86_64", nh_avx512))]
mod avx512;
mod dot;
#[cfg(target_arch = "x86_64")]
mod int8_x86;
mod q8act;
#[cfg(test)]
mod tests;

use super::host::{dense_copy, load_dense, HostView, SendPtr};
use super::kernels::math;
use super::kernels::matmul::MatmulParams;
use super::scratch::Scratch;
use crate::op::DType;
use dot::{dot_rows, Isa, ROWS};
use q8act::{IntIsa, Q8Rows};
use rayon::prelude::*;

/// Up to this many rows of A the weights are decoded in registers; above, dequantised once.
const DOT_MAX_ROWS: usize = 8;
/// Below this many multiply-adds the matmul runs on the calling thread.
const SERIAL_MACS: usize = 1 << 16;

/// C = act(alpha * op(A) B^T + beta * C + bias) for a quantized B (validated: trans_b, one
/// batch, blocks along k). A is f32 / f16 / bf16, possibly transposed or strided.
/// `allow_q8`: A may be rounded to int8 blocks (`OpParams::allow_q8_activations`).
pub fn matmul(
    out: &HostView,
    a: &HostView,
    b: &HostView,
    bias: Option<&HostView>,
    p: &MatmulParams,
    allow_q8: bool,
) {
    let int = (allow_q8 && q8act::takes(b.dtype)).then(IntIsa::detect).filter(|i| *i != IntIsa::Scalar);
    matmul_with(Isa::detect(), int, out, a, b, bias, p)
}

/// `int`: the integer kernels for few rows of A (None: f32 activations).
fn matmul_with(
    isa: Isa,
    int: Option<IntIsa>,
    out: &HostView,
    a: &HostView,
    b: &HostView,
    bias: Option<&HostView>,
    p: &MatmulParams,
) {
    let r = out.rank;
    let (m, n, k) = (out.shape[r - 2], out.last(), b.last());
    #[cfg(target_arch = "x86_64")]
    if m > DOT_MAX_ROWS && k > 0 {
        use super::kernels::matmul::matmul_quantized_b;
        use super::simd::Isa as Simd;
        match isa {
            #[cfg(nh_avx512)]
            Isa::Avx512 => return matmul_quantized_b(Simd::Avx512, out, a, b, bias, p),
            Isa::Avx2 => return matmul_quantized_b(Simd::Avx2, out, a, b, bias, p),
            _ => {}
        }
    }
    let batch: usize = out.shape[..r - 2].iter().product();
    let arows = ARows::new(a, p.trans_a, m, k);
    let q8 = int.filter(|_| m <= DOT_MAX_ROWS).map(|i| {
        let rows: Vec<&[f32]> = (0..batch)
            .flat_map(|bi| (0..m).map(move |i| (bi, i)))
            .map(|(bi, i)| arows.row(bi, i, k))
            .collect();
        (i, Q8Rows::quantize(k, rows.into_iter()))
    });
    let cc = (out.dtype != DType::F32 || (out.col_stride() != 1 && n > 1)).then(|| dense_copy(out));
    let c = cc.as_ref().map(|c| c.view).unwrap_or(*out);
    let bias = bias.map(load_dense);
    let q8 = q8.as_ref().map(|(i, rows)| (*i, rows));
    let job = Job { isa, q8, a: &arows, b, c: &c, bias: bias.as_deref(), p, m, k };

    let threads = rayon::current_num_threads();
    let per_task = if m <= DOT_MAX_ROWS {
        // Enough column chunks to balance; 16 weight rows at least per task.
        n.div_ceil(threads * 8).clamp(16, 512)
    } else {
        // Dequantised weight slices of about 1 MiB.
        ((1 << 18) / k.max(1)).clamp(16, 512).next_multiple_of(16)
    };
    let chunks = n.div_ceil(per_task);
    let task = |t: usize| {
        let (bi, ch) = (t / chunks, t % chunks);
        let cols = ch * per_task..((ch + 1) * per_task).min(n);
        if m <= DOT_MAX_ROWS && job.q8.is_some() {
            job.int_dots(bi, cols);
        } else if m <= DOT_MAX_ROWS {
            job.dots(bi, cols);
        } else {
            job.gemm(bi, cols);
        }
    };
    if m * n * k * batch <= SERIAL_MACS || threads == 1 {
        (0..batch * chunks).for_each(task);
    } else {
        (0..batch * chunks).into_par_iter().for_each(task);
    }
    if let Some(cc) = cc.as_ref() {
        for row in 0..out.rows() {
            // SAFETY: row `row` of the dense copy and of the validated output view.
            unsafe {
                let src = std::slice::from_raw_parts(cc.view.ptr.f32().add(row * n), n);
                out.run(out.row_offset(row), out.col_stride()).store(src);
            }
        }
    }
}

/// Rows of op(A) as dense f32: the view itself when it already is that, else a copy.
struct ARows {
    ptr: SendPtr,
    _copy: Option<Scratch>,
    /// Rows of one batch are `rs` floats apart; batches `bs` apart (0: shared).
    rs: usize,
    bs: usize,
    firsts: Vec<usize>,
}

impl ARows {
    fn new(a: &HostView, trans: bool, m: usize, k: usize) -> ARows {
        let r = a.rank;
        let batch: usize = a.shape[..r - 2].iter().product();
        if a.dtype == DType::F32 && !trans && (a.col_stride() == 1 || k == 1) {
            // First row of each batch: batches may be strided in any way.
            let firsts = (0..batch).map(|bi| a.row_offset(bi * m)).collect();
            return ARows { ptr: a.ptr, _copy: None, rs: a.strides[r - 2], bs: 0, firsts };
        }
        let mut copy = Scratch::new(batch * m * k);
        for bi in 0..batch {
            for i in 0..m {
                let dst = &mut copy[(bi * m + i) * k..][..k];
                // op(A) row i: a stored row, or a stored column when transposed.
                let (start, stride) = if trans {
                    (a.row_offset(bi * k) + i * a.strides[r - 1], a.strides[r - 2])
                } else {
                    (a.row_offset(bi * m + i), a.col_stride())
                };
                // SAFETY: the elements lie in the validated view.
                unsafe { a.run(start, stride).load(dst) };
            }
        }
        let ptr = SendPtr(copy.as_mut_ptr() as *mut u8);
        ARows { ptr, _copy: Some(copy), rs: k, bs: m * k, firsts: vec![0; batch] }
    }

    /// Pointer to row 0 of batch `bi` (A with one batch serves every batch).
    fn base(&self, bi: usize) -> *const f32 {
        let bi = if self.firsts.len() == 1 { 0 } else { bi };
        self.ptr.f32().wrapping_add(self.firsts[bi] + bi * self.bs)
    }

    fn row<'a>(&self, bi: usize, i: usize, k: usize) -> &'a [f32] {
        // SAFETY: rows of a validated view or of the dense copy, read only.
        unsafe { std::slice::from_raw_parts(self.base(bi).add(i * self.rs), k) }
    }
}

struct Job<'a> {
    isa: Isa,
    /// A's rows rounded to int8 blocks (batch-major), with the kernels that take them.
    q8: Option<(IntIsa, &'a Q8Rows)>,
    a: &'a ARows,
    b: &'a HostView,
    c: &'a HostView,
    bias: Option<&'a [f32]>,
    p: &'a MatmulParams,
    m: usize,
    k: usize,
}

impl Job<'_> {
    /// Quantized row j of B.
    fn weight_row<'a>(&self, j: usize) -> &'a [u8] {
        let dt = self.b.dtype;
        // SAFETY: row j < n of the validated B view: whole blocks, dense along k.
        unsafe {
            let p = self.b.ptr.0.add(dt.bytes_of(self.b.row_offset(j)));
            std::slice::from_raw_parts(p, dt.bytes_of(self.k))
        }
    }

    /// Row i of C in batch bi, columns `cols` (this task's own elements).
    fn c_row<'a>(&self, bi: usize, i: usize, cols: &std::ops::Range<usize>) -> &'a mut [f32] {
        // SAFETY: C has dense rows (else a dense copy); each task owns its columns.
        unsafe {
            let p = self.c.ptr.f32().add(self.c.row_offset(bi * self.m + i) + cols.start);
            std::slice::from_raw_parts_mut(p, cols.len())
        }
    }

    /// Few rows of A: dot products with each weight row, decoded once per 4 rows of A.
    fn dots(&self, bi: usize, cols: std::ops::Range<usize>) {
        let mut tmp = Vec::new();
        let mut sums = [0.0f32; ROWS];
        for i0 in (0..self.m).step_by(ROWS) {
            let rows = ROWS.min(self.m - i0);
            let x: Vec<&[f32]> = (i0..i0 + rows).map(|i| self.a.row(bi, i, self.k)).collect();
            let mut c: Vec<&mut [f32]> = (i0..i0 + rows).map(|i| self.c_row(bi, i, &cols)).collect();
            for (jj, j) in cols.clone().enumerate() {
                dot_rows(self.isa, self.b.dtype, self.weight_row(j), &x, &mut sums[..rows], &mut tmp);
                for (row, s) in c.iter_mut().zip(&sums) {
                    let old = if self.p.beta != 0.0 { self.p.beta * row[jj] } else { 0.0 };
                    row[jj] = self.p.alpha * s + old;
                }
            }
            for row in c.iter_mut() {
                self.epilogue(row, &cols);
            }
        }
    }

    /// `dots` on A's int8 rows: integer dot products, one scale per block.
    fn int_dots(&self, bi: usize, cols: std::ops::Range<usize>) {
        let (isa, q8) = self.q8.expect("int8 rows");
        let (dt, nc) = (self.b.dtype, cols.len());
        let blocks = self.k / q8act::QK;
        // Weight rows are a whole number of blocks apart (validated views).
        let stride = dt.bytes_of(self.b.strides[self.b.rank - 2]);
        let first = self.weight_row(cols.start).as_ptr();
        // SAFETY: rows cols.start..cols.end of the validated B view.
        let w = unsafe { std::slice::from_raw_parts(first, (nc - 1) * stride + dt.bytes_of(self.k)) };
        let mut sums = vec![0.0f32; nc * ROWS];
        for i0 in (0..self.m).step_by(ROWS) {
            let rows = ROWS.min(self.m - i0);
            let x: Vec<q8act::Q8Row> = (i0..i0 + rows).map(|i| q8.row(bi * self.m + i)).collect();
            q8act::dot_cols(isa, dt, w, stride, nc, blocks, &x, &mut sums);
            for (r, i) in (i0..i0 + rows).enumerate() {
                let row = self.c_row(bi, i, &cols);
                for (jj, c) in row.iter_mut().enumerate() {
                    let old = if self.p.beta != 0.0 { self.p.beta * *c } else { 0.0 };
                    *c = self.p.alpha * sums[jj * rows + r] + old;
                }
                self.epilogue(row, &cols);
            }
        }
    }

    /// Many rows of A: dequantise this slice of weight rows, then sgemm.
    fn gemm(&self, bi: usize, cols: std::ops::Range<usize>) {
        let (k, nc) = (self.k, cols.len());
        let mut w = Scratch::new(nc * k);
        for (jj, j) in cols.clone().enumerate() {
            crate::quant::dequantize_row(self.b.dtype, self.weight_row(j), &mut w[jj * k..][..k]);
        }
        let c0 = self.c_row(bi, 0, &cols).as_mut_ptr();
        // SAFETY: A rows, the scratch slice ([nc, k] read as op(B) = k x nc) and this task's
        // columns of C are all in bounds.
        unsafe {
            matrixmultiply::sgemm(
                self.m,
                k,
                nc,
                self.p.alpha,
                self.a.base(bi),
                self.a.rs as isize,
                1,
                w.as_ptr(),
                1,
                k as isize,
                self.p.beta,
                c0,
                self.c.strides[self.c.rank - 2] as isize,
                1,
            );
        }
        for i in 0..self.m {
            self.epilogue(self.c_row(bi, i, &cols), &cols);
        }
    }

    fn epilogue(&self, row: &mut [f32], cols: &std::ops::Range<usize>) {
        math::bias_and_activation(row, self.bias.map(|b| &b[cols.clone()]), self.p.activation);
    }
}
