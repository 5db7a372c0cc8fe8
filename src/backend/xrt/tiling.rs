//! Runs a matmul of any shape on a kernel of one fixed launch shape: operands are packed (and
//! zero-padded) into the kernel's tiles, launches are pipelined over several slots (one per
//! run in flight), partial products over k are summed on the host in f32, and the epilogue
//! (alpha, beta, bias, activation, output dtype) is applied once at the end.

use super::manifest::{BLayout, KernelSpec};
use crate::backend::OpMemory;
use crate::error::{Error, Result};
use crate::op::validate::batch_of;
use crate::op::{Activation, DType, OpDesc, TensorView};
use half::{bf16, f16};

/// One launch context: input areas the host fills, a start and a wait that yields C.
pub trait TileSlot {
    /// Host-visible A and B areas, `spec.a_bytes()` and `spec.b_bytes()` long.
    fn inputs(&mut self) -> (&mut [u8], &mut [u8]);
    /// Makes the inputs visible to the device and starts the launch.
    fn start(&mut self) -> Result<()>;
    /// Waits for the launch and returns C (`spec.c_bytes()` long), host-visible.
    fn wait(&mut self) -> Result<&[u8]>;
}

/// A matrix inside a view: element (r, c) lies at `base + r*rs + c*cs` elements.
///
/// SAFETY (for the raw reads and writes below): the op was validated, so every element of every
/// view lies inside its buffer, and callers only index rows < `rows` and columns < `cols`. The
/// scheduler's hazard tracking gives this op exclusive access to its output while it runs.
#[derive(Clone, Copy)]
struct Mat {
    base: *const u8,
    /// The view's element type, and the kernel's, which `pack` converts to when they differ
    /// (f32 operands of a bf16 kernel, `OpParams::allow_bf16`).
    dtype: DType,
    packed: DType,
    esize: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Mat {
    /// The `batch`-th matrix of `view` (a view with batch 1 broadcasts), transposed if asked.
    fn of(mem: &OpMemory, view: &TensorView, batch: usize, trans: bool, packed: DType) -> Result<Mat> {
        let r = view.rank;
        let mut offset = 0;
        if batch_of(view) > 1 {
            let mut rest = batch;
            for d in (0..r - 2).rev() {
                offset += (rest % view.shape[d]) * view.strides[d];
                rest /= view.shape[d];
            }
        }
        let esize = view.dtype.size();
        let (rows, cols, rs, cs) =
            (view.shape[r - 2], view.shape[r - 1], view.strides[r - 2], view.strides[r - 1]);
        let base = unsafe { mem.ptr(view)?.add(offset * esize) };
        let dtype = view.dtype;
        Ok(if trans {
            Mat { base, dtype, packed, esize, rows: cols, cols: rows, rs: cs, cs: rs }
        } else {
            Mat { base, dtype, packed, esize, rows, cols, rs, cs }
        })
    }

    fn at(&self, r: usize, c: usize) -> *const u8 {
        unsafe { self.base.add((r * self.rs + c * self.cs) * self.esize) }
    }

    /// Copies the block starting at (r0, c0) into `dst` (`h x w` row-major, or `w x h` when
    /// `transposed`), zero-filling what lies outside the matrix.
    fn pack(&self, r0: usize, c0: usize, h: usize, w: usize, transposed: bool, dst: &mut [u8]) {
        let es = self.esize;
        let rows = h.min(self.rows.saturating_sub(r0));
        let cols = w.min(self.cols.saturating_sub(c0));
        if rows < h || cols < w {
            dst.fill(0);
        }
        if self.dtype != self.packed {
            let out = self.packed.size();
            for r in 0..rows {
                for c in 0..cols {
                    let at = if transposed { c * h + r } else { r * w + c };
                    let src = unsafe { std::slice::from_raw_parts(self.at(r0 + r, c0 + c), es) };
                    store(self.packed, load(self.dtype, src), &mut dst[at * out..(at + 1) * out]);
                }
            }
            return;
        }
        if transposed && self.rs == 1 {
            // Columns are contiguous (e.g. B stored n x k for a col_major kernel): one copy each.
            for c in 0..cols {
                let src = unsafe { std::slice::from_raw_parts(self.at(r0, c0 + c), rows * es) };
                dst[c * h * es..(c * h + rows) * es].copy_from_slice(src);
            }
            return;
        }
        for r in 0..rows {
            if !transposed && self.cs == 1 {
                // Contiguous row: one copy.
                let src = unsafe { std::slice::from_raw_parts(self.at(r0 + r, c0), cols * es) };
                dst[r * w * es..(r * w + cols) * es].copy_from_slice(src);
                continue;
            }
            for c in 0..cols {
                let at = if transposed { c * h + r } else { r * w + c };
                let src = unsafe { std::slice::from_raw_parts(self.at(r0 + r, c0 + c), es) };
                dst[at * es..(at + 1) * es].copy_from_slice(src);
            }
        }
    }
}

fn load(dtype: DType, bytes: &[u8]) -> f32 {
    match dtype {
        DType::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        DType::F16 => f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
        DType::BF16 => bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32(),
        DType::I32 => i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as f32,
        DType::I8 => bytes[0] as i8 as f32,
        // The manifest admits float kernels only; quantized views never reach the tiler.
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4G128 => unreachable!("quantized tile element"),
    }
}

fn store(dtype: DType, v: f32, out: &mut [u8]) {
    match dtype {
        DType::F32 => out.copy_from_slice(&v.to_le_bytes()),
        DType::F16 => out.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
        DType::BF16 => out.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
        DType::I32 => out.copy_from_slice(&(v.round() as i32).to_le_bytes()),
        DType::I8 => out[0] = v.round().clamp(-128.0, 127.0) as i8 as u8,
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 | DType::Q4G128 => unreachable!("quantized tile element"),
    }
}

pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

/// Where a launch's result goes.
#[derive(Clone, Copy)]
struct Target {
    batch: usize,
    i0: usize,
    j0: usize,
}

/// How many launches an op of shape (batch, m, k, n) needs on `spec`.
pub fn launches(spec: &KernelSpec, batch: usize, m: usize, k: usize, n: usize) -> usize {
    let t = spec.tile;
    batch * m.div_ceil(t.m) * k.div_ceil(t.k) * n.div_ceil(t.n)
}

/// Runs the matmul `op` with launches spread over `slots` (at least one).
pub fn run_tiled<S: TileSlot>(
    op: &OpDesc,
    mem: &OpMemory,
    spec: &KernelSpec,
    slots: &mut [S],
) -> Result<usize> {
    if slots.is_empty() {
        return Err(Error::Internal("run_tiled needs a slot".into()));
    }
    let (m, k, n, batch) = crate::op::validate::matmul_mkn(op);
    let (a_view, b_view) = match (op.input(0), op.input(1)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(Error::invalid("matmul needs inputs a and b")),
    };
    let t = spec.tile;
    let mut acc = vec![0f32; batch * m * n];
    let mut pending: Vec<Option<Target>> = vec![None; slots.len()];
    let mut launched = 0;

    let harvest = |slot: &mut S, to: Target, acc: &mut [f32]| -> Result<()> {
        let c = slot.wait()?;
        let es = spec.dtype_out.size();
        let rows = t.m.min(m - to.i0);
        let cols = t.n.min(n - to.j0);
        for r in 0..rows {
            let dst = &mut acc[(to.batch * m + to.i0 + r) * n + to.j0..][..cols];
            add_row(spec.dtype_out, &c[r * t.n * es..][..cols * es], dst);
        }
        Ok(())
    };

    let mut launch_all = || -> Result<()> {
        for b in 0..batch {
            let a = Mat::of(mem, a_view, b, op.params.trans_a, spec.dtype_in)?;
            let bm = Mat::of(mem, b_view, b, op.params.trans_b, spec.dtype_in)?;
            for i0 in (0..m).step_by(t.m) {
                for j0 in (0..n).step_by(t.n) {
                    for k0 in (0..k).step_by(t.k) {
                        let s = launched % slots.len();
                        if let Some(to) = pending[s].take() {
                            harvest(&mut slots[s], to, &mut acc)?;
                        }
                        let (a_buf, b_buf) = slots[s].inputs();
                        a.pack(i0, k0, t.m, t.k, false, a_buf);
                        bm.pack(k0, j0, t.k, t.n, spec.b_layout == BLayout::ColMajor, b_buf);
                        slots[s].start()?;
                        pending[s] = Some(Target { batch: b, i0, j0 });
                        launched += 1;
                    }
                }
            }
        }
        for s in 0..slots.len() {
            if let Some(to) = pending[s].take() {
                harvest(&mut slots[s], to, &mut acc)?;
            }
        }
        Ok(())
    };
    if let Err(e) = launch_all() {
        // Runs still in flight must finish before their slots are reused.
        for (slot, p) in slots.iter_mut().zip(&mut pending) {
            if p.take().is_some() {
                let _ = slot.wait();
            }
        }
        return Err(e);
    }
    epilogue(op, mem, &acc, (batch, m, n))?;
    Ok(launched)
}

/// Adds a row of little-endian `dtype` values to `dst` (one dtype dispatch per row, so the
/// loops vectorise).
fn add_row(dtype: DType, src: &[u8], dst: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d += f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        DType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d += bf16::from_le_bytes([s[0], s[1]]).to_f32();
            }
        }
        _ => {
            let es = dtype.size();
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(es)) {
                *d += load(dtype, s);
            }
        }
    }
}

