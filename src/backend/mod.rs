//! The one interface every device implements. Nothing outside `backend/<kind>/` knows which
//! kind of device it talks to: the scheduler sees `DeviceInfo`, `supports` and `execute`.

pub mod cpu;
pub mod sim;
pub mod vulkan;
pub mod xrt;

use crate::error::{Error, Result};
use crate::memory::{Buffer, BufferId};
use crate::op::{OpDesc, OpKind, TensorView};
use std::sync::Arc;

/// Kind of device (C ABI values). A simulated NPU is never reported as hardware.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu = 0,
    Gpu = 1,
    Npu = 2,
    SimulatedNpu = 3,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Npu => "npu",
            DeviceKind::SimulatedNpu => "simulated-npu",
        }
    }
}

/// What a device is and what it can do, as reported to callers and the scheduler.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub kind: DeviceKind,
    pub name: String,
    pub driver: String,
    pub memory_bytes: u64,
    /// `DType::bit` set of the element types its compute ops take (as their compute type or
    /// as a matmul's weight): each runs in at least one op on this device. Copy is not
    /// counted: the CPU converts between every type, i8 and i32 included, which no compute op
    /// takes (`op::validate::computable_dtypes`).
    pub dtypes: u32,
    /// `OpKind::bit` set of supported ops.
    pub ops: u32,
    pub available: bool,
    /// Why the device cannot be used, when `available` is false.
    pub unavailable_reason: String,
    /// Declared peak f32 throughput in GFLOP/s, the performance model's starting point.
    pub peak_gflops: f64,
    /// Declared memory bandwidth in GB/s, for bandwidth-bound ops.
    pub bandwidth_gbs: f64,
    /// Host and device share memory (no copies needed).
    pub unified_memory: bool,
    /// Ops the device runs at once.
    pub max_in_flight: usize,
    /// Free-form capability lines (`key: value`) for device info and diagnostics.
    pub details: Vec<(String, String)>,
}

impl DeviceInfo {
    pub fn unavailable(kind: DeviceKind, name: &str, reason: impl Into<String>) -> DeviceInfo {
        DeviceInfo {
            kind,
            name: name.to_string(),
            driver: String::new(),
            memory_bytes: 0,
            dtypes: 0,
            ops: 0,
            available: false,
            unavailable_reason: reason.into(),
            peak_gflops: 0.0,
            bandwidth_gbs: 0.0,
            unified_memory: false,
            max_in_flight: 1,
            details: Vec::new(),
        }
    }

    pub fn supports_kind(&self, kind: OpKind) -> bool {
        self.ops & kind.bit() != 0
    }
}

/// The buffers an op touches, resolved from the handles in its views.
pub struct OpMemory {
    buffers: Vec<Arc<Buffer>>,
}

impl OpMemory {
    /// Holds each buffer until dropped: destroying one waits for every op holding it.
    pub fn new(buffers: Vec<Arc<Buffer>>) -> OpMemory {
        for b in &buffers {
            b.hold_op();
        }
        OpMemory { buffers }
    }

    pub fn buffer(&self, id: BufferId) -> Result<&Arc<Buffer>> {
        self.buffers
            .iter()
            .find(|b| b.id() == id)
            .ok_or_else(|| Error::Internal(format!("buffer {id:#x} not resolved for this op")))
    }

    /// Pointer to the first byte of a view. Validation guaranteed the view lies in its buffer.
    pub fn ptr(&self, view: &TensorView) -> Result<*mut u8> {
        let b = self.buffer(view.buffer)?;
        Ok(unsafe { b.as_ptr().add(view.offset) })
    }

    pub fn buffers(&self) -> &[Arc<Buffer>] {
        &self.buffers
    }
}

impl Drop for OpMemory {
    fn drop(&mut self) {
        for b in &self.buffers {
            b.release_op();
        }
    }
}

/// What a device reports after running an op.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecReport {
    /// Time the device itself measured (GPU timestamps, simulated clock), if it has one and
    /// timed this op (the Vulkan backend times each op on sampled submissions only; the
    /// others give their busy time as a whole, `SegmentPhases::device_ns`).
    pub device_ns: Option<u64>,
    /// One-time set-up paid during this call (pipeline or kernel compilation): not run time,
    /// so the performance model never learns it.
    pub setup_ns: u64,
}

/// What a device reports after running a segment: one report per op that completed, in
/// order; `error` stops the segment at op `reports.len()`, whose output and every later op's
/// output were not written (so the rest can run elsewhere without redoing anything).
#[derive(Debug, Default)]
pub struct SegmentReport {
    pub reports: Vec<ExecReport>,
    pub error: Option<Error>,
    /// Where the host's time went, for backends that submit to a device (shown in the trace).
    pub phases: Option<SegmentPhases>,
}

