//! Vectorisable f32 math (exp, erf, tanh) and the activation functions built on them.
//! libm's scalar calls would stop the loops from vectorising; these are branch-free and
//! accurate to a few ulp (exp) or 2e-7 absolute (erf), well inside f32 op tolerances.

use super::super::simd::dispatch_avx2;

/// a * b + c: one fused instruction in the AVX2+FMA build, two plain ones otherwise.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x for x in f32 range (clamped: underflows to ~1e-38, no infinities). Cephes' expf.
#[inline(always)]
pub fn exp<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    // Round x*log2(e) to nearest with the 1.5*2^23 trick: afterwards the low mantissa bits
    // of `t` hold the integer n, so 2^n is built with integer ops (a saturating `as i32`
    // would not vectorise).
    const MAGIC: f32 = 12_582_912.0;
    let t = madd::<FMA>(x, std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    let pow2n = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) as u32) << 23);
    let r = madd::<FMA>(n, 2.121_944_4e-4, madd::<FMA>(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let e = madd::<FMA>(p, r * r, r + 1.0);
    e * pow2n
}

/// erf(x), Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
#[inline(always)]
pub fn erf<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / madd::<FMA>(0.327_591_1, a, 1.0);
    let mut poly = 1.061_405_4;
    poly = madd::<FMA>(poly, t, -1.453_152);
    poly = madd::<FMA>(poly, t, 1.421_413_8);
    poly = madd::<FMA>(poly, t, -0.284_496_74);
    poly = madd::<FMA>(poly, t, 0.254_829_6);
    let y = madd::<FMA>(-poly * t, exp::<FMA>(-a * a), 1.0);
    y.copysign(x)
}

#[inline(always)]
pub fn tanh<const FMA: bool>(x: f32) -> f32 {
    1.0 - 2.0 / (exp::<FMA>(2.0 * x) + 1.0)
}

#[inline(always)]
pub fn silu<const FMA: bool>(x: f32) -> f32 {
    x / (1.0 + exp::<FMA>(-x))
}

#[inline(always)]
pub fn gelu_erf<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
pub fn gelu_tanh<const FMA: bool>(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * madd::<FMA>(0.044_715 * x * x, x, x);
    0.5 * x * (1.0 + tanh::<FMA>(inner))
}

dispatch_avx2! {
    pub fn silu_slice<FMA>(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = silu::<FMA>(*v);
        }
    }
}

dispatch_avx2! {
    pub fn gelu_slice<FMA>(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_erf::<FMA>(*v);
        }
    }
}

dispatch_avx2! {
    pub fn gelu_tanh_slice<FMA>(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_tanh::<FMA>(*v);
        }
    }
}

dispatch_avx2! {
    pub fn relu_slice(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

dispatch_avx2! {
    pub fn scale_slice(x: &mut [f32], alpha: f32) {
        for v in x.iter_mut() {
            *v *= alpha;
        }
    }
}

dispatch_avx2! {
    pub fn add_slice(x: &mut [f32], b: &[f32]) {
        for (v, b) in x.iter_mut().zip(b) {
            *v += *b;
        }
    }
}

dispatch_avx2! {
    pub fn add3_slice(out: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = *a + *b;
        }
    }
}

dispatch_avx2! {
    pub fn mul3_slice(out: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = *a * *b;
        }
    }
}

dispatch_avx2! {
    pub fn mul_slice(x: &mut [f32], b: &[f32]) {
        for (v, b) in x.iter_mut().zip(b) {
            *v *= *b;
        }
    }
}

/// A matmul's epilogue on one row of C: the bias (its columns of this row), then the fused
/// activation.
pub fn bias_and_activation(row: &mut [f32], bias: Option<&[f32]>, activation: crate::op::Activation) {
    use crate::op::Activation;
    if let Some(bias) = bias {
        add_slice(row, bias);
    }
    match activation {
        Activation::None => {}
        Activation::Relu => relu_slice(row),
        Activation::Silu => silu_slice(row),
        Activation::Gelu => gelu_slice(row),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::reference::erf as libm_erf;

    #[test]
    fn exp_matches_std_over_its_range() {
        let mut worst = 0.0f64;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let rel = ((exp::<false>(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp::<false>(-200.0) < 1e-37);
        assert!(exp::<false>(200.0).is_finite());
    }

    #[test]
    fn fused_and_plain_builds_agree() {
        for i in -3000..=3000 {
            let x = i as f32 * 0.01;
            let (p, f) = (exp::<false>(x), exp::<true>(x));
            assert!(((p - f) / p).abs() < 4e-7, "exp({x}): {p} vs {f}");
            let (p, f) = (gelu_erf::<false>(x), gelu_erf::<true>(x));
            assert!((p - f).abs() < 1e-6 * (1.0 + p.abs()), "gelu({x}): {p} vs {f}");
        }
    }

    #[test]
    fn erf_and_activations_match_f64() {
        for i in -600..=600 {
            let x = i as f32 * 0.01;
            let xd = x as f64;
            let erf64 = libm_erf(xd);
            let err = (erf::<false>(x) as f64 - erf64).abs();
            assert!(err < 4e-7, "erf({x}) off by {err}");
            let gelu64 = 0.5 * xd * (1.0 + libm_erf(xd / 2f64.sqrt()));
            assert!((gelu_erf::<false>(x) as f64 - gelu64).abs() < 1e-6, "gelu({x})");
            let silu64 = xd / (1.0 + (-xd).exp());
            assert!((silu::<false>(x) as f64 - silu64).abs() < 1e-6, "silu({x})");
            assert!((tanh::<false>(x) as f64 - xd.tanh()).abs() < 1e-6, "tanh({x})");
        }
    }
}
