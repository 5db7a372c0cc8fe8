//! How each op maps onto a shader: variant, push constants, workgroup counts. Tensors are
//! dense on the device (strided views are packed on upload), so only shapes matter here.
//! Binding slot i of every shader is input i; slot 4 is the output.

use crate::error::{Error, Result};
use crate::op::validate::{batch_of, matmul_mkn};
use crate::op::{DType, OpDesc, OpKind, TensorView};

/// What the device supports that changes the plan.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    pub f16: bool,
    pub coopmat: bool,
    pub subgroup_arithmetic: bool,
    /// Subgroup shuffles (the tiled attention shader at head_dim 128 uses one).
    pub subgroup_shuffle: bool,
    /// Cooperative-matrix fragment (M, N, K) the driver offers (context.rs picks it).
    pub coopmat_shape: [u32; 3],
    /// Subgroup size the driver reports.
    pub subgroup_size: u32,
    /// The cooperative-matrix shader with its fragments emulated in plain code, so devices
    /// without them (lavapipe in CI) run and test it: `NPUHYBRID_VULKAN_EMULATE_COOPMAT`.
    pub coopmat_emulated: bool,
    /// Run the first cooperative-matrix shader (matmul_coopmat_v1.comp, 16x16x16 fixed)
    /// instead: `NPUHYBRID_VULKAN_COOPMAT=v1`, for A/B measurements on the GPU.
    pub coopmat_v1: bool,
    /// f16 GEMVs ([N, K] weights, up to 8 rows of A) through gemv_quant.comp over plain f16
    /// weights (`dense_f16.glsl`) instead of gemv.comp: the default since the H100 ran the
    /// 1B decode at 8.8 ms/token with it, 10.2 without (and the 128256 x 2048 GEMV at 3075
    /// GB/s against 1419-2962); `NPUHYBRID_VULKAN_GEMV=tiled` turns it off for A/B runs.
    pub gemv_rows: bool,
}

/// One step of an op on the device.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Dispatch {
        shader: &'static str,
        push: Vec<u8>,
        groups: [u32; 3],
    },
    /// Same-dtype copy: a transfer from input 0 to the output.
    CopyBuffer {
        bytes: u64,
    },
}

/// Push-constant block builder following the std430 offsets of the shaders' blocks.
#[derive(Default)]
struct Push(Vec<u8>);

