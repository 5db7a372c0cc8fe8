//! copy / convert between any dtypes. Floats convert through f32 (half's slice conversions);
//! copies that involve integers go element by element by value, so i32 stays exact.

use super::super::host::{HostView, Run};
use super::iter::{for_each_block, BLOCK};
use crate::op::DType;
use half::{bf16, f16};

pub fn copy(out: &HostView, a: &HostView) {
    // Quantized types (validated to pair with a float type or themselves) go through f32.
    let f32_able = |d: DType| d.is_float() || d.is_quantized();
    let floats = f32_able(out.dtype) && f32_able(a.dtype);
    for_each_block(out, a, None, |o, a, _, n| {
        // SAFETY: runs come from validated, non-overlapping views.
        unsafe {
            if o.dtype == a.dtype {
                copy_same(o, a, n);
            } else if floats {
                let mut scratch = [0.0f32; BLOCK];
                a.load(&mut scratch[..n]);
                o.store(&scratch[..n]);
            } else {
                for i in 0..n {
                    write_f64(o, i, read_f64(a, i));
                }
            }
        }
    });
}

/// # Safety
/// Both runs hold `n` valid elements of the same dtype and do not overlap.
unsafe fn copy_same(o: Run, a: Run, n: usize) {
    let size = o.dtype.size();
    let (src, dst) = (a.ptr.0.add(o.dtype.bytes_of(a.off)), o.ptr.0.add(o.dtype.bytes_of(o.off)));
    if o.stride == 1 && a.stride == 1 {
        // Whole blocks for quantized runs (dense along the blocks by validation).
        std::ptr::copy_nonoverlapping(src, dst, o.dtype.bytes_of(n));
    } else {
        for i in 0..n {
            std::ptr::copy_nonoverlapping(src.add(i * a.stride * size), dst.add(i * o.stride * size), size);
        }
    }
}

unsafe fn read_f64(r: Run, i: usize) -> f64 {
    let at = r.off + i * r.stride;
    match r.dtype {
        DType::F32 => *(r.ptr.0 as *const f32).add(at) as f64,
        DType::F16 => (*(r.ptr.0 as *const f16).add(at)).to_f64(),
        DType::BF16 => (*(r.ptr.0 as *const bf16).add(at)).to_f64(),
        DType::I8 => *(r.ptr.0 as *const i8).add(at) as f64,
        DType::I32 => *(r.ptr.0 as *const i32).add(at) as f64,
        // Validation pairs quantized types only with floats, which take the f32 path.
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4G128 => unreachable!("quantized element read"),
    }
}

/// Floats round to nearest; integers round toward zero and saturate, NaN becomes 0.
unsafe fn write_f64(r: Run, i: usize, v: f64) {
    let at = r.off + i * r.stride;
    match r.dtype {
        DType::F32 => *(r.ptr.0 as *mut f32).add(at) = v as f32,
        DType::F16 => *(r.ptr.0 as *mut f16).add(at) = f16::from_f64(v),
        DType::BF16 => *(r.ptr.0 as *mut bf16).add(at) = bf16::from_f64(v),
        DType::I8 => *(r.ptr.0 as *mut i8).add(at) = v as i8,
        DType::I32 => *(r.ptr.0 as *mut i32).add(at) = v as i32,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4G128 => unreachable!("quantized element write"),
    }
}
