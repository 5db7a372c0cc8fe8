//! f32 matmuls with few rows (2 <= m <= SMALL_M) whose A rows and B columns are contiguous
//! along k: activations times a `[out, in]` weight with `trans_b`, the layout PyTorch and
//! safetensors store linear layers in (a sentence of a dozen tokens through BERT). A packed
//! GEMM repacks all of B on every call, which at such m costs more than the multiply itself
//! (the profile of the MiniLM example: 58% packing, 27% kernel). Here every output is a dot
//! product over k, in tiles of 2 rows x 4 columns (8 AVX2 accumulators; 4 x 4 with AVX-512's
//! 32 registers), so B streams from
//! memory exactly once and A (m x k, a few KiB) is re-read from L1; column blocks are split
//! across the pool. Epilogue as the GEMM's: alpha, beta, bias, activation.

use super::host::{load_dense, HostView, SendPtr};
use super::kernels::iter::TASK_ELEMS;
use super::kernels::math;
use super::simd::{has_avx2_fma, has_avx512};
use crate::op::{Activation, DType};
use rayon::prelude::*;

/// Most rows of C this path takes; above it the packed GEMM's reuse wins.
pub const SMALL_M: usize = 32;
/// Columns per task (a multiple of the 4-column tile).
const NB: usize = 32;

/// Parameters of a matmul this path runs, in f32 elements.
struct Plan {
    a: SendPtr,
    lda: usize,
    b: SendPtr,
    ldb: usize,
    c: SendPtr,
    ldc: usize,
    m: usize,
    k: usize,
    n: usize,
}

impl Plan {
    // Methods, so that closures capture the (Sync) plan rather than its raw-pointer fields.
    fn a(&self) -> *const f32 {
        self.a.0 as *const f32
    }
    fn b(&self) -> *const f32 {
        self.b.0 as *const f32
    }
    fn c(&self) -> *mut f32 {
        self.c.0 as *mut f32
    }
}

fn unbatched(v: &HostView) -> bool {
    v.shape[..v.rank - 2].iter().all(|&d| d == 1)
}

/// The plan if this path applies: f32 throughout, no batch, k-contiguous operands, C rows dense.
fn plan(out: &HostView, a: &HostView, b: &HostView, trans_a: bool, trans_b: bool) -> Option<Plan> {
    if out.dtype != DType::F32 || a.dtype != DType::F32 || b.dtype != DType::F32 {
        return None;
    }
    if out.rank < 2 || a.rank < 2 || b.rank < 2 || !unbatched(out) || !unbatched(a) || !unbatched(b) {
        return None;
    }
    let (ra, rb, rc) = (a.rank, b.rank, out.rank);
    let m = out.shape[rc - 2];
    let n = out.shape[rc - 1];
    // op(A)[i, kk] and op(B)[kk, j]: (stride of kk, stride of the other index).
    let (a_k, a_i) =
        if trans_a { (a.strides[ra - 2], a.strides[ra - 1]) } else { (a.strides[ra - 1], a.strides[ra - 2]) };
    let (b_k, b_j) =
        if trans_b { (b.strides[rb - 1], b.strides[rb - 2]) } else { (b.strides[rb - 2], b.strides[rb - 1]) };
    let k = if trans_a { a.shape[ra - 2] } else { a.shape[ra - 1] };
    if !(2..=SMALL_M).contains(&m) || k == 0 || n == 0 || a_k != 1 || b_k != 1 || out.strides[rc - 1] != 1 {
        return None;
    }
    Some(Plan { a: a.ptr, lda: a_i, b: b.ptr, ldb: b_j, c: out.ptr, ldc: out.strides[rc - 2], m, k, n })
}