/// Wall time of a segment's steps on the host, summed over its submissions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SegmentPhases {
    /// Resolving operands: replica lookups, uploads, device memory.
    pub prepare_ns: u64,
    /// Pipelines, descriptor sets and command recording, up to the submission.
    pub record_ns: u64,
    /// From the submission until the device signalled completion.
    pub wait_ns: u64,
    /// Copying outputs back to host views and updating replicas.
    pub finish_ns: u64,
    /// Submissions the segment took.
    pub submissions: u32,
    /// Bytes the segment copied between host views and device memory (uploads and
    /// write-backs): the transfers a plan counts apart from run time.
    pub moved_bytes: u64,
    /// Time the device itself was busy with the segment's submissions (GPU timestamps around
    /// each command buffer: kernels, barriers and its copies), where it measures it. Known
    /// when the ops' own times are not (submissions that do not time each op).
    pub device_ns: Option<u64>,
}

impl SegmentPhases {
    pub fn add(&mut self, other: &SegmentPhases) {
        self.prepare_ns += other.prepare_ns;
        self.record_ns += other.record_ns;
        self.wait_ns += other.wait_ns;
        self.finish_ns += other.finish_ns;
        self.submissions += other.submissions;
        self.moved_bytes += other.moved_bytes;
        self.device_ns = match (self.device_ns, other.device_ns) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// Live readings a backend can give (temperatures and power from its own interface).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceReadings {
    pub temperature_c: Option<f32>,
    pub power_w: Option<f32>,
    pub clock_mhz: Option<f32>,
}

/// While alive, a device that runs its ops on the host's cores starts none (`pause_host_work`).
pub type HostWorkPaused<'a> = parking_lot::RwLockWriteGuard<'a, ()>;

pub trait Backend: Send + Sync {
    fn info(&self) -> &DeviceInfo;

    /// Whether this device can run this particular op (dtype, shape limits).
    fn supports(&self, op: &OpDesc) -> bool {
        let info = self.info();
        info.available && info.supports_kind(op.kind) && op.views().all(|v| info.dtypes & v.dtype.bit() != 0)
    }

    /// Runs the op to completion on the calling worker thread and writes its output into the
    /// host-visible output buffer. Errors that another device may not have are device faults
    /// (`Error::is_device_fault`), and the scheduler falls back on them.
    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport>;

    /// Runs a chain of ops in order as one unit: devices with queues record it into one
    /// submission, and intermediates stay in device memory inside it. Outputs are in host
    /// memory when it returns. The default runs the ops one by one.
    fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        let mut out = SegmentReport::default();
        for (op, mem) in ops {
            match self.execute(op, mem) {
                Ok(r) => out.reports.push(r),
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
        }
        out
    }

    /// Predicted nanoseconds to bring the op's inputs that this device holds no current copy
    /// of into its memory. 0 where ops read host memory directly (the CPU).
    fn upload_ns(&self, op: &OpDesc, mem: &OpMemory) -> f64 {
        op.inputs.iter().flatten().map(|v| self.input_upload_ns(v, mem)).sum()
    }

    /// Predicted nanoseconds to bring one input view into this device's memory (0 when it
    /// holds a current copy, or reads host memory directly).
    fn input_upload_ns(&self, _view: &TensorView, _mem: &OpMemory) -> f64 {
        0.0
    }

    /// Whether the backend gives each output buffer its new version itself, once the bytes
    /// are written (it keeps device copies keyed by version and must record the version it
    /// wrote). Otherwise the scheduler does, before the op runs.
    fn touches_outputs(&self) -> bool {
        false
    }

    /// Compiles what the device's ops will need (pipelines, kernels) ahead of use, on a
    /// background thread, so no op pays for it; stops early once `stop` is set. Returns how
    /// many were made.
    fn prepare_kernels(&self, _stop: &std::sync::atomic::AtomicBool) -> usize {
        0
    }

    /// Whether what `op` needs here (a pipeline, a kernel) is made. When not, the device starts
    /// making it in the background, and the scheduler gives the op to another candidate
    /// meanwhile, if it has one.
    fn kernels_ready(&self, _op: &OpDesc) -> bool {
        true
    }

    /// Whether `ExecReport::device_ns` measures this machine's work on the device (GPU
    /// timestamps), so the model keeps kernel times per op and learns the rest apart
    /// (`DeviceModel::record_timed_segment`), from the segments whose ops were timed only. A simulated device's times are its model's, not
    /// what running it costs here: false.
    fn times_kernels(&self) -> bool {
        false
    }

    /// Rate at which data crosses between host memory and this device's memory, GB/s; None
    /// where the device works on host memory itself (CPU, simulated NPU, an APU's NPU).
    fn link_gbs(&self) -> Option<f64> {
        None
    }

