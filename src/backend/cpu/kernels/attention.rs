//! Scaled dot-product attention: q [.., H, Sq, D], k / v [.., Hkv, Skv, D] (grouped-query:
//! q head h reads kv head h / (H / Hkv)), the first `kv_len` keys valid, causal rows where
//! query i sits at absolute position kv_len - Sq + i, and an optional additive mask.

use super::super::host::{load_dense, HostView};
use super::super::simd::dispatch_avx2;
use super::iter::for_each_row;
use super::math;
use super::rows::{max, sum};
use crate::op::{dense_strides, DType};

pub struct AttentionParams {
    pub causal: bool,
    /// Score scale; 0 means 1 / sqrt(head_dim).
    pub scale: f32,
    /// Valid keys; 0 means all.
    pub kv_len: usize,
}

/// K or V with every row dense f32 (converted once when the view is not).
struct Rows {
    _data: Option<Vec<f32>>,
    view: HostView,
}

fn dense_rows(v: &HostView) -> Rows {
    if v.dtype == DType::F32 && v.col_stride() == 1 {
        return Rows { _data: None, view: *v };
    }
    let mut data = load_dense(v);
    let mut view = *v;
    view.dtype = DType::F32;
    view.ptr.0 = data.as_mut_ptr() as *mut u8;
    view.strides = dense_strides(v.dims());
    Rows { _data: Some(data), view }
}

/// Keys and values of one kv head: row j at `k + j * k_rs` (dense, head_dim long).
#[derive(Clone, Copy)]
struct KvHead {
    k: *const f32,
    k_rs: usize,
    v: *const f32,
    v_rs: usize,
}

dispatch_avx2! {
    /// One query row: scores over `scores.len()` keys, softmax, weighted sum of values.
    fn attend_row(
        q: &[f32],
        kv: KvHead,
        mask: Option<&[f32]>,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let d = q.len();
        for (j, s) in scores.iter_mut().enumerate() {
            // SAFETY: key j < kv_len lies in the validated K view, rows dense.
            let kr = unsafe { std::slice::from_raw_parts(kv.k.add(j * kv.k_rs), d) };
            let mut acc = [0.0f32; 8];
            let (qc, kc) = (q.chunks_exact(8), kr.chunks_exact(8));
            let tail: f32 = qc.remainder().iter().zip(kc.remainder()).map(|(a, b)| a * b).sum();
            for (a, b) in qc.zip(kc) {
                for i in 0..8 {
                    acc[i] += a[i] * b[i];
                }
            }
            *s = (acc.iter().sum::<f32>() + tail) * scale;
        }
        if let Some(mask) = mask {
            scores.iter_mut().zip(mask).for_each(|(s, m)| *s += m);
        }
        let m = max(scores);
        scores.iter_mut().for_each(|s| *s = math::exp(*s - m));
        let inv = 1.0 / sum(scores);
        out.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            // SAFETY: as for keys.
            let vr = unsafe { std::slice::from_raw_parts(kv.v.add(j * kv.v_rs), d) };
            let p = p * inv;
            out.iter_mut().zip(vr).for_each(|(o, x)| *o += p * x);
        }
    }
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
    let group = h / hkv;
    let kv_len = if p.kv_len == 0 { skv } else { p.kv_len };
    let scale = if p.scale == 0.0 { 1.0 / (d as f32).sqrt() } else { p.scale };
    let (kr, vr) = (dense_rows(k), dense_rows(v));
    let (k, v) = (&kr.view, &vr.view);
    // Mask strides over the full score shape [.., H, Sq, Skv], 0 where it broadcasts.
    let score_dims: Vec<usize> = [&q.dims()[..r - 1], &[skv]].concat();
    let mask_strides = mask.map(|m| m.broadcast_strides(&score_dims));

    // One task item per query row (.., head, i), same order as q's rows.
    for_each_row(q.rows(), d * kv_len, |row| {
        let i = row % sq;
        let head = (row / sq) % h;
        let b = row / (sq * h);
        let keys = if p.causal { kv_len - sq + i + 1 } else { kv_len };
        let kv_head = head / group;
        let kv_off = |t: &HostView| {
            let base = if r == 4 { b * t.strides[0] } else { 0 };
            base + kv_head * t.strides[r - 3]
        };
        let mut qv = vec![0.0f32; d];
        let mut scores = vec![0.0f32; keys];
        let mut o = vec![0.0f32; d];
        let mask_row = mask.zip(mask_strides).map(|(m, st)| {
            let mut idx = [b, head, i, 0];
            if r == 3 {
                idx = [head, i, 0, 0];
            }
            let off: usize = idx.iter().zip(&st).map(|(x, s)| x * s).sum();
            let mut vals = vec![0.0f32; keys];
            // SAFETY: the mask view is validated and broadcasts to the score shape.
            unsafe { m.run(off, st[r - 1]).load(&mut vals) };
            vals
        });
        // SAFETY: rows of validated views; each output row is written by one task only.
        unsafe {
            q.run(q.row_offset(row), q.col_stride()).load(&mut qv);
            let kv = KvHead {
                k: (k.ptr.0 as *const f32).add(kv_off(k)),
                k_rs: k.strides[r - 2],
                v: (v.ptr.0 as *const f32).add(kv_off(v)),
                v_rs: v.strides[r - 2],
            };
            attend_row(&qv, kv, mask_row.as_deref(), scale, &mut scores, &mut o);
            out.run(out.row_offset(row), out.col_stride()).store(&o);
        }
    });
}
