//! Tensor views: a typed, shaped, strided window into a buffer.

use super::DType;
use crate::error::{Error, Result};
use crate::memory::BufferId;

pub const MAX_RANK: usize = 4;

/// A view into a buffer. Shape and strides are in elements, `offset` in bytes.
/// Unused trailing dimensions (index >= rank) are ignored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorView {
    pub buffer: BufferId,
    pub dtype: DType,
    pub rank: usize,
    pub shape: [usize; MAX_RANK],
    pub strides: [usize; MAX_RANK],
    pub offset: usize,
}

impl TensorView {
    /// A dense row-major view of `shape` starting at byte `offset`.
    pub fn contiguous(buffer: BufferId, dtype: DType, shape: &[usize], offset: usize) -> TensorView {
        assert!(!shape.is_empty() && shape.len() <= MAX_RANK, "rank must be 1..=4");
        let mut v = TensorView {
            buffer,
            dtype,
            rank: shape.len(),
            shape: [1; MAX_RANK],
            strides: [0; MAX_RANK],
            offset,
        };
        v.shape[..shape.len()].copy_from_slice(shape);
        v.strides = dense_strides(&v.shape[..v.rank]);
        v
    }

    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    pub fn strides(&self) -> &[usize] {
        &self.strides[..self.rank]
    }

    /// Number of elements (checked at validation, so this cannot overflow afterwards).
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.dtype.bytes_of(self.numel())
    }

    /// Size of the last dimension (rows are along it).
    pub fn last(&self) -> usize {
        self.shape[self.rank - 1]
    }

    /// Product of all dimensions but the last.
    pub fn rows(&self) -> usize {
        self.dims()[..self.rank - 1].iter().product()
    }

    pub fn is_contiguous(&self) -> bool {
        self.strides() == &dense_strides(self.dims())[..self.rank]
    }

    /// Checks the view: rank, overflow-free shape, alignment and that every element lies
    /// inside a buffer of `buffer_len` bytes. `what` names the argument in the error.
    pub fn validate(&self, what: &str, buffer_len: usize) -> Result<()> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(Error::invalid(format!("{what}: rank {} is not in 1..=4", self.rank)));
        }
        // Element count and size in bytes (`bytes()`) must both fit in a usize.
        let mut numel: usize = 1;
        for &d in self.dims().iter().chain(&[self.dtype.size()]) {
            numel = numel
                .checked_mul(d)
                .ok_or_else(|| Error::invalid(format!("{what}: shape {:?} overflows", self.dims())))?;
        }
        if numel == 0 {
            return Err(Error::invalid(format!("{what}: shape {:?} has a zero dimension", self.dims())));
        }
        if self.dtype.is_quantized() {
            self.validate_blocks(what)?;
        }
        // Quantized blocks start with an f16 scale: 2-byte alignment, like f16.
        let esize = if self.dtype.is_quantized() { 2 } else { self.dtype.size() };
        if self.offset % esize != 0 {
            return Err(Error::invalid(format!(
                "{what}: byte offset {} is not aligned to {} ({})",
                self.offset, esize, self.dtype
            )));
        }
        // Largest element index reached, computed with overflow checks.
        let mut last: usize = 0;
        for (&d, &s) in self.dims().iter().zip(self.strides()) {
            let reach = (d - 1)
                .checked_mul(s)
                .ok_or_else(|| Error::invalid(format!("{what}: strides {:?} overflow", self.strides())))?;
            last = last
                .checked_add(reach)
                .ok_or_else(|| Error::invalid(format!("{what}: strides {:?} overflow", self.strides())))?;
        }
        let end = last
            .checked_add(1)
            .and_then(|n| self.dtype.checked_bytes_of(n))
            .and_then(|n| n.checked_add(self.offset))
            .ok_or_else(|| Error::invalid(format!("{what}: view extent overflows")))?;
        if end > buffer_len {
            return Err(Error::invalid(format!(
                "{what}: view reaches byte {end} but its buffer holds {buffer_len} bytes"
            )));
        }
        Ok(())
    }

    /// Quantized views hold whole blocks: blocks run along the last dimension (stride 1, a
    /// whole number of blocks), and every other stride steps over whole blocks, so no view
    /// starts or strides inside a block.
    fn validate_blocks(&self, what: &str) -> Result<()> {
        let (be, dt) = (self.dtype.block_elems(), self.dtype);
        let r = self.rank;
        if self.last() % be != 0 {
            return Err(Error::invalid(format!(
                "{what}: last dimension {} of a {dt} view is not a multiple of its block ({be})",
                self.last()
            )));
        }
        if self.strides[r - 1] != 1 {
            return Err(Error::invalid(format!(
                "{what}: a {dt} view's last dimension must have stride 1 (blocks run along it), got {}",
                self.strides[r - 1]
            )));
        }
        for i in 0..r - 1 {
            if self.shape[i] > 1 && self.strides[i] % be != 0 {
                return Err(Error::invalid(format!(
                    "{what}: stride {} of dimension {i} splits a {dt} block of {be} elements",
                    self.strides[i]
                )));
            }
        }
        Ok(())
    }

    /// Whether no two elements of the (validated) view share an address. Outputs must be
    /// such views: an output with a zero or interleaving stride would be written more than
    /// once per element (by several threads at once in parallel kernels), and could describe
    /// far more elements than its buffer holds, an op that runs for hours on 64 bytes.
    /// Sufficient test: sorted by stride, each dimension steps over everything the smaller
    /// ones reach (rejects a few exotic interleaved layouts that would be injective).
    pub fn is_non_overlapping(&self) -> bool {
        let mut dims: [(usize, usize); MAX_RANK] = [(0, 0); MAX_RANK];
        let mut n = 0;
        for (&d, &s) in self.dims().iter().zip(self.strides()) {
            if d > 1 {
                dims[n] = (s, d);
                n += 1;
            }
        }
        dims[..n].sort_unstable();
        let mut reach: usize = 1; // elements spanned by the dimensions with smaller strides
        for &(s, d) in &dims[..n] {
            if s < reach {
                return false;
            }
            // Cannot overflow: validation bounded (d - 1) * s and their sum by the buffer.
            reach = match (d - 1).checked_mul(s).and_then(|r| r.checked_add(reach)) {
                Some(r) => r,
                None => return false,
            };
        }
        true
    }

    /// Byte range [start, end) of the buffer this view may touch (for hazard tracking).
    pub fn byte_range(&self) -> (usize, usize) {
        let last: usize = self.dims().iter().zip(self.strides()).map(|(&d, &s)| (d - 1) * s).sum();
        (self.offset, self.offset + self.dtype.bytes_of(last + 1))
    }
}

