//! Scaled dot-product attention: q [.., H, Sq, D], k / v [.., Hkv, Skv, D] (grouped-query:
//! q head h reads kv head h / (H / Hkv)), the first `kv_len` keys valid, causal rows where
//! query i sits at absolute position kv_len - Sq + i, and an optional additive mask.
//!
//! Each task takes a block of query rows of one head: S = scale * Q K^T and O = P V are two
//! sgemm calls on the strided views, with the mask and the row softmax in between.

use super::super::host::{dense_copy, DenseCopy, HostView};
use super::super::scratch::Scratch;
use super::iter::TASK_ELEMS;
use super::matmul::store_dense;
use super::softmax::softmax_row;
use crate::op::DType;
use rayon::prelude::*;

pub struct AttentionParams {
    pub causal: bool,
    /// Score scale; 0 means 1 / sqrt(head_dim).
    pub scale: f32,
    /// Valid keys; 0 means all.
    pub kv_len: usize,
}

/// Query rows per task: S for the block stays in L2 for typical key lengths.
const Q_BLOCK: usize = 64;

/// An f32 view of `v` (a converted copy when it is f16 / bf16).
fn as_f32(v: &HostView) -> (HostView, Option<DenseCopy>) {
    if v.dtype == DType::F32 {
        return (*v, None);
    }
    let copy = dense_copy(v);
    (copy.view, Some(copy))
}

/// Element offset of (batch b, head h) in a [.., heads, seq, dim] view.
fn head_offset(v: &HostView, b: usize, h: usize) -> usize {
    let r = v.rank;
    let batch = if r == 4 { b * v.strides[0] } else { 0 };
    batch + h * v.strides[r - 3]
}

/// A strided f32 matrix for sgemm: pointer, row stride, column stride.
type Strided = (*mut f32, usize, usize);

/// C[m, n] = alpha * A[m, k] B[k, n] (C's old values ignored).
///
/// # Safety
/// Every pointer and stride must address valid f32 matrices of the given sizes.
unsafe fn sgemm((m, k, n): (usize, usize, usize), alpha: f32, a: Strided, b: Strided, c: Strided) {
    matrixmultiply::sgemm(
        m,
        k,
        n,
        alpha,
        a.0,
        a.1 as isize,
        a.2 as isize,
        b.0,
        b.1 as isize,
        b.2 as isize,
        0.0,
        c.0,
        c.1 as isize,
        c.2 as isize,
    );
}

pub fn attention(
    out: &HostView,
    q: &HostView,
    k: &HostView,
    v: &HostView,
    mask: Option<&HostView>,
    p: &AttentionParams,
) {
    let r = q.rank;
    let (h, sq, d) = (q.shape[r - 3], q.shape[r - 2], q.shape[r - 1]);
    let (hkv, skv) = (k.shape[r - 3], k.shape[r - 2]);
    let batch = if r == 4 { q.shape[0] } else { 1 };
    let group = h / hkv;
    let kv_len = if p.kv_len == 0 { skv } else { p.kv_len };
    let scale = if p.scale == 0.0 { 1.0 / (d as f32).sqrt() } else { p.scale };
    // Keys past kv_len are never read: a half K and V (a KV cache) is widened up to there only.
    let valid = |t: &HostView| {
        let mut t = *t;
        t.shape[r - 2] = kv_len;
        t
    };
    let ((q, _qc), (k, _kc), (v, _vc)) = (as_f32(q), as_f32(&valid(k)), as_f32(&valid(v)));
    let (o, oc) = as_f32(out);
    // Mask strides over the full score shape [.., H, Sq, Skv], 0 where it broadcasts.
    let score_dims: Vec<usize> = [&q.dims()[..r - 1], &[skv]].concat();
    let mask_strides = mask.map(|m| m.broadcast_strides(&score_dims));

    let blocks = sq.div_ceil(Q_BLOCK);
    let task = |t: usize| {
        let (bh, blk) = (t / blocks, t % blocks);
        let (b, head) = (bh / h, bh % h);
        let rows = blk * Q_BLOCK..((blk + 1) * Q_BLOCK).min(sq);
        let m = rows.len();
        // Keys row i may see; the block computes scores for its last row's keys.
        let keys = |i: usize| if p.causal { kv_len - sq + i + 1 } else { kv_len };
        let n = keys(rows.end - 1);
        let mut s = Scratch::new(m * n);
        let at = |x: &HostView, off: usize| (x.ptr.0 as *mut f32).wrapping_add(off);
        let qm = at(&q, head_offset(&q, b, head) + rows.start * q.strides[r - 2]);
        let km = at(&k, head_offset(&k, b, head / group));
        let vm = at(&v, head_offset(&v, b, head / group));
        let om = at(&o, head_offset(&o, b, head) + rows.start * o.strides[r - 2]);
        // SAFETY: offsets and strides come from validated views (or dense copies of them);
        // K^T is K with its strides swapped.
        unsafe {
            sgemm(
                (m, d, n),
                scale,
                (qm, q.strides[r - 2], q.strides[r - 1]),
                (km, k.strides[r - 1], k.strides[r - 2]),
                (s.as_mut_ptr(), n, 1),
            );
        }
        for (ri, row) in s.chunks_mut(n).enumerate() {
            let i = rows.start + ri;
            if let (Some(mv), Some(st)) = (mask, mask_strides.as_ref()) {
                let idx = if r == 4 { [b, head, i, 0] } else { [head, i, 0, 0] };
                let off: usize = idx.iter().zip(st).map(|(x, s)| x * s).sum();
                let mut vals = Scratch::new(n);
                // SAFETY: the mask view is validated and broadcasts to the score shape.
                unsafe { mv.run(off, st[r - 1]).load(&mut vals) };
                row.iter_mut().zip(vals.iter()).for_each(|(x, m)| *x += m);
            }
            let (seen, hidden) = row.split_at_mut(keys(i));
            softmax_row(seen);
            hidden.fill(0.0);
        }
        // SAFETY: as above; this task alone writes these output rows.
        unsafe {
            sgemm(
                (m, n, d),
                1.0,
                (s.as_mut_ptr(), n, 1),
                (vm, v.strides[r - 2], v.strides[r - 1]),
                (om, o.strides[r - 2], o.strides[r - 1]),
            );
        }
    };
    let tasks = batch * h * blocks;
    if batch * h * sq * kv_len * d <= TASK_ELEMS {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
    if let Some(oc) = oc {
        store_dense(out, &oc.view);
    }
}