impl Push {
    fn u(mut self, v: usize) -> Push {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
        self
    }
    fn f(mut self, v: f32) -> Push {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn uvec4(mut self, v: [usize; 4]) -> Push {
        while self.0.len() % 16 != 0 {
            self.0.push(0);
        }
        for x in v {
            self = self.u(x);
        }
        self
    }
}

const MAX_GROUPS: usize = 65535;
/// Largest head_dim the attention shader holds in shared memory.
pub const MAX_HEAD_DIM: usize = 256;

/// A 1-D count of workgroups folded into x and y (each at most 65535).
pub(super) fn fold(groups: usize) -> [u32; 3] {
    let x = groups.clamp(1, MAX_GROUPS);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

fn suffix(dt: DType) -> &'static str {
    if dt == DType::F16 {
        "f16"
    } else {
        "f32"
    }
}

/// Dims padded on the left with 1 to rank 4.
fn dims4(v: &TensorView) -> [usize; 4] {
    let mut d = [1; 4];
    d[4 - v.rank..].copy_from_slice(v.dims());
    d
}

/// Dense strides of `small` broadcast to the rank-4 `full`: 0 where it broadcasts.
fn broadcast_strides(small: &[usize], full: [usize; 4]) -> [usize; 4] {
    let mut d = [1; 4];
    d[4 - small.len()..].copy_from_slice(small);
    let mut s = [0; 4];
    let mut acc = 1;
    for i in (0..4).rev() {
        s[i] = if d[i] == 1 && full[i] != 1 { 0 } else { acc };
        acc *= d[i];
    }
    s
}

/// The element types the shaders take (f32, f16 where the device has 16-bit storage and
/// arithmetic, the quantized types as a matmul's weight), as `DeviceInfo::dtypes` reports
/// them.
pub fn dtypes(f: Features) -> u32 {
    // Quantized types as a matmul's weight: the shaders read them as words, which every
    // device can, and dequantise in registers.
    let quantized =
        [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4G128].iter().fold(0, |acc, d| acc | d.bit());
    let shaders = DType::F32.bit() | if f.f16 { DType::F16.bit() } else { 0 } | quantized;
    shaders & crate::op::validate::computable_dtypes(OpKind::ALL.iter().fold(0, |acc, k| acc | k.bit()))
}

/// Whether the device can run this op (beyond dtype and kind, which `DeviceInfo` says).
pub fn supported(op: &OpDesc, f: Features, max_range: u64) -> bool {
    if op.views().any(|v| v.bytes() as u64 > max_range) {
        return false;
    }
    let dt_ok = |d: DType| d == DType::F32 || (d == DType::F16 && f.f16);
    // Quantized types only as a matmul's weight (validation allows no other place there).
    let quant_ok = |d: DType| d.is_quantized() && op.kind == OpKind::Matmul;
    // Half weights under f32 activations: only the GEMV over f16 [N, K] weights reads them.
    // The attention shaders read K and V in q's type: a half KV cache under f32 queries stays
    // on the CPU.
    if !op.views().all(|v| dt_ok(v.dtype) || quant_ok(v.dtype))
        || (op.has_half_weight() && !half_gemv_takes(op, f))
        || op.has_half_kv()
    {
        return false;
    }
    match op.kind {
        OpKind::Attention => {
            let q = op.input(0).expect("validated");
            let r = q.rank;
            q.shape[r - 1] <= MAX_HEAD_DIM && q.shape[r - 2] <= MAX_GROUPS && q.shape[r - 3] <= MAX_GROUPS
        }
        OpKind::Matmul => {
            let (m, _, n, batch) = matmul_mkn(op);
            batch <= MAX_GROUPS && m.div_ceil(128) <= MAX_GROUPS && n.div_ceil(128) <= MAX_GROUPS
        }
        _ => true,
    }
}

pub fn plan(op: &OpDesc, f: Features) -> Result<Step> {
    let a = op.input(0).expect("validated ops have input 0");
    let dt = suffix(a.dtype);
    let n = op.output.numel();
    let p = &op.params;
    Ok(match op.kind {
        OpKind::Matmul => plan_matmul(op, f)?,
        OpKind::Add | OpKind::Mul => {
            let b = op.input(1).expect("validated");
            let shape = dims4(a);
            let push = Push::default()
                .u(n)
                .u(usize::from(op.kind == OpKind::Mul))
                .uvec4(shape)
                .uvec4(broadcast_strides(b.dims(), shape));
            dispatch("binary", dt, push, fold(n.div_ceil(256)))
        }
        OpKind::Scale | OpKind::Silu | OpKind::Gelu => {
            let code = match op.kind {
                OpKind::Scale => 0,
                OpKind::Silu => 1,
                _ => 2,
            };
            let push = Push::default().u(n).u(code).f(p.alpha).u(usize::from(p.gelu_tanh));
            dispatch("unary", dt, push, fold(n.div_ceil(256)))
        }
        OpKind::Softmax => {
            let push = Push::default().u(a.rows()).u(a.last());
            dispatch("softmax", dt, push, fold(a.rows()))
        }
        OpKind::RmsNorm | OpKind::LayerNorm => {
            let layer = op.kind == OpKind::LayerNorm;
            let push = Push::default()
                .u(a.rows())
                .u(a.last())
                .u(usize::from(layer))
                .u(usize::from(op.input(1).is_some()))
                .u(usize::from(layer && op.input(2).is_some()))
                .f(p.eps);
            dispatch("norm", dt, push, fold(a.rows()))
        }
        OpKind::Rope => {
            let r = a.rank;
            let push = Push::default()
                .u(n / 2)
                .u(a.shape[r - 3])
                .u(a.shape[r - 2])
                .u(a.shape[r - 1])
                .u(p.rope_position as usize)
                .u(usize::from(p.rope_interleaved))
                .f(p.rope_theta);
            dispatch("rope", dt, push, fold((n / 2).div_ceil(256)))
        }
        OpKind::Attention => plan_attention(op, f),
        OpKind::Copy => {
            let (src, dst) = (a.dtype, op.output.dtype);
            if src == dst {
                Step::CopyBuffer { bytes: op.output.bytes() as u64 }
            } else if matches!((src, dst), (DType::F32, DType::F16) | (DType::F16, DType::F32)) {
                let shader = if src == DType::F32 { "convert_f32_f16" } else { "convert_f16_f32" };
                Step::Dispatch { shader, push: Push::default().u(n).0, groups: fold(n.div_ceil(256)) }
            } else {
                return Err(Error::Unsupported(format!("vulkan: copy from {src} to {dst}")));
            }
        }
    })
}

fn dispatch(base: &str, dt: &str, push: Push, groups: [u32; 3]) -> Step {
    Step::Dispatch { shader: shader_name(&format!("{base}_{dt}")), push: push.0, groups }
}

/// The static name of a shader variant (the pipeline table is keyed by them).
fn shader_name(name: &str) -> &'static str {
    super::pipelines::SHADERS.iter().map(|(n, _)| *n).find(|n| *n == name).unwrap_or("missing")
}

