//! Predicted run time per (device, op kind, dtype, size bucket). Starts from each device's
//! declared peak and launch latency, replaced by a short calibration where the device has
//! one, then follows measured history (exponentially weighted, outliers damped), and is
//! saved between runs, keyed by device identity, so a second run starts where the first
//! ended.
//!
//! Times are kept as a device's time for an op inside a segment (`run_ns`); a lone op pays
//! the device's launch (a submission and its wait) on top (`predict_ns`). A device that times
//! its kernels (GPU timestamps) keeps kernel times per op and, apart, one cost per op for the
//! rest (recording, gaps between dispatches), learned from whole segments: the rest of a short
//! segment in a mixed plan (uploads, write-backs) must not read as a slow kernel, or the
//! device looks slower the more the plan splits and never gets whole graphs back.

use super::fasthash::FastMap;
use crate::backend::{DeviceInfo, DeviceKind};
use crate::op::{DType, OpDesc, OpKind};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Weight of a new measurement.
const EWMA_ALPHA: f64 = 0.3;
/// Weight of a measurement far above the estimate (a first run, a preempted run).
const OUTLIER_ALPHA: f64 = 0.05;
/// A measurement this many times the estimate counts as an outlier once the entry has
/// enough samples to trust.
const OUTLIER_FACTOR: f64 = 4.0;
const TRUSTED_SAMPLES: u64 = 3;
/// Weight the running sums of the per-op overhead keep at each new segment: a segment counts
/// by its number of ops, so one long segment outweighs many short ones.
const OVERHEAD_DECAY: f64 = 0.8;
/// Segments whose transfers took more than this share of what was not kernel time teach
/// nothing about the per-op overhead.
const TRANSFER_SHARE_MAX: f64 = 0.1;
/// Ops the per-op overhead must have seen before a sample far above it is clamped.
const OVERHEAD_TRUSTED_OPS: f64 = 64.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Key {
    kind: u32,
    dtype: u32,
    /// log2 of the op's work (flops for matmul/attention, bytes for the rest).
    bucket: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Entry {
    /// Measured nanoseconds per unit of work.
    ns_per_unit: f64,
    samples: u64,
}

/// A device's starting point: declared by its backend, or measured by calibration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Priors {
    /// One submission and its wait (a lone op's fixed cost).
    pub launch_ns: f64,
    /// Fixed cost of one more op inside a submission.
    pub op_ns: f64,
    pub peak_gflops: f64,
    pub bandwidth_gbs: f64,
}

/// The model of one device.
pub struct DeviceModel {
    /// Device identity (name and driver): history of another driver is not this device's.
    identity: String,
    priors: RwLock<Priors>,
    calibrated: std::sync::atomic::AtomicBool,
    entries: RwLock<FastMap<Key, Entry>>,
    /// Some once the device reported kernel times: entries are kernel times then.
    overhead: RwLock<Option<Overhead>>,
}

/// Decayed sums of what segments took beyond their kernels and launch, and of their ops.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Overhead {
    rest_ns: f64,
    ops: f64,
}

/// Version of the history file: files of another version are not read (version 2: entries
/// of devices that time their kernels are kernel times).
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    format: u32,
    device: String,
    #[serde(default)]
    calibration: Option<Priors>,
    entries: Vec<(Key, Entry)>,
    /// Present when the entries are kernel times (see the module's comment).
    #[serde(default)]
    overhead: Option<Overhead>,
}

/// Work of an op in the unit its cost scales with.
fn work_units(op: &OpDesc) -> f64 {
    match op.kind {
        OpKind::Matmul | OpKind::Attention => op.flops().max(1.0),
        _ => op.views().map(|v| v.bytes()).sum::<usize>().max(1) as f64,
    }
}

fn key(op: &OpDesc) -> Key {
    let units = work_units(op);
    // floor(log2) of the integer part: the same bucket as f64::log2, without a libm call.
    let bucket = (units as u64).max(1).ilog2();
    Key { kind: op.kind as u32, dtype: op.dtype() as u32, bucket }
}

fn default_launch_ns(kind: DeviceKind) -> f64 {
    match kind {
        DeviceKind::Cpu => 2_000.0,
        DeviceKind::Gpu => 30_000.0,
        DeviceKind::Npu | DeviceKind::SimulatedNpu => 60_000.0,
    }
}

impl DeviceModel {
    pub fn new(info: &DeviceInfo) -> DeviceModel {
        let launch = default_launch_ns(info.kind);
        DeviceModel {
            identity: format!("{} {}", info.name, info.driver).trim().to_string(),
            priors: RwLock::new(Priors {
                launch_ns: launch,
                op_ns: launch / 10.0,
                peak_gflops: info.peak_gflops.max(0.1),
                bandwidth_gbs: info.bandwidth_gbs.max(0.1),
            }),
            calibrated: std::sync::atomic::AtomicBool::new(false),
            entries: RwLock::new(FastMap::default()),
            overhead: RwLock::new(None),
        }
    }

