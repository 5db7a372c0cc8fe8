//! rmsnorm and layernorm over the last dim, with optional per-channel weights.

use super::super::host::{load_dense, HostView};
use super::super::simd::dispatch_avx2;
use super::rows::{map_rows, sum, sum_sq, sum_sq_dev};

dispatch_avx2! {
    fn rmsnorm_row(x: &mut [f32], weight: Option<&[f32]>, eps: f32) {
        let ms = sum_sq(x) / x.len() as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        match weight {
            Some(w) => x.iter_mut().zip(w).for_each(|(v, w)| *v = *v * inv * w),
            None => x.iter_mut().for_each(|v| *v *= inv),
        }
    }
}

dispatch_avx2! {
    fn layernorm_row(x: &mut [f32], gamma: Option<&[f32]>, beta: Option<&[f32]>, eps: f32) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let inv = 1.0 / (sum_sq_dev(x, mean) / n + eps).sqrt();
        x.iter_mut().for_each(|v| *v = (*v - mean) * inv);
        if let Some(g) = gamma {
            x.iter_mut().zip(g).for_each(|(v, g)| *v *= g);
        }
        if let Some(b) = beta {
            x.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}

pub fn rmsnorm(out: &HostView, x: &HostView, weight: Option<&HostView>, eps: f32, in_place: bool) {
    let w = weight.map(load_dense);
    map_rows(out, x, in_place, |_, row| rmsnorm_row(row, w.as_deref(), eps));
}

pub fn layernorm(
    out: &HostView,
    x: &HostView,
    gamma: Option<&HostView>,
    beta: Option<&HostView>,
    eps: f32,
    in_place: bool,
) {
    let g = gamma.map(load_dense);
    let b = beta.map(load_dense);
    map_rows(out, x, in_place, |_, row| layernorm_row(row, g.as_deref(), b.as_deref(), eps));
}