/// The `&'static str` of a variant name (`base` or `base#c0,c1`), if it names a shader of this
/// build (names read back from a file become the names the planner uses).
pub fn variant_name(name: &str) -> Option<&'static str> {
    let (base, constants) = super::pipelines::split_spec(name).ok()?;
    let name = spec_name(base, &constants);
    (name != "missing").then_some(name)
}

/// A shader variant with specialisation constants (`base#c0,c1`, see pipelines.rs), as the
/// `&'static str` the pipeline table and `Step` use. The set of names is small and fixed by
/// the planner's choices, so each is leaked once and reused.
fn spec_name(base: &str, constants: &[u32]) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let base = shader_name(base);
    if constants.is_empty() || base == "missing" {
        return base;
    }
    let list: Vec<String> = constants.iter().map(|c| c.to_string()).collect();
    let name = format!("{base}#{}", list.join(","));
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.get(name.as_str()) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Workgroups a GEMV wants at least: the H100/H200 have 132 SMs, and fewer workgroups than a
/// few per SM leave memory bandwidth unused.
const GEMV_MIN_GROUPS: usize = 256;

/// GEMV plan: (b_mode, workgroups, [rows per subgroup, threads per row segment]). Weights
/// are streamed along their rows in 16-byte loads whenever the row length allows.
fn gemv_shape(k: usize, n: usize, trans_b: bool, in16: bool) -> (usize, usize, [u32; 2]) {
    let vec = if in16 { 8 } else { 4 };
    if trans_b {
        // [N, K]: 8 row groups of `rps` rows per workgroup; more rows per subgroup share the
        // x loads, fewer give more workgroups.
        let rps = [4usize, 2, 1].into_iter().find(|r| n.div_ceil(8 * r) >= GEMV_MIN_GROUPS).unwrap_or(1);
        let mode = if k % vec == 0 { VEC_K } else { SCALAR_K };
        (mode, n.div_ceil(8 * rps), [rps as u32, 4])
    } else if n % vec == 0 {
        // [K, N]: `cg` threads side by side read cg*16 contiguous bytes of a row; at least
        // two, a whole 32-byte sector.
        let cg = [8usize, 4, 2].into_iter().find(|c| n.div_ceil(c * vec) >= GEMV_MIN_GROUPS).unwrap_or(2);
        (VEC_ROW, n.div_ceil(cg * vec), [2, cg as u32])
    } else {
        (SCALAR_ROW, n.div_ceil(32), [2, 4])
    }
}

/// Loader modes, see shaders/matmul_params.glsl.
const SCALAR_K: usize = 0;
const SCALAR_ROW: usize = 1;
const VEC_K: usize = 2;
const VEC_ROW: usize = 3;

/// Shader suffix for a matmul's activation and output dtypes.
fn matmul_variant(op: &OpDesc) -> &'static str {
    let in16 = op.input(0).expect("validated").dtype == DType::F16;
    match (in16, op.output.dtype == DType::F16) {
        (false, _) => "f32",
        (true, true) => "f16",
        (true, false) => "f16_f32",
    }
}

/// Rows of A up to which a quantized B runs as a GEMV (each weight read once for all of
/// them), as on the CPU (backend/cpu/quant).
pub const QUANT_GEMV_MAX_ROWS: usize = 8;

/// Threads a quantized GEMV wants: about what an H100 holds at once (132 SMs x 2048), so each
/// thread keeps only a few loads in flight at the decode shapes.
const QUANT_GEMV_THREADS: usize = 1 << 18;