    /// Replaces the declared starting point with measured figures.
    pub fn calibrate(&self, measured: Priors) {
        *self.priors.write() = measured;
        self.calibrated.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the starting point was measured (now or in an earlier run).
    pub fn is_calibrated(&self) -> bool {
        self.calibrated.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn priors(&self) -> Priors {
        *self.priors.read()
    }

    /// One submission and its wait: what a lone op pays on top of `run_ns`.
    pub fn launch_ns(&self) -> f64 {
        self.priors.read().launch_ns
    }

    /// Predicted nanoseconds for `op` alone (a submission of its own), transfers excluded.
    pub fn predict_ns(&self, op: &OpDesc) -> f64 {
        self.launch_ns() + self.run_ns(op)
    }

    /// Predicted nanoseconds for `op` inside a segment (transfers excluded): its size
    /// bucket's history, else that of the nearest bucket within a factor of 4 of work (a split
    /// asks about the whole op when only its parts have run), else the starting point.
    pub fn run_ns(&self, op: &OpDesc) -> f64 {
        let units = work_units(op);
        let at = key(op);
        let entries = self.entries.read();
        let near = [0i64, -1, 1, -2, 2].into_iter().find_map(|d| {
            let bucket = u32::try_from(at.bucket as i64 + d).ok()?;
            entries.get(&Key { bucket, ..at })
        });
        match near {
            Some(e) => e.ns_per_unit * units + self.op_overhead_ns(),
            None => self.prior_ns(op),
        }
    }

    /// What one op costs inside a segment beyond its kernel, on a device that times kernels
    /// (0 elsewhere: its entries hold whole times).
    pub fn op_overhead_ns(&self) -> f64 {
        self.overhead.read().map_or(0.0, |o| if o.ops > 0.0 { o.rest_ns / o.ops } else { 0.0 })
    }

    /// Folds a segment whose ops were timed by the device: each op's kernel time into its
    /// entry, and what the segment took beyond its kernels (`rest_ns`: wall time less launch,
    /// set-up and `transfer_ns`, the transfers the plan counts apart at the link's modelled
    /// rate) into the per-op overhead, unless transfers were a large part of the segment:
    /// their real rate is not modelled (staging copies, PCIe, first allocations), and on an
    /// H100 a mixed plan's weight uploads, booked as overhead, made every GPU op look 1.4 ms
    /// long. A sample far above a trusted estimate counts as a few times the estimate.
    pub fn record_timed_segment(&self, kernels: &[(&OpDesc, f64)], rest_ns: f64, transfer_ns: f64) {
        for (op, ns) in kernels {
            self.record_in_segment(op, *ns);
        }
        let rest = rest_ns.max(0.0);
        if transfer_ns > TRANSFER_SHARE_MAX * (rest + transfer_ns) || kernels.is_empty() {
            return;
        }
        let mut guard = self.overhead.write();
        let o = guard.get_or_insert_with(Overhead::default);
        let ops = kernels.len() as f64;
        let estimate = if o.ops > 0.0 { o.rest_ns / o.ops } else { 0.0 };
        let trusted = o.ops >= OVERHEAD_TRUSTED_OPS;
        let rest = if trusted { rest.min(OUTLIER_FACTOR * estimate * ops) } else { rest };
        o.rest_ns = o.rest_ns * OVERHEAD_DECAY + rest;
        o.ops = o.ops * OVERHEAD_DECAY + ops;
    }

    fn prior_ns(&self, op: &OpDesc) -> f64 {
        let p = self.priors();
        let bytes = op.views().map(|v| v.bytes()).sum::<usize>() as f64;
        let peak = match op.dtype() {
            DType::F16 | DType::BF16 => p.peak_gflops * 2.0,
            _ => p.peak_gflops,
        };
        let compute_ns = op.flops() / peak;
        let memory_ns = bytes / p.bandwidth_gbs;
        p.op_ns + compute_ns.max(memory_ns)
    }

    /// Folds the measured time of a lone op (set-up such as compilation already taken out)
    /// into the model: its launch is taken out, never below a tenth of the time.
    pub fn record(&self, op: &OpDesc, measured_ns: f64) {
        let run = (measured_ns - self.launch_ns()).max(measured_ns / 10.0);
        self.record_in_segment(op, run);
    }

    /// Folds the measured time of an op inside a segment into the model. A time far above
    /// a trusted estimate moves it only a little: one preempted run must not send the
    /// device's work elsewhere for the rest of the session.
    pub fn record_in_segment(&self, op: &OpDesc, measured_ns: f64) {
        let units = work_units(op);
        let observed = measured_ns.max(1.0) / units;
        let mut entries = self.entries.write();
        let e = entries.entry(key(op)).or_insert(Entry { ns_per_unit: observed, samples: 0 });
        if e.samples > 0 {
            let outlier = e.samples >= TRUSTED_SAMPLES && observed > OUTLIER_FACTOR * e.ns_per_unit;
            let alpha = if outlier { OUTLIER_ALPHA } else { EWMA_ALPHA };
            e.ns_per_unit = (1.0 - alpha) * e.ns_per_unit + alpha * observed;
        }
        e.samples += 1;
    }

    pub fn samples(&self) -> u64 {
        self.entries.read().values().map(|e| e.samples).sum()
    }

    /// The history file's name: the device identity, made safe for a file name.
    pub fn file_name(&self) -> String {
        let mut safe: String =
            self.identity.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        safe.truncate(120);
        format!("perf-{safe}.json")
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let saved = Saved {
            format: FORMAT,
            device: self.identity.clone(),
            calibration: self.is_calibrated().then(|| self.priors()),
            entries: self.entries.read().iter().map(|(k, v)| (*k, *v)).collect(),
            overhead: *self.overhead.read(),
        };
        let path = dir.join(self.file_name());
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&saved).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Loads saved history for this device if a file exists; a corrupt file is ignored.
    pub fn load(&self, dir: &Path) -> bool {
        let Ok(bytes) = crate::files::read(&dir.join(self.file_name())) else { return false };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(saved) if saved.format != FORMAT => {
                log::info!("ignoring performance history of an older format for {}", self.identity);
                false
            }
            Ok(saved) if saved.device == self.identity => {
                if let Some(p) = saved.calibration.filter(|p| {
                    [p.launch_ns, p.op_ns, p.peak_gflops, p.bandwidth_gbs]
                        .iter()
                        .all(|x| x.is_finite() && *x > 0.0)
                }) {
                    self.calibrate(p);
                }
                let overhead = saved.overhead.filter(|o| o.rest_ns.is_finite() && o.ops.is_finite());
                *self.overhead.write() = overhead;
                let mut entries = self.entries.write();
                for (k, v) in saved.entries {
                    if v.ns_per_unit.is_finite() && v.ns_per_unit > 0.0 {
                        entries.insert(k, v);
                    }
                }
                true
            }
            _ => {
                log::warn!("ignoring unreadable performance history for {}", self.identity);
                false
            }
        }
    }
}

/// Default directory for saved history: `$XDG_CACHE_HOME/npuhybrid` or `~/.cache/npuhybrid`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|p| p.join("npuhybrid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::op::TensorView;

