//! Parallel iteration over the elements of an output view and up to two inputs of the same
//! logical shape (inputs may broadcast with stride 0). Dims are coalesced where all views
//! allow it, so dense tensors become one long run split into cache-sized blocks.

use super::super::host::{HostView, Run};
use crate::op::MAX_RANK;
use rayon::prelude::*;

/// Elements per rayon task: big enough to hide scheduling, small enough to balance.
pub const TASK_ELEMS: usize = 32 * 1024;
/// Elements per block handed to the callback (its scratch fits in L1).
pub const BLOCK: usize = 1024;

/// Operand 0 is the output; absent inputs get stride 0 everywhere.
const OPERANDS: usize = 3;

/// Coalesced iteration space: outer dims (size, per-operand strides), then the inner run.
struct Space {
    outer: Vec<(usize, [usize; OPERANDS])>,
    inner: usize,
    inner_strides: [usize; OPERANDS],
}

fn coalesce(dims: &[usize], strides: &[[usize; MAX_RANK]; OPERANDS]) -> Space {
    let mut merged: Vec<(usize, [usize; OPERANDS])> = Vec::new();
    for (i, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let st = [strides[0][i], strides[1][i], strides[2][i]];
        if let Some(prev) = merged.last_mut() {
            if (0..OPERANDS).all(|o| prev.1[o] == st[o] * d) {
                prev.0 *= d;
                prev.1 = st;
                continue;
            }
        }
        merged.push((d, st));
    }
    let (inner, inner_strides) = merged.pop().unwrap_or((1, [0; OPERANDS]));
    Space { outer: merged, inner, inner_strides }
}

impl Space {
    fn rows(&self) -> usize {
        self.outer.iter().map(|(d, _)| d).product()
    }

    fn row_offsets(&self, mut r: usize) -> [usize; OPERANDS] {
        let mut off = [0; OPERANDS];
        for (d, st) in self.outer.iter().rev() {
            let i = r % d;
            r /= d;
            for o in 0..OPERANDS {
                off[o] += i * st[o];
            }
        }
        off
    }
}

/// Calls `f(out, a, b, len)` on runs of at most `BLOCK` elements covering `out`, in parallel
/// on the current rayon pool. `a` and `b` broadcast to `out`'s shape.
pub fn for_each_block<F>(out: &HostView, a: &HostView, b: Option<&HostView>, f: F)
where
    F: Fn(Run, Run, Option<Run>, usize) + Sync,
{
    let dims = out.dims();
    let strides = [
        out.broadcast_strides(dims),
        a.broadcast_strides(dims),
        b.map(|b| b.broadcast_strides(dims)).unwrap_or([0; MAX_RANK]),
    ];
    let space = coalesce(dims, &strides);
    let chunk = space.inner.min(TASK_ELEMS);
    let chunks_per_row = space.inner.div_ceil(chunk);
    let tasks = space.rows() * chunks_per_row;
    let run_task = |t: usize| {
        let row = t / chunks_per_row;
        let start = (t % chunks_per_row) * chunk;
        let len = chunk.min(space.inner - start);
        let base = space.row_offsets(row);
        let st = space.inner_strides;
        let mut done = 0;
        while done < len {
            let n = BLOCK.min(len - done);
            let at = |o: usize| base[o] + (start + done) * st[o];
            f(out.run(at(0), st[0]), a.run(at(1), st[1]), b.map(|b| b.run(at(2), st[2])), n);
            done += n;
        }
    };
    if tasks * chunk <= TASK_ELEMS {
        (0..tasks).for_each(run_task);
    } else {
        (0..tasks).into_par_iter().with_min_len((TASK_ELEMS / chunk).max(1)).for_each(run_task);
    }
}

/// Calls `f(row)` for every row index in `0..rows`, in parallel once the work
/// (`rows * row_len` elements) is worth splitting.
pub fn for_each_row<F>(rows: usize, row_len: usize, f: F)
where
    F: Fn(usize) + Sync + Send,
{
    if rows * row_len <= TASK_ELEMS || rows == 1 {
        (0..rows).for_each(f);
    } else {
        (0..rows).into_par_iter().with_min_len((TASK_ELEMS / row_len.max(1)).max(1)).for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_dims_coalesce_into_one_run() {
        let s = coalesce(&[2, 3, 4], &[[12, 4, 1, 0], [12, 4, 1, 0], [0, 4, 1, 0]]);
        assert_eq!(s.inner, 12);
        assert_eq!(s.outer.len(), 1);
        assert_eq!(s.outer[0], (2, [12, 12, 0]));
    }

    #[test]
    fn transposed_views_do_not_coalesce() {
        let s = coalesce(&[3, 4], &[[4, 1, 0, 0], [1, 3, 0, 0], [0; 4]]);
        assert_eq!((s.inner, s.inner_strides), (4, [1, 3, 0]));
        assert_eq!(s.row_offsets(2), [8, 2, 0]);
    }
}
