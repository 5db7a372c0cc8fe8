//! Batched matmul C = act(alpha * op(A) op(B) + beta * C + bias). On x86-64 with AVX2 or
//! AVX-512 the packed GEMM (`gemm/`) runs it; elsewhere (and for C without dense rows)
//! `matrixmultiply`'s single-threaded sgemm, split into row (or column) blocks across the rayon pool: its own
//! threading is coarse and slow at small sizes (FACTS.md), and rayon keeps one pool per device.
//! f16 / bf16 operands are converted to f32 once (F16C through `half`), accumulation is f32.

use super::super::host::{dense_copy, load_dense, HostView, SendPtr};
use super::super::simd::Isa;
use super::gemv;
use super::math;
use crate::op::{Activation, DType, MAX_RANK};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct MatmulParams {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
    pub activation: Activation,
}

/// One operand as sgemm sees it: f32 data, a per-batch offset rule and matrix strides.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub ptr: SendPtr,
    /// Batch dims of the view (before the last two) and their strides, in elements.
    batch_dims: [usize; MAX_RANK],
    batch_strides: [usize; MAX_RANK],
    batch_rank: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Mat {
    /// `transposed`: the view stores op(X)^T, so rows and columns swap strides.
    fn new(v: &HostView, transposed: bool) -> Mat {
        let r = v.rank;
        let (rs, cs) = if transposed {
            (v.strides[r - 1], v.strides[r - 2])
        } else {
            (v.strides[r - 2], v.strides[r - 1])
        };
        let mut m = Mat {
            ptr: v.ptr,
            batch_dims: [1; MAX_RANK],
            batch_strides: [0; MAX_RANK],
            batch_rank: r - 2,
            rs,
            cs,
        };
        m.batch_dims[..r - 2].copy_from_slice(&v.shape[..r - 2]);
        m.batch_strides[..r - 2].copy_from_slice(&v.strides[..r - 2]);
        m
    }

    /// Element offset of batch `b`; a view with batch 1 is shared by every batch.
    fn batch_offset(&self, mut b: usize) -> usize {
        let dims = &self.batch_dims[..self.batch_rank];
        if dims.iter().product::<usize>() == 1 {
            return 0;
        }
        let mut off = 0;
        for d in (0..self.batch_rank).rev() {
            off += (b % dims[d]) * self.batch_strides[d];
            b /= dims[d];
        }
        off
    }

    /// Element offset of (i, j) in batch `b`.
    pub fn offset(&self, b: usize, i: usize, j: usize) -> usize {
        self.batch_offset(b) + i * self.rs + j * self.cs
    }

    /// f32 pointer to element (i, j) of batch `b` (for f32 operands).
    pub fn at(&self, b: usize, i: usize, j: usize) -> *mut f32 {
        // SAFETY (of later use): validated views keep every such element inside the buffer.
        unsafe { (self.ptr.0 as *mut f32).add(self.offset(b, i, j)) }
    }
}

#[cfg(target_arch = "x86_64")]
pub use super::gemm::PackedB;

/// Without the packed GEMM (not x86-64) nothing is prepacked (`prepacked_usable` is false).
#[cfg(not(target_arch = "x86_64"))]
pub struct PackedB;

#[cfg(not(target_arch = "x86_64"))]
impl PackedB {
    pub fn bytes(&self) -> usize {
        0
    }
}

/// Whether a matmul may run with a prepacked B: the packed GEMM takes it, B has one batch
/// (the packed copy is shared by every batch of A), and it is no GEMV (one row streams B
/// as it is, at memory speed).
pub fn prepacked_usable(out: &HostView, a: &HostView, b: &HostView, p: &MatmulParams) -> bool {
    let m = out.shape[out.rank - 2];
    let k = if p.trans_a { a.shape[a.rank - 2] } else { a.last() };
    let one_batch = b.shape[..b.rank - 2].iter().all(|&d| d == 1);
    let float = matches!(b.dtype, DType::F32 | DType::F16 | DType::BF16);
    m >= 2 && one_batch && float && packed_gemm_isa(out, k).is_some()
}

