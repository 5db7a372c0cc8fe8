//! Runtime CPU-feature dispatch: the shipped library targets baseline x86-64, so hot loops
//! are compiled a second time with AVX2+FMA enabled and picked when the CPU has them.

/// Instruction-set levels the CPU kernels are built for, lowest first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Isa {
    Portable,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL on top of Avx2 (only in `nh_avx512` builds).
    Avx512,
}

impl Isa {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Portable => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// Environment variable that caps the instruction set the kernels pick (`scalar`, `avx2`,
/// `avx512`), read once: it lets an AVX-512 machine run and measure the AVX2 path, which is
/// what most laptops get. It never raises the level above what the CPU has.
pub(crate) const ENV_ISA: &str = "NPUHYBRID_CPU_ISA";

/// What this CPU and build support, lowered by `NPUHYBRID_CPU_ISA` (checked once).
fn detected() -> Isa {
    static LEVEL: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var(ENV_ISA).as_deref().map(str::trim) {
            Ok("scalar") | Ok("portable") => Isa::Portable,
            Ok("avx2") => Isa::Avx2,
            Ok("avx512") | Ok("") | Err(_) => Isa::Avx512,
            Ok(other) => {
                log::warn!("{ENV_ISA}={other:?} is not scalar, avx2 or avx512: ignored");
                Isa::Avx512
            }
        };
        hardware().min(cap)
    })
}

fn hardware() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c");
        let avx512 = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl");
        match (avx2, avx512 && cfg!(nh_avx512)) {
            (true, true) => Isa::Avx512,
            (true, false) => Isa::Avx2,
            _ => Isa::Portable,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Portable
    }
}

/// Tests lower this to run the AVX2 or portable kernels on a CPU that has more (through
/// `test_cap`); other tests running meanwhile take the lower paths too, which is harmless:
/// every path is correct.
#[cfg(test)]
static TEST_CAP: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(Isa::Avx512 as u8);

/// The instruction set the kernels use now.
#[inline]
pub(crate) fn isa() -> Isa {
    let level = detected();
    #[cfg(test)]
    {
        let cap = match TEST_CAP.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Isa::Portable,
            1 => Isa::Avx2,
            _ => Isa::Avx512,
        };
        return level.min(cap);
    }
    #[allow(unreachable_code)]
    level
}

/// Holds the kernels at or below a level until dropped; one holder at a time.
#[cfg(test)]
pub(crate) struct TestCap(#[allow(dead_code)] parking_lot::MutexGuard<'static, ()>);

#[cfg(test)]
static TEST_CAP_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

#[cfg(test)]
pub(crate) fn test_cap(level: Isa) -> TestCap {
    let guard = TEST_CAP_LOCK.lock();
    TEST_CAP.store(level as u8, std::sync::atomic::Ordering::Relaxed);
    TestCap(guard)
}

#[cfg(test)]
impl Drop for TestCap {
    fn drop(&mut self) {
        TEST_CAP.store(Isa::Avx512 as u8, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The levels this machine can run, lowest first (tests run each).
#[cfg(test)]
pub(crate) fn test_levels() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2, Isa::Avx512].into_iter().filter(|&l| l <= detected()).collect()
}

/// True when AVX2, FMA and F16C are present and not capped away.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    isa() >= Isa::Avx2
}

/// True when AVX-512F/BW/VL are present too, this build has the AVX-512 kernels (`nh_avx512`,
/// set by build.rs for compilers with stable AVX-512 support), and they are not capped away.
#[inline]
#[allow(dead_code)]
pub(crate) fn has_avx512() -> bool {
    isa() >= Isa::Avx512
}

/// Sum of the eight lanes of an AVX vector. Inlined into its callers, which enable AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
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
