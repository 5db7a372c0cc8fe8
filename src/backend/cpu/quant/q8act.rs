//! Integer decode path (`NH_FLAG_ALLOW_Q8_ACTIVATIONS`): each 32-element block of an A row is
//! rounded to int8 with one f32 scale, as llama.cpp rounds activations to q8_0, so a block of
//! q8_0 / q4_0 / q4_1 weights dots with it in integers (VNNI `vpdpbusd`, or AVX2 `maddubs`)
//! and is scaled once. This trades the activations' rounding for 2-4x less work per weight
//! than decoding weights to f32; it is opt-in because results are no longer f32 math on the
//! dequantised weights.

use crate::op::DType;

/// Elements per activation block (the weight types' block; q4_g128 is not taken).
pub const QK: usize = 32;

/// Weight types the integer kernels take.
pub fn takes(dt: DType) -> bool {
    matches!(dt, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
}

/// Rows of A as int8 blocks: `qs` (k per row), and per block its scale `d` and `d * sum(qs)`
/// (`s`, what q4_0's -8 offset and q4_1's minimum multiply).
pub struct Q8Rows {
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// One row of `Q8Rows`, as the kernels read it.
#[derive(Clone, Copy)]
pub struct Q8Row {
    pub qs: *const i8,
    pub d: *const f32,
    pub s: *const f32,
}

impl Q8Rows {
    /// Rounds `rows` (each k floats, k a multiple of 32): d = max |x| / 127, q = round(x / d).
    pub fn quantize<'a>(k: usize, rows: impl ExactSizeIterator<Item = &'a [f32]>) -> Q8Rows {
        assert!(k % QK == 0);
        let n = rows.len();
        let mut out = Q8Rows { k, qs: vec![0; n * k], d: vec![0.0; n * k / QK], s: vec![0.0; n * k / QK] };
        for (r, row) in rows.enumerate() {
            assert_eq!(row.len(), k);
            for (b, x) in row.chunks_exact(QK).enumerate() {
                let at = r * k / QK + b;
                let q = &mut out.qs[r * k + b * QK..][..QK];
                let (d, sum) = quantize_block(x, q);
                out.d[at] = d;
                out.s[at] = d * sum as f32;
            }
        }
        out
    }

    pub fn row(&self, r: usize) -> Q8Row {
        let b = r * self.k / QK;
        Q8Row { qs: self.qs[r * self.k..].as_ptr(), d: self.d[b..].as_ptr(), s: self.s[b..].as_ptr() }
    }
}

/// One block: returns its scale and the sum of its int8 values.
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0;
    for (q, v) in q.iter_mut().zip(x) {
        // |v * id| <= 127 up to rounding; the clamp keeps a rounding overshoot in range.
        *q = (v * id).round().clamp(-127.0, 127.0) as i8;
        sum += *q as i32;
    }
    (d, sum)
}

/// Which integer kernels run; tests force each one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntIsa {
    Scalar,
    /// AVX2 `maddubs` + `madd`.
    Avx2,
    /// AVX-512 VNNI `vpdpbusd` on 256-bit vectors.
    Vnni,
}

impl IntIsa {
    pub fn detect() -> IntIsa {
        use super::super::simd;
        #[cfg(all(target_arch = "x86_64", nh_avx512))]
        if simd::has_avx512() && std::is_x86_feature_detected!("avx512vnni") {
            return IntIsa::Vnni;
        }
        if simd::has_avx2_fma() {
            IntIsa::Avx2
        } else {
            IntIsa::Scalar
        }
    }

    /// Kernels this CPU can run, widest last.
    #[cfg(test)]
    pub fn available() -> Vec<IntIsa> {
        let best = IntIsa::detect();
        [IntIsa::Scalar, IntIsa::Avx2, IntIsa::Vnni].into_iter().filter(|i| *i as u8 <= best as u8).collect()
    }
}

/// Weight rows `j < n` of `dt` (`takes(dt)`), each `blocks` blocks starting `stride` bytes
/// apart from `w`, against `x.len()` (<= 4) int8 rows of `blocks * 32` elements:
/// out[j * x.len() + r] = w_j . x[r]. One call per slice of rows keeps the per-row cost at
/// the loop, not at a dispatch.
#[allow(clippy::too_many_arguments)]
pub fn dot_cols(
    isa: IntIsa,
    dt: DType,
    w: &[u8],
    stride: usize,
    n: usize,
    blocks: usize,
    x: &[Q8Row],
    out: &mut [f32],
) {
    let rows = x.len();
    assert!(takes(dt) && (1..=4).contains(&rows) && out.len() >= n * rows);
    assert!(n == 0 || w.len() >= (n - 1) * stride + blocks * dt.size());
    #[cfg(target_arch = "x86_64")]
    if isa != IntIsa::Scalar {
        use super::int8_x86::dots;
        let (w, o) = (w.as_ptr(), out.as_mut_ptr());
        // SAFETY: the ISA was detected on this CPU; `w` holds the n rows (checked above) and
        // each x row (from a `Q8Rows` of this k) blocks * 32 values and blocks scales.
        unsafe {
            match rows {
                1 => dots::<1>(isa, dt, w, stride, n, [x[0]], blocks, o),
                2 => dots::<2>(isa, dt, w, stride, n, [x[0], x[1]], blocks, o),
                3 => dots::<3>(isa, dt, w, stride, n, [x[0], x[1], x[2]], blocks, o),
                _ => dots::<4>(isa, dt, w, stride, n, [x[0], x[1], x[2], x[3]], blocks, o),
            }
        }
        return;
    }
    let _ = isa;
    for j in 0..n {
        for (r, row) in x.iter().enumerate() {
            out[j * rows + r] = reference(dt, &w[j * stride..], blocks, row) as f32;
        }
    }
}

/// The integer path's math in f64: per block d_w * (d_x * sum(wq * xq)) with q4_0's -8 and
/// q4_1's minimum applied through `s`. Kernels equal it up to f32 rounding of the sums.
pub fn reference(dt: DType, w: &[u8], blocks: usize, x: &Q8Row) -> f64 {
    let f16_at = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32() as f64;
    let bb = dt.size();
    let mut sum = 0.0f64;
    for b in 0..blocks {
        let blk = &w[b * bb..][..bb];
        // SAFETY: `x` is a row of a Q8Rows holding `blocks` blocks.
        let (xq, dx, sx) = unsafe {
            (std::slice::from_raw_parts(x.qs.add(b * QK), QK), *x.d.add(b) as f64, *x.s.add(b) as f64)
        };
        let wq = |j: usize| -> i32 {
            match dt {
                DType::Q8_0 => blk[2 + j] as i8 as i32,
                _ => {
                    let qs = &blk[if dt == DType::Q4_0 { 2 } else { 4 }..];
                    (if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 }) as i32
                }
            }
        };
        let idot: i32 = (0..QK).map(|j| wq(j) * xq[j] as i32).sum();
        let dw = f16_at(blk);
        sum += match dt {
            DType::Q8_0 => dw * dx * idot as f64,
            DType::Q4_0 => dw * (dx * idot as f64 - 8.0 * sx),
            _ => dw * dx * idot as f64 + f16_at(&blk[2..]) * sx,
        };
    }
    sum
}