/// Shape of gemv_quant.comp for K x N weights and `m` rows of A: [threads per workgroup, rows
/// of B per workgroup, units (8 weights) per thread per step]. Each thread keeps `us` units
/// of each of its rows in flight; a workgroup as wide as the row's units allow (up to 256)
/// fills the row, and then as many rows per workgroup as still leave
/// `QUANT_GEMV_THREADS` threads (more rows share each activation load; the accumulators of
/// `rows * m` outputs stay at 16 or fewer). `NPUHYBRID_VULKAN_GEMVQ=wg,nr,us` sets the shape
/// instead (read once; for measurements).
pub fn quant_gemv_shape(k: usize, n: usize, m: usize) -> [usize; 3] {
    use std::sync::OnceLock;
    static FORCED: OnceLock<Option<[usize; 3]>> = OnceLock::new();
    let forced = FORCED.get_or_init(|| {
        let v = std::env::var("NPUHYBRID_VULKAN_GEMVQ").ok()?;
        let x: Vec<usize> = v.split(',').map(|s| s.trim().parse().ok()).collect::<Option<_>>()?;
        let ok = x.len() == 3 && [32, 64, 128, 256, 512].contains(&x[0]) && (1..=8).contains(&x[1]);
        (ok && (1..=8).contains(&x[2])).then(|| [x[0], x[1], x[2]])
    });
    if let Some(f) = forced {
        return *f;
    }
    let us = 2;
    let units = k / 8;
    let wg = [256usize, 128, 64].into_iter().find(|w| units >= w * us).unwrap_or(32);
    let nr = [4usize, 2]
        .into_iter()
        .find(|r| r * m <= 16 && n.div_ceil(*r) * wg >= QUANT_GEMV_THREADS)
        .unwrap_or(1);
    [wg, nr, us]
}

/// Whether an f16 matmul runs gemv_quant.comp over plain f16 weights (`Features::gemv_rows`):
/// few rows of A, B [N, K] shared by every batch, K a whole number of 16-byte units.
fn rows_gemv_takes(op: &OpDesc, f: Features) -> bool {
    let (a, b) = (op.input(0).expect("validated"), op.input(1).expect("validated"));
    let (m, k, _, _) = matmul_mkn(op);
    let p = &op.params;
    f.gemv_rows
        && f.subgroup_arithmetic
        && f.subgroup_size >= 4
        && a.dtype == DType::F16
        && b.dtype == DType::F16
        && p.trans_b
        && !p.trans_a
        && k % 8 == 0
        && m <= QUANT_GEMV_MAX_ROWS
        && batch_of(b) == 1
}

/// Whether an f32-activation matmul with an f16 weight runs gemv_quant.comp over it (the
/// f16w GEMV, whatever `Features::gemv_rows` says: no other shader reads a B of another type
/// than A's): [N, K] weights, K whole 8-half units, a few rows of A, a subgroup GEMV. Others
/// (bf16 weights, more rows) are left to the CPU.
fn half_gemv_takes(op: &OpDesc, f: Features) -> bool {
    let (b, (m, k, _, _)) = (op.input(1).expect("validated"), matmul_mkn(op));
    let p = &op.params;
    op.has_half_weight()
        && b.dtype == DType::F16
        && f.subgroup_arithmetic
        && f.subgroup_size >= 4
        && p.trans_b
        && !p.trans_a
        && k % 8 == 0
        && m <= QUANT_GEMV_MAX_ROWS
        && batch_of(b) == 1
}

