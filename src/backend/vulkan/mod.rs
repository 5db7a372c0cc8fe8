//! Vulkan compute backend (ash, loader opened at run time). Every op has a GLSL compute
//! shader compiled at build time (see `buildsrc/shaders.rs`); f16 matmuls use tensor cores
//! through GL_NV_cooperative_matrix where the device has it.
//!
//! Host buffers stay the truth: inputs are uploaded into pooled device memory once per buffer
//! version (replicas), ops run in one command buffer, outputs are written back before
//! `execute` returns. Strided views are packed on the host, so shaders see dense tensors.

mod alloc;
mod context;
mod host_alias;
mod ops;
mod pack;
mod pipelines;
mod residency;
mod submit;
mod warmer;

use crate::backend::{Backend, DeviceInfo, DeviceKind, ExecReport, OpMemory, SegmentReport};
use crate::error::{Error, Result};
use crate::op::{OpDesc, OpKind, TensorView};
use ash::vk;
use context::{heaps, version_string, Capabilities, Context, Instance};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use ops::quant_gemv_shape;
pub use pipelines::cache_dir;
pub use submit::{Chunking, OpTimestamps, Stats};

pub struct VulkanBackend {
    info: DeviceInfo,
    features: ops::Features,
    max_range: u64,
    /// Shared with the pipeline warmer's thread (`warmer.rs`).
    state: Arc<Mutex<submit::State>>,
    kernels: Arc<warmer::KernelWarmer>,
    /// Ops wait off this device until their pipelines are made ahead (`kernels_ready`): not on
    /// a CPU implementation, where compiling would take the cores the work runs on.
    pipelines_ahead: AtomicBool,
    /// Which input views have a current replica, for `upload_ns` (read without `state`).
    resident: residency::ResidentSet,
    /// Host-to-device copy rate assumed for uploads, bytes per nanosecond (GB/s).
    upload_gbs: f64,
    /// Dense views of host buffers are read in place (unified memory, host_alias.rs).
    host_import: AtomicBool,
    /// Ops' kernels are timed (timestamps), on sampled submissions at least.
    times_kernels: AtomicBool,
    ctx: Arc<Context>,
}

impl Drop for VulkanBackend {
    fn drop(&mut self) {
        self.kernels.stop();
    }
}