fn activate_row(act: Activation, row: &mut [f32]) {
    match act {
        Activation::None => {}
        Activation::Relu => row.iter_mut().for_each(|x| *x = x.max(0.0)),
        _ => row.iter_mut().for_each(|x| *x = activate(act, *x)),
    }
}

/// C = act(alpha * acc + beta * C + bias), written in the output's dtype, a row at a time.
fn epilogue(op: &OpDesc, mem: &OpMemory, acc: &[f32], (batch, m, n): (usize, usize, usize)) -> Result<()> {
    let p = &op.params;
    let out = &op.output;
    let es = out.dtype.size();
    let bias: Option<Vec<f32>> = match op.input(2) {
        Some(v) => {
            let base = mem.ptr(v)?;
            Some(
                (0..n)
                    .map(|j| {
                        let bytes =
                            unsafe { std::slice::from_raw_parts(base.add(j * v.strides[0] * es), es) };
                        load(v.dtype, bytes)
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let mut row = vec![0f32; n];
    let mut bytes = vec![0u8; n * es];
    for b in 0..batch {
        let c = Mat::of(mem, out, b, false, out.dtype)?;
        for i in 0..m {
            row.copy_from_slice(&acc[(b * m + i) * n..][..n]);
            if p.alpha != 1.0 {
                row.iter_mut().for_each(|x| *x *= p.alpha);
            }
            if let Some(bias) = &bias {
                row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
            }
            if p.beta != 0.0 {
                for (j, x) in row.iter_mut().enumerate() {
                    let cell = unsafe { std::slice::from_raw_parts(c.at(i, j), es) };
                    *x += p.beta * load(out.dtype, cell);
                }
            }
            activate_row(p.activation, &mut row);
            if out.dtype == DType::F32 {
                for (o, x) in bytes.chunks_exact_mut(4).zip(&row) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            } else {
                for (o, x) in bytes.chunks_exact_mut(es).zip(&row) {
                    store(out.dtype, *x, o);
                }
            }
            if c.cs == 1 {
                let dst = unsafe { std::slice::from_raw_parts_mut(c.at(i, 0) as *mut u8, n * es) };
                dst.copy_from_slice(&bytes);
            } else {
                for (j, o) in bytes.chunks_exact(es).enumerate() {
                    let dst = unsafe { std::slice::from_raw_parts_mut(c.at(i, j) as *mut u8, es) };
                    dst.copy_from_slice(o);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::xrt::manifest::{ArgLayout, Tile};
    use crate::memory::{Buffer, HostPool};
    use crate::op::{OpKind, OpParams};
    use std::sync::Arc;

    /// A slot that computes the tile product on the host the way the NPU kernel would:
    /// inputs in `dtype_in`, C in `dtype_out`, B in the kernel's layout.
    struct HostSlot {
        spec: KernelSpec,
        a: Vec<u8>,
        b: Vec<u8>,
        c: Vec<u8>,
        started: bool,
    }

    impl HostSlot {
        fn new(spec: &KernelSpec) -> HostSlot {
            HostSlot {
                spec: spec.clone(),
                a: vec![0xAB; spec.a_bytes()],
                b: vec![0xCD; spec.b_bytes()],
                c: vec![0; spec.c_bytes()],
                started: false,
            }
        }
    }

    impl TileSlot for HostSlot {
        fn inputs(&mut self) -> (&mut [u8], &mut [u8]) {
            assert!(!self.started, "inputs touched while a launch is in flight");
            (&mut self.a, &mut self.b)
        }
        fn start(&mut self) -> Result<()> {
            let Tile { m, k, n } = self.spec.tile;
            let (di, dout) = (self.spec.dtype_in, self.spec.dtype_out);
            let (ei, eo) = (di.size(), dout.size());
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f32;
                    for kk in 0..k {
                        let bi = match self.spec.b_layout {
                            BLayout::RowMajor => kk * n + j,
                            BLayout::ColMajor => j * k + kk,
                        };
                        s +=
                            load(di, &self.a[(i * k + kk) * ei..][..ei]) * load(di, &self.b[bi * ei..][..ei]);
                    }
                    store(dout, s, &mut self.c[(i * n + j) * eo..][..eo]);
                }
            }
            self.started = true;
            Ok(())
        }
        fn wait(&mut self) -> Result<&[u8]> {
            assert!(self.started, "wait without start");
            self.started = false;
            Ok(&self.c)
        }
    }

    fn spec(dtype_in: DType, dtype_out: DType, tile: (usize, usize, usize), b_layout: BLayout) -> KernelSpec {
        KernelSpec {
            dtype_in,
            dtype_out,
            tile: Tile { m: tile.0, k: tile.1, n: tile.2 },
            b_layout,
            xclbin: "x".into(),
            instructions: "i".into(),
            kernel_name: "MLIR_AIE".into(),
            opcode: 3,
            args: ArgLayout::default(),
            gflops: None,
        }
    }

    fn buffer(pool: &Arc<HostPool>, id: u64, values: &[f32], dtype: DType) -> Arc<Buffer> {
        let es = dtype.size();
        let buf = Buffer::pooled(id, pool.alloc(values.len() * es).unwrap(), values.len() * es);
        let mut bytes = vec![0u8; values.len() * es];
        for (v, out) in values.iter().zip(bytes.chunks_exact_mut(es)) {
            store(dtype, *v, out);
        }
        buf.write(0, &bytes).unwrap();
        Arc::new(buf)
    }

    fn read_all(buf: &Buffer, dtype: DType, count: usize) -> Vec<f32> {
        let es = dtype.size();
        let mut bytes = vec![0u8; count * es];
        buf.read(0, &mut bytes).unwrap();
        bytes.chunks_exact(es).map(|c| load(dtype, c)).collect()
    }

    /// Small integers so every product and sum is exact in bf16 inputs and f32 sums.
    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count).map(|i| ((i * 7 + seed * 13) % 9) as f32 - 4.0).collect()
    }

    /// Reference: C[b] = act(alpha * op(A[b]) op(B[b]) + beta * C0 + bias).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        a: &[f32],
        b: &[f32],
        c0: &[f32],
        bias: Option<&[f32]>,
        (batch, m, k, n): (usize, usize, usize, usize),
        p: &OpParams,
        a_batched: bool,
    ) -> Vec<f32> {
        let mut out = vec![0f32; batch * m * n];
        for bb in 0..batch {
            let ab = if a_batched { bb * m * k } else { 0 };
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0f32;
                    for kk in 0..k {
                        let av = if p.trans_a { a[ab + kk * m + i] } else { a[ab + i * k + kk] };
                        let bv = if p.trans_b { b[j * k + kk] } else { b[kk * n + j] };
                        s += av * bv;
                    }
                    let at = (bb * m + i) * n + j;
                    let v = p.alpha * s + p.beta * c0[at] + bias.map_or(0.0, |x| x[j]);
                    out[at] = activate(p.activation, v);
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        dims: (usize, usize, usize, usize),
        dtype: DType,
        out_dtype: DType,
        kspec: &KernelSpec,
        slots: usize,
        params: OpParams,
        with_bias: bool,
        a_batched: bool,
    ) {
        let (batch, m, k, n) = dims;
        let pool = HostPool::new(0);
        let a_vals = values(if a_batched { batch } else { 1 } * m * k, 1);
        let b_vals = values(k * n, 2);
        let c0 = values(batch * m * n, 3);
        let bias_vals = values(n, 4);
        let a_buf = buffer(&pool, 1, &a_vals, dtype);
        let b_buf = buffer(&pool, 2, &b_vals, dtype);
        let c_buf = buffer(&pool, 3, &c0, out_dtype);
        let bias_buf = buffer(&pool, 4, &bias_vals, out_dtype);
        let a_shape: Vec<usize> = match (a_batched, params.trans_a) {
            (true, false) => vec![batch, m, k],
            (true, true) => vec![batch, k, m],
            (false, false) => vec![m, k],
            (false, true) => vec![k, m],
        };
        let b_shape = if params.trans_b { [n, k] } else { [k, n] };
        let a = TensorView::contiguous(1, dtype, &a_shape, 0);
        let b = TensorView::contiguous(2, dtype, &b_shape, 0);
        let c = TensorView::contiguous(3, out_dtype, &[batch, m, n], 0);
        let bias = TensorView::contiguous(4, out_dtype, &[n], 0);
        let mut inputs = vec![a, b];
        if with_bias {
            inputs.push(bias);
        }
        let op = OpDesc::new(OpKind::Matmul, &inputs, c).with_params(params);
        crate::op::validate::validate(&op, &|v| {
            Ok([0, a_buf.len(), b_buf.len(), c_buf.len(), bias_buf.len()][v.buffer as usize])
        })
        .unwrap();
        let mem = OpMemory::new(vec![a_buf, b_buf, c_buf.clone(), bias_buf]);
        let mut s: Vec<HostSlot> = (0..slots).map(|_| HostSlot::new(kspec)).collect();
        let launched = run_tiled(&op, &mem, kspec, &mut s).unwrap();
        assert_eq!(launched, launches(kspec, batch, m, k, n));
        let got = read_all(&c_buf, out_dtype, batch * m * n);
        let want =
            reference(&a_vals, &b_vals, &c0, with_bias.then_some(&bias_vals[..]), dims, &params, a_batched);
        let tol = if out_dtype == DType::F32 { 1e-4 } else { 0.02 };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tol * w.abs().max(1.0), "element {i}: got {g}, want {w} ({dims:?})");
        }
    }

    #[test]
    fn odd_sizes_are_padded_and_tiled_exactly() {
        let kspec = spec(DType::BF16, DType::F32, (8, 16, 4), BLayout::RowMajor);
        for dims in [(1, 1, 1, 1), (1, 8, 16, 4), (1, 9, 17, 5), (1, 23, 40, 13), (2, 7, 33, 9)] {
            check(dims, DType::BF16, DType::F32, &kspec, 3, OpParams::default(), false, true);
        }
    }

    #[test]
    fn transposes_strides_broadcast_and_epilogue() {
        let kspec = spec(DType::F16, DType::F32, (4, 8, 8), BLayout::ColMajor);
        let params = OpParams {
            trans_a: true,
            trans_b: true,
            alpha: 0.5,
            beta: -1.0,
            activation: Activation::Silu,
            ..Default::default()
        };
        check((3, 10, 12, 11), DType::F16, DType::F32, &kspec, 2, params, true, false);
        // Row-major B into the col_major kernel: the element-wise transposing path.
        check((1, 6, 10, 7), DType::F16, DType::F32, &kspec, 2, OpParams::default(), false, true);
        let gelu = OpParams { activation: Activation::Gelu, ..Default::default() };
        check((1, 5, 9, 6), DType::F16, DType::F32, &kspec, 1, gelu, true, true);
    }

    #[test]
    fn narrow_kernel_output_and_output_dtype() {
        let kspec = spec(DType::BF16, DType::BF16, (16, 8, 16), BLayout::RowMajor);
        let relu = OpParams { activation: Activation::Relu, ..Default::default() };
        check((1, 20, 24, 18), DType::BF16, DType::BF16, &kspec, 4, relu, false, true);
    }

    /// f32 operands allowed rounded go through a bf16 kernel: packing converts them, and the
    /// result is exactly that of the rounded operands (not of the f32 ones).
    #[test]
    fn f32_operands_are_rounded_to_bf16_while_packing() {
        let kspec = spec(DType::BF16, DType::F32, (8, 8, 8), BLayout::RowMajor);
        let dims = (1, 9, 12, 10);
        let (_, m, k, n) = dims;
        let pool = HostPool::new(0);
        // Values with more significant bits than bf16 keeps, products exact in f32.
        let fine = |count: usize, seed: usize| -> Vec<f32> {
            (0..count).map(|i| 1.0 + ((i * 5 + seed) % 7) as f32 / 512.0).collect()
        };
        let rounded = |v: &[f32]| -> Vec<f32> { v.iter().map(|x| bf16::from_f32(*x).to_f32()).collect() };
        let (a_vals, b_vals) = (fine(m * k, 1), fine(k * n, 2));
        let a_buf = buffer(&pool, 1, &a_vals, DType::F32);
        let b_buf = buffer(&pool, 2, &b_vals, DType::F32);
        let c_buf = buffer(&pool, 3, &vec![0.0; m * n], DType::F32);
        let params = OpParams { allow_bf16: true, ..Default::default() };
        let a = TensorView::contiguous(1, DType::F32, &[m, k], 0);
        let b = TensorView::contiguous(2, DType::F32, &[k, n], 0);
        let c = TensorView::contiguous(3, DType::F32, &[m, n], 0);
        let op = OpDesc::new(OpKind::Matmul, &[a, b], c).with_params(params);
        assert!(op.may_round_to_bf16());
        let mem = OpMemory::new(vec![a_buf, b_buf, c_buf.clone()]);
        let mut slots = vec![HostSlot::new(&kspec)];
        run_tiled(&op, &mem, &kspec, &mut slots).unwrap();
        let got = read_all(&c_buf, DType::F32, m * n);
        let zeros = vec![0.0; m * n];
        let want = reference(&rounded(&a_vals), &rounded(&b_vals), &zeros, None, dims, &params, true);
        let unrounded = reference(&a_vals, &b_vals, &zeros, None, dims, &params, true);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs(), "element {i}: got {g}, want {w}");
        }
        assert!(got.iter().zip(&unrounded).any(|(g, u)| (g - u).abs() > 1e-3), "operands were not rounded");
    }

    #[test]
    fn launch_count_matches_the_tile_grid() {
        let kspec = spec(DType::BF16, DType::F32, (64, 64, 64), BLayout::RowMajor);
        assert_eq!(launches(&kspec, 1, 64, 64, 64), 1);
        assert_eq!(launches(&kspec, 2, 65, 128, 1), 2 * 2 * 2);
    }
}