/// Runs the matmul here and returns true, or returns false (nothing written) when this path
/// does not apply.
#[allow(clippy::too_many_arguments)]
pub fn try_matmul(
    out: &HostView,
    a: &HostView,
    b: &HostView,
    bias: Option<&HostView>,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    activation: Activation,
) -> bool {
    let Some(p) = plan(out, a, b, trans_a, trans_b) else { return false };
    let bias = bias.map(load_dense);
    let bias = bias.as_deref();
    let isa = if has_avx512() {
        Isa::Avx512
    } else if has_avx2_fma() {
        Isa::Avx2
    } else {
        Isa::Portable
    };
    let tile_rows = if isa == Isa::Avx512 { 4 } else { 2 };
    let block = |blk: usize| {
        let cols = blk * NB..((blk + 1) * NB).min(p.n);
        for j in cols.clone().step_by(4) {
            let nc = 4.min(cols.end - j);
            for i in (0..p.m).step_by(tile_rows) {
                let nr = tile_rows.min(p.m - i);
                let mut acc = [[0.0f32; 4]; 4];
                // SAFETY: rows i..i+nr of op(A) and columns j..j+nc of op(B) are k contiguous
                // f32 elements inside validated views.
                unsafe {
                    let a0 = p.a().add(i * p.lda);
                    let b0 = p.b().add(j * p.ldb);
                    tile(isa, a0, p.lda, b0, p.ldb, p.k, nr, nc, &mut acc);
                }
                for (r, row) in acc.iter().enumerate().take(nr) {
                    // SAFETY: C[i + r, j..j + nc] lies in the output view; this task alone
                    // writes these columns.
                    let dst = unsafe { std::slice::from_raw_parts_mut(p.c().add((i + r) * p.ldc + j), nc) };
                    for (d, v) in dst.iter_mut().zip(row) {
                        *d = if beta == 0.0 { alpha * v } else { alpha * v + beta * *d };
                    }
                }
            }
        }
        if bias.is_none() && activation == Activation::None {
            return;
        }
        for i in 0..p.m {
            // SAFETY: as above.
            let row =
                unsafe { std::slice::from_raw_parts_mut(p.c().add(i * p.ldc + cols.start), cols.len()) };
            math::bias_and_activation(row, bias.map(|b| &b[cols.clone()]), activation);
        }
    };
    let blocks = p.n.div_ceil(NB);
    if p.m * p.n * p.k <= 2 * TASK_ELEMS || rayon::current_num_threads() == 1 {
        (0..blocks).for_each(block);
    } else {
        (0..blocks).into_par_iter().for_each(block);
    }
    true
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Portable,
    Avx2,
    Avx512,
}

/// acc[r][c] = sum_kk A[r, kk] * B[c, kk] for r < nr (<= 2, or 4 with AVX-512), c < nc <= 4.
///
/// # Safety
/// Rows 0..nr of A (stride lda) and 0..nc of B (stride ldb) hold k readable f32 each.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    k: usize,
    nr: usize,
    nc: usize,
    acc: &mut [[f32; 4]; 4],
) {
    #[cfg(all(target_arch = "x86_64", nh_avx512))]
    if isa == Isa::Avx512 {
        match (nr, nc) {
            (4, 4) => x512::tile::<4, 4>(a, lda, b, ldb, k, acc),
            (3, 4) => x512::tile::<3, 4>(a, lda, b, ldb, k, acc),
            (2, 4) => x512::tile::<2, 4>(a, lda, b, ldb, k, acc),
            (1, 4) => x512::tile::<1, 4>(a, lda, b, ldb, k, acc),
            (4, 3) => x512::tile::<4, 3>(a, lda, b, ldb, k, acc),
            (3, 3) => x512::tile::<3, 3>(a, lda, b, ldb, k, acc),
            (2, 3) => x512::tile::<2, 3>(a, lda, b, ldb, k, acc),
            (1, 3) => x512::tile::<1, 3>(a, lda, b, ldb, k, acc),
            (4, 2) => x512::tile::<4, 2>(a, lda, b, ldb, k, acc),
            (3, 2) => x512::tile::<3, 2>(a, lda, b, ldb, k, acc),
            (2, 2) => x512::tile::<2, 2>(a, lda, b, ldb, k, acc),
            (1, 2) => x512::tile::<1, 2>(a, lda, b, ldb, k, acc),
            (4, _) => x512::tile::<4, 1>(a, lda, b, ldb, k, acc),
            (3, _) => x512::tile::<3, 1>(a, lda, b, ldb, k, acc),
            (2, _) => x512::tile::<2, 1>(a, lda, b, ldb, k, acc),
            _ => x512::tile::<1, 1>(a, lda, b, ldb, k, acc),
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        match (nr, nc) {
            (2, 4) => x86::tile::<2, 4>(a, lda, b, ldb, k, acc),
            (1, 4) => x86::tile::<1, 4>(a, lda, b, ldb, k, acc),
            (2, 3) => x86::tile::<2, 3>(a, lda, b, ldb, k, acc),
            (1, 3) => x86::tile::<1, 3>(a, lda, b, ldb, k, acc),
            (2, 2) => x86::tile::<2, 2>(a, lda, b, ldb, k, acc),
            (1, 2) => x86::tile::<1, 2>(a, lda, b, ldb, k, acc),
            (2, _) => x86::tile::<2, 1>(a, lda, b, ldb, k, acc),
            _ => x86::tile::<1, 1>(a, lda, b, ldb, k, acc),
        }
        return;
    }
    let _ = isa;
    for (r, row) in acc.iter_mut().enumerate().take(nr) {
        let ar = std::slice::from_raw_parts(a.add(r * lda), k);
        for (c, out) in row.iter_mut().enumerate().take(nc) {
            *out = dot(ar, std::slice::from_raw_parts(b.add(c * ldb), k));
        }
    }
}

/// a . b with 8 independent partial sums (portable build).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            s[i] += x[i] * y[i];
        }
    }
    s.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::simd::hsum256 as hsum;

    /// R rows of A against C rows of B (both k-contiguous), 8 lanes of k per step.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        acc: &mut [[f32; 4]; 4],
    ) {
        let mut v = [[_mm256_setzero_ps(); C]; R];
        let mut kk = 0;
        while kk + 8 <= k {
            let mut bv = [_mm256_setzero_ps(); C];
            for (c, x) in bv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(b.add(c * ldb + kk));
            }
            for (r, row) in v.iter_mut().enumerate() {
                let av = _mm256_loadu_ps(a.add(r * lda + kk));
                for (c, x) in row.iter_mut().enumerate() {
                    *x = _mm256_fmadd_ps(av, bv[c], *x);
                }
            }
            kk += 8;
        }
        for r in 0..R {
            for c in 0..C {
                let mut s = hsum(v[r][c]);
                for t in kk..k {
                    s += *a.add(r * lda + t) * *b.add(c * ldb + t);
                }
                acc[r][c] = s;
            }
        }
    }
}

