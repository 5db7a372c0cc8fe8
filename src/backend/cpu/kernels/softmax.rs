//! Numerically stable softmax along the last dim.

use super::super::host::HostView;
use super::super::simd::dispatch_avx2;
use super::math;
use super::rows::{map_rows, max, sum};

dispatch_avx2! {
    /// softmax of one row in place: exp(x - max) / sum.
    pub fn softmax_row<FMA>(x: &mut [f32]) {
        let m = max(x);
        for v in x.iter_mut() {
            *v = math::exp::<FMA>(*v - m);
        }
        let inv = 1.0 / sum(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

pub fn softmax(out: &HostView, x: &HostView, in_place: bool) {
    map_rows(out, x, in_place, |_, row| softmax_row(row));
}
