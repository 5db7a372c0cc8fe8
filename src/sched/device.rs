//! A device as the scheduler sees it: its backend, performance model, live load and health.

use super::perf_model::DeviceModel;
use crate::backend::{Backend, DeviceInfo, DeviceKind};
use crate::op::OpDesc;
use crate::policy::DeviceClass;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Counters readable through `nh_runtime_device_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub ops_run: u64,
    pub busy_ns: u64,
    pub bytes_moved: u64,
    pub failures: u64,
    /// Ops (or parts) that failed here and ran elsewhere.
    pub fallbacks: u64,
    pub queue_depth: u64,
    /// Degraded for a while after failures, or lost (left out until `Runtime::reset_device`).
    pub degraded: bool,
    pub thermally_excluded: bool,
}

#[derive(Default)]
pub struct DeviceLoad {
    /// Jobs queued or running.
    pub queued: AtomicUsize,
    /// Predicted nanoseconds of queued and running work.
    pub queued_ns: AtomicU64,
    pub ops_run: AtomicU64,
    pub busy_ns: AtomicU64,
    pub bytes_moved: AtomicU64,
    pub failures: AtomicU64,
    pub fallbacks: AtomicU64,
    pub consecutive_failures: AtomicU32,
    pub degraded_until: Mutex<Option<Instant>>,
    pub thermally_excluded: AtomicBool,
    /// Fraction (per mille) of this device's ops that thermal rules move elsewhere.
    pub shift_permille: AtomicU32,
    pub shift_counter: AtomicU64,
}

pub struct Device {
    pub index: usize,
    pub class: DeviceClass,
    pub info: DeviceInfo,
    pub backend: Box<dyn Backend>,
    pub model: DeviceModel,
    pub load: DeviceLoad,
    /// Being measured (see `calibrate.rs`): left out wherever another device can take the op,
    /// so the user's work is never the experiment.
    pub calibrating: AtomicBool,
    /// Reported lost (device lost, fell off the bus): left out until the caller brings it back
    /// (`nh_device_reset`), not retried after a degradation period.
    pub lost: AtomicBool,
}

impl Device {
    pub fn new(index: usize, backend: Box<dyn Backend>) -> Device {
        let info = backend.info().clone();
        let class = match info.kind {
            DeviceKind::Cpu => DeviceClass::Cpu,
            DeviceKind::Gpu => DeviceClass::Gpu,
            DeviceKind::Npu | DeviceKind::SimulatedNpu => DeviceClass::Npu,
        };
        let model = DeviceModel::new(&info);
        Device {
            index,
            class,
            info,
            backend,
            model,
            load: DeviceLoad::default(),
            calibrating: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        }
    }

    /// Whether the device is measured before use: it has its own memory (a link to cross)
    /// and no measured starting point yet.
    pub fn needs_calibration(&self) -> bool {
        self.info.available
            && !self.is_host()
            && self.backend.link_gbs().is_some()
            && !self.model.is_calibrated()
    }

    /// Host devices run ops on host memory directly (no transfers, can run inline).
    pub fn is_host(&self) -> bool {
        self.info.kind == DeviceKind::Cpu
    }

    /// Predicted time of `op` inside a segment here (`DeviceModel::run_ns`). A device whose
    /// arithmetic runs on the host's cores cannot beat the host's own prediction (`host`): the
    /// simulated NPU's model alone (an NPU's peaks) sent the first MiniLM graph of each new
    /// shape there, 35 times slower than expected on a 2-core box.
    pub fn run_ns(&self, op: &OpDesc, host: Option<&Device>) -> f64 {
        let own = self.model.run_ns(op);
        match host {
            Some(h) if self.backend.computes_on_host_cores() && !self.is_host() => {
                own.max(h.model.run_ns(op))
            }
            _ => own,
        }
    }

    /// `run_ns` plus a submission of its own: the time of `op` alone here.
    pub fn predict_ns(&self, op: &OpDesc, host: Option<&Device>) -> f64 {
        self.model.launch_ns() + self.run_ns(op, host)
    }

    /// Brings a lost or degraded device back into service.
    pub fn reset(&self) {
        self.lost.store(false, Ordering::Relaxed);
        *self.load.degraded_until.lock() = None;
        self.load.consecutive_failures.store(0, Ordering::Relaxed);
    }

    pub fn is_degraded(&self, now: Instant) -> bool {
        if self.lost.load(Ordering::Relaxed) {
            return true;
        }
        let mut until = self.load.degraded_until.lock();
        match *until {
            Some(t) if now < t => true,
            Some(_) => {
                // The degradation period is over: the device gets another chance.
                *until = None;
                self.load.consecutive_failures.store(0, Ordering::Relaxed);
                log::info!("device {} ({}) is back in service after degradation", self.index, self.info.name);
                false
            }
            None => false,
        }
    }

    /// Whether the thermal load shift sends this op elsewhere (every n-th op by the fraction).
    pub fn shifted_away(&self) -> bool {
        let permille = self.load.shift_permille.load(Ordering::Relaxed) as u64;
        if permille == 0 {
            return false;
        }
        let n = self.load.shift_counter.fetch_add(1, Ordering::Relaxed);
        (n + 1) * permille / 1000 != n * permille / 1000
    }

    pub fn stats(&self) -> DeviceStats {
        let l = &self.load;
        DeviceStats {
            ops_run: l.ops_run.load(Ordering::Relaxed),
            busy_ns: l.busy_ns.load(Ordering::Relaxed),
            bytes_moved: l.bytes_moved.load(Ordering::Relaxed),
            failures: l.failures.load(Ordering::Relaxed),
            fallbacks: l.fallbacks.load(Ordering::Relaxed),
            queue_depth: l.queued.load(Ordering::Relaxed) as u64,
            degraded: self.lost.load(Ordering::Relaxed)
                || l.degraded_until.lock().is_some_and(|t| Instant::now() < t),
            thermally_excluded: l.thermally_excluded.load(Ordering::Relaxed),
        }
    }
}

/// The device that runs ops on host memory (the CPU), if the runtime has one.
pub fn host_of(devices: &[Device]) -> Option<&Device> {
    devices.iter().find(|d| d.is_host())
}
