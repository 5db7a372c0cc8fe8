//! Runtime CPU-feature dispatch: the shipped library targets baseline x86-64, so hot loops
//! are compiled a second time with AVX2+FMA enabled and picked when the CPU has them.

/// Tests set this to run the portable fallbacks on a CPU that has AVX2.
#[cfg(test)]
pub(crate) static FORCE_PORTABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when AVX2, FMA and F16C are present (checked once, cached by std).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when AVX-512F is present too and this build has the AVX-512 kernels (`nh_avx512`,
/// set by build.rs for compilers with stable AVX-512 support).
#[inline]
#[allow(dead_code)]
pub(crate) fn has_avx512() -> bool {
    #[cfg(all(target_arch = "x86_64", nh_avx512))]
    {
        has_avx2_fma()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(all(target_arch = "x86_64", nh_avx512)))]
    {
        false
    }
}

/// Defines `fn name(args) -> ret` whose body is compiled three times: for baseline x86-64, with
/// AVX2+FMA+F16C and (`nh_avx512` builds) with AVX-512 (16-lane vectors), chosen at run time. The body and every helper it calls must be
/// `#[inline(always)]` so they are compiled with the wider instructions too.
///
/// Written as `fn name<FMA>(..)`, the body also sees a `const FMA: bool` that is true in the
/// AVX2 build, for `math::madd::<FMA>` (fused there, a plain multiply-add in the portable
/// build, where `mul_add` would be a slow libm call).
macro_rules! dispatch_avx2 {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$fma:ident>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable<const $fma: bool>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(all(target_arch = "x86_64", nh_avx512))]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    portable::<true>($($arg),*)
                }
                if $crate::backend::cpu::simd::has_avx512() {
                    // SAFETY: the features were detected on this CPU.
                    return unsafe { avx512($($arg),*) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable::<true>($($arg),*)
                }
                if $crate::backend::cpu::simd::has_avx2_fma() {
                    // SAFETY: the features were detected on this CPU.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable::<false>($($arg),*)
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::backend::cpu::simd::dispatch_avx2! {
            $(#[$meta])* $vis fn $name<_FMA_UNUSED>($($arg: $ty),*) $(-> $ret)? $body
        }
    };
}
pub(crate) use dispatch_avx2;
