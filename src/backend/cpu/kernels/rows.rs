//! Row-wise ops (softmax, norms, rope) work on one last-dim row at a time: the row is loaded
//! into the output (dense f32) or a scratch row, transformed in place, then stored.

use super::super::host::HostView;
use super::iter::for_each_row;
use super::vmath::Dense;
use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f(row, values)` for every row of `x`, where `values` holds the row as f32 and is
/// written back to the same row of `out`. `in_place`: `x` is the output view itself.
pub fn map_rows<F>(out: &HostView, x: &HostView, in_place: bool, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let len = out.last();
    // Evenly spaced rows (the common case) need no division per dim to find.
    let (out_step, x_step) = (out.row_stride(), x.row_stride());
    for_each_row(out.rows(), len, |r| {
        let o = out.run(out_step.map_or_else(|| out.row_offset(r), |s| r * s), out.col_stride());
        let xr = x.run(x_step.map_or_else(|| x.row_offset(r), |s| r * s), x.col_stride());
        // SAFETY: rows of validated views; each row is handled by one task only, and `x`
        // either does not overlap `out` or is exactly `out`.
        unsafe {
            match o.as_f32_mut(len) {
                Some(slot) => {
                    if !in_place {
                        xr.load(slot);
                    }
                    f(r, slot);
                }
                None => SCRATCH.with(|s| {
                    let mut s = s.borrow_mut();
                    s.resize(len, 0.0);
                    xr.load(&mut s);
                    f(r, &mut s);
                    o.store(&s);
                }),
            }
        }
    });
}

/// Calls `f(row, out_row, x_row)` with the dense start of every row of `out` and `x` (for
/// the fused streams, which read x and write out in one pass) and returns true, or returns
/// false when some row is not contiguous.
pub fn stream_rows<F>(out: &HostView, x: &HostView, f: F) -> bool
where
    F: Fn(usize, Dense, Dense) + Sync + Send,
{
    let len = out.last();
    if len > 1 && (out.col_stride() != 1 || x.col_stride() != 1) {
        return false;
    }
    let (out_step, x_step) = (out.row_stride(), x.row_stride());
    let at = |v: &HostView, step: Option<usize>, r: usize| {
        let off = step.map_or_else(|| v.row_offset(r), |s| r * s);
        Dense { ptr: v.ptr.0.wrapping_add(off * v.dtype.size()), dtype: v.dtype }
    };
    for_each_row(out.rows(), len, |r| f(r, at(out, out_step, r), at(x, x_step, r)));
    true
}

/// Independent accumulators of the reductions: 64 lanes are 4 zmm (or 8 ymm) registers, so
/// the loop vectorises without fast-math and is not one long chain of dependent adds (a
/// single 8-lane accumulator made softmax's max and sum passes latency bound: 4 cycles per
/// 8 elements, more than the exp pass).
const LANES: usize = 64;

/// Sum of `f(x)` over the slice, vectorised with `LANES` accumulators.
#[inline(always)]
fn reduce_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    reduce_sum(x, |v| v)
}

/// Sum of squared deviations from `mean`.
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    reduce_sum(x, |v| (v - mean) * (v - mean))
}

/// Sum of squares.
#[inline(always)]
pub fn sum_sq(x: &[f32]) -> f32 {
    reduce_sum(x, |v| v * v)
}

#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}