/// Matmul with a block-quantized B ([N, K], trans_b, one batch; validated), or a plain f16
/// one that `rows_gemv_takes` or `half_gemv_takes` (it always takes the GEMV branch below): few rows of A run
/// gemv_quant.comp (subgroup sums), the rest (and devices without subgroup arithmetic) the
/// tiled matmul whose B loader dequantises.
fn plan_quant_matmul(op: &OpDesc, f: Features) -> Step {
    let a = op.input(0).expect("validated");
    let b = op.input(1).expect("validated");
    let (m, k, n, batch) = matmul_mkn(op);
    let p = &op.params;
    let (a_rs, a_ks) = if p.trans_a { (1, m) } else { (k, 1) };
    let a_bs = if batch_of(a) == 1 { 0 } else { m * k };
    // B is shared by every batch: where A's batches are consecutive rows ([batch * M, K]), one
    // product of batch * M rows reads the weights once instead of once per batch. C is dense
    // [batch, M, N] either way.
    let rows_fold = !p.trans_a && (a_bs != 0 || batch == 1);
    let flags = usize::from(op.input(2).is_some()) | (p.activation as usize) << 1;
    let push = |m: usize, a_mode: usize| {
        Push::default()
            .u(m)
            .u(n)
            .u(k)
            .u(a_rs)
            .u(a_ks)
            .u(a_bs)
            .u(1)
            .u(k)
            .u(0)
            .f(p.alpha)
            .f(p.beta)
            .u(flags)
            .u(a_mode)
            .u(VEC_K)
            .0
    };
    // Plain f16 weights: dense_f16.glsl behind the same shader.
    let q = if b.dtype.is_quantized() { b.dtype.name() } else { "f16w" };
    let variant = matmul_variant(op);
    // gemv_quant.comp sizes its shared sums for subgroups of at least 4 invocations.
    if f.subgroup_arithmetic && f.subgroup_size >= 4 && !p.trans_a && m <= QUANT_GEMV_MAX_ROWS {
        let (rows, batches) =
            if rows_fold && m * batch <= QUANT_GEMV_MAX_ROWS { (m * batch, 1) } else { (m, batch) };
        let [wg, nr, us] = quant_gemv_shape(k, n, rows);
        let mut groups = fold(n.div_ceil(nr));
        groups[2] = batches as u32;
        return Step::Dispatch {
            shader: spec_name(
                &format!("gemvq_{q}_{variant}"),
                &[nr as u32, rows as u32, wg as u32, us as u32],
            ),
            push: push(rows, VEC_K),
            groups,
        };
    }
    let (rows, batches) =
        if rows_fold && (m * batch).div_ceil(128) <= MAX_GROUPS { (m * batch, 1) } else { (m, batch) };
    // K is a whole number of blocks, so a multiple of 4: vector loads along k.
    let a_mode = match (p.trans_a, m % 4 == 0) {
        (false, _) => VEC_K,
        (true, true) => VEC_ROW,
        (true, false) => SCALAR_ROW,
    };
    Step::Dispatch {
        shader: shader_name(&format!("matmul_{q}_{variant}")),
        push: push(rows, a_mode),
        groups: [n.div_ceil(128) as u32, rows.div_ceil(128) as u32, batches as u32],
    }
}

fn plan_matmul(op: &OpDesc, f: Features) -> Result<Step> {
    let a = op.input(0).expect("validated");
    let b = op.input(1).expect("validated");
    let (m, k, n, batch) = matmul_mkn(op);
    let p = &op.params;
    // Dense device layouts: A is [.., M, K] or, transposed, [.., K, M]; B likewise.
    let (a_rs, a_ks) = if p.trans_a { (1, m) } else { (k, 1) };
    let (b_ks, b_ns) = if p.trans_b { (1, k) } else { (n, 1) };
    let a_bs = if batch_of(a) == 1 { 0 } else { m * k };
    let b_bs = if batch_of(b) == 1 { 0 } else { k * n };
    // `gelu_tanh` belongs to the gelu op; a fused GELU is the erf form, as on the CPU.
    let flags = usize::from(op.input(2).is_some()) | (p.activation as usize) << 1;
    let variant = matmul_variant(op);
    if b.dtype.is_quantized() || rows_gemv_takes(op, f) || half_gemv_takes(op, f) {
        return Ok(plan_quant_matmul(op, f));
    }
    let in16 = a.dtype == DType::F16;
    let push = |a_mode: usize, b_mode: usize| {
        Push::default()
            .u(m)
            .u(n)
            .u(k)
            .u(a_rs)
            .u(a_ks)
            .u(a_bs)
            .u(b_ks)
            .u(b_ns)
            .u(b_bs)
            .f(p.alpha)
            .f(p.beta)
            .u(flags)
            .u(a_mode)
            .u(b_mode)
            .0
    };
    if m == 1 && f.subgroup_arithmetic {
        let (b_mode, groups, spec) = gemv_shape(k, n, p.trans_b, in16);
        let mut g = fold(groups);
        g[2] = batch as u32;
        return Ok(Step::Dispatch {
            shader: spec_name(&format!("gemv_{variant}"), &spec),
            push: push(SCALAR_K, b_mode),
            groups: g,
        });
    }
    let groups = [n.div_ceil(128) as u32, m.div_ceil(128) as u32, batch as u32];
    let layout = if p.trans_b { "nt" } else { "nn" };
    let b_mode = if p.trans_b { VEC_K } else { VEC_ROW };
    if in16 && f.coopmat && f.coopmat_v1 && !p.trans_a && k % 4 == 0 && (p.trans_b || n % 4 == 0) {
        return Ok(Step::Dispatch {
            shader: shader_name(&format!("coopmat_v1_{variant}_{layout}")),
            push: push(VEC_K, b_mode),
            groups,
        });
    }
    // 16-byte loads of 8 halves along k (A, and B when transposed) or along n.
    if in16 && f.coopmat && !p.trans_a && k % 8 == 0 && (p.trans_b || n % 8 == 0) {
        let [fm, fn_, fk] = f.coopmat_shape;
        // Four subgroups per workgroup, whatever size the driver's subgroups are.
        let spec = [fm, fn_, fk, 4 * f.subgroup_size];
        let (base, block) = if f.coopmat_emulated { ("coopmat_emu", 64) } else { ("coopmat", 128) };
        return Ok(Step::Dispatch {
            shader: spec_name(&format!("{base}_{variant}_{layout}"), &spec),
            push: push(VEC_K, b_mode),
            groups: [n.div_ceil(block) as u32, m.div_ceil(block) as u32, batch as u32],
        });
    }
    let a_mode = match (p.trans_a, k % 4 == 0, m % 4 == 0) {
        (false, true, _) => VEC_K,
        (false, false, _) => SCALAR_K,
        (true, _, true) => VEC_ROW,
        (true, _, false) => SCALAR_ROW,
    };
    let b_mode = match (p.trans_b, k % 4 == 0, n % 4 == 0) {
        (true, true, _) => VEC_K,
        (true, false, _) => SCALAR_K,
        (false, _, true) => VEC_ROW,
        (false, _, false) => SCALAR_ROW,
    };
    // Variants with the loaders fixed at compile time for the common layouts.
    let layout = match (a_mode, b_mode) {
        (VEC_K, VEC_ROW) => "_nn",
        (VEC_K, VEC_K) => "_nt",
        _ => "",
    };
    Ok(Step::Dispatch {
        shader: shader_name(&format!("matmul_{variant}{layout}")),
        push: push(a_mode, b_mode),
        groups,
    })
}

