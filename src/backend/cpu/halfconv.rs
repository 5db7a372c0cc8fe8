//! f16 / bf16 <-> f32 slice conversion. f16 uses F16C (8 lanes per instruction) when the CPU
//! has it, else `half`; bf16 is integer bit work that vectorises once compiled for AVX2
//! (`half`'s bf16 slice conversion is a scalar loop).

use super::simd::{dispatch_avx2, has_avx2_fma};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: F16C and AVX were detected; lengths are equal.
        return unsafe { x86::f16_to_f32(src, dst) };
    }
    src.convert_to_f32_slice(dst);
}

pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as above.
        return unsafe { x86::f32_to_f16(src, dst) };
    }
    dst.convert_from_f32_slice(src);
}

dispatch_avx2! {
    pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
}

dispatch_avx2! {
    /// Round to nearest even; NaNs stay (quiet) NaNs.
    pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            let b = s.to_bits();
            let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
            let nan = ((b >> 16) | 0x40) as u16;
            *d = bf16::from_bits(if s.is_nan() { nan } else { rounded });
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
        let n = dst.len();
        let mut i = 0;
        while i + 8 <= n {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for j in i..n {
            dst[j] = src[j].to_f32();
        }
    }

    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
        let n = src.len();
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(src.as_ptr().add(i));
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
            i += 8;
        }
        for j in i..n {
            dst[j] = f16::from_f32(src[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around every rounding case: exact, halfway, subnormal, huge, inf, NaN.
    fn samples() -> Vec<f32> {
        let mut v: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.37e-3).collect();
        v.extend([1.0, 1.0 + 1.0 / 2048.0, 65504.0, 65520.0, 1e-6, -6e-8, 3.4e38, -0.0]);
        v.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::from_bits(0x3f80_8000)]);
        v.extend((0..997).map(|i| f32::from_bits(0x3f80_0000 + i * 4099)));
        v
    }

    #[test]
    fn conversions_match_half_exactly() {
        let src = samples();
        let mut h = vec![f16::ZERO; src.len()];
        let mut b = vec![bf16::ZERO; src.len()];
        f32_to_f16(&src, &mut h);
        f32_to_bf16(&src, &mut b);
        for (i, x) in src.iter().enumerate() {
            let (wh, wb) = (f16::from_f32(*x), bf16::from_f32(*x));
            assert!(h[i] == wh || (h[i].is_nan() && wh.is_nan()), "f16 of {x}");
            assert!(b[i] == wb || (b[i].is_nan() && wb.is_nan()), "bf16 of {x}");
        }
        let mut back = vec![0.0f32; src.len()];
        f16_to_f32(&h, &mut back);
        assert!(h.iter().zip(&back).all(|(h, f)| h.to_f32().to_bits() == f.to_bits()));
        bf16_to_f32(&b, &mut back);
        assert!(b.iter().zip(&back).all(|(b, f)| b.to_f32().to_bits() == f.to_bits()));
    }
}