/// B of this matmul in the packed GEMM's layout (callers checked `prepacked_usable`).
pub fn pack_b(a: &HostView, b: &HostView, p: &MatmulParams) -> PackedB {
    let k = if p.trans_a { a.shape[a.rank - 2] } else { a.last() };
    let n = if p.trans_b { b.shape[b.rank - 2] } else { b.last() };
    #[cfg(target_arch = "x86_64")]
    {
        let mb = Mat::new(b, p.trans_b);
        let g = Gemm {
            a: Mat::new(a, p.trans_a),
            a_dtype: a.dtype,
            b: mb,
            b_dtype: b.dtype,
            c: mb,
            k,
            p: *p,
            bias: None,
        };
        // A level lowered since `prepacked_usable` (tests only) gives an AVX2 packing that
        // the GEMM then declines.
        super::gemm::pack_whole_b(super::super::simd::isa().max(Isa::Avx2), &g, n)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, n);
        unreachable!("prepacked_usable is false without the packed GEMM")
    }
}

/// `prepacked`: op(B) already packed (`weight_cache.rs`), for a matmul `prepacked_usable` took.
pub fn matmul(
    out: &HostView,
    a: &HostView,
    b: &HostView,
    bias: Option<&HostView>,
    p: MatmulParams,
    prepacked: Option<&PackedB>,
) {
    let m = out.shape[out.rank - 2];
    // GEMV streams B once and converts it on the fly; everything else converts up front.
    let gemv_b = m == 1 && gemv::streams(&Mat::new(b, p.trans_b));
    let k = if p.trans_a { a.shape[a.rank - 2] } else { a.last() };
    // The packed GEMM converts f16 / bf16 operands while packing; the others take f32.
    // f16 / bf16 outputs are computed in f32 (from C's old values, for beta) and rounded
    // once at the end, so C always has dense rows there.
    let packed = if gemv_b { None } else { packed_gemm_isa(out, k) };
    let ca = (a.dtype != DType::F32 && packed.is_none()).then(|| dense_copy(a));
    let cb = (b.dtype != DType::F32 && !gemv_b && packed.is_none()).then(|| dense_copy(b));
    let a = ca.as_ref().map(|c| &c.view).unwrap_or(a);
    let b = cb.as_ref().map(|c| &c.view).unwrap_or(b);
    let cc = (out.dtype != DType::F32).then(|| dense_copy(out));
    let c = cc.as_ref().map(|c| c.view).unwrap_or(*out);
    let bias = bias.map(load_dense);

    let r = c.rank;
    let n = c.shape[r - 1];
    let batch: usize = c.shape[..r - 2].iter().product();
    let ma = Mat::new(a, p.trans_a);
    let mb = Mat::new(b, p.trans_b);
    let mc = Mat::new(&c, false);
    let gemm = Gemm { a: ma, a_dtype: a.dtype, b: mb, b_dtype: b.dtype, c: mc, k, p, bias: bias.as_deref() };

    if gemv_b {
        gemv::gemv(&gemm, batch, n);
    } else if let Some(isa) = packed {
        #[cfg(target_arch = "x86_64")]
        match prepacked {
            Some(pb) => super::gemm::gemm_prepacked(isa, &gemm, pb, batch, m, n),
            None => super::gemm::gemm(isa, &gemm, batch, m, n),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (isa, prepacked);
    } else {
        gemm.run_all(batch, m, n);
    }
    if let Some(cc) = cc.as_ref() {
        store_dense(out, &cc.view);
    }
}

/// C = act(alpha * op(A) B^T + beta * C + bias) for a block-quantized B (`[n, k]`, trans_b,
/// one batch) on `isa`'s packed GEMM (AVX2 or AVX-512, which the CPU has): B's blocks are
/// dequantised while its panels are packed, so prefill runs at the f32 GEMM's speed with no
/// dequantised copy of the weights.
#[cfg(target_arch = "x86_64")]
pub fn matmul_quantized_b(
    isa: Isa,
    out: &HostView,
    a: &HostView,
    b: &HostView,
    bias: Option<&HostView>,
    p: &MatmulParams,
) {
    let k = b.last();
    let cc = (out.dtype != DType::F32 || (out.col_stride() != 1 && out.last() > 1)).then(|| dense_copy(out));
    let c = cc.as_ref().map(|c| c.view).unwrap_or(*out);
    let bias = bias.map(load_dense);
    let r = c.rank;
    let (m, n) = (c.shape[r - 2], c.shape[r - 1]);
    let batch: usize = c.shape[..r - 2].iter().product();
    let gemm = Gemm {
        a: Mat::new(a, p.trans_a),
        a_dtype: a.dtype,
        b: Mat::new(b, true),
        b_dtype: b.dtype,
        c: Mat::new(&c, false),
        k,
        p: *p,
        bias: bias.as_deref(),
    };
    super::gemm::gemm(isa, &gemm, batch, m, n);
    if let Some(cc) = cc.as_ref() {
        store_dense(out, &cc.view);
    }
}

/// The instruction set whose packed GEMM takes this matmul, if any: the CPU has AVX2 (or
/// AVX-512), C (or its f32 copy) has dense rows, k > 0. Otherwise `matrixmultiply` runs it.
fn packed_gemm_isa(out: &HostView, k: usize) -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        let dense_rows = out.dtype != DType::F32 || out.col_stride() == 1 || out.last() == 1;
        let isa = super::super::simd::isa();
        (dense_rows && k > 0 && isa >= Isa::Avx2).then_some(isa)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (out, k);
        None
    }
}

