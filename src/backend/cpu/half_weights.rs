//! Few rows of activations times an f16 / bf16 weight stored `[n, k]` (trans_b: GGUF's and
//! PyTorch's Linear layout), the decode matmuls of a model kept in half precision. Decode
//! is bound by reading the weights, so each weight row streams from memory exactly once, at
//! half the bytes of f32: widened in registers (F16C `vcvtph2ps`, a 16-bit shift for bf16),
//! four weight rows at a time (four streams, prefetched ahead as the quantized GEMVs do),
//! each dotted with up to 4 rows of A (2 with AVX2's 16 registers) re-read from L1, summed
//! in f32. Column blocks are split across the pool. More rows go to the packed GEMM, which
//! widens B while packing its panels.

use super::host::{dense_copy, load_dense, HostView};
use super::kernels::iter::TASK_ELEMS;
use super::kernels::math;
use super::kernels::matmul::MatmulParams;
use super::simd::{self, Isa};
use crate::op::{Activation, DType};
use rayon::prelude::*;

/// Most rows of C (all batches together) this path takes.
pub const MAX_ROWS: usize = 8;
/// Weight rows one kernel call streams at once.
const COLS: usize = 4;
/// How far ahead of the loads each weight row is prefetched, in elements (2 KiB).
const PREFETCH: usize = 1024;

/// Runs the matmul here and returns true, or returns false (nothing written) when this path
/// does not apply: B not f16 / bf16, not `[n, k]` with k contiguous and one batch, or more
/// than `MAX_ROWS` rows of C.
pub fn try_matmul(
    out: &HostView,
    a: &HostView,
    b: &HostView,
    bias: Option<&HostView>,
    p: &MatmulParams,
) -> bool {
    let (rb, rc) = (b.rank, out.rank);
    let (m, n) = (out.shape[rc - 2], out.shape[rc - 1]);
    let k = b.shape[rb - 1];
    let batch: usize = out.shape[..rc - 2].iter().product();
    let b_batch: usize = b.shape[..rb - 2].iter().product();
    let half = matches!(b.dtype, DType::F16 | DType::BF16);
    if !half || !p.trans_b || b_batch != 1 || b.strides[rb - 1] != 1 || k == 0 || n == 0 {
        return false;
    }
    if m * batch > MAX_ROWS || m == 0 {
        return false;
    }
    let rows = a_rows(a, p.trans_a, batch, m, k);
    let cc = (out.dtype != DType::F32 || (out.col_stride() != 1 && n > 1)).then(|| dense_copy(out));
    let c = cc.as_ref().map(|c| c.view).unwrap_or(*out);
    let bias = bias.map(load_dense);
    let job = Job { isa: simd::isa(), rows: &rows, b, c: &c, bias: bias.as_deref(), p, m: m * batch, k };
    let per_task = n.div_ceil(rayon::current_num_threads() * 8).clamp(16, 512).next_multiple_of(COLS);
    let tasks = n.div_ceil(per_task);
    let task = |t: usize| job.columns(t * per_task..((t + 1) * per_task).min(n));
    if m * batch * n * k <= 2 * TASK_ELEMS || rayon::current_num_threads() == 1 {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
    if let Some(cc) = cc.as_ref() {
        super::kernels::matmul::store_dense(out, &cc.view);
    }
    true
}

/// The `batch * m` rows of op(A) as dense f32, batch-major (a few KiB: copied whatever A's
/// type and layout, so the kernels see one form).
fn a_rows(a: &HostView, trans: bool, batch: usize, m: usize, k: usize) -> Vec<f32> {
    let r = a.rank;
    let a_batch: usize = a.shape[..r - 2].iter().product();
    let mut rows = vec![0.0f32; batch * m * k];
    for bi in 0..batch {
        // A with one batch serves every batch (validated: A's batch is C's or 1).
        let ab = if a_batch == 1 { 0 } else { bi };
        for i in 0..m {
            let (start, stride) = if trans {
                (a.row_offset(ab * k) + i * a.strides[r - 1], a.strides[r - 2])
            } else {
                (a.row_offset(ab * m + i), a.col_stride())
            };
            // SAFETY: the elements lie in the validated view.
            unsafe { a.run(start, stride).load(&mut rows[(bi * m + i) * k..][..k]) };
        }
    }
    rows
}

struct Job<'a> {
    isa: Isa,
    rows: &'a [f32],
    b: &'a HostView,
    c: &'a HostView,
    bias: Option<&'a [f32]>,
    p: &'a MatmulParams,
    /// Rows of C, all batches.
    m: usize,
    k: usize,
}

