//! A simulated NPU: results are computed for real on the host (so correctness holds), time
//! comes from a model (roofline per dtype and power mode, launch latency, parallel units), a
//! first-order thermal model heats and cools it, and faults can be injected. Always reported
//! as `DeviceKind::SimulatedNpu`, never as hardware.
//!
//! Time runs on a virtual clock (thermal scenarios of minutes in milliseconds) or on the wall
//! clock, where each op takes its modelled time (the remainder is slept) so hybrid schedules
//! behave as they would with a real device; an op whose host math outlasts its modelled time
//! reports the time it really took.

mod faults;
mod model;
pub mod profiles;
mod thermal;

pub use faults::Fault;
pub use model::{ModeProfile, SimNpuConfig};

use super::{Backend, DeviceInfo, DeviceKind, DeviceReadings, ExecReport, OpMemory};
use crate::device::PowerMode;
use crate::error::{Error, Result};
use crate::op::OpDesc;
use faults::{Faults, Verdict};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};
use thermal::{Busy, Thermal};

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SimStats {
    pub ops: u64,
    pub failed: u64,
    /// Sum of the modelled op durations.
    pub busy: Duration,
    pub energy_j: f64,
}

struct State {
    mode: PowerMode,
    throttled: bool,
    units: Vec<Busy>,
    thermal: Thermal,
    faults: Faults,
    stats: SimStats,
    /// Virtual time: no op starts before this (moved by `advance_idle` and observations).
    floor: Duration,
    /// Virtual time: each submitter's own present, so one submitter's ops run one after
    /// another while several submitters' ops overlap on the units.
    callers: HashMap<u64, Duration>,
    /// Wall-clock mode: time skipped by `advance_idle`.
    skipped: Duration,
}

pub struct SimNpu {
    cfg: SimNpuConfig,
    info: DeviceInfo,
    epoch: Instant,
    state: Mutex<State>,
}

/// An op admitted by the model: when it runs and for how long (device time).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    pub start: Duration,
    pub duration: Duration,
}

impl SimNpu {
    pub fn new(cfg: SimNpuConfig) -> SimNpu {
        let units = cfg.units.max(1);
        // The f32 figure where the model has one, else its best float dtype's (XDNA: bf16).
        let perf = cfg
            .throughput(crate::op::DType::F32, cfg.initial_mode)
            .or_else(|| cfg.throughput(crate::op::DType::BF16, cfg.initial_mode));
        let mut details = vec![
            ("model".to_string(), "simulated; not hardware".to_string()),
            ("units".to_string(), units.to_string()),
            ("launch latency".to_string(), format!("{:?}", cfg.launch_latency)),
            ("clock".to_string(), if cfg.virtual_time { "virtual" } else { "wall" }.to_string()),
        ];
        // Only the peaks of types it takes: no "peak i8" while no op computes in i8.
        for (d, g) in cfg.peak_gflops.iter().filter(|(d, _)| cfg.dtype_bits() & d.bit() != 0) {
            details.push((format!("peak {d}"), format!("{g} GFLOP/s")));
        }
        let info = DeviceInfo {
            kind: DeviceKind::SimulatedNpu,
            name: cfg.name.clone(),
            driver: "npuhybrid simulator".into(),
            memory_bytes: cfg.memory_bytes,
            dtypes: cfg.dtype_bits(),
            ops: cfg.ops,
            available: true,
            unavailable_reason: String::new(),
            peak_gflops: perf.unwrap_or(0.0),
            bandwidth_gbs: cfg.bandwidth_gbs,
            unified_memory: true,
            max_in_flight: units,
            details,
        };
        let thermal = Thermal {
            ambient_c: cfg.ambient_c,
            resistance_k_per_w: cfg.thermal_resistance_k_per_w,
            tau: cfg.thermal_time_constant,
            idle_power_w: cfg.idle_power_w,
            temp_c: cfg.ambient_c + cfg.idle_power_w * cfg.thermal_resistance_k_per_w,
            t: Duration::ZERO,
            energy_j: 0.0,
        };
        let mut faults = Faults::default();
        for f in &cfg.faults {
            faults.inject(f.clone(), 0);
        }
        SimNpu {
            state: Mutex::new(State {
                mode: cfg.initial_mode,
                throttled: false,
                units: vec![Busy::default(); units],
                thermal,
                faults,
                stats: SimStats::default(),
                floor: Duration::ZERO,
                callers: HashMap::new(),
                skipped: Duration::ZERO,
            }),
            cfg,
            info,
            epoch: Instant::now(),
        }
    }