    /// Whether this device's arithmetic runs on the host's own cores (a simulated device in
    /// wall-clock mode), so that no op finishes here sooner than the host would run it.
    fn computes_on_host_cores(&self) -> bool {
        false
    }

    /// A thread of the pool this device's ops run on, held for the device's first worker loop
    /// (`cpu/seat.rs`), where the device has a pool: an op's parallel kernels then start on the
    /// worker itself instead of waking the pool from outside and sleeping until it is done
    /// (two thread switches per op, a large share of a small op's time on two cores).
    fn host_seat(&self) -> Option<cpu::Seat> {
        None
    }

    /// Holds this device's ops off until the guard drops (ops already running finish first),
    /// where the device runs them on the host's cores: another device's calibration times its
    /// runs by the wall clock, and this device's work on every core would be timed with them.
    fn pause_host_work(&self) -> Option<HostWorkPaused<'_>> {
        None
    }

    /// Current readings from the device's own interface (not the sysfs monitor).
    fn readings(&self) -> DeviceReadings {
        DeviceReadings::default()
    }

    /// Applies a power mode chosen by the policy or the caller, where the device has one.
    fn set_power_mode(&self, _mode: crate::device::PowerMode) -> Result<()> {
        Err(Error::Unsupported(format!("{} has no power modes", self.info().name)))
    }

    /// The policy's per-device limits: ops in flight and rows of a matrix op per launch (the
    /// NPU's dynamic batch size). Devices without such knobs ignore them.
    fn set_limits(&self, _max_in_flight: Option<usize>, _batch_rows: Option<usize>) {}

    /// The policy's `keep_warm` for a device with a thread pool (None: the device's default).
    fn set_keep_warm(&self, _window: Option<std::time::Duration>) {}

    /// Injects a fault for testing fallback paths; only simulated devices accept it.
    fn inject_fault(&self, _fault: sim::Fault) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{} does not take injected faults (only simulated devices do)",
            self.info().name
        )))
    }
}

/// A shared backend is a backend: tests and embedders keep a handle to their device.
impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn info(&self) -> &DeviceInfo {
        (**self).info()
    }
    fn supports(&self, op: &OpDesc) -> bool {
        (**self).supports(op)
    }
    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        (**self).execute(op, mem)
    }
    fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        (**self).execute_segment(ops)
    }
    fn upload_ns(&self, op: &OpDesc, mem: &OpMemory) -> f64 {
        (**self).upload_ns(op, mem)
    }
    fn input_upload_ns(&self, view: &TensorView, mem: &OpMemory) -> f64 {
        (**self).input_upload_ns(view, mem)
    }
    fn link_gbs(&self) -> Option<f64> {
        (**self).link_gbs()
    }
    fn computes_on_host_cores(&self) -> bool {
        (**self).computes_on_host_cores()
    }
    fn times_kernels(&self) -> bool {
        (**self).times_kernels()
    }
    fn prepare_kernels(&self, stop: &std::sync::atomic::AtomicBool) -> usize {
        (**self).prepare_kernels(stop)
    }
    fn kernels_ready(&self, op: &OpDesc) -> bool {
        (**self).kernels_ready(op)
    }
    fn touches_outputs(&self) -> bool {
        (**self).touches_outputs()
    }
    fn host_seat(&self) -> Option<cpu::Seat> {
        (**self).host_seat()
    }
    fn pause_host_work(&self) -> Option<HostWorkPaused<'_>> {
        (**self).pause_host_work()
    }
    fn readings(&self) -> DeviceReadings {
        (**self).readings()
    }
    fn set_power_mode(&self, mode: crate::device::PowerMode) -> Result<()> {
        (**self).set_power_mode(mode)
    }
    fn inject_fault(&self, fault: sim::Fault) -> Result<()> {
        (**self).inject_fault(fault)
    }
    fn set_limits(&self, max_in_flight: Option<usize>, batch_rows: Option<usize>) {
        (**self).set_limits(max_in_flight, batch_rows)
    }
    fn set_keep_warm(&self, window: Option<std::time::Duration>) {
        (**self).set_keep_warm(window)
    }
}

/// A device that was looked for and is not usable: listed so callers see why.
pub struct UnavailableBackend {
    info: DeviceInfo,
}

impl UnavailableBackend {
    pub fn new(kind: DeviceKind, name: &str, reason: impl Into<String>) -> UnavailableBackend {
        UnavailableBackend { info: DeviceInfo::unavailable(kind, name, reason) }
    }
}

impl Backend for UnavailableBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&self, _op: &OpDesc, _mem: &OpMemory) -> Result<ExecReport> {
        Err(Error::DeviceUnavailable(self.info.unavailable_reason.clone()))
    }
}
