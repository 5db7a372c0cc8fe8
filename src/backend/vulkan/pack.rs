//! Strided views are packed into dense rows on the host before upload and scattered back
//! after download, so every shader sees dense tensors. Dense views are one memcpy.

use crate::op::TensorView;

/// Copies the elements of `v` (based at `base`, the view's first byte) densely into `dst`.
///
/// # Safety
/// `base` must point at the view's first byte in a buffer that holds the whole view, and
/// `dst` must hold `v.bytes()` bytes.
pub unsafe fn pack(v: &TensorView, base: *const u8, dst: &mut [u8]) {
    // Bytes of a count of elements: quantized rows are whole blocks (validated), and so are
    // the offsets of their runs.
    let b = |elems: usize| v.dtype.bytes_of(elems);
    if v.is_contiguous() {
        std::ptr::copy_nonoverlapping(base, dst.as_mut_ptr(), v.bytes());
        return;
    }
    let mut i = 0;
    for_each_run(v, |off, len| {
        std::ptr::copy_nonoverlapping(base.add(b(off)), dst.as_mut_ptr().add(b(i)), b(len));
        i += len;
    });
}

/// Scatters the dense `src` into the view `v` based at `base`.
///
/// # Safety
/// As for [`pack`], with `base` writable.
pub unsafe fn unpack(v: &TensorView, src: &[u8], base: *mut u8) {
    let b = |elems: usize| v.dtype.bytes_of(elems);
    if v.is_contiguous() {
        std::ptr::copy_nonoverlapping(src.as_ptr(), base, v.bytes());
        return;
    }
    let mut i = 0;
    for_each_run(v, |off, len| {
        std::ptr::copy_nonoverlapping(src.as_ptr().add(b(i)), base.add(b(off)), b(len));
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

/// The dims of `r` longer than 1, from the largest stride to the smallest, when what `w`
/// wrote can be mapped element by element into `r`'s dense copy: same buffer and element size,
/// element-aligned offsets, and strides that each step over all the elements of the dims
/// inside them (so an address has at most one index in `r`).
fn reader_order(w: &TensorView, r: &TensorView) -> Option<Vec<usize>> {
    let es = w.dtype.size();
    if r.dtype.size() != es || w.buffer != r.buffer || w.offset % es != 0 || r.offset % es != 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..r.rank).filter(|&d| r.shape[d] > 1).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(r.strides[d]));
    if order.iter().any(|&d| r.strides[d] == 0) {
        return None;
    }
    for pair in order.windows(2) {
        let (outer, inner) = (pair[0], pair[1]);
        if r.strides[outer] < r.strides[inner] * r.shape[inner] {
            return None;
        }
    }
    Some(order)
}

/// Whether `device_patch` (or the `patch` shader) can bring what `w` wrote into `r`'s copy.
pub fn mappable(w: &TensorView, r: &TensorView) -> bool {
    reader_order(w, r).is_some()
}

/// Push constants of the `patch_b32` / `patch_b16` shader, which does on the GPU what
/// `device_patch`'s regions do, one thread per element of `w` (a head's slice of a fused QKV
/// output is tens of thousands of regions: as many copy commands on some drivers). Layout:
/// w's dims and element strides (left-padded to 4), r's dims by decreasing stride with their
/// strides in memory and in r's packing (padded with stride 0), w's and r's first elements
/// relative to the lower of the two, and w's element count. None where unmappable or where
/// an index would not fit 32 bits.
pub fn patch_push(w: &TensorView, r: &TensorView) -> Option<Vec<u8>> {
    let order = reader_order(w, r)?;
    let es = w.dtype.size();
    let fits = |v: usize| u32::try_from(v).ok();
    let (w_base, r_base) = (w.offset / es, r.offset / es);
    let base = w_base.min(r_base);
    let reach = |v: &TensorView, first: usize| -> usize {
        first + v.dims().iter().zip(v.strides()).map(|(&n, &s)| n.saturating_sub(1) * s).sum::<usize>()
    };
    fits(reach(w, w_base - base).max(reach(r, r_base - base)))?;
    fits(w.numel())?;
    let mut words: Vec<u32> = Vec::with_capacity(23);
    let pad = 4 - w.rank;
    let (mut w_shape, mut w_stride) = ([1u32; 4], [0u32; 4]);
    for d in 0..w.rank {
        w_shape[pad + d] = fits(w.shape[d])?;
        w_stride[pad + d] = fits(w.strides[d])?;
    }
    let packed = crate::op::dense_strides(r.dims());
    let (mut r_shape, mut r_stride, mut r_packed) = ([1u32; 4], [0u32; 4], [0u32; 4]);
    for (i, &d) in order.iter().enumerate() {
        r_shape[i] = fits(r.shape[d])?;
        r_stride[i] = fits(r.strides[d])?;
        r_packed[i] = fits(packed[d])?;
    }
    for a in [w_shape, w_stride, r_shape, r_stride, r_packed] {
        words.extend_from_slice(&a);
    }
    words.extend([fits(w_base - base)?, fits(r_base - base)?, fits(w.numel())?]);
    Some(words.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// Copy regions (source byte, destination byte, bytes) that bring what an op wrote through
/// view `w` (its dense device copy) into the dense device copy of view `r` of the same buffer:
/// the elements of `w` that `r` also reads, at their place in `r`'s packing. This is how a
/// KV-cache row written by one op reaches an attention that reads the whole cache, on the
/// device. None where the views cannot be mapped element to element (other element sizes,
/// broadcast or overlapping strides in `r`, misaligned offsets): the caller then goes through
/// the host instead.
pub fn device_patch(w: &TensorView, r: &TensorView) -> Option<Vec<(u64, u64, u64)>> {
    let es = w.dtype.size();
    let order = reader_order(w, r)?;
    let packed = crate::op::dense_strides(r.dims());
    let innermost = order.last().copied();
    // Consecutive addresses stay consecutive in r's packing only along a dim that is unit
    // stride both in memory and in the packing.
    let inner_contiguous = innermost.is_some_and(|d| r.strides[d] == 1 && packed[d] == 1);
    // Where element address `e` (in elements from r's base) sits in r's packing, and how many
    // elements from there on stay contiguous in both.
    let locate = |e: usize| -> Option<(usize, usize)> {
        let mut rest = e;
        let mut at = 0;
        let mut left_in_row = 1;
        for &d in &order {
            let idx = rest / r.strides[d];
            if idx >= r.shape[d] {
                return None;
            }
            rest -= idx * r.strides[d];
            at += idx * packed[d];
            if Some(d) == innermost && inner_contiguous {
                left_in_row = r.shape[d] - idx;
            }
        }
        (rest == 0).then_some((at, left_in_row))
    };
    let (r_base, w_base) = (r.offset / es, w.offset / es);
    let mut regions: Vec<(u64, u64, u64)> = Vec::new();
    let mut src = 0usize;
    let mut push = |s: usize, d: usize, n: usize| {
        let (s, d, n) = ((s * es) as u64, (d * es) as u64, (n * es) as u64);
        match regions.last_mut() {
            Some(last) if last.0 + last.2 == s && last.1 + last.2 == d => last.2 += n,
            _ => regions.push((s, d, n)),
        }
    };
    for_each_run(w, |off, len| {
        let mut k = 0;
        while k < len {
            let addr = w_base + off + k;
            let chunk = match addr.checked_sub(r_base).and_then(&locate) {
                Some((at, left)) => {
                    let n = left.min(len - k).max(1);
                    push(src + k, at, n);
                    n
                }
                None => 1, // an element r does not read
            };
            k += chunk;
        }
        src += len;
    });
    Some(regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::DType;

    /// What `r`'s dense copy holds after patching: built on the host the slow way.
    fn patched_by_hand(w: &TensorView, r: &TensorView, buffer_len: usize) -> (Vec<f32>, Vec<f32>) {
        let mut host: Vec<f32> = (0..buffer_len).map(|i| i as f32).collect();
        let before = {
            let mut d = vec![0u8; r.bytes()];
            unsafe { pack(r, (host.as_ptr() as *const u8).add(r.offset), &mut d) };
            d
        };
        // w writes negative values.
        let written: Vec<f32> = (0..w.numel()).map(|i| -(i as f32) - 1.0).collect();
        let wb: Vec<u8> = written.iter().flat_map(|v| v.to_le_bytes()).collect();
        unsafe { unpack(w, &wb, (host.as_mut_ptr() as *mut u8).add(w.offset)) };
        let mut want = vec![0u8; r.bytes()];
        unsafe { pack(r, (host.as_ptr() as *const u8).add(r.offset), &mut want) };
        // The patch applied to the old copy.
        let mut got = before;
        for (s, d, n) in device_patch(w, r).expect("mappable") {
            got[d as usize..(d + n) as usize].copy_from_slice(&wb[s as usize..(s + n) as usize]);
        }
        let f =
            |b: &[u8]| b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
        (f(&got), f(&want))
    }

    #[test]
    fn a_kv_cache_row_patches_the_attention_view_of_the_whole_cache() {
        // Cache [positions 10, kv_heads 2 * head_dim 4]; row 6 written; attention reads it as
        // [heads 2, seq 10, hd 4] with strides (4, 8, 1).
        let row = TensorView::contiguous(1, DType::F32, &[1, 8], 6 * 8 * 4);
        let mut heads = TensorView::contiguous(1, DType::F32, &[2, 10, 4], 0);
        heads.strides[0] = 4;
        heads.strides[1] = 8;
        heads.strides[2] = 1;
        let regions = device_patch(&row, &heads).unwrap();
        assert_eq!(regions.len(), 2, "one region per head: {regions:?}");
        let (got, want) = patched_by_hand(&row, &heads, 80);
        assert_eq!(got, want);
        // Rows 3..5 of the cache seen as [seq, heads, hd] (RoPE's view) into the same.
        let mut rope = TensorView::contiguous(1, DType::F32, &[2, 2, 4], 3 * 8 * 4);
        rope.strides[..3].copy_from_slice(&[8, 4, 1]);
        let (got, want) = patched_by_hand(&rope, &heads, 80);
        assert_eq!(got, want);
    }

    #[test]
    fn partial_and_foreign_overlaps_map_or_refuse() {
        // w covers more than r reads: only the shared elements are copied.
        let w = TensorView::contiguous(1, DType::F32, &[4, 6], 0);
        let r = TensorView::contiguous(1, DType::F32, &[2, 6], 12 * 4);
        let (got, want) = patched_by_hand(&w, &r, 24);
        assert_eq!(got, want);
        // A transposed reader.
        let mut t = TensorView::contiguous(1, DType::F32, &[6, 4], 0);
        t.strides[0] = 1;
        t.strides[1] = 6;
        let (got, want) = patched_by_hand(&w, &t, 24);
        assert_eq!(got, want);
        // A broadcast reader cannot be mapped back; nor can another element size.
        let mut b = TensorView::contiguous(1, DType::F32, &[3, 6], 0);
        b.strides[0] = 0;
        assert!(device_patch(&w, &b).is_none());
        let h = TensorView::contiguous(1, DType::F16, &[4, 6], 0);
        assert!(device_patch(&w, &h).is_none());
    }

    #[test]
    fn a_strided_quantized_view_packs_whole_blocks() {
        // Rows 1..3 of a [4, 64] q4_0 matrix (2 blocks of 18 bytes a row), first block only:
        // the view [2, 32] with row stride 64 elements starts at byte 36.
        let host: Vec<u8> = (0..4 * 36).map(|i| i as u8).collect();
        let mut v = TensorView::contiguous(1, DType::Q4_0, &[2, 32], 36);
        v.strides[0] = 64;
        assert!(!v.is_contiguous());
        let mut dense = vec![0u8; v.bytes()];
        unsafe { pack(&v, host.as_ptr().add(v.offset), &mut dense) };
        let want: Vec<u8> = (36..54).chain(72..90).collect();
        assert_eq!(dense, want);
        let mut back = vec![0u8; host.len()];
        unsafe { unpack(&v, &dense, back.as_mut_ptr().add(v.offset)) };
        assert_eq!(&back[36..54], &host[36..54]);
        assert_eq!(&back[72..90], &host[72..90]);
        assert!(back[54..72].iter().all(|&b| b == 0));
    }

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