impl VulkanBackend {
    /// One backend per usable Vulkan device (compute queue). Err or empty vec => no GPU; the
    /// error text is the reason. CPU implementations (lavapipe) are used only when no GPU is
    /// present or `NPUHYBRID_VULKAN_ALLOW_CPU=1`.
    pub fn probe() -> Result<Vec<VulkanBackend>> {
        let inst = Instance::new()?;
        let pdevs = unsafe { inst.instance.enumerate_physical_devices() }
            .map_err(|e| Error::DeviceUnavailable(format!("no Vulkan devices: {e}")))?;
        let mut usable = Vec::new();
        let mut reasons = Vec::new();
        for pdev in pdevs {
            match context::capabilities(&inst, pdev) {
                None => reasons.push("a device without a compute queue".to_string()),
                Some(caps) => match caps.unusable_reason() {
                    Some(why) => reasons.push(format!("{}: {why}", caps.name)),
                    None => usable.push((pdev, caps)),
                },
            }
        }
        let allow_cpu = std::env::var("NPUHYBRID_VULKAN_ALLOW_CPU").is_ok_and(|v| v == "1");
        let has_gpu = usable.iter().any(|(_, c)| c.device_type != vk::PhysicalDeviceType::CPU);
        if has_gpu && !allow_cpu {
            usable.retain(|(_, c)| c.device_type != vk::PhysicalDeviceType::CPU);
        }
        if usable.is_empty() {
            return Err(Error::DeviceUnavailable(if reasons.is_empty() {
                "no Vulkan device found".into()
            } else {
                format!("no usable Vulkan device ({})", reasons.join("; "))
            }));
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (pdev, caps) in usable {
            let name = caps.name.clone();
            match VulkanBackend::open(inst.clone(), pdev, caps) {
                Ok(b) => out.push(b),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        if out.is_empty() {
            return Err(Error::DeviceUnavailable(errors.join("; ")));
        }
        Ok(out)
    }

    fn open(inst: Arc<Instance>, pdev: vk::PhysicalDevice, caps: Capabilities) -> Result<Self> {
        let ctx = Arc::new(Context::open(inst, pdev, caps)?);
        // NPUHYBRID_VULKAN_EMULATE_COOPMAT=MxNxK runs the cooperative-matrix shader with that
        // fragment shape emulated in plain code (tests on devices without tensor cores).
        let emulate: Option<[u32; 3]> =
            std::env::var("NPUHYBRID_VULKAN_EMULATE_COOPMAT").ok().and_then(|v| parse_shape(&v));
        let features = ops::Features {
            f16: ctx.f16,
            coopmat: (ctx.coopmat || (emulate.is_some() && ctx.f16))
                && std::env::var("NPUHYBRID_VULKAN_NO_COOPMAT").is_err(),
            subgroup_arithmetic: ctx.caps.subgroup_arithmetic,
            subgroup_shuffle: ctx.caps.subgroup_shuffle,
            coopmat_shape: emulate.unwrap_or(ctx.coopmat_shape),
            subgroup_size: ctx.caps.subgroup_size,
            coopmat_emulated: emulate.is_some(),
            coopmat_v1: std::env::var("NPUHYBRID_VULKAN_COOPMAT").is_ok_and(|v| v == "v1"),
            gemv_rows: std::env::var("NPUHYBRID_VULKAN_GEMV").map_or(true, |v| v != "tiled"),
        };
        let state = submit::State::new(ctx.clone())?;
        let times_kernels = state.op_timestamps();
        let kernels = Arc::new(warmer::KernelWarmer::default());
        // Earlier runs made these: the cache makes them in moments, ops need not wait for them.
        for &shader in state.pipelines.made_before() {
            kernels.mark_ready(shader);
        }
        // A discrete GPU copies through staging over PCIe; elsewhere an upload is a host copy
        // (with packing) into device-visible memory. Both are rough, and only rank devices.
        let upload_gbs =
            if ctx.caps.device_type == vk::PhysicalDeviceType::DISCRETE_GPU { 12.0 } else { 10.0 };
        Ok(VulkanBackend {
            info: device_info(&ctx, features),
            features,
            max_range: ctx.caps.max_storage_range,
            resident: state.residency.resident_set(),
            state: Arc::new(Mutex::new(state)),
            kernels,
            pipelines_ahead: AtomicBool::new(ctx.caps.device_type != vk::PhysicalDeviceType::CPU),
            upload_gbs,
            host_import: AtomicBool::new(ctx.reads_host_in_place()),
            times_kernels: AtomicBool::new(times_kernels),
            ctx,
        })
    }

    /// Whether ops wait off this device until their pipelines are made ahead (default: on
    /// GPUs, off on CPU implementations); tests turn it on under lavapipe.
    pub fn set_pipelines_ahead(&self, on: bool) {
        self.pipelines_ahead.store(on, Ordering::Relaxed);
    }

    /// Runs ops in order in as few submissions as their dependencies allow (one command
    /// buffer, barriers between ops); one report per op. Inputs that are exactly the output
    /// of an earlier op of the batch are read on the device without a round trip.
    pub fn execute_batch(&self, ops: &[(&OpDesc, &OpMemory)]) -> Result<Vec<ExecReport>> {
        let report = self.execute_segment(ops);
        match report.error {
            Some(e) => Err(e),
            None => Ok(report.reports),
        }
    }

    /// Whether f16 matmuls run on the cooperative-matrix (tensor core) shader.
    pub fn uses_coopmat(&self) -> bool {
        self.features.coopmat
    }

    /// Replica, memory and upload counters.
    pub fn stats(&self) -> Stats {
        self.state.lock().stats()
    }

    /// Where the pipeline cache is saved (None without a cache directory).
    pub fn pipeline_cache_file(&self) -> Option<std::path::PathBuf> {
        self.state.lock().pipelines.cache_file().cloned()
    }

    /// Upper bound for replicas kept between ops (default: half of device memory).
    pub fn set_residency_budget(&self, bytes: u64) {
        self.state.lock().set_budget(bytes);
    }

    /// Reads host buffers in place where the device can (unified memory with
    /// `VK_EXT_external_memory_host`), or copies them into replicas as a discrete GPU does.
    /// Returns whether in-place reads are on.
    pub fn set_host_import(&self, on: bool) -> bool {
        let on = on && self.ctx.reads_host_in_place();
        self.state.lock().set_host_import(on);
        self.host_import.store(on, Ordering::Relaxed);
        on
    }

    /// Uploads copied by the GPU straight from imported host memory (on), or through
    /// staging memory the host fills (off): on by default on discrete GPUs that can import
    /// host memory. Returns whether it is on. Tests turn it on over unified memory.
    pub fn set_import_uploads(&self, on: bool) -> bool {
        self.state.lock().set_import_uploads(on)
    }

    /// Which submissions time each op (default: `NPUHYBRID_VULKAN_OP_TIMESTAMPS`, else
    /// sampled). Tests that check per-op times ask for `Always`.
    pub fn set_op_timestamps(&self, mode: OpTimestamps) {
        let mut state = self.state.lock();
        state.set_op_timestamps(mode);
        self.times_kernels.store(state.op_timestamps(), Ordering::Relaxed);
    }

    /// Where submissions are cut into command buffers (default: `NPUHYBRID_VULKAN_CHUNK`).
    pub fn set_chunking(&self, chunking: Chunking) {
        self.state.lock().set_chunking(chunking);
    }

    /// Name of the physical device as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.ctx.caps.name
    }
}

impl Backend for VulkanBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn supports(&self, op: &OpDesc) -> bool {
        let info = &self.info;
        info.available
            && info.supports_kind(op.kind)
            && op.views().all(|v| info.dtypes & v.dtype.bit() != 0)
            && ops::supported(op, self.features, self.max_range)
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        let reports = self.execute_batch(&[(op, mem)])?;
        Ok(reports[0])
    }

    fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        // Ops this device cannot run end the segment before it, so what precedes still runs.
        let runnable = ops.iter().position(|(op, _)| !self.supports(op)).unwrap_or(ops.len());
        let mut report = self.state.lock().run(self.features, &ops[..runnable]);
        if report.error.is_none() && runnable < ops.len() {
            let op = ops[runnable].0;
            report.error = Some(Error::Unsupported(format!(
                "{}: {} with these dtypes or sizes",
                self.info.name, op.kind
            )));
        }
        report
    }

