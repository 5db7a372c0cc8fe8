//! `V` for AVX-512 F/BW/VL (16 lanes) and the streams compiled with those features. Built
//! only with `nh_avx512` (rustc >= 1.89), hence the MSRV lint is off here.
#![allow(clippy::incompatible_msrv)]

use super::{prefetch, stream, table, Act, Dense, V};
use std::arch::x86_64::*;

impl V for __m512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn load_half(p: *const u16, bf16: bool) -> Self {
        let h = _mm256_loadu_si256(p as *const __m256i);
        if bf16 {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        }
    }
    #[inline(always)]
    unsafe fn store_half(self, p: *mut u16, bf16: bool) {
        let h = if bf16 {
            _mm512_cvtepi32_epi16(bf16_bits(self))
        } else {
            _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self)
        };
        _mm256_storeu_si256(p as *mut __m256i, h)
    }
    #[inline(always)]
    unsafe fn load_bf16_pair(p: *const u16) -> (Self, Self) {
        // A bf16 in the upper half of a 32-bit lane with zeros below is its f32.
        let (v, z) = (_mm512_loadu_si512(p as *const _), _mm512_setzero_si512());
        (_mm512_castsi512_ps(_mm512_unpacklo_epi16(z, v)), _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, v)))
    }
    #[inline(always)]
    unsafe fn store_bf16_pair(a: Self, b: Self, p: *mut u16) {
        // packus per 128-bit lane: a's four values, then b's, the order the unpacks took.
        _mm512_storeu_si512(p as *mut _, _mm512_packus_epi32(bf16_bits(a), bf16_bits(b)))
    }
    #[inline(always)]
    unsafe fn store_bf16_ftz(self, p: *mut u16) {
        store_bf16_ftz(self, p)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        _mm512_add_ps(self, o)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        _mm512_sub_ps(self, o)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        _mm512_mul_ps(self, o)
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn fnma(self, b: Self, c: Self) -> Self {
        _mm512_fnmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        _mm512_min_ps(self, o)
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        _mm512_max_ps(self, o)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        _mm512_abs_ps(self)
    }
    #[cfg(test)]
    #[inline(always)]
    unsafe fn copysign(self, sign: Self) -> Self {
        let s = _mm512_set1_epi32(i32::MIN);
        let (x, y) = (_mm512_castps_si512(self), _mm512_castps_si512(sign));
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_andnot_si512(s, x), _mm512_and_si512(s, y)))
    }
    #[inline(always)]
    unsafe fn recip(self) -> Self {
        let r = _mm512_rcp14_ps(self);
        _mm512_fmadd_ps(r, _mm512_fnmadd_ps(self, r, _mm512_set1_ps(1.0)), r)
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        _mm512_rcp14_ps(self)
    }
    #[inline(always)]
    unsafe fn ldexp_magic(self, _t: Self, n: Self) -> Self {
        // vscalefps: self * 2^floor(n) in one instruction.
        _mm512_scalef_ps(self, n)
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        _mm512_reduce_add_ps(self)
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        _mm512_reduce_max_ps(self)
    }
}

/// bf16 bits of each lane (in its low 16 bits, the upper ones zero): round to nearest even
/// on the upper 16 bits of the f32; NaNs become quiet NaNs (rounding could carry them into
/// infinity).
#[inline(always)]
unsafe fn bf16_bits(v: __m512) -> __m512i {
    let bits = _mm512_castps_si512(v);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let rounded =
        _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))));
    let nan = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
    let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    _mm512_mask_blend_epi32(is_nan, rounded, nan)
}

/// `V::store_bf16_ftz`: inlined into `map_bf16_ftz`, which has the feature.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn store_bf16_ftz(v: __m512, p: *mut u16) {
    let h = _mm512_cvtneps_pbh(v);
    _mm256_storeu_si256(p as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(h))
}

/// Whether this CPU rounds to bf16 in one instruction (AVX512_BF16: Cooper Lake, Sapphire
/// Rapids and later, Zen 4 and later).
pub(super) fn has_bf16_ftz() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

pub(super) unsafe fn unary(act: Act, out: Dense, a: Dense, n: usize) {
    stream::unary::<Avx512>(act, out, a, n)
}

