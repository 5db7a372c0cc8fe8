//! Views resolved to host pointers, and moving their elements in and out of f32 scratch.
//!
//! Every kernel computes in f32. Views of other dtypes or with a non-unit inner stride go
//! through small scratch blocks; dense f32 views are used in place.

use super::halfconv;
use super::scratch::Scratch;
use crate::backend::OpMemory;
use crate::error::Result;
use crate::op::{DType, TensorView, MAX_RANK};
use half::{bf16, f16};
use rayon::prelude::*;

/// A raw pointer that may cross rayon tasks. Tasks only touch disjoint elements of outputs,
/// which the op's validation (no overlap unless the very same view) makes possible.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut u8);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer as f32 (a method, so closures capture the Sync wrapper, not the field).
    #[inline]
    #[allow(dead_code)]
    pub fn f32(self) -> *mut f32 {
        self.0 as *mut f32
    }
}

/// A tensor view with its buffer resolved: element `idx` lives at `ptr + (idx . strides) * size`.
#[derive(Clone, Copy)]
pub(crate) struct HostView {
    pub ptr: SendPtr,
    pub dtype: DType,
    pub rank: usize,
    pub shape: [usize; MAX_RANK],
    pub strides: [usize; MAX_RANK],
}

impl HostView {
    pub fn new(view: &TensorView, mem: &OpMemory) -> Result<HostView> {
        Ok(HostView {
            ptr: SendPtr(mem.ptr(view)?),
            dtype: view.dtype,
            rank: view.rank,
            shape: view.shape,
            strides: view.strides,
        })
    }

    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.rank]
    }

    pub fn last(&self) -> usize {
        self.shape[self.rank - 1]
    }

    pub fn col_stride(&self) -> usize {
        self.strides[self.rank - 1]
    }

    pub fn rows(&self) -> usize {
        self.dims()[..self.rank - 1].iter().product()
    }

    /// Element offset of row `r`, rows being all dims but the last in row-major order.
    pub fn row_offset(&self, mut r: usize) -> usize {
        let mut off = 0;
        for d in (0..self.rank - 1).rev() {
            off += (r % self.shape[d]) * self.strides[d];
            r /= self.shape[d];
        }
        off
    }

    /// The element distance between consecutive rows when every row is that far from the
    /// previous one (all dims but the last collapse into one), so `row_offset(r)` is
    /// `r * stride` without a division per dim.
    pub fn row_stride(&self) -> Option<usize> {
        let mut step: Option<usize> = None;
        let mut inner_rows = 1;
        for d in (0..self.rank.saturating_sub(1)).rev() {
            if self.shape[d] == 1 {
                continue;
            }
            match step {
                None => step = Some(self.strides[d]),
                Some(s) if self.strides[d] != s * inner_rows => return None,
                Some(_) => {}
            }
            inner_rows *= self.shape[d];
        }
        Some(step.unwrap_or(0))
    }

    /// Strides of this view right-aligned to `dims`, 0 along dims it broadcasts over.
    pub fn broadcast_strides(&self, dims: &[usize]) -> [usize; MAX_RANK] {
        let mut out = [0; MAX_RANK];
        let skip = dims.len() - self.rank;
        for (i, s) in out.iter_mut().enumerate().take(dims.len()).skip(skip) {
            let j = i - skip;
            if self.shape[j] != 1 {
                *s = self.strides[j];
            }
        }
        out
    }

    /// The elements from offset `off` on, `stride` apart (callers say how many they touch).
    pub fn run(&self, off: usize, stride: usize) -> Run {
        Run { ptr: self.ptr, dtype: self.dtype, off, stride }
    }
}

/// One strided run of elements of a view: the unit loads and stores work on.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    pub ptr: SendPtr,
    pub dtype: DType,
    pub off: usize,
    pub stride: usize,
}

impl Run {
    /// The run as a dense f32 slice of `len`, when it is one.
    ///
    /// # Safety
    /// The elements must be valid and not written by anyone else while the slice lives.
    pub unsafe fn as_f32<'a>(&self, len: usize) -> Option<&'a [f32]> {
        (self.dtype == DType::F32 && (self.stride == 1 || len == 1))
            .then(|| std::slice::from_raw_parts((self.ptr.0 as *const f32).add(self.off), len))
    }

    /// # Safety
    /// As `as_f32`, and no one else may read or write these elements while the slice lives.
    pub unsafe fn as_f32_mut<'a>(&self, len: usize) -> Option<&'a mut [f32]> {
        (self.dtype == DType::F32 && (self.stride == 1 || len == 1))
            .then(|| std::slice::from_raw_parts_mut((self.ptr.0 as *mut f32).add(self.off), len))
    }

    /// First byte of a quantized run. Validated quantized views put every run that the
    /// kernels cut (rows, 1024-element blocks) on block boundaries, dense along the blocks.
    fn block_ptr(&self, n: usize) -> *mut u8 {
        let be = self.dtype.block_elems();
        assert!(self.stride == 1 && self.off % be == 0 && n % be == 0, "quantized run splits a block");
        // SAFETY (of the caller's access): the run lies in its validated view.
        self.ptr.0.wrapping_add(self.dtype.bytes_of(self.off))
    }