    fn input_upload_ns(&self, v: &TensorView, mem: &OpMemory) -> f64 {
        let caps = &self.ctx.caps;
        let in_place = self.host_import.load(Ordering::Relaxed);
        // Imported memory is uploaded every time (submit.rs).
        let current = mem.buffer(v.buffer).is_ok_and(|b| {
            (in_place && host_alias::eligible(caps.host_import_align, caps.min_storage_align, b, v))
                || (!b.is_imported() && self.resident.is_current(&residency::ReplicaKey::of(v), b.version()))
        });
        if current {
            0.0
        } else {
            v.bytes() as f64 / self.upload_gbs
        }
    }

    fn prepare_kernels(&self, stop: &std::sync::atomic::AtomicBool) -> usize {
        // On a CPU implementation (lavapipe) compiling every variant would take the cores the
        // work runs on for many seconds: there they are compiled on first use (and cached).
        if self.ctx.caps.device_type == vk::PhysicalDeviceType::CPU {
            return 0;
        }
        // One at a time, so ops submitted meanwhile wait for one pipeline at most; those that
        // earlier runs made first (the cache has them: moments each), then every other.
        let made_before: Vec<&'static str> = self.state.lock().pipelines.made_before().to_vec();
        made_before
            .into_iter()
            .chain(pipelines::Pipelines::variants())
            .take_while(|_| !stop.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|name| {
                let made = self.state.lock().pipelines.warm(name).unwrap_or(false);
                self.kernels.mark_ready(name);
                made
            })
            .count()
    }

    fn kernels_ready(&self, op: &OpDesc) -> bool {
        if !self.pipelines_ahead.load(Ordering::Relaxed) {
            return true;
        }
        let Ok(ops::Step::Dispatch { shader, .. }) = ops::plan(op, self.features) else { return true };
        if self.kernels.is_ready(shader) {
            return true;
        }
        let state = Arc::downgrade(&self.state);
        self.kernels.request(shader, move |name| {
            if let Some(state) = state.upgrade() {
                if let Err(e) = state.lock().pipelines.warm(name) {
                    log::warn!("pipeline {name} not made ahead: {e}");
                }
            }
        });
        false
    }

    fn touches_outputs(&self) -> bool {
        // submit.rs touches each output after writing it back and records its replicas at the
        // version that results: a touch before the run would make every replica it reads
        // look stale (a KV cache written then read in one submission).
        true
    }

    fn times_kernels(&self) -> bool {
        self.times_kernels.load(Ordering::Relaxed)
    }

    fn link_gbs(&self) -> Option<f64> {
        // Replicas are copies even where memory is shared (packing into device buffers).
        Some(self.upload_gbs)
    }
}