impl Job<'_> {
    /// Weight row j (k elements of 16 bits).
    fn weight(&self, j: usize) -> *const u16 {
        // SAFETY (of later reads): row j < n of the validated B view, k contiguous.
        (self.b.ptr.0 as *const u16).wrapping_add(self.b.row_offset(j))
    }

    /// Row i of C (all batches flattened), columns `cols` (this task's own elements).
    fn c_row<'a>(&self, i: usize, cols: &std::ops::Range<usize>) -> &'a mut [f32] {
        // SAFETY: C has dense rows (else a dense copy); each task owns its columns.
        unsafe {
            let p = self.c.ptr.f32().add(self.c.row_offset(i) + cols.start);
            std::slice::from_raw_parts_mut(p, cols.len())
        }
    }

    fn columns(&self, cols: std::ops::Range<usize>) {
        let group = if self.isa == Isa::Avx512 { 4 } else { 2 };
        let bf16 = self.b.dtype == DType::BF16;
        let mut c: Vec<&mut [f32]> = (0..self.m).map(|i| self.c_row(i, &cols)).collect();
        for j0 in cols.clone().step_by(COLS) {
            let nc = COLS.min(cols.end - j0);
            for i0 in (0..self.m).step_by(group) {
                let nr = group.min(self.m - i0);
                let x: [*const f32; 4] =
                    std::array::from_fn(|r| self.rows[(i0 + r.min(nr - 1)) * self.k..].as_ptr());
                let w: [*const u16; COLS] = std::array::from_fn(|q| self.weight(j0 + q.min(nc - 1)));
                // SAFETY: x[r] holds k floats, w[q] k weights (short groups repeat a valid row).
                let sums = unsafe { dots(self.isa, bf16, x, nr, w, nc, self.k) };
                for r in 0..nr {
                    let row = &mut c[i0 + r][j0 - cols.start..][..nc];
                    for (d, s) in row.iter_mut().zip(sums[r]) {
                        *d = if self.p.beta == 0.0 {
                            self.p.alpha * s
                        } else {
                            self.p.alpha * s + self.p.beta * *d
                        };
                    }
                }
            }
        }
        if self.bias.is_none() && self.p.activation == Activation::None {
            return;
        }
        for row in c.iter_mut() {
            math::bias_and_activation(row, self.bias.map(|b| &b[cols.clone()]), self.p.activation);
        }
    }
}

/// sums[r][q] = x[r] . w[q] for r < nr, q < nc, widening w (bf16 when `bf16`, else f16).
///
/// # Safety
/// x[r] (r < 4) holds k floats and w[q] (q < 4) k 16-bit values; `isa` is available.
unsafe fn dots(
    isa: Isa,
    bf16: bool,
    x: [*const f32; 4],
    nr: usize,
    w: [*const u16; COLS],
    nc: usize,
    k: usize,
) -> [[f32; COLS]; 4] {
    let mut out = [[0.0f32; COLS]; 4];
    macro_rules! rows {
        ($m:ident, $($r:literal),+) => {
            match (nr, bf16) {
                $(($r, true) => {
                    let s = $m::dots::<$r, true>(std::array::from_fn(|i| x[i]), w, k);
                    out[..$r].copy_from_slice(&s);
                }
                ($r, false) => {
                    let s = $m::dots::<$r, false>(std::array::from_fn(|i| x[i]), w, k);
                    out[..$r].copy_from_slice(&s);
                })+
                _ => unreachable!("row group of {nr}"),
            }
        };
    }
    match isa {
        #[cfg(all(target_arch = "x86_64", nh_avx512))]
        Isa::Avx512 => rows!(x512, 1, 2, 3, 4),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => rows!(x86, 1, 2),
        _ => {
            for (r, o) in out.iter_mut().enumerate().take(nr) {
                let xr = std::slice::from_raw_parts(x[r], k);
                for (q, s) in o.iter_mut().enumerate().take(nc) {
                    *s = dot_scalar(bf16, xr, std::slice::from_raw_parts(w[q], k));
                }
            }
        }
    }
    out
}

