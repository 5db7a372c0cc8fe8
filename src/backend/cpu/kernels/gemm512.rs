//! Packed GEMM with an AVX-512 micro-kernel (Goto / BLIS blocking), used for f32, f16 and
//! bf16 operands when the CPU has AVX-512F: C = alpha * op(A) op(B) + beta * C, C with dense
//! rows. `matrixmultiply` (the fallback) has no AVX-512 kernel, which left it at ~0.75x of
//! OpenBLAS on AVX-512 machines.
//!
//! Blocking: for each NC-column block of B and KC-deep slice, B is packed once into NR-wide
//! panels shared by all threads; each task packs an MC-row block of A into MR-row panels
//! (its own, in L2) and runs the 12 x 32 micro-kernel over (B panel, A panel) pairs, the B
//! micro-panel (KC x 32 floats = 32 KiB) staying in L1. f16 / bf16 operands are converted
//! while packing (F16C / shifts), so they cost no separate conversion pass and no scratch copy.
//!
//! Built only with `nh_avx512` (build.rs: rustc >= 1.89, where AVX-512 intrinsics are stable),
//! hence the MSRV lint (1.82) is off here.
#![allow(clippy::incompatible_msrv)]

use super::super::host::{Run, SendPtr};
use super::super::scratch::Scratch;
use super::matmul::{Gemm, Mat};
use crate::op::DType;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Micro-tile: MR rows of C by NR columns (two zmm registers per row, 24 accumulators).
const MR: usize = 12;
const NR: usize = 32;
/// Depth of one packed slice: a B micro-panel is KC x NR floats (32 KiB, L1).
const KC: usize = 256;
/// Most rows of one task's block of packed A (MC x KC floats = 384 KiB, in L2).
const MC_MAX: usize = 32 * MR;
/// Most columns of B packed at once (KC x NC floats = 3 MiB, shared by the threads).
const NC: usize = 96 * NR;
/// How far ahead (in depths of a B panel) the micro-kernel prefetches.
const PREFETCH_DEPTHS: usize = 12;
/// Below this many multiply-adds per batch the GEMM runs on the calling thread.
const SERIAL_MACS: usize = 1 << 18;

/// One operand as the packing routines read it.
#[derive(Clone, Copy)]
struct Operand {
    mat: Mat,
    dtype: DType,
}

impl Operand {
    /// `n` elements from (i, j) of batch `bi`, `step` apart along the run, as f32 into `dst`.
    ///
    /// # Safety
    /// The elements lie inside the operand's validated view.
    #[inline]
    unsafe fn load(&self, bi: usize, i: usize, j: usize, stride: usize, dst: &mut [f32]) {
        Run { ptr: self.mat.ptr, dtype: self.dtype, off: self.mat.offset(bi, i, j), stride }.load(dst)
    }
}

/// 64-byte aligned start of a float buffer with 16 spare floats.
fn aligned(buf: &mut [f32]) -> *mut f32 {
    let p = buf.as_mut_ptr();
    let skip = (64 - (p as usize & 63)) % 64 / 4;
    p.wrapping_add(skip)
}

/// Packs rows i0..i0+mr (mr <= MR) of op(A), depths p0..p0+kc, as dst[k * MR + r] (rows past
/// mr are zero).
unsafe fn pack_a(a: &Operand, bi: usize, i0: usize, mr: usize, p0: usize, kc: usize, dst: *mut f32) {
    let m = &a.mat;
    if m.rs == 1 && m.cs != 1 {
        // Columns of A are contiguous (transposed A): one run of MR rows per depth.
        let mut col = [0.0f32; MR];
        for k in 0..kc {
            a.load(bi, i0, p0 + k, 1, &mut col[..mr]);
            col[mr..].fill(0.0);
            std::ptr::copy_nonoverlapping(col.as_ptr(), dst.add(k * MR), MR);
        }
        return;
    }
    // Rows of A: MR row streams read side by side, each depth written as MR contiguous floats.
    let mut tmp = [[0.0f32; KC]; MR];
    let mut rows = [std::ptr::null::<f32>(); MR];
    for (r, row) in rows.iter_mut().enumerate().take(mr) {
        if a.dtype == DType::F32 && m.cs == 1 {
            *row = m.at(bi, i0 + r, p0);
        } else {
            a.load(bi, i0 + r, p0, m.cs, &mut tmp[r][..kc]);
            *row = tmp[r].as_ptr();
        }
    }
    if mr == MR {
        for k in 0..kc {
            let d = dst.add(k * MR);
            for (r, row) in rows.iter().enumerate() {
                *d.add(r) = *row.add(k);
            }
        }
    } else {
        for k in 0..kc {
            let d = dst.add(k * MR);
            for (r, row) in rows.iter().enumerate() {
                *d.add(r) = if r < mr { *row.add(k) } else { 0.0 };
            }
        }
    }
}

