//! Packed GEMM (Goto / BLIS blocking) for f32, f16 and bf16 operands: C = alpha * op(A)
//! op(B) + beta * C, C with dense rows. One driver for every instruction set; what differs
//! per set (the micro-kernel, the vector packing of B and the block sizes) sits behind
//! `Micro`, in `avx512.rs` (12 x 32 tiles) and `avx2.rs` (6 x 16 tiles). `matrixmultiply`
//! (the portable fallback) stays at ~0.75-0.9x of OpenBLAS on either kind of CPU.
//!
//! Blocking: for each NC-column block of B and KC-deep slice, B is packed once into NR-wide
//! panels and A into MR-row panels, both shared by all threads (packing runs in parallel);
//! tasks of whole row panels (at most MC_MAX rows, sized to L2) run the micro-kernel over
//! (B panel, A panel) pairs, the B micro-panel staying in L1. f16 / bf16 operands are
//! converted while packing (F16C / shifts), so they cost no separate conversion pass.

use super::super::host::{Run, SendPtr};
use super::super::scratch::Scratch;
use super::super::simd::Isa;
use super::matmul::{Gemm, Mat};
use crate::op::DType;
use rayon::prelude::*;

mod avx2;
#[cfg(nh_avx512)]
mod avx512;

/// Largest MR and KC of any `Micro` (sizes of the packing routines' stack buffers).
const MAX_MR: usize = 12;
const MAX_KC: usize = 256;
/// Below this many multiply-adds per batch the GEMM runs on the calling thread.
const SERIAL_MACS: usize = 1 << 18;

/// One instruction set's micro-kernel, vector packing of B and block sizes.
pub(super) trait Micro {
    const ISA: Isa;
    /// Micro-tile: MR rows of C by NR columns.
    const MR: usize;
    const NR: usize;
    /// Depth of one packed slice (a KC x NR B micro-panel stays in L1).
    const KC: usize;
    /// Most rows of one task's block of packed A (MC_MAX x KC floats stay in L2).
    const MC_MAX: usize;
    /// Most columns of B packed at once (KC x NC floats, shared by the threads).
    const NC: usize;
    /// Prepacked B: most floats of packed A one task runs against each B panel, so that B
    /// streams from memory once per block of rows while the block stays in L2.
    const A_BLOCK_FLOATS: usize;

    /// Packs nr (<= NR) columns of B with contiguous rows (f32, f16 or bf16) as
    /// dst[k * NR + j], zero past nr.
    ///
    /// # Safety
    /// The CPU has this set; `first` is B's element (p0, j0); rows p0..p0+kc hold nr elements
    /// from there, `rs` elements apart; dst holds kc x NR floats.
    unsafe fn pack_b_rows(first: *const u8, dtype: DType, rs: usize, nr: usize, kc: usize, dst: *mut f32);

    /// As `pack_b_rows` for f32 B with contiguous columns (element (k, j) at k + j * cs);
    /// `NR * cs` fits in an i32.
    ///
    /// # Safety
    /// As `pack_b_rows`.
    unsafe fn pack_b_columns(first: *const f32, cs: usize, nr: usize, kc: usize, dst: *mut f32);

    /// C[0..mr, 0..nr] = alpha * A_panel B_panel + beta * C (C not read when beta is 0).
    ///
    /// # Safety
    /// The CPU has this set; `a` holds kc x MR and `b` kc x NR packed floats; C's rows mr x nr
    /// lie inside its view and belong to the caller.
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
    );
}

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
unsafe fn pack_a<K: Micro>(
    a: &Operand,
    bi: usize,
    i0: usize,
    mr: usize,
    p0: usize,
    kc: usize,
    dst: *mut f32,
) {
    let m = &a.mat;
    if m.rs == 1 && m.cs != 1 {
        // Columns of A are contiguous (transposed A): one run of MR rows per depth.
        let mut col = [0.0f32; MAX_MR];
        for k in 0..kc {
            a.load(bi, i0, p0 + k, 1, &mut col[..mr]);
            col[mr..].fill(0.0);
            std::ptr::copy_nonoverlapping(col.as_ptr(), dst.add(k * K::MR), K::MR);
        }
        return;
    }
    // Rows of A: MR row streams read side by side, each depth written as MR contiguous floats.
    let mut tmp = [[0.0f32; MAX_KC]; MAX_MR];
    let mut rows = [std::ptr::null::<f32>(); MAX_MR];
    for (r, row) in rows.iter_mut().enumerate().take(mr) {
        if a.dtype == DType::F32 && m.cs == 1 {
            *row = m.at(bi, i0 + r, p0);
        } else {
            a.load(bi, i0 + r, p0, m.cs, &mut tmp[r][..kc]);
            *row = tmp[r].as_ptr();
        }
    }
    let rows = &rows[..K::MR];
    if mr == K::MR {
        for k in 0..kc {
            let d = dst.add(k * K::MR);
            for (r, row) in rows.iter().enumerate() {
                *d.add(r) = *row.add(k);
            }
        }
    } else {
        for k in 0..kc {
            let d = dst.add(k * K::MR);
            for (r, row) in rows.iter().enumerate() {
                *d.add(r) = if r < mr { *row.add(k) } else { 0.0 };
            }
        }
    }
}