fn plan_attention(op: &OpDesc, f: Features) -> Step {
    let q = op.input(0).expect("validated");
    let k = op.input(1).expect("validated");
    let r = q.rank;
    let batch = if r == 4 { q.shape[0] } else { 1 };
    let (h, sq, d) = (q.shape[r - 3], q.shape[r - 2], q.shape[r - 1]);
    let (hkv, skv) = (k.shape[r - 3], k.shape[r - 2]);
    let p = &op.params;
    let kv_len = if p.kv_len == 0 { skv } else { p.kv_len as usize };
    let scale = if p.attn_scale == 0.0 { 1.0 / (d as f32).sqrt() } else { p.attn_scale };
    let full = [batch, h, sq, skv];
    let mstride = op.input(3).map(|m| broadcast_strides(m.dims(), full)).unwrap_or([0; 4]);
    let push = Push::default()
        .u(h)
        .u(hkv)
        .u(sq)
        .u(skv)
        .u(d)
        .u(kv_len)
        .u(usize::from(p.causal))
        .u(usize::from(op.input(3).is_some()))
        .f(scale)
        .uvec4(mstride);
    // Blocks of 64 query rows share each key / value tile (attention_tiled.comp) for head dims
    // up to 128. Few query rows (decode) leave most of such a block idle and walk the keys
    // in one thread per row, so they take one workgroup per row instead, whose 64 threads
    // split the keys; so do heads wider than 128.
    let per_row = sq < TILED_MIN_ROWS || d > 128 || (d > 64 && !f.subgroup_shuffle);
    match d {
        _ if per_row => Step::Dispatch {
            shader: shader_name(&format!("attention_{}", suffix(q.dtype))),
            push: push.0,
            groups: [sq as u32, h as u32, batch as u32],
        },
        0..=32 => tiled_attention("attention_tiled32", q.dtype, push, sq, h, batch),
        33..=64 => tiled_attention("attention_tiled64", q.dtype, push, sq, h, batch),
        _ => tiled_attention("attention_tiled128", q.dtype, push, sq, h, batch),
    }
}

/// Fewest query rows that take the tiled attention shader (a guess: not measured on a GPU).
const TILED_MIN_ROWS: usize = 16;

/// Query rows per workgroup of attention_tiled.comp.
const ATTENTION_ROWS: usize = 64;

