//! Splitting a matmul into parts by output rows or columns. Each part is an ordinary op over
//! sub-views, so backends need not know about splitting, and parts write straight into
//! disjoint slices of the output.

use crate::op::{OpDesc, OpKind, TensorView};
use crate::policy::SplitAxis;

/// Sizes of `parts` consecutive chunks of `total` proportional to `weights`, each at least
/// `align` (except when `total` is smaller) and summing to `total`. Zero-sized chunks are
/// dropped by the caller.
pub fn chunk_sizes(total: usize, weights: &[f64], align: usize) -> Vec<usize> {
    let sum: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![total];
    }
    let mut sizes = Vec::with_capacity(weights.len());
    let mut given = 0usize;
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        let w = if w.is_finite() && *w > 0.0 { *w } else { 0.0 };
        acc += w;
        let end = if i + 1 == weights.len() {
            total
        } else {
            let raw = (acc / sum * total as f64).round() as usize;
            (raw / align * align).clamp(given, total)
        };
        sizes.push(end - given);
        given = end;
    }
    sizes
}

fn slice_dim(v: &TensorView, dim: usize, start: usize, len: usize) -> TensorView {
    let mut out = *v;
    // Quantized views: validation made every stride but the last a whole number of blocks,
    // and the last dimension (k of a quantized B) is never split.
    out.offset += v.dtype.bytes_of(start * v.strides[dim]);
    out.shape[dim] = len;
    out
}

/// The part of `op` computing output rows (or columns) `[start, start+len)`.
pub fn matmul_part(op: &OpDesc, axis: SplitAxis, start: usize, len: usize) -> OpDesc {
    debug_assert_eq!(op.kind, OpKind::Matmul);
    let mut part = op.clone();
    let c = op.output;
    match axis {
        SplitAxis::Rows => {
            let a = op.inputs[0].expect("validated");
            // Rows of op(A) are A's rows, or its columns when transposed.
            let a_dim = if op.params.trans_a { a.rank - 1 } else { a.rank - 2 };
            part.inputs[0] = Some(slice_dim(&a, a_dim, start, len));
            part.output = slice_dim(&c, c.rank - 2, start, len);
        }
        SplitAxis::Cols => {
            let b = op.inputs[1].expect("validated");
            let b_dim = if op.params.trans_b { b.rank - 2 } else { b.rank - 1 };
            part.inputs[1] = Some(slice_dim(&b, b_dim, start, len));
            part.output = slice_dim(&c, c.rank - 1, start, len);
            if let Some(bias) = op.inputs[2] {
                part.inputs[2] = Some(slice_dim(&bias, 0, start, len));
            }
        }
    }
    part
}

/// Length of the dimension an axis splits.
pub fn split_extent(op: &OpDesc, axis: SplitAxis) -> usize {
    let c = &op.output;
    match axis {
        SplitAxis::Rows => c.shape[c.rank - 2],
        SplitAxis::Cols => c.shape[c.rank - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_weights_and_cover_everything() {
        assert_eq!(chunk_sizes(100, &[1.0, 1.0], 1), vec![50, 50]);
        assert_eq!(chunk_sizes(100, &[3.0, 1.0], 1), vec![75, 25]);
        assert_eq!(chunk_sizes(7, &[1.0, 1.0, 1.0], 1).iter().sum::<usize>(), 7);
        assert_eq!(chunk_sizes(100, &[1.0, 1.0], 16), vec![48, 52]);
        assert_eq!(chunk_sizes(10, &[0.0, 1.0], 1), vec![0, 10]);
        assert_eq!(chunk_sizes(10, &[f64::NAN, 0.0], 1), vec![10]);
        for total in [1usize, 3, 17, 1000] {
            for w in [[0.1, 0.9], [0.5, 0.5], [0.99, 0.01]] {
                assert_eq!(chunk_sizes(total, &w, 1).iter().sum::<usize>(), total);
            }
        }
    }
}
