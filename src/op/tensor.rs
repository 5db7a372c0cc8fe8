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
        self.numel() * self.dtype.size()
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
        let esize = self.dtype.size();
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
            .and_then(|n| n.checked_mul(esize))
            .and_then(|n| n.checked_add(self.offset))
            .ok_or_else(|| Error::invalid(format!("{what}: view extent overflows")))?;
        if end > buffer_len {
            return Err(Error::invalid(format!(
                "{what}: view reaches byte {end} but its buffer holds {buffer_len} bytes"
            )));
        }
        Ok(())
    }

    /// Byte range [start, end) of the buffer this view may touch (for hazard tracking).
    pub fn byte_range(&self) -> (usize, usize) {
        let last: usize = self.dims().iter().zip(self.strides()).map(|(&d, &s)| (d - 1) * s).sum();
        (self.offset, self.offset + (last + 1) * self.dtype.size())
    }
}

pub fn dense_strides(dims: &[usize]) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let mut acc = 1;
    for i in (0..dims.len()).rev() {
        strides[i] = acc;
        acc *= dims[i];
    }
    strides
}
