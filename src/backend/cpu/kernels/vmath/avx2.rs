//! `V` for AVX2 + FMA + F16C (8 lanes) and the streams compiled with those features.

use super::{prefetch, stream, table, Act, Dense, V};
use std::arch::x86_64::*;

impl V for __m256 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn load_half(p: *const u16, bf16: bool) -> Self {
        let h = _mm_loadu_si128(p as *const __m128i);
        if bf16 {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        } else {
            _mm256_cvtph_ps(h)
        }
    }
    #[inline(always)]
    unsafe fn store_half(self, p: *mut u16, bf16: bool) {
        let h = if bf16 {
            let r = bf16_bits(self);
            // packus works per 128-bit half: take the low quadword of each.
            let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi32(r, r));
            _mm256_castsi256_si128(packed)
        } else {
            _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self)
        };
        _mm_storeu_si128(p as *mut __m128i, h)
    }
    #[inline(always)]
    unsafe fn load_bf16_pair(p: *const u16) -> (Self, Self) {
        // A bf16 in the upper half of a 32-bit lane with zeros below is its f32.
        let (v, z) = (_mm256_loadu_si256(p as *const __m256i), _mm256_setzero_si256());
        (_mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v)), _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v)))
    }
    #[inline(always)]
    unsafe fn store_bf16_pair(a: Self, b: Self, p: *mut u16) {
        // packus per 128-bit lane: a's four values, then b's, the order the unpacks took.
        _mm256_storeu_si256(p as *mut __m256i, _mm256_packus_epi32(bf16_bits(a), bf16_bits(b)))
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        _mm256_add_ps(self, o)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        _mm256_sub_ps(self, o)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        _mm256_mul_ps(self, o)
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn fnma(self, b: Self, c: Self) -> Self {
        _mm256_fnmadd_ps(self, b, c)
    }
    #[inline(always)]
    unsafe fn min(self, o: Self) -> Self {
        _mm256_min_ps(self, o)
    }
    #[inline(always)]
    unsafe fn max(self, o: Self) -> Self {
        _mm256_max_ps(self, o)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        _mm256_and_ps(self, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)))
    }
    #[cfg(test)]
    #[inline(always)]
    unsafe fn copysign(self, sign: Self) -> Self {
        let s = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
        _mm256_or_ps(_mm256_andnot_ps(s, self), _mm256_and_ps(s, sign))
    }
    #[inline(always)]
    unsafe fn recip(self) -> Self {
        let r = _mm256_rcp_ps(self);
        _mm256_fmadd_ps(r, _mm256_fnmadd_ps(self, r, _mm256_set1_ps(1.0)), r)
    }
    #[inline(always)]
    unsafe fn recip_est(self) -> Self {
        _mm256_rcp_ps(self)
    }
    #[inline(always)]
    unsafe fn ldexp_magic(self, t: Self, _n: Self) -> Self {
        // t's bits are MAGIC's plus n; shifted left by 23 MAGIC's bits fall off the top and
        // n lands on the exponent field: one integer add scales by 2^n (no multiply).
        let scale = _mm256_slli_epi32::<23>(_mm256_castps_si256(t));
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(self), scale))
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps::<1>(self));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(self), _mm256_extractf128_ps::<1>(self));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s)))
    }
}

/// bf16 bits of each lane (in its low 16 bits, the upper ones zero): round to nearest even
/// on the upper 16 bits of the f32; NaNs become quiet NaNs (rounding could carry them into
/// infinity).
#[inline(always)]
unsafe fn bf16_bits(v: __m256) -> __m256i {
    let bits = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
    let rounded =
        _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))));
    let nan = _mm256_or_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(0x40));
    let is_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    _mm256_blendv_epi8(rounded, nan, is_nan)
}

pub(super) unsafe fn unary(act: Act, out: Dense, a: Dense, n: usize) {
    stream::unary::<Avx2>(act, out, a, n)
}

