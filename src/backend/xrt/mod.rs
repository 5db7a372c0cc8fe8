//! AMD NPU (Ryzen AI: Phoenix, Hawk Point, Strix) through XRT's C API, loaded at run time.
//!
//! Kernels are prebuilt mlir-aie / IRON matmul designs listed in a kernel directory (see
//! `manifest` and docs/XRT.md). A matmul of any shape is padded and tiled onto the kernel's
//! launch shape, launches are pipelined over up to the policy's in-flight limit of prepared
//! runs, and the host sums partial products and applies the epilogue.
//!
//! Without an NPU, `probe` fails with XRT's own reason, prints nothing (XRT's log goes to a file
//! of ours) and never crashes the process.

mod api;
mod device;
pub mod manifest;
mod power;
mod sha256;
pub mod shim;
pub mod tiling;

use super::{Backend, DeviceInfo, DeviceKind, DeviceReadings, ExecReport, OpMemory, UnavailableBackend};
use crate::device::{amdxdna, telemetry, PowerMode, SysRoot};
use crate::error::{Error, Result};
use crate::op::{DType, OpDesc, OpKind};
use device::{LoadedKernel, Session, SLOTS_PER_KERNEL};
use manifest::KernelSpec;
use parking_lot::{Condvar, Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use manifest::ENV_KERNEL_DIR;

pub const NAME: &str = "AMD NPU (XRT)";

/// Defaults of the policy language: 3 ops in flight, 64 rows per launch.
pub const DEFAULT_IN_FLIGHT: usize = 3;
pub const DEFAULT_BATCH_ROWS: usize = 64;

/// Counts runs in flight across all ops, up to the policy's limit.
struct InFlight {
    used: Mutex<usize>,
    freed: Condvar,
    limit: AtomicUsize,
}

impl InFlight {
    /// Takes between 1 and `want` permits, waiting while none is free.
    fn acquire(&self, want: usize) -> usize {
        let mut used = self.used.lock();
        loop {
            let limit = self.limit.load(Ordering::Relaxed);
            if *used < limit {
                let n = want.clamp(1, limit - *used);
                *used += n;
                return n;
            }
            self.freed.wait(&mut used);
        }
    }

    fn release(&self, n: usize) {
        *self.used.lock() -= n;
        self.freed.notify_all();
    }
}

pub struct XrtBackend {
    info: DeviceInfo,
    // The worker holds the kernels and the session: stopped first. Kernels hold handles of the
    // session's device: declared before it so they drop first.
    power: power::PowerWorker,
    kernels: Arc<RwLock<Vec<LoadedKernel>>>,
    _session: Arc<Session>,
    in_flight: InFlight,
    batch_rows: AtomicUsize,
    /// Reads the NPU's sensors without waking it.
    sensors: Mutex<telemetry::NpuReader>,
}

/// A power mode as hardware-context QoS, for a process that may not use SET_STATE. In the
/// driver (`aie2_calc_ctx_dpm`) low priority asks for DPM level 0, the lowest clock; without
/// gops and fps every other context asks for the highest level. So QoS can lower the clock
/// (powersaver) and order contexts, but cannot do what turbo does (clock gating off).
pub fn qos_for(mode: PowerMode) -> shim::Qos {
    let priority = match mode {
        PowerMode::Default => 0,
        PowerMode::Powersaver => shim::PRIORITY_LOW,
        PowerMode::Balanced => shim::PRIORITY_NORMAL,
        PowerMode::Performance => shim::PRIORITY_HIGH,
        PowerMode::Turbo => shim::PRIORITY_REALTIME,
    };
    shim::Qos { priority, ..Default::default() }
}

/// How the worker applies a power mode.
enum PowerPath {
    /// SET_STATE on each amdxdna node (the process has CAP_SYS_ADMIN).
    SetState(Vec<PathBuf>),
    /// Re-create the hardware contexts with the mode's QoS (through the shim).
    Qos,
    /// Neither is possible: why.
    None(String),
}

fn power_path(session: &Session) -> PowerPath {
    let root = SysRoot::real();
    let npus = amdxdna::find_npus(&root);
    if !npus.is_empty() && amdxdna::may_set_power_mode(&root) {
        return PowerPath::SetState(npus.iter().map(|n| root.path(&n.dev)).collect());
    }
    match (&session.shim, npus.is_empty()) {
        (Ok(_), _) => PowerPath::Qos,
        (Err(e), true) => PowerPath::None(format!(
            "no /sys/class/accel/accel* is bound to amdxdna and the registration shim is not loaded ({e}): \
             there is no power mode to set"
        )),
        (Err(e), false) => PowerPath::None(format!(
            "SET_STATE needs CAP_SYS_ADMIN, and per-context QoS needs the registration shim ({e})"
        )),
    }
}

/// The PCI id of the first amdxdna NPU, from sysfs.
fn npu_pci_id() -> Option<manifest::PciId> {
    let root = SysRoot::real();
    let npu = amdxdna::find_npus(&root).into_iter().next()?;
    let read = |f: &str| root.read(format!("/sys/class/accel/{}/device/{f}", npu.name));
    manifest::PciId::parse(&format!("{}:{}", read("vendor")?, read("device")?))
}

/// Re-opens every kernel with `qos`. The old contexts are closed first, so the device never
/// holds more than the manifest's count (Phoenix allows 6); ops wait meanwhile.
fn reload(
    session: &Session,
    specs: &[KernelSpec],
    kernels: &RwLock<Vec<LoadedKernel>>,
    qos: shim::Qos,
) -> Result<()> {
    let mut k = kernels.write();
    k.clear();
    match session.load_all(specs, qos) {
        Ok(new) => {
            *k = new;
            Ok(())
        }
        Err(e) => Err(Error::DeviceFailed(format!(
            "{NAME}: re-creating the hardware contexts with QoS {qos:?} failed, the NPU has no kernels now: {e}"
        ))),
    }
}

/// The kernel directory: the argument, else `$NPUHYBRID_XRT_KERNELS`.
fn kernel_dir(arg: Option<&Path>) -> Option<PathBuf> {
    arg.map(Path::to_path_buf).or_else(|| std::env::var_os(ENV_KERNEL_DIR).map(PathBuf::from))
}

impl XrtBackend {
    /// Loads XRT, opens the NPU and loads every kernel of the directory. `Err` is the reason
    /// the NPU cannot be used, for an unavailable device entry (see `unavailable`).
    pub fn probe(kernel_dir_arg: Option<&Path>) -> Result<XrtBackend, String> {
        let (api, log) = match api::system() {
            Ok((api, log)) => (api, log.as_ref()),
            Err(e) => return Err(e.clone()),
        };
        let session = Session::open(api, log, shim::system())?;
        let dir = kernel_dir(kernel_dir_arg).ok_or_else(|| {
            format!("NPU opened, but no kernel directory: pass one or set {ENV_KERNEL_DIR}")
        })?;
        let manifest = manifest::load(&dir)?;
        let checked = match npu_pci_id() {
            Some(id) => {
                manifest.check_device(id).map_err(|e| format!("{}: {e}", dir.display()))?;
                format!("{} (checked)", manifest.device.describe())
            }
            None => format!("{} (not checked: no amdxdna device in sysfs)", manifest.device.describe()),
        };
        let specs = manifest.kernels;
        let kernels = session.load_all(&specs, shim::Qos::default())?;
        let version = api.version.clone().unwrap_or_else(|| "?".into());
        let mut details = vec![
            ("xrt".to_string(), format!("{version} ({})", api.library)),
            ("kernels".to_string(), dir.display().to_string()),
            ("kernel loading".to_string(), session.path()),
            ("kernels built for".to_string(), checked),
        ];
        for k in &kernels {
            let s = &k.spec;
            details.push((
                format!("kernel {}", s.xclbin.file_name().unwrap_or_default().to_string_lossy()),
                format!("matmul {}->{} tile {}x{}x{}", s.dtype_in, s.dtype_out, s.tile.m, s.tile.k, s.tile.n),
            ));
        }
        let info = DeviceInfo {
            kind: DeviceKind::Npu,
            name: NAME.into(),
            driver: format!("XRT {version}"),
            memory_bytes: 0,
            dtypes: kernels.iter().fold(0, |acc, k| acc | k.spec.dtype_in.bit())
                & crate::op::validate::computable_dtypes(OpKind::Matmul.bit()),
            ops: OpKind::Matmul.bit(),
            available: true,
            unavailable_reason: String::new(),
            // NPUs have no f32 matmul; the declared figure is the best kernel's, if given.
            peak_gflops: kernels.iter().filter_map(|k| k.spec.gflops).fold(0.0, f64::max),
            bandwidth_gbs: 0.0,
            unified_memory: true,
            max_in_flight: DEFAULT_IN_FLIGHT,
            details,
        };
        let session = Arc::new(session);
        let kernels = Arc::new(RwLock::new(kernels));
        let path = power_path(&session);
        let (s, k) = (Arc::clone(&session), Arc::clone(&kernels));
        let said_qos = std::sync::Once::new();
        let apply = move |mode: PowerMode| match &path {
            PowerPath::SetState(nodes) => nodes.iter().try_for_each(|n| amdxdna::set_power_mode(n, mode)),
            PowerPath::Qos => {
                said_qos.call_once(|| {
                    log::info!("{NAME}: power modes are applied as hardware-context QoS (SET_STATE needs CAP_SYS_ADMIN)")
                });
                reload(&s, &specs, &k, qos_for(mode))
            }
            PowerPath::None(why) => Err(Error::Unsupported(format!("{NAME}: {why}"))),
        };
        Ok(XrtBackend {
            info,
            power: power::PowerWorker::start(NAME, Box::new(apply)),
            kernels,
            _session: session,
            in_flight: InFlight {
                used: Mutex::new(0),
                freed: Condvar::new(),
                limit: AtomicUsize::new(DEFAULT_IN_FLIGHT),
            },
            batch_rows: AtomicUsize::new(DEFAULT_BATCH_ROWS),
            sensors: Mutex::new(telemetry::NpuReader::default()),
        })
    }

    /// The device's name and driver (for diagnostics).
    pub fn info_name(&self) -> String {
        format!("{} ({})", self.info.name, self.info.driver)
    }

    /// The NPU as a runtime device: the backend, or an unavailable entry that says why.
    pub fn open(kernel_dir: Option<&Path>) -> Box<dyn Backend> {
        match XrtBackend::probe(kernel_dir) {
            Ok(b) => Box::new(b),
            Err(reason) => Box::new(UnavailableBackend::new(DeviceKind::Npu, NAME, reason)),
        }
    }

    /// The device entry to report when `probe` failed.
    pub fn unavailable(reason: &str) -> DeviceInfo {
        DeviceInfo::unavailable(DeviceKind::Npu, NAME, reason)
    }

    /// The kernel for `op`: inputs in its dtype (or bf16 for f32 operands the caller allows
    /// rounded, converted while packing), and the launch height closest to the policy's batch
    /// rows (the smallest tile at least that tall, else the tallest).
    fn kernel_for<'k>(&self, kernels: &'k [LoadedKernel], op: &OpDesc) -> Option<&'k LoadedKernel> {
        // Kernels take both operands in one float type; the tiler cannot read quantized
        // blocks, and a weight of another type than A's is left to devices that widen it.
        let b_same = op.input(1).is_some_and(|b| b.dtype == op.dtype());
        if op.kind != OpKind::Matmul || !b_same {
            return None;
        }
        let exact = self.kernel_taking(kernels, op, op.dtype());
        exact.or_else(|| {
            op.may_round_to_bf16().then(|| self.kernel_taking(kernels, op, DType::BF16)).flatten()
        })
    }

    fn kernel_taking<'k>(
        &self,
        kernels: &'k [LoadedKernel],
        op: &OpDesc,
        dtype: DType,
    ) -> Option<&'k LoadedKernel> {
        let fits = |k: &&LoadedKernel| {
            k.spec.dtype_in == dtype
                && (k.spec.dtype_out == DType::F32 || k.spec.dtype_out == op.output.dtype)
        };
        let rows = self.batch_rows.load(Ordering::Relaxed).min(op.dims().m.max(1));
        let mut fitting: Vec<&LoadedKernel> = kernels.iter().filter(fits).collect();
        fitting.sort_by_key(|k| k.spec.tile.m);
        fitting.iter().find(|k| k.spec.tile.m >= rows).or(fitting.last()).copied()
    }
}