/// Packs columns j0..j0+nr (nr <= NR) of op(B), depths p0..p0+kc, as dst[k * NR + j]
/// (columns past nr are zero).
unsafe fn pack_b(b: &Operand, bi: usize, j0: usize, nr: usize, p0: usize, kc: usize, dst: *mut f32) {
    let m = &b.mat;
    let first = m.ptr.0.add(m.offset(bi, p0, j0) * b.dtype.size());
    let float = matches!(b.dtype, DType::F32 | DType::F16 | DType::BF16);
    if m.cs == 1 && float {
        return pack_b_rows(first, b.dtype, m.rs, nr, kc, dst);
    }
    if m.rs == 1 && b.dtype == DType::F32 && NR * m.cs < i32::MAX as usize {
        return pack_b_columns(first as *const f32, m.cs, nr, kc, dst);
    }
    if m.cs == 1 || m.rs != 1 {
        // Rows of B are contiguous: one run of NR columns per depth.
        for k in 0..kc {
            let d = std::slice::from_raw_parts_mut(dst.add(k * NR), NR);
            b.load(bi, p0 + k, j0, m.cs, &mut d[..nr]);
            d[nr..].fill(0.0);
        }
        return;
    }
    // Columns of B are contiguous (transposed weights): load a column, scatter it.
    let mut col = [0.0f32; KC];
    for j in 0..NR {
        if j < nr {
            b.load(bi, p0, j0 + j, m.rs, &mut col[..kc]);
            for (k, v) in col[..kc].iter().enumerate() {
                *dst.add(k * NR + j) = *v;
            }
        } else {
            for k in 0..kc {
                *dst.add(k * NR + j) = 0.0;
            }
        }
    }
}

/// Masks of the two 16-lane halves of an NR-wide row with `nr` valid columns.
#[inline(always)]
fn lane_masks(nr: usize) -> (__mmask16, __mmask16) {
    let mask = |n: usize| -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    };
    (mask(nr), mask(nr.saturating_sub(16)))
}

/// `pack_b` for B with contiguous rows: per depth, two (masked) 16-lane loads, converted in
/// registers for f16 (F16C) and bf16 (shift).
///
/// # Safety
/// AVX-512F/BW/VL present; `first` is B's element (p0, j0); rows p0..p0+kc have nr elements
/// from there, `rs` elements apart; dst holds kc x NR floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn pack_b_rows(first: *const u8, dtype: DType, rs: usize, nr: usize, kc: usize, dst: *mut f32) {
    let (m0, m1) = lane_masks(nr);
    for k in 0..kc {
        let d = dst.add(k * NR);
        let (x0, x1) = match dtype {
            DType::F32 => {
                let p = (first as *const f32).wrapping_add(k * rs);
                (_mm512_maskz_loadu_ps(m0, p), _mm512_maskz_loadu_ps(m1, p.wrapping_add(16)))
            }
            _ => {
                let p = (first as *const i16).wrapping_add(k * rs);
                let h0 = _mm256_maskz_loadu_epi16(m0, p);
                let h1 = _mm256_maskz_loadu_epi16(m1, p.wrapping_add(16));
                if dtype == DType::F16 {
                    (_mm512_cvtph_ps(h0), _mm512_cvtph_ps(h1))
                } else {
                    let widen =
                        |h: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                    (widen(h0), widen(h1))
                }
            }
        };
        _mm512_storeu_ps(d, x0);
        _mm512_storeu_ps(d.add(16), x1);
    }
}