/// Packs columns j0..j0+nr (nr <= NR) of op(B), depths p0..p0+kc, as dst[k * NR + j]
/// (columns past nr are zero).
unsafe fn pack_b<K: Micro>(
    b: &Operand,
    bi: usize,
    j0: usize,
    nr: usize,
    p0: usize,
    kc: usize,
    dst: *mut f32,
) {
    let m = &b.mat;
    if b.dtype.is_quantized() {
        return pack_b_quantized::<K>(b, bi, j0, nr, p0, kc, dst);
    }
    let first = m.ptr.0.add(m.offset(bi, p0, j0) * b.dtype.size());
    let float = matches!(b.dtype, DType::F32 | DType::F16 | DType::BF16);
    if m.cs == 1 && float {
        return K::pack_b_rows(first, b.dtype, m.rs, nr, kc, dst);
    }
    if m.rs == 1 && b.dtype == DType::F32 && K::NR * m.cs < i32::MAX as usize {
        return K::pack_b_columns(first as *const f32, m.cs, nr, kc, dst);
    }
    if m.cs == 1 || m.rs != 1 {
        // Rows of B are contiguous: one run of NR columns per depth.
        for k in 0..kc {
            let d = std::slice::from_raw_parts_mut(dst.add(k * K::NR), K::NR);
            b.load(bi, p0 + k, j0, m.cs, &mut d[..nr]);
            d[nr..].fill(0.0);
        }
        return;
    }
    // Columns of B are contiguous (transposed half weights): load a column, scatter it.
    scatter_columns::<K>(nr, kc, dst, |j, col| b.load(bi, p0, j0 + j, m.rs, col));
}

/// Writes column j < nr (kc floats, filled by `column`) NR floats apart into the panel at
/// `dst`; columns nr..NR are zero.
unsafe fn scatter_columns<K: Micro>(
    nr: usize,
    kc: usize,
    dst: *mut f32,
    mut column: impl FnMut(usize, &mut [f32]),
) {
    let mut col = [0.0f32; MAX_KC];
    for j in 0..K::NR {
        if j < nr {
            column(j, &mut col[..kc]);
            for (k, v) in col[..kc].iter().enumerate() {
                *dst.add(k * K::NR + j) = *v;
            }
        } else {
            for k in 0..kc {
                *dst.add(k * K::NR + j) = 0.0;
            }
        }
    }
}

/// `pack_b` for a block-quantized op(B) (a `[n, k]` weight read transposed: depths contiguous,
/// whole blocks): each column's kc weights are dequantised, then written NR floats apart.
/// Prefill packs every weight once per op this way instead of dequantising into a copy.
unsafe fn pack_b_quantized<K: Micro>(
    b: &Operand,
    bi: usize,
    j0: usize,
    nr: usize,
    p0: usize,
    kc: usize,
    dst: *mut f32,
) {
    let (m, dt) = (&b.mat, b.dtype);
    // p0 is a multiple of KC and rows start on whole blocks, so every run does too.
    debug_assert!(m.rs == 1 && p0 % dt.block_elems() == 0 && kc % dt.block_elems() == 0);
    scatter_columns::<K>(nr, kc, dst, |j, col| {
        let at = m.ptr.0.add(dt.bytes_of(m.offset(bi, p0, j0 + j)));
        crate::quant::dequantize_row(dt, std::slice::from_raw_parts(at, dt.bytes_of(kc)), col);
    });
}

/// Runs the whole (batched) GEMM with `isa`'s kernels on the current rayon pool. Callers
/// checked that the CPU has `isa` (AVX2 or AVX-512).
pub(super) fn gemm(isa: Isa, g: &Gemm, batch: usize, m: usize, n: usize) {
    match isa {
        #[cfg(nh_avx512)]
        Isa::Avx512 => gemm_with::<avx512::Avx512>(g, batch, m, n),
        _ => gemm_with::<avx2::Avx2>(g, batch, m, n),
    }
}