    pub fn config(&self) -> &SimNpuConfig {
        &self.cfg
    }

    pub fn inject(&self, fault: Fault) {
        let mut s = self.state.lock();
        let seen = s.stats.ops + s.stats.failed;
        s.faults.inject(fault, seen);
    }

    /// Removes every fault, a lost device included (it "comes back").
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Whether a `DeviceLost` fault is in force.
    pub fn is_lost(&self) -> bool {
        self.state.lock().faults.is_lost()
    }

    pub fn power_mode(&self) -> PowerMode {
        self.state.lock().mode
    }

    pub fn stats(&self) -> SimStats {
        let mut s = self.state.lock();
        let now = self.present(&mut s);
        self.settle(&mut s, now);
        s.stats.energy_j = s.thermal.energy_j;
        s.stats
    }

    /// The device's present time (virtual or wall clock), e.g. to drive thermal control.
    pub fn now(&self) -> Duration {
        let mut s = self.state.lock();
        self.present(&mut s)
    }

    /// Lets the device sit idle (cooling) for `dt` of its time.
    pub fn advance_idle(&self, dt: Duration) {
        let mut s = self.state.lock();
        let now = self.present(&mut s) + dt;
        if self.cfg.virtual_time {
            s.floor = now;
        } else {
            s.skipped += dt;
        }
        self.settle(&mut s, now);
    }

    /// The device's current time: wall-clock mode reads the clock; virtual mode is the
    /// latest point anything has reached (observing it moves every caller there).
    fn present(&self, s: &mut State) -> Duration {
        if self.cfg.virtual_time {
            let latest = s
                .units
                .iter()
                .map(|b| b.until)
                .chain(s.callers.values().copied())
                .fold(s.floor, Duration::max);
            s.floor = latest;
            // Every submitter is now at the floor: forget them (threads come and go).
            s.callers.clear();
            latest
        } else {
            self.epoch.elapsed() + s.skipped
        }
    }

    /// Brings the thermal model to `t` and updates the throttle state.
    fn settle(&self, s: &mut State, t: Duration) {
        s.thermal.advance(&s.units, t);
        let temp = s.thermal.temp_c;
        if temp >= self.cfg.throttle_c {
            s.throttled = true;
        } else if temp < self.cfg.throttle_c - self.cfg.throttle_hysteresis_c {
            s.throttled = false;
        }
    }

    /// The model's part of running `op` for the calling thread. See `admit_for`.
    pub fn admit(&self, op: &OpDesc) -> Result<Slot> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::thread::current().id().hash(&mut h);
        self.admit_for(h.finish(), op)
    }

    /// The model's part of running `op`: faults, choice of unit, start and duration, heat.
    /// `submitter` identifies an independent stream of ops (a worker thread): in virtual time
    /// a stream's next op starts no earlier than its previous one ended. `execute` adds the
    /// real computation; schedulers and tests may call this alone.
    pub fn admit_for(&self, submitter: u64, op: &OpDesc) -> Result<Slot> {
        let mut s = self.state.lock();
        let index = s.stats.ops + s.stats.failed + 1;
        match s.faults.judge(index) {
            Verdict::Run => {}
            Verdict::Fail => {
                s.stats.failed += 1;
                return Err(Error::DeviceFailed(format!(
                    "{}: injected fault failed op #{index} ({})",
                    self.cfg.name, op.kind
                )));
            }
            Verdict::Lost => {
                s.stats.failed += 1;
                return Err(Error::DeviceLost(format!("{}: device lost (injected)", self.cfg.name)));
            }
        }
        let ready = if self.cfg.virtual_time {
            s.callers.get(&submitter).copied().unwrap_or(s.floor).max(s.floor)
        } else {
            self.epoch.elapsed() + s.skipped
        };
        let (unit, free_at) = s
            .units
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.until))
            .min_by_key(|&(_, until)| until)
            .expect("at least one unit");
        // Heat already accounted for cannot be revisited: a late stream starts at that point.
        let start = ready.max(free_at).max(s.thermal.t);
        self.settle(&mut s, start);
        let speed = if s.throttled { 0.5 } else { 1.0 };
        let duration = self.cfg.op_duration(op, s.mode, speed);
        let profile = self.cfg.mode(s.mode);
        let units = s.units.len() as f32;
        s.units[unit] = Busy {
            from: start,
            until: start + duration,
            power_w: (profile.active_power_w - self.cfg.idle_power_w).max(0.0) * speed as f32 / units,
        };
        s.stats.ops += 1;
        s.stats.busy += duration;
        if self.cfg.virtual_time {
            s.callers.insert(submitter, start + duration);
        }
        Ok(Slot { start, duration })
    }

    /// Wall-clock mode: waits until the op's modelled end.
    fn wait_until(&self, end: Duration) {
        let skipped = self.state.lock().skipped;
        let target = self.epoch + end.saturating_sub(skipped);
        let now = Instant::now();
        if target > now {
            std::thread::sleep(target - now);
        }
    }
}

