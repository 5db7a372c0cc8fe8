//! Numerically stable softmax along the last dim.

use super::super::host::HostView;
use super::super::simd::dispatch_avx2;
use super::math;
use super::rows::{map_rows, max, stream_rows, sum};
use super::vmath;
use std::cell::RefCell;

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

thread_local! {
    /// exp values of a row whose output is not f32 (rounded once, at the end).
    static EXPS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub fn softmax(out: &HostView, x: &HostView, in_place: bool) {
    let len = out.last();
    // Contiguous rows on AVX2 / AVX-512: one fused pass over memory per row.
    if vmath::level().is_some()
        && stream_rows(out, x, |_, o, xr| {
            EXPS.with(|t| {
                let mut t = t.borrow_mut();
                t.resize(len, 0.0);
                // SAFETY: rows of validated views, each handled by one task; x is out or disjoint.
                let done = unsafe { vmath::softmax_row(o, xr, len, t.as_mut_ptr()) };
                debug_assert!(done, "float rows, vector level checked");
            })
        })
    {
        return;
    }
    map_rows(out, x, in_place, |_, row| softmax_row(row));
}
