//! Activations of a half-precision tensor into the same dtype by table lookup. An f16 or
//! bf16 input has only 65536 values, so silu / gelu of one is a function of 16 bits: one
//! table of 65536 results (128 KiB) per activation and dtype, built on first use, replaces
//! the ~25 vector operations per 8 or 16 elements of the computed stream (exp, reciprocal,
//! half rounding) by a gather. The computed bf16 streams are compute-bound at about three
//! times the memory bound on AVX2; the lookup leaves a load, two gathers, a pack and a store
//! per 16 or 32 elements. Activations of real tensors touch a few KiB of a table (the
//! exponents they use), which stays in L1; uniformly random bits would read it from L2.
//!
//! The table holds the f32 stream's result for each input, rounded to nearest even (a few
//! entries computed in f64, see `exact`): at most one ulp from the exact value, tested for
//! every input.

use super::{unary, Act, Dense};
use crate::op::DType;
use std::sync::OnceLock;

/// One entry per 16-bit input, plus one: the lookups gather 32 bits at a time, so the last
/// input's read reaches one entry past it.
pub(super) const ENTRIES: usize = (1 << 16) + 1;

/// The table of `act` for inputs and outputs of `dtype` (f16 or bf16), or None where the
/// lookup does not apply (scale, which is exact and cheap; f32).
pub(super) fn for_act(act: Act, dtype: DType) -> Option<&'static [u16]> {
    static TABLES: [OnceLock<Box<[u16]>>; 6] = [const { OnceLock::new() }; 6];
    let which = match act {
        Act::Silu => 0,
        Act::Gelu => 1,
        Act::GeluTanh => 2,
        Act::Scale(_) => return None,
    };
    let bf16 = match dtype {
        DType::F16 => false,
        DType::BF16 => true,
        _ => return None,
    };
    let slot = &TABLES[2 * which + bf16 as usize];
    Some(slot.get_or_init(|| build(act, bf16)))
}

/// Every input widened to f32, through the f32 stream at the running level (~65536
/// elements: tens of microseconds), rounded back; `exact` where that is not close enough.
/// Called only where the streams run.
fn build(act: Act, bf16: bool) -> Box<[u16]> {
    let xs: Vec<f32> = (0..=u16::MAX).map(|b| widen(b, bf16)).collect();
    let mut ys = vec![0.0f32; xs.len()];
    let f32_at = |p: *const f32| Dense { ptr: p as *mut u8, dtype: DType::F32 };
    // SAFETY: both hold xs.len() floats and do not overlap.
    let done = unsafe { unary(act, f32_at(ys.as_mut_ptr()), f32_at(xs.as_ptr()), xs.len()) };
    assert!(done, "activation tables are built only where the vector streams run");
    let mut table: Vec<u16> =
        xs.iter().zip(&ys).map(|(&x, &y)| narrow(exact(act, x).unwrap_or(y as f64), bf16)).collect();
    table.push(0);
    debug_assert_eq!(table.len(), ENTRIES);
    table.into_boxed_slice()
}

/// The entries that the f32 stream leaves further off than a half's rounding hides, in f64:
/// the infinities, whose limits the clamped exp misses (silu(-inf) would be NaN), and gelu
/// left of -3, where A&S 7.1.26's erfc is up to 4% off relatively (on results under 1e-10:
/// within the f32 stream's absolute bound, but 8 bf16 ulps). A few hundred bf16 inputs, a
/// thousand f16 ones.
fn exact(act: Act, x: f32) -> Option<f64> {
    let x = x as f64;
    if x.is_infinite() {
        return Some(if x > 0.0 { x } else { -0.0 });
    }
    (act == Act::Gelu && x < -3.0).then(|| 0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2))
}

fn widen(bits: u16, bf16: bool) -> f32 {
    if bf16 {
        half::bf16::from_bits(bits).to_f32()
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

fn narrow(x: f64, bf16: bool) -> u16 {
    if bf16 {
        half::bf16::from_f64(x).to_bits()
    } else {
        half::f16::from_f64(x).to_bits()
    }
}

/// out[i] = table[a[i]] one element at a time: the tails of the vector loops.
///
/// # Safety
/// a and out hold n 16-bit values (out may be a); table has `ENTRIES` entries.
#[inline(always)]
pub(super) unsafe fn lookup_scalar(table: &[u16], out: *mut u16, a: *const u16, n: usize) {
    for i in 0..n {
        *out.add(i) = *table.get_unchecked(*a.add(i) as usize);
    }
}