// Built only when build.rs found a compiler with stable AVX-512 (>= 1.89, `nh_avx512`), so
// the crate's lower MSRV does not apply to it.
#[cfg(all(target_arch = "x86_64", nh_avx512))]
#[allow(clippy::incompatible_msrv)]
mod x512 {
    use std::arch::x86_64::*;

    /// R rows of A against C rows of B (both k-contiguous), 16 lanes of k per step.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        acc: &mut [[f32; 4]; 4],
    ) {
        let mut v = [[_mm512_setzero_ps(); C]; R];
        let mut kk = 0;
        while kk + 16 <= k {
            let mut bv = [_mm512_setzero_ps(); C];
            for (c, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(b.add(c * ldb + kk));
            }
            for (r, row) in v.iter_mut().enumerate() {
                let av = _mm512_loadu_ps(a.add(r * lda + kk));
                for (c, x) in row.iter_mut().enumerate() {
                    *x = _mm512_fmadd_ps(av, bv[c], *x);
                }
            }
            kk += 16;
        }
        for r in 0..R {
            for c in 0..C {
                let mut s = _mm512_reduce_add_ps(v[r][c]);
                for t in kk..k {
                    s += *a.add(r * lda + t) * *b.add(c * ldb + t);
                }
                acc[r][c] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_data::fill;
    use crate::op::MAX_RANK;

    fn view(data: &mut [f32], shape: [usize; 2], strides: [usize; 2]) -> HostView {
        let mut s = [1; MAX_RANK];
        let mut st = [0; MAX_RANK];
        s[..2].copy_from_slice(&shape);
        st[..2].copy_from_slice(&strides);
        HostView {
            ptr: SendPtr(data.as_mut_ptr() as *mut u8),
            dtype: DType::F32,
            rank: 2,
            shape: s,
            strides: st,
        }
    }

    /// Against an f64 triple loop: every tile shape (m and n remainders), k with and without
    /// a tail, beta, bias and activations; A stored as op(A) or transposed with k contiguous.
    #[test]
    fn matches_reference() {
        let acts = [Activation::None, Activation::Relu, Activation::Silu, Activation::Gelu];
        let mut case = 0;
        for &m in &[2usize, 3, 5, 12, 32] {
            for &(k, n) in &[(8usize, 4usize), (13, 7), (384, 37), (64, 1)] {
                case += 1;
                let act = acts[case % 4];
                let beta = if case % 3 == 0 { 0.5 } else { 0.0 };
                let alpha = if case % 2 == 0 { 1.0 } else { 0.75 };
                let mut a = fill(m * k, case as u32);
                let mut w = fill(n * k, 100 + case as u32); // [n, k]: trans_b
                let mut bias = fill(n, 200 + case as u32);
                let c0 = fill(m * n, 300 + case as u32);
                let mut c = c0.clone();
                let (va, vw, vb) = (view(&mut a, [m, k], [k, 1]), view(&mut w, [n, k], [k, 1]), {
                    let mut s = [1; MAX_RANK];
                    s[0] = n;
                    let mut st = [0; MAX_RANK];
                    st[0] = 1;
                    HostView {
                        ptr: SendPtr(bias.as_mut_ptr() as *mut u8),
                        dtype: DType::F32,
                        rank: 1,
                        shape: s,
                        strides: st,
                    }
                });
                let vc = view(&mut c, [m, n], [n, 1]);
                assert!(
                    try_matmul(&vc, &va, &vw, Some(&vb), false, true, alpha, beta, act),
                    "m={m} k={k} n={n}"
                );
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|t| a[i * k + t] as f64 * w[j * k + t] as f64).sum();
                        let mut want =
                            alpha as f64 * dot + beta as f64 * c0[i * n + j] as f64 + bias[j] as f64;
                        want = match act {
                            Activation::None => want,
                            Activation::Relu => want.max(0.0),
                            Activation::Silu => want / (1.0 + (-want).exp()),
                            Activation::Gelu => {
                                let x = want as f32;
                                math::gelu_erf::<false>(x) as f64
                            }
                        };
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "m={m} k={k} n={n} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_run() {
        let mut a = fill(64, 1);
        let mut b = fill(64, 2);
        let mut c = vec![0.0f32; 64];
        let va = view(&mut a, [8, 8], [8, 1]);
        let vb = view(&mut b, [8, 8], [8, 1]);
        let vc = view(&mut c, [8, 8], [8, 1]);
        // B not k-contiguous without trans_b
        assert!(!try_matmul(&vc, &va, &vb, None, false, false, 1.0, 0.0, Activation::None));
        // m = 1 is the GEMV's
        let vc1 = view(&mut c, [1, 8], [8, 1]);
        let va1 = view(&mut a, [1, 8], [8, 1]);
        assert!(!try_matmul(&vc1, &va1, &vb, None, false, true, 1.0, 0.0, Activation::None));
        // strided C
        let vcs = view(&mut c, [4, 8], [16, 2]);
        let va4 = view(&mut a, [4, 8], [8, 1]);
        assert!(!try_matmul(&vcs, &va4, &vb, None, false, true, 1.0, 0.0, Activation::None));
        assert!(c.iter().all(|&v| v == 0.0), "declined calls must not write");
    }

    #[test]
    fn every_isa_tile_matches() {
        let k = 45;
        let b = fill(4 * k, 6);
        let a = fill(4 * k, 5);
        let mut isas = vec![Isa::Portable];
        if has_avx2_fma() {
            isas.push(Isa::Avx2);
        }
        if has_avx512() {
            isas.push(Isa::Avx512);
        }
        let mut want = [[0.0f32; 4]; 4];
        // SAFETY: 2 rows of a and 4 of b, k each (4 rows of a for AVX-512).
        unsafe { tile(Isa::Portable, a.as_ptr(), k, b.as_ptr(), k, k, 2, 4, &mut want) };
        for isa in isas {
            let rows = if isa == Isa::Avx512 { 4 } else { 2 };
            let mut got = [[0.0f32; 4]; 4];
            unsafe { tile(isa, a.as_ptr(), k, b.as_ptr(), k, k, rows, 4, &mut got) };
            for r in 0..rows {
                for c in 0..4 {
                    let w: f32 = (0..k).map(|t| a[r * k + t] * b[c * k + t]).sum();
                    assert!((got[r][c] - w).abs() < 1e-4, "{isa:?} ({r},{c}): {} vs {w}", got[r][c]);
                    if r < 2 {
                        assert!((want[r][c] - w).abs() < 1e-4, "portable ({r},{c})");
                    }
                }
            }
        }
    }
}