/// Widens one 16-bit value (bf16 when `bf16`, else f16).
fn widen(bf16: bool, bits: u16) -> f32 {
    if bf16 {
        f32::from_bits((bits as u32) << 16)
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

/// x . w with 8 partial sums (portable build).
fn dot_scalar(bf16: bool, x: &[f32], w: &[u16]) -> f32 {
    let mut s = [0.0f32; 8];
    let (xc, wc) = (x.chunks_exact(8), w.chunks_exact(8));
    let tail: f32 = xc.remainder().iter().zip(wc.remainder()).map(|(a, &b)| a * widen(bf16, b)).sum();
    for (a, b) in xc.zip(wc) {
        for i in 0..8 {
            s[i] += a[i] * widen(bf16, b[i]);
        }
    }
    s.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{widen, COLS, PREFETCH};
    use std::arch::x86_64::*;

    use crate::backend::cpu::simd::hsum256 as hsum;

    /// R rows of A against four weight rows, 8 lanes at a time, two vectors a step.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots<const R: usize, const BF16: bool>(
        x: [*const f32; R],
        w: [*const u16; COLS],
        k: usize,
    ) -> [[f32; COLS]; R] {
        let load = |p: *const u16| {
            let h = _mm_loadu_si128(p as *const __m128i);
            if BF16 {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            } else {
                _mm256_cvtph_ps(h)
            }
        };
        let mut acc = [[_mm256_setzero_ps(); COLS]; R];
        let mut kk = 0;
        while kk + 16 <= k {
            for p in w {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(kk + PREFETCH) as *const i8);
            }
            for o in [kk, kk + 8] {
                let wv: [__m256; COLS] = std::array::from_fn(|q| load(w[q].add(o)));
                for r in 0..R {
                    let xv = _mm256_loadu_ps(x[r].add(o));
                    for q in 0..COLS {
                        acc[r][q] = _mm256_fmadd_ps(xv, wv[q], acc[r][q]);
                    }
                }
            }
            kk += 16;
        }
        let mut out = [[0.0f32; COLS]; R];
        for r in 0..R {
            for q in 0..COLS {
                let mut s = hsum(acc[r][q]);
                for t in kk..k {
                    s += *x[r].add(t) * widen(BF16, *w[q].add(t));
                }
                out[r][q] = s;
            }
        }
        out
    }
}

// Built only when build.rs found a compiler with stable AVX-512 (`nh_avx512`).
#[cfg(all(target_arch = "x86_64", nh_avx512))]
#[allow(clippy::incompatible_msrv)]
mod x512 {
    use super::{widen, COLS, PREFETCH};
    use std::arch::x86_64::*;

