//! Rotary position embedding on x [.., seq, heads, head_dim]: row (.., s, h) is rotated by
//! angles (rope_position + s) * theta^(-2i/head_dim), pairing either the two halves of the
//! row (GPT-NeoX / Llama) or neighbours (GPT-J, `interleaved`).

use super::super::host::HostView;
use super::rows::map_rows;

pub struct RopeParams {
    pub theta: f32,
    pub position: u32,
    pub interleaved: bool,
}

/// cos and sin of every (position, pair) angle, computed in f64 so large positions keep
/// their precision; shared by all heads and batches.
fn angle_table(seq: usize, half: usize, p: &RopeParams) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    let inv_freq: Vec<f64> =
        (0..half).map(|i| (p.theta as f64).powf(-2.0 * i as f64 / (2 * half) as f64)).collect();
    for s in 0..seq {
        let pos = p.position as f64 + s as f64;
        for f in &inv_freq {
            let (sn, cs) = (pos * f).sin_cos();
            cos.push(cs as f32);
            sin.push(sn as f32);
        }
    }
    (cos, sin)
}

pub fn rope(out: &HostView, x: &HostView, p: &RopeParams, in_place: bool) {
    let r = x.rank;
    let (seq, heads, dim) = (x.shape[r - 3], x.shape[r - 2], x.shape[r - 1]);
    let half = dim / 2;
    let (cos, sin) = angle_table(seq, half, p);
    map_rows(out, x, in_place, |row, v| {
        let s = (row / heads) % seq;
        let (c, sn) = (&cos[s * half..][..half], &sin[s * half..][..half]);
        if p.interleaved {
            for (i, pair) in v.chunks_exact_mut(2).enumerate() {
                let (x1, x2) = (pair[0], pair[1]);
                pair[0] = x1 * c[i] - x2 * sn[i];
                pair[1] = x1 * sn[i] + x2 * c[i];
            }
        } else {
            let (lo, hi) = v.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (lo[i], hi[i]);
                lo[i] = x1 * c[i] - x2 * sn[i];
                hi[i] = x1 * sn[i] + x2 * c[i];
            }
        }
    });
}