/// Writes a dense f32 array into a (possibly strided, lower-precision) view.
pub(crate) fn store_dense(out: &HostView, dense: &HostView) {
    let len = out.last();
    // SAFETY: `dense` describes a live dense copy of `out`'s shape.
    let data = unsafe { std::slice::from_raw_parts(dense.ptr.0 as *const f32, out.rows() * len) };
    super::iter::for_each_row(out.rows(), len, |r| {
        // SAFETY: row r of a validated output view, written by this task only.
        unsafe { out.run(out.row_offset(r), out.col_stride()).store(&data[r * len..][..len]) }
    });
}

pub(super) struct Gemm<'a> {
    pub a: Mat,
    /// f32 except when the packed GEMM converts an f16 / bf16 A while packing.
    pub a_dtype: DType,
    pub b: Mat,
    /// f32 except when a GEMV streams, or the packed GEMM packs, an f16 / bf16 B directly.
    pub b_dtype: DType,
    pub c: Mat,
    pub k: usize,
    pub p: MatmulParams,
    pub bias: Option<&'a [f32]>,
}

/// Below this many multiply-adds a matmul runs on the calling thread.
const SERIAL_MACS: usize = 1 << 16;

impl Gemm<'_> {
    fn run_all(&self, batch: usize, m: usize, n: usize) {
        let threads = rayon::current_num_threads();
        if m * n * self.k * batch <= SERIAL_MACS || threads == 1 {
            (0..batch).for_each(|bi| self.block(bi, 0..m, 0..n));
            return;
        }
        // Split the larger of m and n so each thread gets a block; blocks start on a
        // multiple of 8 (the AVX2 micro-kernel's tile) to avoid ragged edges mid-matrix.
        let parts = threads.div_ceil(batch).max(1);
        let split_rows = m >= n;
        let len = if split_rows { m } else { n };
        let step = len.div_ceil(parts).next_multiple_of(8).min(len);
        let blocks = len.div_ceil(step);
        (0..batch * blocks).into_par_iter().for_each(|t| {
            let (bi, blk) = (t / blocks, t % blocks);
            let range = blk * step..((blk + 1) * step).min(len);
            if split_rows {
                self.block(bi, range, 0..n);
            } else {
                self.block(bi, 0..m, range);
            }
        });
    }

    /// sgemm on rows x cols of batch `bi`, then bias and activation on that block.
    fn block(&self, bi: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        let (mb, nb) = (rows.len(), cols.len());
        // SAFETY: pointers address validated views; this block of C is written by one task.
        unsafe {
            matrixmultiply::sgemm(
                mb,
                self.k,
                nb,
                self.p.alpha,
                self.a.at(bi, rows.start, 0),
                self.a.rs as isize,
                self.a.cs as isize,
                self.b.at(bi, 0, cols.start),
                self.b.rs as isize,
                self.b.cs as isize,
                self.p.beta,
                self.c.at(bi, rows.start, cols.start),
                self.c.rs as isize,
                self.c.cs as isize,
            );
        }
        self.epilogue(bi, rows, cols);
    }

    /// Adds the bias and applies the activation to a block of C that was just computed.
    pub fn epilogue(&self, bi: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) {
        if self.bias.is_none() && self.p.activation == Activation::None {
            return;
        }
        let mut scratch = Vec::new();
        for i in rows {
            let p = self.c.at(bi, i, cols.start);
            let n = cols.len();
            // SAFETY: the row lies in this task's block of C.
            let row: &mut [f32] = if self.c.cs == 1 {
                unsafe { std::slice::from_raw_parts_mut(p, n) }
            } else {
                scratch.clear();
                scratch.extend((0..n).map(|j| unsafe { *p.add(j * self.c.cs) }));
                &mut scratch
            };
            math::bias_and_activation(row, self.bias.map(|b| &b[cols.clone()]), self.p.activation);
            if self.c.cs != 1 {
                for (j, v) in scratch.iter().enumerate() {
                    unsafe { *p.add(j * self.c.cs) = *v };
                }
            }
        }
    }
}