/// `avx2::lookup` with 16-lane gathers: 32 elements per step.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn lookup(table: &[u16], out: *mut u16, a: *const u16, n: usize) {
    debug_assert_eq!(table.len(), table::ENTRIES);
    let base = table.as_ptr() as *const i32;
    let (zero, low) = (_mm512_setzero_si512(), _mm512_set1_epi32(0xffff));
    let mut i = 0;
    while i + 32 <= n {
        prefetch(a.wrapping_add(i + stream::PREFETCH_AHEAD) as *const u8, 64);
        let v = _mm512_loadu_si512(a.add(i) as *const _);
        let lo = _mm512_i32gather_epi32::<2>(_mm512_unpacklo_epi16(v, zero), base);
        let hi = _mm512_i32gather_epi32::<2>(_mm512_unpackhi_epi16(v, zero), base);
        let r = _mm512_packus_epi32(_mm512_and_si512(lo, low), _mm512_and_si512(hi, low));
        _mm512_storeu_si512(out.add(i) as *mut _, r);
        i += 32;
    }
    table::lookup_scalar(table, out.add(i), a.add(i), n - i);
}

/// `unary`'s streams, one function each (see `stream::Maps`).
struct Avx512;

impl stream::Maps for Avx512 {
    #[inline(always)]
    unsafe fn map<const K: u8, const A: u8, const O: u8>(out: Dense, a: Dense, n: usize, s: f32) {
        // Activations into bf16 round with vcvtneps2bf16 where the CPU has it: their results
        // under 1.2e-38 may flush to zero; conversions (Scale) stay exact.
        if O == 2 && K != 0 && has_bf16_ftz() {
            map_bf16_ftz::<K, A>(out, a, n, s)
        } else {
            map::<K, A, O>(out, a, n, s)
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn map<const K: u8, const A: u8, const O: u8>(out: Dense, a: Dense, n: usize, s: f32) {
    stream::map::<__m512, K, A, O>(out, a, n, s)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c,avx512bf16")]
unsafe fn map_bf16_ftz<const K: u8, const A: u8>(out: Dense, a: Dense, n: usize, s: f32) {
    stream::map::<__m512, K, A, { stream::BF16_FTZ }>(out, a, n, s)
}

pub(super) unsafe fn binary(mul: bool, out: Dense, a: Dense, b: Dense, n: usize) {
    stream::binary_by_dtype::<Avx512>(mul, out, a, b, n)
}

pub(super) unsafe fn softmax_row(out: Dense, x: Dense, n: usize, tmp: *mut f32) {
    stream::softmax_by_dtype::<Avx512>(out, x, n, tmp)
}

impl stream::Rows for Avx512 {
    #[inline(always)]
    unsafe fn binary<const MUL: bool, const D: u8>(out: Dense, a: Dense, b: Dense, n: usize) {
        binary_d::<MUL, D>(out, a, b, n)
    }

    #[inline(always)]
    unsafe fn softmax<const D: u8>(out: Dense, x: Dense, n: usize, tmp: *mut f32) {
        softmax_d::<D>(out, x, n, tmp)
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn binary_d<const MUL: bool, const D: u8>(out: Dense, a: Dense, b: Dense, n: usize) {
    stream::binary::<__m512, MUL, D>(out, a, b, n)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn softmax_d<const D: u8>(out: Dense, x: Dense, n: usize, tmp: *mut f32) {
    stream::softmax_row::<__m512, D>(out, x, n, tmp)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn rope_row(out: Dense, x: Dense, half: usize, c: *const f32, s: *const f32) {
    stream::rope_row::<__m512>(out, x, half, c, s)
}

/// exp, e^-x, recip and erf of every element (tests).
#[cfg(test)]
pub(super) fn probe(xs: &[f32], e: &mut [f32], en: &mut [f32], r: &mut [f32], f: &mut [f32]) {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    unsafe fn run(xs: &[f32], e: &mut [f32], en: &mut [f32], r: &mut [f32], f: &mut [f32]) {
        for i in (0..xs.len()).step_by(16) {
            let mut x = [1.0f32; 16];
            let k = 16.min(xs.len() - i);
            x[..k].copy_from_slice(&xs[i..i + k]);
            let v = __m512::load(x.as_ptr());
            let mut o = [0.0f32; 16];
            for (which, dst) in [(0, &mut *e), (1, &mut *r), (2, &mut *f), (3, &mut *en)] {
                let y = match which {
                    0 => super::exp(v),
                    1 => v.recip(),
                    2 => super::erf(v),
                    _ => super::exp_neg::<_, 5>(v),
                };
                y.store(o.as_mut_ptr());
                dst[i..i + k].copy_from_slice(&o[..k]);
            }
        }
    }
    // SAFETY: tests call this only at the Avx512 level.
    unsafe { run(xs, e, en, r, f) }
}
