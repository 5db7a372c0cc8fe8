//! Strided views are packed into dense rows on the host before upload and scattered back
//! after download, so every shader sees dense tensors. Dense views are one memcpy.

use crate::op::TensorView;

/// Copies the elements of `v` (based at `base`, the view's first byte) densely into `dst`.
///
/// # Safety
/// `base` must point at the view's first byte in a buffer that holds the whole view, and
/// `dst` must hold `v.bytes()` bytes.
pub unsafe fn pack(v: &TensorView, base: *const u8, dst: &mut [u8]) {
    let es = v.dtype.size();
    if v.is_contiguous() {
        std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr(), v.bytes());
        return;
    }
    let mut i = 0;
    for_each_offset(v, |off| {
        std::ptr::copy_nonoverlapping(base.add(off * es), dst.as_mut_ptr().add(i * es), es);
        i += 1;
    });
}

/// Scatters the dense `src` into the view `v` based at `base`.
///
/// # Safety
/// As for [`pack`], with `base` writable.
pub unsafe fn unpack(v: &TensorView, src: &[u8], base: *mut u8) {
    let es = v.dtype.size();
    if v.is_contiguous() {
        std::ptr::copy_nonoverlapping(src.as_ptr(), base, v.bytes());
        return;
    }
    let mut i = 0;
    for_each_offset(v, |off| {
        std::ptr::copy_nonoverlapping(src.as_ptr().add(i * es), base.add(off * es), es);
        i += 1;
    });
}

/// Element offsets of the view in row-major order.
fn for_each_offset(v: &TensorView, mut f: impl FnMut(usize)) {
    let mut shape = [1usize; 4];
    let mut strides = [0usize; 4];
    let pad = 4 - v.rank;
    shape[pad..].copy_from_slice(v.dims());
    strides[pad..].copy_from_slice(v.strides());
    for a in 0..shape[0] {
        for b in 0..shape[1] {
            for c in 0..shape[2] {
                let row = a * strides[0] + b * strides[1] + c * strides[2];
                for d in 0..shape[3] {
                    f(row + d * strides[3]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::DType;

    #[test]
    fn a_transposed_view_packs_and_unpacks() {
        // 2x3 view of a 3x2 row-major matrix read column-wise (a transpose).
        let host: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let mut v = TensorView::contiguous(1, DType::F32, &[2, 3], 0);
        v.strides[0] = 1;
        v.strides[1] = 2;
        let mut dense = vec![0u8; 24];
        unsafe { pack(&v, host.as_ptr() as *const u8, &mut dense) };
        let got: Vec<f32> = dense.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        let mut back = vec![0f32; 6];
        unsafe { unpack(&v, &dense, back.as_mut_ptr() as *mut u8) };
        assert_eq!(back, host);
    }
}