/// out[i] = table[a[i]] for n 16-bit inputs (out may be a; see `table`): per 16 elements one
/// load, two 8-lane gathers of 32 bits (the entry in the low half), a mask and a pack that
/// restores the order the unpacks took.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn lookup(table: &[u16], out: *mut u16, a: *const u16, n: usize) {
    debug_assert_eq!(table.len(), table::ENTRIES);
    let base = table.as_ptr() as *const i32;
    let (zero, low) = (_mm256_setzero_si256(), _mm256_set1_epi32(0xffff));
    let mut i = 0;
    while i + 16 <= n {
        prefetch(a.wrapping_add(i + stream::PREFETCH_AHEAD) as *const u8, 32);
        let v = _mm256_loadu_si256(a.add(i) as *const __m256i);
        let lo = _mm256_i32gather_epi32::<2>(base, _mm256_unpacklo_epi16(v, zero));
        let hi = _mm256_i32gather_epi32::<2>(base, _mm256_unpackhi_epi16(v, zero));
        let r = _mm256_packus_epi32(_mm256_and_si256(lo, low), _mm256_and_si256(hi, low));
        _mm256_storeu_si256(out.add(i) as *mut __m256i, r);
        i += 16;
    }
    table::lookup_scalar(table, out.add(i), a.add(i), n - i);
}

/// `unary`'s streams, one function each (see `stream::Maps`).
struct Avx2;

impl stream::Maps for Avx2 {
    #[inline(always)]
    unsafe fn map<const K: u8, const A: u8, const O: u8>(out: Dense, a: Dense, n: usize, s: f32) {
        map::<K, A, O>(out, a, n, s)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn map<const K: u8, const A: u8, const O: u8>(out: Dense, a: Dense, n: usize, s: f32) {
    stream::map::<__m256, K, A, O>(out, a, n, s)
}

pub(super) unsafe fn binary(mul: bool, out: Dense, a: Dense, b: Dense, n: usize) {
    stream::binary_by_dtype::<Avx2>(mul, out, a, b, n)
}

pub(super) unsafe fn softmax_row(out: Dense, x: Dense, n: usize, tmp: *mut f32) {
    stream::softmax_by_dtype::<Avx2>(out, x, n, tmp)
}

impl stream::Rows for Avx2 {
    #[inline(always)]
    unsafe fn binary<const MUL: bool, const D: u8>(out: Dense, a: Dense, b: Dense, n: usize) {
        binary_d::<MUL, D>(out, a, b, n)
    }

    #[inline(always)]
    unsafe fn softmax<const D: u8>(out: Dense, x: Dense, n: usize, tmp: *mut f32) {
        softmax_d::<D>(out, x, n, tmp)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn binary_d<const MUL: bool, const D: u8>(out: Dense, a: Dense, b: Dense, n: usize) {
    stream::binary::<__m256, MUL, D>(out, a, b, n)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_d<const D: u8>(out: Dense, x: Dense, n: usize, tmp: *mut f32) {
    stream::softmax_row::<__m256, D>(out, x, n, tmp)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rope_row(out: Dense, x: Dense, half: usize, c: *const f32, s: *const f32) {
    stream::rope_row::<__m256>(out, x, half, c, s)
}

/// exp, e^-x, recip and erf of every element (tests).
#[cfg(test)]
pub(super) fn probe(xs: &[f32], e: &mut [f32], en: &mut [f32], r: &mut [f32], f: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run(xs: &[f32], e: &mut [f32], en: &mut [f32], r: &mut [f32], f: &mut [f32]) {
        for i in (0..xs.len()).step_by(8) {
            let mut x = [1.0f32; 8];
            let k = 8.min(xs.len() - i);
            x[..k].copy_from_slice(&xs[i..i + k]);
            let v = __m256::load(x.as_ptr());
            let mut o = [0.0f32; 8];
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
    // SAFETY: tests call this only at the Avx2 level or above.
    unsafe { run(xs, e, en, r, f) }
}
