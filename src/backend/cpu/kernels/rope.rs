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

/// Positions between exact sin/cos evaluations; in between, angles advance by one rotation
/// per position (complex multiply in f64: drift stays ~1e-14, far below f32 precision).
const RESYNC: usize = 32;

/// cos and sin of every (position, pair) angle, shared by all heads and batches. A libm
/// sin_cos per entry would cost more than rotating the tensor itself.
fn angle_table(seq: usize, half: usize, p: &RopeParams) -> (Vec<f32>, Vec<f32>) {
    let mut cos = vec![0.0f32; seq * half];
    let mut sin = vec![0.0f32; seq * half];
    for i in 0..half {
        let freq = (p.theta as f64).powf(-2.0 * i as f64 / (2 * half) as f64);
        let (step_s, step_c) = freq.sin_cos();
        let (mut s, mut c) = (0.0, 1.0);
        for pos in 0..seq {
            if pos % RESYNC == 0 {
                (s, c) = ((p.position as f64 + pos as f64) * freq).sin_cos();
            } else {
                (s, c) = (s * step_c + c * step_s, c * step_c - s * step_s);
            }
            cos[pos * half + i] = c as f32;
            sin[pos * half + i] = s as f32;
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
