//! Byte layouts of the quantized types (each block independent, little-endian):
//!
//! | type | weights | bytes | layout | weight j |
//! | --- | --- | --- | --- | --- |
//! | q8_0 | 32 | 34 | d: f16, qs: 32 x i8 | d * qs[j] |
//! | q4_0 | 32 | 18 | d: f16, qs: 16 bytes | d * (nib(j) - 8) |
//! | q4_1 | 32 | 20 | d: f16, m: f16, qs: 16 bytes | d * nib(j) + m |
//! | q4_g128 | 128 | 68 | d: f16, z: u8, 0: u8, qs: 64 bytes | d * (nib(j) - z) |
//!
//! `nib(j)` of a block of B weights is the low nibble of `qs[j]` for j < B/2 and the high
//! nibble of `qs[j - B/2]` otherwise (GGUF's order: one load gives two contiguous halves).
//! Quantization rounds as GGUF's reference code does (`quantize_row_*_ref` in ggml-quants.c).

use crate::op::DType;
use half::f16;

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn put_half(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Byte offset of the nibbles inside a block.
fn qs_offset(dt: DType) -> usize {
    match dt {
        DType::Q8_0 | DType::Q4_0 => 2,
        _ => 4,
    }
}

/// out[j] = scale * nib(j) + offset over one block of 4-bit values, the low nibbles then
/// the high ones (two straight loops the compiler vectorises; prefill dequantises every
/// weight once per op through here).
fn unpack4(qs: &[u8], out: &mut [f32], scale: f32, offset: f32) {
    let half = out.len() / 2;
    let (lo, hi) = out.split_at_mut(half);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&qs[..half]) {
        *l = scale * (q & 0x0f) as f32 + offset;
        *h = scale * (q >> 4) as f32 + offset;
    }
}

/// Decodes `dst.len()` weights (a whole number of blocks) from `src`.
///
/// Panics if the lengths do not describe whole blocks (callers pass validated views).
pub fn dequantize_row(dt: DType, src: &[u8], dst: &mut [f32]) {
    let (be, bb) = dt.block();
    assert!(dt.is_quantized() && dst.len() % be == 0 && src.len() >= dst.len() / be * bb);
    for (blk, out) in src.chunks_exact(bb).zip(dst.chunks_exact_mut(be)) {
        let d = half_at(blk, 0);
        let qs = &blk[qs_offset(dt)..];
        match dt {
            DType::Q8_0 => out.iter_mut().zip(qs).for_each(|(o, &q)| *o = d * q as i8 as f32),
            // d * (q - z) as d * q + (-d * z): the same value, since d is an f16 and q, z < 16,
            // so every product and the sum are exact in f32.
            DType::Q4_0 => unpack4(qs, out, d, -8.0 * d),
            DType::Q4_1 => unpack4(qs, out, d, half_at(blk, 2)),
            _ => unpack4(qs, out, d, -(blk[2] as f32) * d),
        }
    }
}