impl Backend for SimNpu {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// What the modelled hardware runs: its op kinds, input dtypes and (input, output) pairs.
    fn supports(&self, op: &OpDesc) -> bool {
        // The profile decides by compute and output types; both operands (a quantized weight
        // included) must also be types the device takes. (A bias has the output's type.)
        // f32 operands the caller allows rounded are converted on the way in. Its profiles
        // give one input type for both float operands: an f16 weight under f32 activations
        // is not one of them, nor is a half KV cache under f32 queries.
        if op.has_half_weight() || op.has_half_kv() {
            return false;
        }
        if self.cfg.rounds_to_bf16(op) {
            return self.cfg.accepts(op.kind, crate::op::DType::BF16, op.output.dtype);
        }
        self.cfg.accepts(op.kind, op.dtype(), op.output.dtype)
            && op.inputs[..2].iter().flatten().all(|v| self.info.dtypes & v.dtype.bit() != 0)
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        if !self.supports(op) {
            return Err(crate::error::Error::Unsupported(format!(
                "{}: {} with {} inputs and {} output is not something this NPU runs",
                self.info.name,
                op.kind,
                op.dtype(),
                op.output.dtype
            )));
        }
        let slot = self.admit(op)?;
        if !self.cfg.virtual_time {
            // Wait for a free unit as the device queue would.
            self.wait_until(slot.start);
        }
        let started = Instant::now();
        if self.cfg.rounds_to_bf16(op) {
            crate::backend::cpu::execute_with_bf16_operands(op, mem)?;
        } else {
            crate::backend::cpu::execute_on_host(op, mem)?;
        }
        if self.cfg.virtual_time {
            return Ok(ExecReport { device_ns: Some(slot.duration.as_nanos() as u64), ..Default::default() });
        }
        self.wait_until(slot.start + slot.duration);
        // The math runs on the host's cores: where it outlasts the modelled time, the op took
        // that long, and the scheduler must learn so (a 2-core box computes a prefill matmul
        // far slower than the NPU it models; booking the model's time would keep work here).
        let took = slot.duration.max(started.elapsed());
        Ok(ExecReport { device_ns: Some(took.as_nanos() as u64), ..Default::default() })
    }

    /// In wall-clock mode the math runs on the host's cores (see `execute`); in virtual time
    /// the modelled time is what the caller reads.
    fn computes_on_host_cores(&self) -> bool {
        !self.cfg.virtual_time
    }

    fn readings(&self) -> DeviceReadings {
        let mut s = self.state.lock();
        let now = self.present(&mut s);
        self.settle(&mut s, now);
        let busy = s.units.iter().filter(|b| b.from <= now && now < b.until);
        let clock = self.cfg.mode(s.mode).clock_mhz * if s.throttled { 0.5 } else { 1.0 };
        DeviceReadings {
            temperature_c: Some(s.thermal.temp_c),
            power_w: Some(self.cfg.idle_power_w + busy.map(|b| b.power_w).sum::<f32>()),
            clock_mhz: Some(clock),
        }
    }

    fn set_power_mode(&self, mode: PowerMode) -> Result<()> {
        let mut s = self.state.lock();
        let now = self.present(&mut s);
        self.settle(&mut s, now);
        s.mode = mode;
        Ok(())
    }

    fn inject_fault(&self, fault: Fault) -> Result<()> {
        self.inject(fault);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