/// Row-major strides of `dims`. Runs on caller shapes before validation (the C boundary
/// fills in dense strides first): a shape whose product overflows saturates instead of
/// panicking, and validation then rejects it as overflowing.
pub fn dense_strides(dims: &[usize]) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let mut acc: usize = 1;
    for i in (0..dims.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(dims[i]);
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::DType;

    fn view(shape: &[usize], strides: &[usize]) -> TensorView {
        let mut v = TensorView {
            buffer: 1,
            dtype: DType::F32,
            rank: shape.len(),
            shape: [1; MAX_RANK],
            strides: [0; MAX_RANK],
            offset: 0,
        };
        v.shape[..shape.len()].copy_from_slice(shape);
        v.strides[..strides.len()].copy_from_slice(strides);
        v
    }

    #[test]
    fn dense_transposed_and_padded_views_do_not_overlap() {
        assert!(view(&[4, 8], &[8, 1]).is_non_overlapping());
        assert!(view(&[4, 8], &[1, 4]).is_non_overlapping()); // transposed
        assert!(view(&[4, 8], &[16, 1]).is_non_overlapping()); // padded rows
        assert!(view(&[2, 3, 4, 5], &[60, 20, 5, 1]).is_non_overlapping());
        assert!(view(&[1, 1 << 40], &[0, 1]).is_non_overlapping()); // size-1 dims are free
    }

    #[test]
    fn dense_strides_of_overflowing_shapes_saturate_and_fail_validation() {
        let shape = [1 << 20; 4];
        let strides = dense_strides(&shape);
        assert_eq!(strides[3], 1);
        assert_eq!(strides[0], 1 << 60);
        let v = TensorView { strides, ..view(&shape, &[]) };
        assert!(v.validate("x", 64).unwrap_err().to_string().contains("overflows"));
        assert_eq!(dense_strides(&[usize::MAX, usize::MAX, 2])[0], usize::MAX);
    }

    #[test]
    fn zero_and_interleaved_strides_overlap() {
        assert!(!view(&[1, 1 << 40], &[1, 0]).is_non_overlapping());
        assert!(!view(&[4, 4], &[0, 1]).is_non_overlapping());
        assert!(!view(&[4, 8], &[4, 1]).is_non_overlapping()); // rows overlap by half
        assert!(!view(&[3, 3], &[1, 1]).is_non_overlapping());
    }
}