    /// R rows of A against four weight rows, 16 lanes at a time, one cache line of each
    /// weight row (32 values) a step.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub unsafe fn dots<const R: usize, const BF16: bool>(
        x: [*const f32; R],
        w: [*const u16; COLS],
        k: usize,
    ) -> [[f32; COLS]; R] {
        let load = |p: *const u16| {
            let h = _mm256_loadu_si256(p as *const __m256i);
            if BF16 {
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            } else {
                _mm512_cvtph_ps(h)
            }
        };
        let mut acc = [[_mm512_setzero_ps(); COLS]; R];
        let mut kk = 0;
        while kk + 32 <= k {
            for p in w {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(kk + PREFETCH) as *const i8);
            }
            for o in [kk, kk + 16] {
                let wv: [__m512; COLS] = std::array::from_fn(|q| load(w[q].add(o)));
                for r in 0..R {
                    let xv = _mm512_loadu_ps(x[r].add(o));
                    for q in 0..COLS {
                        acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
                    }
                }
            }
            kk += 32;
        }
        if kk + 16 <= k {
            let wv: [__m512; COLS] = std::array::from_fn(|q| load(w[q].add(kk)));
            for r in 0..R {
                let xv = _mm512_loadu_ps(x[r].add(kk));
                for q in 0..COLS {
                    acc[r][q] = _mm512_fmadd_ps(xv, wv[q], acc[r][q]);
                }
            }
            kk += 16;
        }
        let mut out = [[0.0f32; COLS]; R];
        for r in 0..R {
            for q in 0..COLS {
                let mut s = _mm512_reduce_add_ps(acc[r][q]);
                for t in kk..k {
                    s += *x[r].add(t) * widen(BF16, *w[q].add(t));
                }
                out[r][q] = s;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::host::SendPtr;
    use crate::backend::cpu::simd::{test_cap, test_levels};
    use crate::backend::cpu::test_data::fill;
    use crate::op::MAX_RANK;
    use half::{bf16, f16};

    fn view(ptr: *mut u8, dtype: DType, shape: [usize; 2], strides: [usize; 2]) -> HostView {
        let (mut s, mut st) = ([1; MAX_RANK], [0; MAX_RANK]);
        s[..2].copy_from_slice(&shape);
        st[..2].copy_from_slice(&strides);
        HostView { ptr: SendPtr(ptr), dtype, rank: 2, shape: s, strides: st }
    }

    /// Every row count up to MAX_ROWS and k around the vector steps (8, 16, 32 lanes), each
    /// kernel the CPU has: equal to f64 math on the widened weights; more rows, or B not
    /// [n, k], are declined without writing.
    #[test]
    fn streams_few_rows_at_every_level() {
        for level in test_levels() {
            let _cap = test_cap(level);
            for bf in [false, true] {
                let dt = if bf { DType::BF16 } else { DType::F16 };
                for &(k, n) in &[(1usize, 3usize), (15, 5), (31, 9), (33, 4), (64, 13), (1000, 7)] {
                    let w: Vec<u16> = fill(n * k, k as u32)
                        .iter()
                        .map(|&v| if bf { bf16::from_f32(v).to_bits() } else { f16::from_f32(v).to_bits() })
                        .collect();
                    let p = MatmulParams {
                        trans_a: false,
                        trans_b: true,
                        alpha: 1.0,
                        beta: 0.0,
                        activation: Activation::None,
                    };
                    let vw = view(w.as_ptr() as *mut u8, dt, [n, k], [k, 1]);
                    for m in 1..=MAX_ROWS + 1 {
                        let mut a = fill(m * k, 7 + m as u32);
                        let mut c = vec![0.0f32; m * n];
                        let va = view(a.as_mut_ptr() as *mut u8, DType::F32, [m, k], [k, 1]);
                        let vc = view(c.as_mut_ptr() as *mut u8, DType::F32, [m, n], [n, 1]);
                        let took = try_matmul(&vc, &va, &vw, None, &p);
                        assert_eq!(took, m <= MAX_ROWS, "{level:?} m={m}");
                        if !took {
                            assert!(c.iter().all(|&v| v == 0.0), "declined calls must not write");
                            continue;
                        }
                        for i in 0..m {
                            for j in 0..n {
                                let terms =
                                    (0..k).map(|t| a[i * k + t] as f64 * widen(bf, w[j * k + t]) as f64);
                                let (want, mag) = terms.fold((0.0, 0.0), |(s, g), x| (s + x, g + x.abs()));
                                let got = c[i * n + j] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * mag + 1e-30,
                                    "{level:?} {dt} m={m} k={k} ({i},{j}): {got} vs {want}"
                                );
                            }
                        }
                    }
                    // B given as [k, n] (trans_b off) is the GEMV's or the packed GEMM's.
                    let mut a = fill(2 * n.max(k), 3);
                    let mut c = vec![0.0f32; 2 * k];
                    let va = view(a.as_mut_ptr() as *mut u8, DType::F32, [2, n], [n, 1]);
                    let vkn = view(w.as_ptr() as *mut u8, dt, [n, k], [k, 1]);
                    let vc = view(c.as_mut_ptr() as *mut u8, DType::F32, [2, k], [k, 1]);
                    assert!(!try_matmul(&vc, &va, &vkn, None, &MatmulParams { trans_b: false, ..p }));
                }
            }
        }
    }
}