    /// Reads `dst.len()` elements as f32.
    ///
    /// # Safety
    /// The run must lie inside its (validated) view.
    pub unsafe fn load(&self, dst: &mut [f32]) {
        let n = dst.len();
        let s = self.stride;
        match self.dtype {
            DType::F32 => {
                let p = (self.ptr.0 as *const f32).add(self.off);
                if s == 1 {
                    dst.copy_from_slice(std::slice::from_raw_parts(p, n));
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = *p.add(i * s);
                    }
                }
            }
            DType::F16 => {
                let p = (self.ptr.0 as *const f16).add(self.off);
                if s == 1 {
                    halfconv::f16_to_f32(std::slice::from_raw_parts(p, n), dst);
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = (*p.add(i * s)).to_f32();
                    }
                }
            }
            DType::BF16 => {
                let p = (self.ptr.0 as *const bf16).add(self.off);
                if s == 1 {
                    halfconv::bf16_to_f32(std::slice::from_raw_parts(p, n), dst);
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = (*p.add(i * s)).to_f32();
                    }
                }
            }
            DType::I8 => {
                let p = (self.ptr.0 as *const i8).add(self.off);
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = *p.add(i * s) as f32;
                }
            }
            DType::I32 => {
                let p = (self.ptr.0 as *const i32).add(self.off);
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = *p.add(i * s) as f32;
                }
            }
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4G128 => {
                let src = std::slice::from_raw_parts(self.block_ptr(n), self.dtype.bytes_of(n));
                crate::quant::dequantize_row(self.dtype, src, dst);
            }
        }
    }

    /// Writes `src` (rounded to the run's dtype; ints saturate, NaN becomes 0).
    ///
    /// # Safety
    /// The run must lie inside its (validated) view and no one else may touch these elements.
    pub unsafe fn store(&self, src: &[f32]) {
        let n = src.len();
        let s = self.stride;
        match self.dtype {
            DType::F32 => {
                let p = (self.ptr.0 as *mut f32).add(self.off);
                if s == 1 {
                    std::slice::from_raw_parts_mut(p, n).copy_from_slice(src);
                } else {
                    for (i, v) in src.iter().enumerate() {
                        *p.add(i * s) = *v;
                    }
                }
            }
            DType::F16 => {
                let p = (self.ptr.0 as *mut f16).add(self.off);
                if s == 1 {
                    halfconv::f32_to_f16(src, std::slice::from_raw_parts_mut(p, n));
                } else {
                    for (i, v) in src.iter().enumerate() {
                        *p.add(i * s) = f16::from_f32(*v);
                    }
                }
            }
            DType::BF16 => {
                let p = (self.ptr.0 as *mut bf16).add(self.off);
                if s == 1 {
                    halfconv::f32_to_bf16(src, std::slice::from_raw_parts_mut(p, n));
                } else {
                    for (i, v) in src.iter().enumerate() {
                        *p.add(i * s) = bf16::from_f32(*v);
                    }
                }
            }
            DType::I8 => {
                let p = (self.ptr.0 as *mut i8).add(self.off);
                for (i, v) in src.iter().enumerate() {
                    *p.add(i * s) = *v as i8;
                }
            }
            DType::I32 => {
                let p = (self.ptr.0 as *mut i32).add(self.off);
                for (i, v) in src.iter().enumerate() {
                    *p.add(i * s) = *v as i32;
                }
            }
            DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4G128 => {
                let dst = std::slice::from_raw_parts_mut(self.block_ptr(n), self.dtype.bytes_of(n));
                crate::quant::quantize_row(self.dtype, src, dst);
            }
        }
    }
}

/// Loads a whole view densely (row-major) as f32, converting rows in parallel.
pub(crate) fn load_dense(view: &HostView) -> Scratch {
    let len = view.last();
    let mut out = Scratch::new(view.rows() * len);
    let rows_per_task = (32 * 1024 / len).max(1);
    let load_rows = |(t, chunk): (usize, &mut [f32])| {
        for (i, row) in chunk.chunks_mut(len).enumerate() {
            let r = t * rows_per_task + i;
            // SAFETY: the view was validated against its buffer.
            unsafe { view.run(view.row_offset(r), view.col_stride()).load(row) };
        }
    };
    if out.len() <= rows_per_task * len {
        load_rows((0, &mut out));
    } else {
        out.par_chunks_mut(rows_per_task * len).enumerate().for_each(load_rows);
    }
    out
}

/// A dense row-major f32 copy of a view, and a view describing it.
pub(crate) struct DenseCopy {
    _data: Scratch,
    pub view: HostView,
}

pub(crate) fn dense_copy(v: &HostView) -> DenseCopy {
    let mut data = load_dense(v);
    let mut view = *v;
    view.dtype = DType::F32;
    view.ptr = SendPtr(data.as_mut_ptr() as *mut u8);
    view.strides = crate::op::dense_strides(v.dims());
    DenseCopy { _data: data, view }
}