/// "16x8x16" as [16, 8, 16].
fn parse_shape(v: &str) -> Option<[u32; 3]> {
    let d: Vec<u32> = v.split('x').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    d.try_into().ok()
}

/// The memory type and block size tensors get (submit.rs asks alloc.rs for the same flags),
/// so a benchmark log says where its operands lived.
fn tensor_memory(ctx: &Context) -> String {
    use vk::MemoryPropertyFlags as M;
    let (want, prefer) = if ctx.caps.unified_memory() {
        (M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT, M::HOST_CACHED)
    } else {
        (M::DEVICE_LOCAL, M::DEVICE_LOCAL)
    };
    match alloc::pick_memory_type(&ctx.caps.memory, want, prefer) {
        Some((i, flags)) => {
            let heap = ctx.caps.memory.memory_types[i as usize].heap_index;
            let heap_mib = ctx.caps.memory.memory_heaps[heap as usize].size >> 20;
            format!(
                "type {i} ({flags:?}) in heap {heap} ({heap_mib} MiB), blocks of {} MiB",
                alloc::block_size(ctx) >> 20
            )
        }
        None => "none".into(),
    }
}

fn device_info(ctx: &Context, features: ops::Features) -> DeviceInfo {
    let c = &ctx.caps;
    let dtypes = ops::dtypes(features);
    let ops = OpKind::ALL.iter().fold(0, |acc, k| acc | k.bit());
    let kind_name = match c.device_type {
        vk::PhysicalDeviceType::INTEGRATED_GPU => "integrated",
        vk::PhysicalDeviceType::DISCRETE_GPU => "discrete",
        vk::PhysicalDeviceType::VIRTUAL_GPU => "virtual",
        vk::PhysicalDeviceType::CPU => "cpu",
        _ => "other",
    };
    // Rough starting points for the performance model, which measures and corrects them.
    let (peak_gflops, bandwidth_gbs) = match c.device_type {
        vk::PhysicalDeviceType::DISCRETE_GPU => (20_000.0, 800.0),
        vk::PhysicalDeviceType::INTEGRATED_GPU => (3_000.0, 80.0),
        _ => (50.0, 20.0),
    };
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let heap_list: Vec<String> = heaps(&c.memory)
        .map(|h| {
            let local = h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL);
            format!("{} MiB{}", h.size >> 20, if local { " device-local" } else { "" })
        })
        .collect();
    let details = vec![
        ("device_type".into(), kind_name.to_string()),
        ("api_version".into(), version_string(c.api_version)),
        ("driver_version".into(), format!("{:#x}", c.driver_version)),
        ("driver".into(), format!("{} {}", c.driver_name, c.driver_info)),
        ("subgroup_size".into(), c.subgroup_size.to_string()),
        ("shared_memory_bytes".into(), c.shared_memory.to_string()),
        ("fp16_arithmetic".into(), yes(c.shader_f16)),
        ("int8_arithmetic".into(), yes(c.shader_int8)),
        ("storage_16bit".into(), yes(c.storage_16bit)),
        ("cooperative_matrix_khr".into(), yes(c.coopmat_khr)),
        ("cooperative_matrix_nv".into(), yes(c.coopmat_nv)),
        ("coopmat_matmul".into(), yes(ctx.coopmat)),
        ("coopmat_shapes_f16_f32".into(), format!("{:?}", c.coopmat_shapes)),
        ("coopmat_shape".into(), format!("{:?}", ctx.coopmat_shape)),
        ("memory_heaps".into(), heap_list.join(", ")),
        ("unified_memory".into(), yes(c.unified_memory())),
        ("host_buffers_read_in_place".into(), yes(ctx.reads_host_in_place())),
        ("uploads_from_imported_host_memory".into(), yes(ctx.uploads_from_host_imports())),
        ("timestamp_period_ns".into(), c.timestamp_period.to_string()),
        ("tensor_memory".into(), tensor_memory(ctx)),
    ];
    DeviceInfo {
        kind: DeviceKind::Gpu,
        name: c.name.clone(),
        driver: format!("{} {}", c.driver_name, c.driver_info),
        memory_bytes: c.device_local_bytes(),
        dtypes,
        ops,
        available: true,
        unavailable_reason: String::new(),
        peak_gflops,
        bandwidth_gbs,
        unified_memory: c.unified_memory(),
        max_in_flight: 1,
        details,
    }
}