    fn matmul(m: usize) -> OpDesc {
        let t = |id, r, c| TensorView::contiguous(id, DType::F32, &[r, c], 0);
        OpDesc::new(OpKind::Matmul, &[t(1, m, 256), t(2, 256, 256)], t(3, m, 256))
    }

    #[test]
    fn history_of_a_nearby_size_is_used_before_the_declared_peak() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        let prior_64 = model.predict_ns(&matmul(64));
        // Measured: 1 ns per flop at m = 128, far from the declared peak.
        let flops_128 = matmul(128).flops();
        model.record_in_segment(&matmul(128), flops_128);
        assert_eq!(model.run_ns(&matmul(128)), flops_128);
        // A lone op pays the launch on top.
        assert_eq!(model.predict_ns(&matmul(128)), flops_128 + model.launch_ns());
        // m = 256 and m = 32 are one and two buckets away: same cost per flop.
        assert_eq!(model.run_ns(&matmul(256)), matmul(256).flops());
        assert_eq!(model.run_ns(&matmul(32)), matmul(32).flops());
        // m = 8 is four buckets away: the declared peak still decides.
        assert_ne!(model.run_ns(&matmul(8)), matmul(8).flops());
        assert!(model.predict_ns(&matmul(64)) > prior_64, "the measured cost replaced the prior");
    }

    #[test]
    fn a_lone_op_is_learned_without_its_launch() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        let launch = model.launch_ns();
        model.record(&matmul(128), launch + 1e6);
        assert_eq!(model.run_ns(&matmul(128)), 1e6);
        assert_eq!(model.predict_ns(&matmul(128)), launch + 1e6);
    }

    #[test]
    fn one_slow_run_does_not_poison_a_trusted_estimate() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        for _ in 0..TRUSTED_SAMPLES {
            model.record_in_segment(&matmul(128), 1e6);
        }
        // A preempted run, 50 times slower: the estimate moves by a few percent at most.
        model.record_in_segment(&matmul(128), 5e7);
        let after = model.run_ns(&matmul(128));
        assert!(after < 1e6 * 3.5, "{after}");
        // A new entry's first samples are not outliers: the estimate follows them.
        let model = DeviceModel::new(cpu.info());
        model.record_in_segment(&matmul(128), 1e6);
        model.record_in_segment(&matmul(128), 5e7);
        assert!(model.run_ns(&matmul(128)) > 1e7);
    }

    #[test]
    fn calibration_replaces_the_declared_figures_and_is_saved_with_the_history() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        let declared = model.run_ns(&matmul(128));
        let measured = Priors { launch_ns: 50_000.0, op_ns: 3_000.0, peak_gflops: 1.0, bandwidth_gbs: 2.0 };
        assert!(!model.is_calibrated());
        model.calibrate(measured);
        assert!(model.is_calibrated());
        // 1 GFLOP/s: 1 ns per flop, plus the per-op cost.
        assert_eq!(model.run_ns(&matmul(128)), matmul(128).flops() + 3_000.0);
        assert_ne!(model.run_ns(&matmul(128)), declared);
        let dir = tempfile::tempdir().unwrap();
        let path = model.save(dir.path()).unwrap();
        assert!(path.file_name().unwrap().to_string_lossy().starts_with("perf-"));
        let again = DeviceModel::new(cpu.info());
        assert!(again.load(dir.path()));
        assert!(again.is_calibrated());
        assert_eq!(again.priors(), measured);
    }

    #[test]
    fn a_timed_device_keeps_kernel_times_and_one_overhead_per_op() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        let (a, b) = (matmul(64), matmul(128));
        // A long segment: 200 ops' worth of kernels plus 4 ms of recording and gaps.
        let long: Vec<(&OpDesc, f64)> =
            (0..200).map(|i| (if i % 2 == 0 { &a } else { &b }, 10_000.0)).collect();
        model.record_timed_segment(&long, 4_000_000.0, 0.0);
        assert!((model.op_overhead_ns() - 20_000.0).abs() < 1e-6);
        assert!((model.run_ns(&a) - 30_000.0).abs() < 1e-6, "kernel time plus the overhead");
        // Then short segments of a mixed plan, each with 300 us of uploads and waiting: the
        // estimate moves, but by ops, not by segments.
        for _ in 0..5 {
            model.record_timed_segment(&[(&a, 10_000.0)], 300_000.0, 0.0);
        }
        let after = model.op_overhead_ns();
        assert!(after > 20_000.0 && after < 40_000.0, "{after}");
        // Kernel entries stay kernel times.
        assert!((model.run_ns(&a) - after - 10_000.0).abs() < 1.0);
    }

    #[test]
    fn the_overhead_is_saved_and_older_files_are_not_read() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let info = cpu.info();
        let dir = std::env::temp_dir().join(format!("nh-perf-format-{}", std::process::id()));
        let model = DeviceModel::new(info);
        let a = matmul(64);
        model.record_timed_segment(&[(&a, 1_000.0), (&a, 1_000.0)], 500.0, 0.0);
        let path = model.save(&dir).unwrap();
        let again = DeviceModel::new(info);
        assert!(again.load(&dir));
        assert_eq!(again.op_overhead_ns(), 250.0);
        // The same history without a format field: an older file, ignored.
        let text = std::fs::read_to_string(&path).unwrap().replace("\"format\":2,", "");
        std::fs::write(&path, text).unwrap();
        assert!(!DeviceModel::new(info).load(&dir));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn transfer_bound_segments_and_one_time_costs_do_not_make_every_op_slow() {
        let cpu = crate::backend::cpu::CpuBackend::new(1).unwrap();
        let model = DeviceModel::new(cpu.info());
        let a = matmul(64);
        // A mixed plan's short segment that uploaded weights: 40 ms of transfers modelled,
        // 100 ms more than modelled in the rest. Nothing is learned about the overhead.
        model.record_timed_segment(&[(&a, 10_000.0)], 100_000_000.0, 40_000_000.0);
        assert_eq!(model.op_overhead_ns(), 0.0);
        // Long segments set a trusted estimate of 20 us an op ...
        let long: Vec<(&OpDesc, f64)> = (0..100).map(|_| (&a, 10_000.0)).collect();
        model.record_timed_segment(&long, 2_000_000.0, 10_000.0);
        assert!((model.op_overhead_ns() - 20_000.0).abs() < 1e-6);
        // ... which a one-time stall (a first device allocation) of 50 ms moves by little.
        model.record_timed_segment(&[(&a, 10_000.0)], 50_000_000.0, 0.0);
        assert!(model.op_overhead_ns() < 21_000.0, "{}", model.op_overhead_ns());
    }
}