fn tiled_attention(base: &str, dt: DType, push: Push, sq: usize, h: usize, batch: usize) -> Step {
    dispatch(base, suffix(dt), push, [sq.div_ceil(ATTENTION_ROWS) as u32, h as u32, batch as u32])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GPU with f16 and 32-wide subgroups, no cooperative matrices: the portable shaders.
    fn portable_features() -> Features {
        Features {
            f16: true,
            coopmat: false,
            subgroup_arithmetic: true,
            subgroup_shuffle: true,
            coopmat_shape: [16, 16, 16],
            subgroup_size: 32,
            coopmat_v1: false,
            coopmat_emulated: false,
            gemv_rows: false,
        }
    }

    #[test]
    fn broadcast_strides_zero_the_broadcast_dims() {
        assert_eq!(broadcast_strides(&[3], [1, 2, 4, 3]), [3, 0, 0, 1]);
        assert_eq!(broadcast_strides(&[4, 1], [1, 2, 4, 3]), [4, 0, 1, 0]);
        assert_eq!(broadcast_strides(&[2, 4, 3], [1, 2, 4, 3]), [24, 12, 3, 1]);
    }

    #[test]
    fn push_blocks_follow_std430_vector_alignment() {
        let p = Push::default().u(1).u(2).uvec4([3, 4, 5, 6]);
        assert_eq!(p.0.len(), 32);
        assert_eq!(&p.0[16..20], &3u32.to_le_bytes());
    }

    #[test]
    fn every_planned_shader_exists() {
        let mk = |dt, m: usize, trans_b| {
            let a = TensorView::contiguous(1, dt, &[m, 8], 0);
            let b = TensorView::contiguous(2, dt, &[8, 8], 0);
            let c = TensorView::contiguous(3, dt, &[m, 8], 0);
            let mut op = OpDesc::new(OpKind::Matmul, &[a, b], c);
            op.params.trans_b = trans_b;
            op
        };
        for (dt, coopmat, v1) in [
            (DType::F32, false, false),
            (DType::F16, false, false),
            (DType::F16, true, false),
            (DType::F16, true, true),
        ] {
            let f = Features { coopmat, coopmat_v1: v1, ..portable_features() };
            for (m, t, rows) in (0..8).map(|i| ([1, 5][i & 1], i & 2 != 0, i & 4 != 0)) {
                let f = Features { gemv_rows: rows, ..f };
                let Step::Dispatch { shader, .. } = plan(&mk(dt, m, t), f).unwrap() else {
                    panic!("matmul plans a dispatch")
                };
                assert_ne!(shader, "missing", "{dt} m={m} trans_b={t}");
                // The rows GEMV takes f16 [N, K] weights only, and only when asked for.
                let want_rows = rows && dt == DType::F16 && t;
                assert_eq!(shader.starts_with("gemvq_f16w_"), want_rows, "{shader}");
            }
        }
        // Half weights under f32 activations: the f16w GEMV (rows setting or not) for f16
        // [N, K] weights and up to 8 rows; everything else is refused, never planned.
        let f = portable_features();
        for (wt, m, t, k, runs) in [
            (DType::F16, 1, true, 8, true),
            (DType::F16, 8, true, 64, true),
            (DType::F16, 9, true, 64, false),
            (DType::F16, 1, false, 8, false),
            (DType::F16, 1, true, 12, false),
            (DType::BF16, 1, true, 8, false),
        ] {
            let a = TensorView::contiguous(1, DType::F32, &[m, k], 0);
            let b = TensorView::contiguous(2, wt, &if t { [8, k] } else { [k, 8] }, 0);
            let c = TensorView::contiguous(3, DType::F32, &[m, 8], 0);
            let mut op = OpDesc::new(OpKind::Matmul, &[a, b], c);
            op.params.trans_b = t;
            assert_eq!(supported(&op, f, u64::MAX), runs, "{wt} m={m} trans_b={t} k={k}");
            if runs {
                let Step::Dispatch { shader, .. } = plan(&op, f).unwrap() else { panic!("a dispatch") };
                assert!(shader.starts_with("gemvq_f16w_f32"), "{shader}");
            }
        }
    }

    #[test]
    fn quantized_gemv_shapes_fill_rows_then_share_activations_over_rows() {
        if std::env::var_os("NPUHYBRID_VULKAN_GEMVQ").is_some() {
            return;
        }
        // (k, n, m) -> [threads, rows of B per workgroup, units per thread per step].
        let cases = [
            ((2048, 2048, 1), [128, 1, 2]),
            ((2048, 8192, 1), [128, 4, 2]),
            ((8192, 2048, 1), [256, 2, 2]),
            ((2048, 128256, 1), [128, 4, 2]),
            ((2048, 8192, 8), [128, 2, 2]),
            ((2048, 8192, 5), [128, 2, 2]),
            ((32, 19, 1), [32, 1, 2]),
            ((32, 33001, 1), [32, 4, 2]),
            ((32, 16411, 3), [32, 2, 2]),
        ];
        for ((k, n, m), want) in cases {
            assert_eq!(quant_gemv_shape(k, n, m), want, "k={k} n={n} m={m}");
        }
    }

    #[test]
    fn quantized_weights_plan_a_gemv_for_few_rows_and_the_tiled_shader_else() {
        let mk = |dt, q, m: usize, batch: usize, trans_a: bool| {
            let (k, n) = (256, 600);
            let a_shape = if trans_a { [batch, k, m] } else { [batch, m, k] };
            let a = TensorView::contiguous(1, dt, &a_shape, 0);
            let b = TensorView::contiguous(2, q, &[n, k], 0);
            let c = TensorView::contiguous(3, dt, &[batch, m, n], 0);
            let mut op = OpDesc::new(OpKind::Matmul, &[a, b], c);
            op.params.trans_b = true;
            op.params.trans_a = trans_a;
            op
        };
        for subgroups in [true, false] {
            let f = Features {
                subgroup_arithmetic: subgroups,
                subgroup_shuffle: subgroups,
                ..portable_features()
            };
            for q in [DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4G128] {
                for dt in [DType::F32, DType::F16] {
                    for (m, batch, trans_a) in
                        [(1, 1, false), (3, 2, false), (8, 3, false), (17, 1, false), (3, 1, true)]
                    {
                        let op = mk(dt, q, m, batch, trans_a);
                        assert!(supported(&op, f, u64::MAX));
                        let Step::Dispatch { shader, groups, push } = plan(&op, f).unwrap() else {
                            panic!("matmul plans a dispatch")
                        };
                        assert_ne!(shader, "missing", "{q} {dt} m={m}");
                        let gemv = shader.starts_with("gemvq_");
                        assert_eq!(gemv, subgroups && !trans_a && m <= QUANT_GEMV_MAX_ROWS, "{shader}");
                        // Batches of A fold into rows while they fit the GEMV.
                        let rows = u32::from_le_bytes(push[..4].try_into().unwrap()) as usize;
                        let folded = !trans_a && (!gemv || m * batch <= QUANT_GEMV_MAX_ROWS);
                        assert_eq!(rows, if folded { m * batch } else { m }, "{shader}");
                        assert_eq!(groups[2] as usize, if folded { 1 } else { batch }, "{shader}");
                    }
                }
            }
        }
        // A quantized type anywhere but a matmul's weight is refused (copies quantize on the CPU).
        let a = TensorView::contiguous(1, DType::F32, &[4, 64], 0);
        let q = TensorView::contiguous(2, DType::Q8_0, &[4, 64], 0);
        let f = portable_features();
        assert!(!supported(&OpDesc::new(OpKind::Copy, &[a], q), f, u64::MAX));
        assert!(!supported(&OpDesc::new(OpKind::Copy, &[q], a), f, u64::MAX));
    }

    /// The attention shaders read K and V in q's type: f32 queries over a half KV cache are
    /// left to the CPU, while all-f16 and all-f32 attention run here.
    #[test]
    fn a_half_kv_cache_under_f32_queries_stays_off_the_gpu() {
        let f = portable_features();
        let attention = |q_dt: DType, kv_dt: DType| {
            let q = TensorView::contiguous(1, q_dt, &[4, 1, 64], 0);
            let k = TensorView::contiguous(2, kv_dt, &[2, 100, 64], 0);
            let v = TensorView::contiguous(3, kv_dt, &[2, 100, 64], 0);
            OpDesc::new(OpKind::Attention, &[q, k, v], TensorView::contiguous(4, q_dt, &[4, 1, 64], 0))
        };
        assert!(!supported(&attention(DType::F32, DType::F16), f, u64::MAX));
        assert!(supported(&attention(DType::F16, DType::F16), f, u64::MAX));
        assert!(supported(&attention(DType::F32, DType::F32), f, u64::MAX));
    }
}
