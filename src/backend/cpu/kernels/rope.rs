//! Rotary position embedding on x [.., seq, heads, head_dim]: row (.., s, h) is rotated by
//! angles (rope_position + s) * theta^(-2i/head_dim), pairing either the two halves of the
//! row (GPT-NeoX / Llama) or neighbours (GPT-J, `interleaved`).

use super::super::host::HostView;
use super::super::simd::dispatch_avx2;
use super::iter::TASK_ELEMS;
use super::rows::{map_rows, stream_rows};
use super::vmath;
use rayon::prelude::*;
use std::sync::Arc;

pub struct RopeParams {
    pub theta: f32,
    pub position: u32,
    pub interleaved: bool,
}

/// Positions between exact sin/cos evaluations; in between, angles advance by one rotation
/// per position (complex multiply in f64: drift stays ~1e-14, far below f32 precision).
const RESYNC: usize = 32;

/// cos and sin of every (position, pair) angle, shared by all heads and batches. A libm
/// sin_cos per entry would cost more than rotating the tensor itself.
fn angle_table(seq: usize, half: usize, p: &RopeParams) -> (Vec<f32>, Vec<f32>) {
    let mut cos = vec![0.0f32; seq * half];
    let mut sin = vec![0.0f32; seq * half];
    let inv_freq: Vec<f64> =
        (0..half).map(|i| (p.theta as f64).powf(-2.0 * i as f64 / (2 * half) as f64)).collect();
    // Each block of RESYNC positions starts from exact values, so blocks are independent.
    let block = |(b, (cb, sb)): (usize, (&mut [f32], &mut [f32]))| {
        for (i, f) in inv_freq.iter().enumerate() {
            let (step_s, step_c) = f.sin_cos();
            let (mut s, mut c) = ((p.position as f64 + (b * RESYNC) as f64) * f).sin_cos();
            for pos in 0..cb.len() / half {
                cb[pos * half + i] = c as f32;
                sb[pos * half + i] = s as f32;
                (s, c) = (s * step_c + c * step_s, c * step_c - s * step_s);
            }
        }
    };
    let chunk = RESYNC * half;
    if seq * half <= TASK_ELEMS {
        cos.chunks_mut(chunk).zip(sin.chunks_mut(chunk)).enumerate().for_each(block);
    } else {
        cos.par_chunks_mut(chunk).zip(sin.par_chunks_mut(chunk)).enumerate().for_each(block);
    }
    (cos, sin)
}

dispatch_avx2! {
    /// Rotates one row in place by the angles whose cos / sin are `c` / `s`.
    fn rotate_row(v: &mut [f32], c: &[f32], s: &[f32], interleaved: bool) {
        if interleaved {
            for ((pair, c), s) in v.chunks_exact_mut(2).zip(c).zip(s) {
                let (x1, x2) = (pair[0], pair[1]);
                pair[0] = x1 * c - x2 * s;
                pair[1] = x1 * s + x2 * c;
            }
        } else {
            let (lo, hi) = v.split_at_mut(c.len());
            for (((x1, x2), c), s) in lo.iter_mut().zip(hi.iter_mut()).zip(c).zip(s) {
                let (a, b) = (*x1, *x2);
                *x1 = a * c - b * s;
                *x2 = a * s + b * c;
            }
        }
    }
}

/// What an angle table depends on: positions, pairs, theta (bits) and the first position.
type TableKey = (usize, usize, u32, u32);
/// cos and sin, seq x half each.
type Table = Arc<(Vec<f32>, Vec<f32>)>;

/// The last table built: every layer of a forward pass rotates the same positions, so the
/// table is built once per pass instead of twice per layer (it cost about a third of a rope
/// over [1024, 8, 128]).
static LAST_TABLE: parking_lot::Mutex<Option<(TableKey, Table)>> = parking_lot::Mutex::new(None);

fn cached_table(seq: usize, half: usize, p: &RopeParams) -> Table {
    let key = (seq, half, p.theta.to_bits(), p.position);
    if let Some((k, t)) = LAST_TABLE.lock().as_ref() {
        if *k == key {
            return Arc::clone(t);
        }
    }
    let table = Arc::new(angle_table(seq, half, p));
    *LAST_TABLE.lock() = Some((key, Arc::clone(&table)));
    table
}

pub fn rope(out: &HostView, x: &HostView, p: &RopeParams, in_place: bool) {
    let r = x.rank;
    let (seq, heads, dim) = (x.shape[r - 3], x.shape[r - 2], x.shape[r - 1]);
    let half = dim / 2;
    let table = cached_table(seq, half, p);
    let (cos, sin) = (&table.0, &table.1);
    // Halves paired, contiguous rows, AVX2 / AVX-512: rotated from x into out in one pass.
    if !p.interleaved
        && dim % 2 == 0
        && vmath::level().is_some()
        && stream_rows(out, x, |row, o, xr| {
            let pos = (row / heads) % seq;
            // SAFETY: rows of validated views, one task each; the tables hold seq x half.
            let done = unsafe {
                vmath::rope_row(o, xr, half, cos[pos * half..].as_ptr(), sin[pos * half..].as_ptr())
            };
            debug_assert!(done, "float rows, vector level checked");
        })
    {
        return;
    }
    map_rows(out, x, in_place, |row, v| {
        let pos = (row / heads) % seq;
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        rotate_row(v, c, s, p.interleaved);
    });
}
