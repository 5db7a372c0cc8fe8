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
    for_each_run(v, |off, len| {
        std::ptr::copy_nonoverlapping(base.add(off * es), dst.as_mut_ptr().add(i * es), len * es);
        i += len;
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
    for_each_run(v, |off, len| {
        std::ptr::copy_nonoverlapping(src.as_ptr().add(i * es), base.add(off * es), len * es);
        i += len;
    });
}

/// Runs of contiguous elements of the view in row-major order, as (element offset, length):
/// whole rows where the last dim is contiguous (a head's slice of a fused QKV output is
/// 49K rows of 32 floats at 256 tokens x 16 sentences: one copy each, not one per element),
/// single elements otherwise.
fn for_each_run(v: &TensorView, mut f: impl FnMut(usize, usize)) {
    let mut shape = [1usize; 4];
    let mut strides = [0usize; 4];
    let pad = 4 - v.rank;
    shape[pad..].copy_from_slice(v.dims());
    strides[pad..].copy_from_slice(v.strides());
    let rows_contiguous = strides[3] == 1;
    for a in 0..shape[0] {
        for b in 0..shape[1] {
            for c in 0..shape[2] {
                let row = a * strides[0] + b * strides[1] + c * strides[2];
                if rows_contiguous {
                    f(row, shape[3]);
                } else {
                    for d in 0..shape[3] {
                        f(row + d * strides[3], 1);
                    }
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

    #[test]
    fn a_view_with_padded_rows_packs_and_unpacks_row_by_row() {
        // [2 heads, 3 rows, 2 dims] taken from a [3, 6] matrix: head h is columns 2h..2h+2,
        // skipping the last two columns (a slice of a fused projection's output).
        let host: Vec<f32> = (0..18).map(|x| x as f32).collect();
        let mut v = TensorView::contiguous(1, DType::F32, &[2, 3, 2], 0);
        v.strides[0] = 2;
        v.strides[1] = 6;
        v.strides[2] = 1;
        let mut dense = vec![0u8; 48];
        unsafe { pack(&v, host.as_ptr() as *const u8, &mut dense) };
        let got: Vec<f32> = dense.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, vec![0.0, 1.0, 6.0, 7.0, 12.0, 13.0, 2.0, 3.0, 8.0, 9.0, 14.0, 15.0]);
        let mut back = vec![-1f32; 18];
        unsafe { unpack(&v, &dense, back.as_mut_ptr() as *mut u8) };
        let want: Vec<f32> = (0..18).map(|x| if x % 6 < 4 { x as f32 } else { -1.0 }).collect();
        assert_eq!(back, want);
    }
}