/// `pack_b` for f32 B with contiguous columns (transposed weights, element (k, j) at
/// k + j * cs): per depth, two 16-lane gathers instead of 32 scalar scattered stores.
///
/// # Safety
/// As `pack_b_rows`; `NR * cs` fits in an i32.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b_columns(first: *const f32, cs: usize, nr: usize, kc: usize, dst: *mut f32) {
    let (m0, m1) = lane_masks(nr);
    let idx = |base: i32| {
        let c = cs as i32;
        _mm512_mullo_epi32(
            _mm512_add_epi32(
                _mm512_set1_epi32(base),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            ),
            _mm512_set1_epi32(c),
        )
    };
    let (i0, i1) = (idx(0), idx(16));
    let zero = _mm512_setzero_ps();
    for k in 0..kc {
        let p = first.wrapping_add(k);
        let x0 = _mm512_mask_i32gather_ps::<4>(zero, m0, i0, p);
        let x1 = _mm512_mask_i32gather_ps::<4>(zero, m1, i1, p);
        let d = dst.add(k * NR);
        _mm512_storeu_ps(d, x0);
        _mm512_storeu_ps(d.add(16), x1);
    }
}

/// C[0..mr, 0..nr] = alpha * A_panel B_panel + beta * C (C not read when beta is 0).
///
/// # Safety
/// AVX-512F present; `a` holds kc x MR and `b` kc x NR packed floats; C's rows mr x nr lie
/// inside its view and belong to the caller.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    // Only the rows that exist are computed: a sentence of 13 tokens is 12 + 1 rows, not 24.
    let run = match mr {
        12.. => kernel_rows::<12>,
        11 => kernel_rows::<11>,
        10 => kernel_rows::<10>,
        9 => kernel_rows::<9>,
        8 => kernel_rows::<8>,
        7 => kernel_rows::<7>,
        6 => kernel_rows::<6>,
        5 => kernel_rows::<5>,
        4 => kernel_rows::<4>,
        3 => kernel_rows::<3>,
        2 => kernel_rows::<2>,
        _ => kernel_rows::<1>,
    };
    run(kc, a, b, c, rs_c, nr, alpha, beta)
}

/// `kernel` for exactly R (<= MR) rows of the panel.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_rows<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rs_c: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // A prepacked B panel streams from L3 once: ask for it a few depths ahead (at 256
        // rows this took the GEMM from 27.5 to 23.4 ms per MiniLM forward's matmuls).
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_DEPTHS * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_DEPTHS * NR + 16) as *const i8);
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r));
            acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    let (m0, m1) = lane_masks(nr);
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (r, acc) in acc.iter().enumerate() {
        let p0 = c.add(r * rs_c);
        let p1 = p0.wrapping_add(16);
        let mut x0 = _mm512_mul_ps(va, acc[0]);
        let mut x1 = _mm512_mul_ps(va, acc[1]);
        if beta != 0.0 {
            x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, p0), x0);
            x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, p1), x1);
        }
        _mm512_mask_storeu_ps(p0, m0, x0);
        _mm512_mask_storeu_ps(p1, m1, x1);
    }
}

/// Runs the whole (batched) GEMM on the current rayon pool. Callers checked `usable`.
pub(super) fn gemm(g: &Gemm, batch: usize, m: usize, n: usize) {
    let threads = rayon::current_num_threads();
    let per_batch = m * n * g.k;
    if threads == 1 || per_batch * batch <= SERIAL_MACS {
        (0..batch).for_each(|bi| run_one(g, bi, m, n, 1));
    } else if batch >= 2 * threads || per_batch <= SERIAL_MACS {
        // Many batches: one single-threaded task per batch balances best.
        (0..batch).into_par_iter().for_each(|bi| run_one(g, bi, m, n, 1));
    } else {
        (0..batch).for_each(|bi| run_one(g, bi, m, n, threads));
    }
}

/// `i`-th of `parts` near-equal pieces of 0..len.
fn piece(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    len * i / parts..len * (i + 1) / parts
}