/// Encodes `src` (a whole number of blocks) into `dst`, rounding as GGUF does.
///
/// Panics if the lengths do not describe whole blocks (callers pass validated views).
pub fn quantize_row(dt: DType, src: &[f32], dst: &mut [u8]) {
    let (be, bb) = dt.block();
    assert!(dt.is_quantized() && src.len() % be == 0 && dst.len() >= src.len() / be * bb);
    for (x, blk) in src.chunks_exact(be).zip(dst.chunks_exact_mut(bb)) {
        match dt {
            DType::Q8_0 => q8_0(x, blk),
            DType::Q4_0 => q4_0(x, blk),
            DType::Q4_1 => q4_1(x, blk),
            _ => q4_g128(x, blk),
        }
    }
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

fn q8_0(x: &[f32], blk: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    put_half(blk, 0, d);
    for (q, v) in blk[2..34].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

fn pack_nibbles(qs: &mut [u8], x: &[f32], f: impl Fn(f32) -> u8) {
    let half = x.len() / 2;
    for j in 0..half {
        qs[j] = f(x[j]) | (f(x[j + half]) << 4);
    }
}

fn q4_0(x: &[f32], blk: &mut [u8]) {
    // The value of largest magnitude maps to -8 exactly, keeping its sign.
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = inverse(d);
    put_half(blk, 0, d);
    // `as i8` truncates like GGUF's (int8_t) cast.
    pack_nibbles(&mut blk[2..18], x, |v| ((v * id + 8.5) as i8).min(15) as u8);
}

fn q4_1(x: &[f32], blk: &mut [u8]) {
    let min = x.iter().copied().fold(f32::MAX, f32::min);
    let max = x.iter().copied().fold(-f32::MAX, f32::max);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    put_half(blk, 0, d);
    put_half(blk, 2, min);
    pack_nibbles(&mut blk[4..20], x, |v| (((v - min) * id + 0.5) as i8).min(15) as u8);
}

/// Asymmetric uint4 with the range widened to hold 0, so zero weights stay exact.
fn q4_g128(x: &[f32], blk: &mut [u8]) {
    let min = x.iter().copied().fold(0.0f32, f32::min);
    let max = x.iter().copied().fold(0.0f32, f32::max);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let z = (-min * id).round().clamp(0.0, 15.0);
    put_half(blk, 0, d);
    blk[2] = z as u8;
    blk[3] = 0;
    pack_nibbles(&mut blk[4..68], x, |v| (v * id + z).round().clamp(0.0, 15.0) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUANT: [DType; 4] = [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4G128];

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        for dt in QUANT {
            let x = data(512, 7);
            let mut q = vec![0u8; dt.bytes_of(x.len())];
            quantize_row(dt, &x, &mut q);
            let mut y = vec![0f32; x.len()];
            dequantize_row(dt, &q, &mut y);
            let be = dt.block_elems();
            for (xb, yb) in x.chunks(be).zip(y.chunks(be)) {
                let (lo, hi) = xb.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                // The step each format takes (symmetric ones from the largest magnitude).
                let amax = hi.max(-lo);
                let step = match dt {
                    DType::Q8_0 => amax / 127.0,
                    // -8 d is the extreme on one side, 7 d on the other: a full step clips.
                    DType::Q4_0 => 2.0 * amax / 8.0,
                    _ => (hi - lo) / 15.0,
                };
                for (a, b) in xb.iter().zip(yb) {
                    // Half a step, plus the f16 rounding of the scale.
                    assert!((a - b).abs() <= step * 0.5 + 2e-3 * (hi - lo), "{dt}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn layouts_match_ggufs_byte_order() {
        // q4_0: weight 0 in the low nibble of byte 2, weight 16 in its high nibble.
        let mut x = vec![0f32; 32];
        x[0] = -8.0;
        x[16] = 7.0;
        let mut q = [0u8; 18];
        quantize_row(DType::Q4_0, &x, &mut q);
        assert_eq!(f16::from_le_bytes([q[0], q[1]]).to_f32(), 1.0);
        assert_eq!(q[2], 0x0f << 4);
        assert_eq!(q[3], 0x88);
        // q8_0: d = amax / 127, then the int8 values.
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        let mut q = [0u8; 34];
        quantize_row(DType::Q8_0, &x, &mut q);
        assert_eq!(q[2] as i8, -127);
        assert_eq!(q[2 + 16] as i8, 0);
        // q4_g128: zero point at byte 2, zeros stay exact.
        let mut x = vec![0f32; 128];
        x[1] = 1.5;
        x[100] = -3.0;
        let mut q = [0u8; 68];
        quantize_row(DType::Q4G128, &x, &mut q);
        let mut y = [0f32; 128];
        dequantize_row(DType::Q4G128, &q, &mut y);
        assert_eq!(q[2], 10);
        assert_eq!(y[0], 0.0);
        assert!((y[100] + 3.0).abs() < 2e-3);
    }

    #[test]
    fn constant_and_zero_blocks_survive() {
        for dt in QUANT {
            for c in [0.0f32, 0.25, -2.0] {
                let x = vec![c; dt.block_elems()];
                let mut q = vec![0u8; dt.size()];
                quantize_row(dt, &x, &mut q);
                let mut y = vec![1f32; x.len()];
                dequantize_row(dt, &q, &mut y);
                assert!(y.iter().all(|v| (v - c).abs() <= c.abs() * 1e-3), "{dt} {c}: {y:?}");
            }
        }
    }
}