impl Backend for XrtBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn supports(&self, op: &OpDesc) -> bool {
        self.kernel_for(&self.kernels.read(), op).is_some()
    }

    /// Runs in flight (at most `SLOTS_PER_KERNEL`; default 3) and rows per launch (default 64).
    fn set_limits(&self, max_in_flight: Option<usize>, batch_rows: Option<usize>) {
        let limit = max_in_flight.unwrap_or(DEFAULT_IN_FLIGHT).clamp(1, SLOTS_PER_KERNEL);
        self.in_flight.limit.store(limit, Ordering::Relaxed);
        self.in_flight.freed.notify_all();
        self.batch_rows.store(batch_rows.unwrap_or(DEFAULT_BATCH_ROWS).max(1), Ordering::Relaxed);
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        // Held through the op: a QoS change waits for running ops.
        let kernels = self.kernels.read();
        let kernel = self.kernel_for(&kernels, op).ok_or_else(|| {
            Error::Unsupported(format!(
                "{NAME}: no kernel for {} {} in the kernel directory",
                op.dtype(),
                op.kind
            ))
        })?;
        let (m, k, n, batch) = crate::op::validate::matmul_mkn(op);
        let want = tiling::launches(&kernel.spec, batch, m, k, n);
        let permits = self.in_flight.acquire(want);
        let mut slots = kernel.take(permits);
        let result = tiling::run_tiled(op, mem, &kernel.spec, &mut slots);
        kernel.give_back(slots);
        self.in_flight.release(permits);
        result.map(|_| ExecReport::default())
    }

    /// Power, temperature and clock from amdxdna (hwmon, else GET_INFO while the NPU is awake);
    /// without an NPU temperature, the die's (k10temp), which the NPU shares with the CPU cores.
    fn readings(&self) -> DeviceReadings {
        let root = SysRoot::real();
        let npu = self.sensors.lock().read(&root);
        DeviceReadings {
            temperature_c: npu.temp_c.or_else(|| telemetry::cpu_temperature(&root)),
            power_w: npu.power_w,
            clock_mhz: npu.clock_mhz,
        }
    }

    /// With CAP_SYS_ADMIN, through amdxdna's SET_STATE ioctl (system-wide, as `xrt-smi
    /// configure --pmode`); without, as QoS of the hardware contexts (this process only). Never
    /// blocks the caller (the thermal thread) for long: see `power`.
    fn set_power_mode(&self, mode: PowerMode) -> Result<()> {
        self.power.request(mode)
    }
}

#[cfg(test)]
mod tests;