fn gemm_with<K: Micro>(g: &Gemm, batch: usize, m: usize, n: usize) {
    let threads = rayon::current_num_threads();
    let per_batch = m * n * g.k;
    if threads == 1 || per_batch * batch <= SERIAL_MACS {
        (0..batch).for_each(|bi| run_one::<K>(g, bi, m, n, 1));
    } else if batch >= 2 * threads || per_batch <= SERIAL_MACS {
        // Many batches: one single-threaded task per batch balances best.
        (0..batch).into_par_iter().for_each(|bi| run_one::<K>(g, bi, m, n, 1));
    } else {
        (0..batch).for_each(|bi| run_one::<K>(g, bi, m, n, threads));
    }
}

/// `i`-th of `parts` near-equal pieces of 0..len.
fn piece(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    len * i / parts..len * (i + 1) / parts
}

/// One batch of the GEMM over `threads` threads (1: on the calling thread).
fn run_one<K: Micro>(g: &Gemm, bi: usize, m: usize, n: usize, threads: usize) {
    let (mr_, nr_, kc_) = (K::MR, K::NR, K::KC);
    let a = Operand { mat: g.a, dtype: g.a_dtype };
    let b = Operand { mat: g.b, dtype: g.b_dtype };
    let k = g.k;
    let par = threads > 1;
    // Tasks: row blocks (whole MR panels, at most MC_MAX rows, as many as a multiple of the
    // threads) times column groups (whole NR panels) when there are too few row blocks.
    let row_panels = m.div_ceil(mr_);
    let mut row_blocks = m.div_ceil(K::MC_MAX);
    if par && row_blocks >= threads {
        row_blocks = row_blocks.next_multiple_of(threads).min(row_panels);
    }
    let c = SendPtr(g.c.at(bi, 0, 0) as *mut u8);
    let rs_c = g.c.rs;

    let mut b_pack = Scratch::new(kc_ * K::NC.min(n.next_multiple_of(nr_)) + 16);
    let b_base = SendPtr(aligned(&mut b_pack) as *mut u8);
    let mut a_pack = Scratch::new(kc_ * row_panels * mr_ + 16);
    let a_base = SendPtr(aligned(&mut a_pack) as *mut u8);
    for jc in (0..n).step_by(K::NC) {
        let nc = K::NC.min(n - jc);
        let col_panels = nc.div_ceil(nr_);
        let groups =
            if par && row_blocks < threads { (2 * threads).div_ceil(row_blocks).min(col_panels) } else { 1 };
        for pc in (0..k).step_by(kc_) {
            let kc = kc_.min(k - pc);
            let big = par && kc * nc >= 16 * 1024;
            let pack_b_panel = |p: usize| {
                let j0 = jc + p * nr_;
                // SAFETY: panel p of the packed block is written by this task only; B's
                // elements come from its validated view.
                unsafe { pack_b::<K>(&b, bi, j0, nr_.min(n - j0), pc, kc, b_base.f32().add(p * kc * nr_)) };
            };
            // All of A's rows for this depth slice, shared by the tasks like B.
            let pack_a_panel = |ip: usize| {
                let i0 = ip * mr_;
                // SAFETY: as for B.
                unsafe { pack_a::<K>(&a, bi, i0, mr_.min(m - i0), pc, kc, a_base.f32().add(ip * kc * mr_)) };
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
                    let j0 = jc + p * nr_;
                    let nr = nr_.min(n - j0);
                    // SAFETY: packed panels were written above; each (row, column) tile of C
                    // lies in C's validated view and is written by one task only.
                    unsafe {
                        let bp = b_base.f32().add(p * kc * nr_);
                        for ip in rows.clone() {
                            let i0 = ip * mr_;
                            let ap = a_base.f32().add(ip * kc * mr_);
                            let cp = c.f32().add(i0 * rs_c + j0);
                            K::kernel(kc, ap, bp, cp, rs_c, mr_.min(m - i0), nr, g.p.alpha, beta);
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
            g.epilogue(bi, rows.start * mr_..(rows.end * mr_).min(m), 0..n)
        });
    } else {
        g.epilogue(bi, 0..m, 0..n);
    }
}

/// All of op(B) (k x n, one batch) in one instruction set's micro-kernel layout: NR-wide
/// panels, each k x NR floats (a depth's NR columns contiguous), panel after panel. Made once
/// for a constant operand (a weight: `weight_cache.rs`) and reused by every later matmul with
/// it, as ONNX Runtime prepacks weights when a session is created.
pub struct PackedB {
    data: Box<[f32]>,
    pub k: usize,
    pub n: usize,
    /// The kernels it was packed for (panel width differs per set).
    isa: Isa,
}

impl PackedB {
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    fn panel<K: Micro>(&self, p: usize) -> *const f32 {
        self.data[p * self.k * K::NR..].as_ptr()
    }
}

/// Packs op(B) of `g` (batch 0; callers pass only unbatched B) for `isa` on the current pool.
pub(super) fn pack_whole_b(isa: Isa, g: &Gemm, n: usize) -> PackedB {
    match isa {
        #[cfg(nh_avx512)]
        Isa::Avx512 => pack_whole_b_with::<avx512::Avx512>(g, n),
        _ => pack_whole_b_with::<avx2::Avx2>(g, n),
    }
}

fn pack_whole_b_with<K: Micro>(g: &Gemm, n: usize) -> PackedB {
    let k = g.k;
    let b = Operand { mat: g.b, dtype: g.b_dtype };
    let panels = n.div_ceil(K::NR);
    let mut data = vec![0.0f32; panels * k * K::NR].into_boxed_slice();
    data.par_chunks_mut(k * K::NR).enumerate().for_each(|(p, panel)| {
        let j0 = p * K::NR;
        for p0 in (0..k).step_by(K::KC) {
            // SAFETY: depths p0..p0+kc of the panel are written here; B's elements come from
            // its validated view. pack_b writes dst[d * NR + j], so the slice starting at
            // depth p0 of a k x NR panel is contiguous.
            unsafe {
                pack_b::<K>(
                    &b,
                    0,
                    j0,
                    K::NR.min(n - j0),
                    p0,
                    K::KC.min(k - p0),
                    panel.as_mut_ptr().add(p0 * K::NR),
                )
            };
        }
    });
    PackedB { data, k, n, isa: K::ISA }
}

/// The GEMM of `g` with B already packed. A copy packed for another instruction set (the
/// level was lowered meanwhile, as tests do) is not read: B is packed again as usual.
pub(super) fn gemm_prepacked(isa: Isa, g: &Gemm, packed: &PackedB, batch: usize, m: usize, n: usize) {
    if packed.isa != isa {
        return gemm(isa, g, batch, m, n);
    }
    match isa {
        #[cfg(nh_avx512)]
        Isa::Avx512 => prepacked_with::<avx512::Avx512>(g, packed, batch, m, n),
        _ => prepacked_with::<avx2::Avx2>(g, packed, batch, m, n),
    }
}

/// A is packed once and shared, then one parallel pass of tasks (row panels x column
/// panels), each kernel running the whole depth in registers. At a dozen rows this streams
/// B once at memory speed.
fn prepacked_with<K: Micro>(g: &Gemm, packed: &PackedB, batch: usize, m: usize, n: usize) {
    debug_assert!(packed.k == g.k && packed.n == n);
    let (mr_, nr_) = (K::MR, K::NR);
    let threads = rayon::current_num_threads();
    let par = threads > 1 && m * n * g.k > SERIAL_MACS;
    let row_panels = m.div_ceil(mr_);
    let col_panels = n.div_ceil(nr_);
    let panels_per_block = (K::A_BLOCK_FLOATS / (g.k * mr_).max(1)).max(1);
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
    let mut a_pack = Scratch::new(row_panels * k * mr_);
    let a_base = SendPtr(a_pack.as_mut_ptr() as *mut u8);
    for bi in 0..batch {
        let pack_a_panel = |ip: usize| {
            let i0 = ip * mr_;
            for p0 in (0..k).step_by(K::KC) {
                // SAFETY: A's elements come from its validated view; panel ip (k x MR floats
                // from ip * k * MR) is written by this call only.
                unsafe {
                    pack_a::<K>(
                        &a,
                        bi,
                        i0,
                        mr_.min(m - i0),
                        p0,
                        K::KC.min(k - p0),
                        a_base.f32().add((ip * k + p0) * mr_),
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
                let j0 = p * nr_;
                let nr = nr_.min(n - j0);
                for ip in rows.clone() {
                    let i0 = ip * mr_;
                    // SAFETY: both panels are packed k deep; this task alone writes the tile
                    // of C at (i0, j0), which lies in C's validated view.
                    unsafe {
                        let cp = c.f32().add(i0 * rs_c + j0);
                        let ap = a_base.f32().add(ip * k * mr_);
                        K::kernel(
                            k,
                            ap,
                            packed.panel::<K>(p),
                            cp,
                            rs_c,
                            mr_.min(m - i0),
                            nr,
                            g.p.alpha,
                            g.p.beta,
                        );
                    }
                }
            }
            g.epilogue(
                bi,
                rows.start * mr_..(rows.end * mr_).min(m),
                cols.start * nr_..(cols.end * nr_).min(n),
            );
        };
        let tasks = row_blocks * groups;
        if par && tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    }
}