/// One batch of the GEMM over `threads` threads (1: on the calling thread).
fn run_one(g: &Gemm, bi: usize, m: usize, n: usize, threads: usize) {
    let a = Operand { mat: g.a, dtype: g.a_dtype };
    let b = Operand { mat: g.b, dtype: g.b_dtype };
    let k = g.k;
    let par = threads > 1;
    // Tasks: row blocks (whole MR panels, at most MC_MAX rows, as many as a multiple of the
    // threads) times column groups (whole NR panels) when there are too few row blocks.
    let row_panels = m.div_ceil(MR);
    let mut row_blocks = m.div_ceil(MC_MAX);
    if par && row_blocks >= threads {
        row_blocks = row_blocks.next_multiple_of(threads).min(row_panels);
    }
    let c = SendPtr(g.c.at(bi, 0, 0) as *mut u8);
    let rs_c = g.c.rs;

    let mut b_pack = Scratch::new(KC * NC.min(n.next_multiple_of(NR)) + 16);
    let b_base = SendPtr(aligned(&mut b_pack) as *mut u8);
    let mut a_pack = Scratch::new(KC * row_panels * MR + 16);
    let a_base = SendPtr(aligned(&mut a_pack) as *mut u8);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let col_panels = nc.div_ceil(NR);
        let groups =
            if par && row_blocks < threads { (2 * threads).div_ceil(row_blocks).min(col_panels) } else { 1 };
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let big = par && kc * nc >= 16 * 1024;
            let pack_b_panel = |p: usize| {
                let j0 = jc + p * NR;
                // SAFETY: panel p of the packed block is written by this task only; B's
                // elements come from its validated view.
                unsafe { pack_b(&b, bi, j0, NR.min(n - j0), pc, kc, b_base.f32().add(p * kc * NR)) };
            };
            // All of A's rows for this depth slice, shared by the tasks like B.
            let pack_a_panel = |ip: usize| {
                let i0 = ip * MR;
                // SAFETY: as for B.
                unsafe { pack_a(&a, bi, i0, MR.min(m - i0), pc, kc, a_base.f32().add(ip * kc * MR)) };
            };
            if big {
                (0..col_panels + row_panels).into_par_iter().for_each(|t| {
                    if t < col_panels {
                        pack_b_panel(t)
                    } else {
                        pack_a_panel(t - col_panels)
                    }
                });
            } else {
                (0..col_panels).for_each(pack_b_panel);
                (0..row_panels).for_each(pack_a_panel);
            }
            let beta = if pc == 0 { g.p.beta } else { 1.0 };
            let task = |t: usize| {
                let (rows, cols) =
                    (piece(row_panels, row_blocks, t / groups), piece(col_panels, groups, t % groups));
                for p in cols {
                    let j0 = jc + p * NR;
                    let nr = NR.min(n - j0);
                    // SAFETY: packed panels were written above; each (row, column) tile of C
                    // lies in C's validated view and is written by one task only.
                    unsafe {
                        let bp = b_base.f32().add(p * kc * NR);
                        for ip in rows.clone() {
                            let i0 = ip * MR;
                            let ap = a_base.f32().add(ip * kc * MR);
                            let cp = c.f32().add(i0 * rs_c + j0);
                            kernel(kc, ap, bp, cp, rs_c, MR.min(m - i0), nr, g.p.alpha, beta);
                        }
                    }
                }
            };
            let tasks = row_blocks * groups;
            if par && tasks > 1 {
                (0..tasks).into_par_iter().for_each(task);
            } else {
                (0..tasks).for_each(task);
            }
        }
    }
    // Bias and activation, row blocks in parallel.
    if par && row_blocks > 1 {
        (0..row_blocks).into_par_iter().for_each(|rb| {
            let rows = piece(row_panels, row_blocks, rb);
            g.epilogue(bi, rows.start * MR..(rows.end * MR).min(m), 0..n)
        });
    } else {
        g.epilogue(bi, 0..m, 0..n);
    }
}

/// All of op(B) (k x n, one batch) in the micro-kernel's layout: NR-wide panels, each k x NR
/// floats (a depth's NR columns contiguous), panel after panel. Made once for a constant
/// operand (a weight: `weight_cache.rs`) and reused by every later matmul with it, as ONNX
/// Runtime prepacks weights when a session is created.
pub struct PackedB {
    data: Box<[f32]>,
    pub k: usize,
    pub n: usize,
}

impl PackedB {
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    fn panel(&self, p: usize) -> *const f32 {
        self.data[p * self.k * NR..].as_ptr()
    }
}

/// Packs op(B) of `g` (batch 0; callers pass only unbatched B) on the current pool.
pub(super) fn pack_whole_b(g: &Gemm, n: usize) -> PackedB {
    let k = g.k;
    let b = Operand { mat: g.b, dtype: g.b_dtype };
    let panels = n.div_ceil(NR);
    let mut data = vec![0.0f32; panels * k * NR].into_boxed_slice();
    data.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
        let j0 = p * NR;
        for p0 in (0..k).step_by(KC) {
            // SAFETY: depths p0..p0+kc of the panel are written here; B's elements come from
            // its validated view. pack_b writes dst[d * NR + j], so the slice starting at
            // depth p0 of a k x NR panel is contiguous.
            unsafe { pack_b(&b, 0, j0, NR.min(n - j0), p0, KC.min(k - p0), panel.as_mut_ptr().add(p0 * NR)) };
        }
    });
    PackedB { data, k, n }
}

/// Rows of packed A one task runs against each B panel, at most this many floats (1 MiB:
/// with a B panel it stays in L2, and B is read from memory once per block of rows).
const A_BLOCK_FLOATS: usize = 256 * 1024;

/// The GEMM of `g` with B already packed: A is packed once and shared, then one parallel
/// pass of tasks (row panels x column panels), each kernel running the whole depth in
/// registers. At a dozen rows this streams B once at memory speed.
pub(super) fn gemm_prepacked(g: &Gemm, packed: &PackedB, batch: usize, m: usize, n: usize) {
    debug_assert!(packed.k == g.k && packed.n == n);
    let threads = rayon::current_num_threads();
    let par = threads > 1 && m * n * g.k > SERIAL_MACS;
    let row_panels = m.div_ceil(MR);
    let col_panels = n.div_ceil(NR);
    let panels_per_block = (A_BLOCK_FLOATS / (g.k * MR).max(1)).max(1);
    let mut row_blocks = row_panels.div_ceil(panels_per_block);
    if par && row_blocks >= threads {
        row_blocks = row_blocks.next_multiple_of(threads).min(row_panels);
    }
    // Few row blocks (few rows): split the columns too, into many small tasks, so a thread
    // that wakes late still finds work (each task is microseconds at a dozen rows).
    let groups =
        if par && row_blocks < 2 * threads { (8 * threads).div_ceil(row_blocks).min(col_panels) } else { 1 };
    let a = Operand { mat: g.a, dtype: g.a_dtype };
    let k = g.k;
    // All of A, packed once for all tasks (packing it per task cost 13% at a dozen rows):
    // row panel ip at ip * k * MR.
    let mut a_pack = Scratch::new(row_panels * k * MR);
    let a_base = SendPtr(a_pack.as_mut_ptr() as *mut u8);
    for bi in 0..batch {
        let pack_a_panel = |ip: usize| {
            let i0 = ip * MR;
            for p0 in (0..k).step_by(KC) {
                // SAFETY: A's elements come from its validated view; panel ip (k x MR floats
                // from ip * k * MR) is written by this call only.
                unsafe {
                    pack_a(
                        &a,
                        bi,
                        i0,
                        MR.min(m - i0),
                        p0,
                        KC.min(k - p0),
                        a_base.f32().add((ip * k + p0) * MR),
                    )
                };
            }
        };
        if par && row_panels > 1 {
            (0..row_panels).into_par_iter().for_each(pack_a_panel);
        } else {
            (0..row_panels).for_each(pack_a_panel);
        }
        let c = SendPtr(g.c.at(bi, 0, 0) as *mut u8);
        let rs_c = g.c.rs;
        let task = |t: usize| {
            let rows = piece(row_panels, row_blocks, t / groups);
            let cols = piece(col_panels, groups, t % groups);
            for p in cols.clone() {
                let j0 = p * NR;
                let nr = NR.min(n - j0);
                for ip in rows.clone() {
                    let i0 = ip * MR;
                    // SAFETY: both panels are packed k deep; this task alone writes the tile
                    // of C at (i0, j0), which lies in C's validated view.
                    unsafe {
                        let cp = c.f32().add(i0 * rs_c + j0);
                        let ap = a_base.f32().add(ip * k * MR);
                        kernel(k, ap, packed.panel(p), cp, rs_c, MR.min(m - i0), nr, g.p.alpha, g.p.beta);
                    }
                }
            }
            g.epilogue(bi, rows.start * MR..(rows.end * MR).min(m), cols.start * NR..(cols.end * NR).min(n));
        };
        let tasks = row_blocks * groups;
        if par && tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}
