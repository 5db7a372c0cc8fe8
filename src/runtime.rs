//! The runtime: devices, buffers, the active policy and the scheduler, shared by all threads.

use crate::backend::cpu::CpuOptions;
use crate::backend::sim::Fault;
use crate::backend::{Backend, DeviceInfo, DeviceReadings, OpMemory};
use crate::device::{Action, ConfigPlan, Configurable, PowerMode, Sample, SysRoot, TelemetryMonitor};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::graph::Graph;
use crate::handle::HandleTable;
use crate::memory::{Buffer, BufferId, HostPool, PoolStats};
use crate::op::{validate::validate, OpDesc};
use crate::policy::{self, CompiledPolicy, DeviceClass, OpQuery};
use crate::sched::thermal::{ThermalController, ThermalEffect};
use crate::sched::{perf_model, Device, DeviceStats, Scheduler};
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod devices;
pub use devices::DeviceSelection;

/// Where the policy comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicySource {
    Builtin(String),
    File(PathBuf),
    Source { origin: String, text: String },
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub devices: DeviceSelection,
    pub policy: PolicySource,
    /// CPU worker threads; 0 = one per core.
    pub threads: usize,
    /// Where performance history is kept between runs; None = not kept.
    pub perf_cache_dir: Option<PathBuf>,
    /// Start without the saved history (it is overwritten when the runtime ends). Defaults
    /// to the environment variable `NPUHYBRID_PERF_RESET` being set to anything but "0".
    pub perf_reset: bool,
    /// Bytes of freed host blocks the pool keeps for reuse.
    pub pool_cache_bytes: u64,
    /// How often thermal rules are evaluated; None = only through `thermal_tick` (tests
    /// driving a simulated device's virtual clock).
    pub thermal_period: Option<Duration>,
    /// Root of sysfs, procfs and /dev (tests point it at a fake tree).
    pub sys_root: SysRoot,
    /// How often sensors are sampled; None = no telemetry thread.
    pub telemetry_period: Option<Duration>,
    /// CPU backend behaviours (weight cache, keep-warm threads).
    pub cpu: CpuOptions,
    /// Measure devices with their own memory on first use (a few ms on a GPU), in the
    /// background; until then they take only work no other device can do. Then (in every
    /// runtime) devices make their kernels ahead of use, on the same background thread.
    pub calibrate: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            devices: DeviceSelection::default(),
            policy: PolicySource::Builtin("default".into()),
            threads: 0,
            perf_cache_dir: perf_model::default_cache_dir(),
            perf_reset: std::env::var_os("NPUHYBRID_PERF_RESET").is_some_and(|v| !v.is_empty() && v != "0"),
            pool_cache_bytes: 256 << 20,
            thermal_period: Some(Duration::from_millis(100)),
            sys_root: SysRoot::real(),
            telemetry_period: Some(Duration::from_millis(500)),
            cpu: CpuOptions::default(),
            calibrate: true,
        }
    }
}

/// Runtime-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    pub ops_submitted: u64,
    pub ops_completed: u64,
    pub ops_failed: u64,
    pub fallbacks: u64,
    pub split_ops: u64,
    pub inline_ops: u64,
    pub buffers_live: u64,
}

pub struct Runtime {
    /// Unique in the process (graphs remember which runtime validated their ops).
    id: u64,
    sched: Arc<Scheduler>,
    buffers: RwLock<HandleTable<Arc<Buffer>>>,
    pool: Arc<HostPool>,
    policy: Arc<RwLock<Arc<CompiledPolicy>>>,
    thermal: Arc<Mutex<ThermalController>>,
    /// Dropping it stops the thermal thread.
    thermal_stop: Option<Sender<()>>,
    thermal_thread: Option<JoinHandle<()>>,
    started: Instant,
    telemetry: Option<Arc<TelemetryMonitor>>,
    sys_root: SysRoot,
    perf_cache_dir: Option<PathBuf>,
}

fn compile_policy(source: &PolicySource) -> Result<Arc<CompiledPolicy>> {
    let compiled = match source {
        PolicySource::Builtin(name) => {
            return policy::builtin(name).ok_or_else(|| {
                Error::Policy(format!(
                    "no built-in policy named '{name}' (have: {})",
                    policy::builtin_names().join(", ")
                ))
            })
        }
        PolicySource::File(path) => policy::compile_file(path, &policy::PolicyLimits::default()),
        PolicySource::Source { origin, text } => policy::compile_str(origin, text),
    };
    compiled.map(Arc::new).map_err(|e| Error::Policy(e.to_string()))
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let backends = devices::probe(&config)?;
        Runtime::with_backends(config, backends)
    }

    /// A runtime over the given backends (device 0 should be the CPU, the backstop).
    /// `config.devices` is ignored. Embedders and tests use it to add their own devices.
    pub fn with_backends(config: RuntimeConfig, backends: Vec<Box<dyn Backend>>) -> Result<Runtime> {
        let policy = compile_policy(&config.policy)?;
        let devices: Vec<Device> = backends.into_iter().enumerate().map(|(i, b)| Device::new(i, b)).collect();
        if let Some(dir) = &config.perf_cache_dir {
            // Said at info level: saved history changes placement from one run to the next.
            if config.perf_reset {
                log::info!(
                    "performance history in {} ignored (reset); it is rewritten at exit",
                    dir.display()
                );
            }
            for d in devices.iter().filter(|_| !config.perf_reset) {
                let path = dir.join(d.model.file_name());
                if d.model.load(dir) {
                    log::info!(
                        "{}: performance history from {} (it steers placement; NPUHYBRID_PERF_RESET=1 \
                         starts afresh)",
                        d.info.name,
                        path.display()
                    );
                } else {
                    log::info!(
                        "{}: no performance history yet; it will be kept in {}",
                        d.info.name,
                        path.display()
                    );
                }
            }
        }
        let in_flight: Vec<usize> = devices
            .iter()
            .map(|d| {
                let from_policy = policy.settings(d.class).max_in_flight.map(|n| n as usize);
                from_policy.unwrap_or(d.info.max_in_flight).clamp(1, 64)
            })
            .collect();
        let identities = devices.iter().map(|d| d.model.identity().to_string()).collect();
        let sched = Scheduler::start(devices, &in_flight);
        let history_dir = config.perf_cache_dir.as_deref().filter(|_| !config.perf_reset);
        *sched.plan_history.lock() = crate::sched::PlanHistory::load(history_dir, identities);
        if config.calibrate {
            sched.start_calibration();
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut rt = Runtime {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sched,
            buffers: RwLock::new(HandleTable::new("buffer")),
            pool: HostPool::new(config.pool_cache_bytes),
            policy: Arc::new(RwLock::new(Arc::clone(&policy))),
            thermal: Arc::new(Mutex::new(ThermalController::default())),
            thermal_stop: None,
            thermal_thread: None,
            started: Instant::now(),
            telemetry: config
                .telemetry_period
                .map(|p| Arc::new(TelemetryMonitor::start(config.sys_root.clone(), p))),
            sys_root: config.sys_root.clone(),
            perf_cache_dir: config.perf_cache_dir.clone(),
        };
        rt.apply_policy_settings(&policy);
        if let Some(period) = config.thermal_period {
            rt.start_thermal_thread(period);
        }
        Ok(rt)
    }

    fn start_thermal_thread(&mut self, period: Duration) {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (sched, policy, thermal, started) =
            (Arc::clone(&self.sched), Arc::clone(&self.policy), Arc::clone(&self.thermal), self.started);
        let telemetry = self.telemetry.clone();
        let spawned = std::thread::Builder::new().name("nh-thermal".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                let policy = Arc::clone(&policy.read());
                if !policy.thermal_rules().is_empty() {
                    let read = |d: &Device| read_device(d, telemetry.as_deref());
                    thermal.lock().tick(started.elapsed(), &policy, &sched.devices, &read, &sched.trace);
                }
            }
        });
        match spawned {
            Ok(handle) => {
                self.thermal_stop = Some(stop);
                self.thermal_thread = Some(handle);
            }
            Err(e) => log::error!("thermal control thread not started: {e}"),
        }
    }

    /// Evaluates the thermal rules once at time `now` (virtual time in tests).
    pub fn thermal_tick(&self, now: Duration) {
        let policy = self.policy();
        let read = |d: &Device| read_device(d, self.telemetry.as_deref());
        self.thermal.lock().tick(now, &policy, &self.sched.devices, &read, &self.sched.trace);
    }

    /// What the active thermal rules currently do to a device.
    pub fn thermal_effect(&self, index: usize) -> ThermalEffect {
        self.thermal.lock().effect(index)
    }

    pub fn thermal_transitions(&self) -> u64 {
        self.thermal.lock().transitions
    }

    // ----- devices -----

    pub fn device_count(&self) -> usize {
        self.sched.devices.len()
    }

    fn device(&self, index: usize) -> Result<&Device> {
        self.sched.devices.get(index).ok_or_else(|| {
            Error::invalid(format!("device index {index} out of range (have {})", self.device_count()))
        })
    }

    pub fn device_info(&self, index: usize) -> Result<DeviceInfo> {
        Ok(self.device(index)?.info.clone())
    }

    pub fn device_stats(&self, index: usize) -> Result<DeviceStats> {
        Ok(self.device(index)?.stats())
    }

    /// Brings a device that was lost or degraded back into service (after the caller
    /// restored it: a driver reload, a reconnected device).
    pub fn reset_device(&self, index: usize) -> Result<()> {
        let d = self.device(index)?;
        d.reset();
        log::info!("device {index} ({}) is back in service (reset)", d.info.name);
        Ok(())
    }

    pub fn device_readings(&self, index: usize) -> Result<DeviceReadings> {
        Ok(read_device(self.device(index)?, self.telemetry.as_deref()))
    }

    /// Recent sensor samples (oldest first); empty without telemetry.
    pub fn telemetry_history(&self) -> Vec<Sample> {
        self.telemetry.as_ref().map(|t| t.history()).unwrap_or_default()
    }

    /// Changes NPU power mode, iGPU performance level and CPU energy preference together:
    /// all or nothing. With `dry_run`, returns the exact actions without taking them.
    pub fn configure(&self, plan: &ConfigPlan, dry_run: bool) -> Result<Vec<Action>> {
        crate::device::apply(&self.sys_root, plan, dry_run)
    }

    /// What this machine lets be configured, as `key: value` lines; one line saying so when
    /// nothing is (an empty answer read as a failure).
    pub fn configurable(&self) -> Vec<(String, String)> {
        let found = Configurable::discover(&self.sys_root).describe();
        if !found.is_empty() {
            return found;
        }
        vec![(
            "nothing".into(),
            format!(
                "no amdxdna NPU, amdgpu card with a performance level or cpufreq policy with an \
                 energy preference was found under {}",
                self.sys_root.0.display()
            ),
        )]
    }

    /// Injects a fault into a simulated device.
    pub fn inject_fault(&self, index: usize, fault: Fault) -> Result<()> {
        self.device(index)?.backend.inject_fault(fault)
    }

    pub fn set_power_mode(&self, index: usize, mode: PowerMode) -> Result<()> {
        self.device(index)?.backend.set_power_mode(mode)
    }

    /// Direct access to a device's backend (tests, fault injection on simulated devices).
    pub fn backend(&self, index: usize) -> Result<&dyn Backend> {
        Ok(self.device(index)?.backend.as_ref())
    }

    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.sched
    }

    // ----- buffers -----

    pub fn alloc(&self, size: usize) -> Result<BufferId> {
        if size == 0 {
            return Err(Error::invalid("buffer size must be > 0"));
        }
        let block = self.pool.alloc(size)?;
        Ok(self.buffers.write().insert_with(|id| Arc::new(Buffer::pooled(id, block, size))))
    }

    /// Wraps caller memory without copying.
    ///
    /// # Safety
    /// `ptr` must stay valid for reads and writes of `size` bytes until the buffer is destroyed.
    pub unsafe fn import(&self, ptr: *mut u8, size: usize) -> Result<BufferId> {
        if ptr.is_null() {
            return Err(Error::NullPointer("host pointer to import"));
        }
        if size == 0 {
            return Err(Error::invalid("buffer size must be > 0"));
        }
        Ok(self.buffers.write().insert_with(|id| Arc::new(Buffer::imported(id, ptr, size))))
    }

    /// Maps a file read-only (model weights).
    pub fn map_file(&self, path: &Path) -> Result<BufferId> {
        // Regular files only: a FIFO would block here forever, a directory fail obscurely.
        let file =
            crate::files::open_regular(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let map = Buffer::map_file(&file)?;
        Ok(self.buffers.write().insert_with(|id| Arc::new(Buffer::mapped(id, map, file))))
    }

    pub fn buffer(&self, id: BufferId) -> Result<Arc<Buffer>> {
        self.buffers.read().get(id)
    }

    /// Waits for ops that touch the buffer, so host access sees their results and no op sees
    /// a half-written host update.
    fn quiesce(&self, id: BufferId) {
        for event in self.sched.pending_on(id) {
            let _ = event.wait(None);
        }
    }

    /// Invalidates the handle at once (later submits fail with an invalid handle), then waits
    /// for every op holding the buffer, including ops other threads were submitting at that
    /// moment: after it returns, no op touches the memory (imported memory may be freed).
    pub fn destroy_buffer(&self, id: BufferId) -> Result<()> {
        let buf = self.buffers.write().remove(id)?;
        buf.wait_unused();
        Ok(())
    }

    pub fn write(&self, id: BufferId, offset: usize, data: &[u8]) -> Result<()> {
        let buf = self.buffer(id)?;
        self.quiesce(id);
        buf.write(offset, data)
    }

    pub fn read(&self, id: BufferId, offset: usize, out: &mut [u8]) -> Result<()> {
        let buf = self.buffer(id)?;
        self.quiesce(id);
        buf.check_mapping()?;
        buf.read(offset, out)
    }

    /// Host pointer to the buffer's bytes after pending ops finished. A caller that writes
    /// through it must call `touch` afterwards so device copies are refreshed.
    pub fn map(&self, id: BufferId) -> Result<(*mut u8, usize)> {
        let buf = self.buffer(id)?;
        self.quiesce(id);
        buf.check_mapping()?;
        Ok((buf.as_ptr(), buf.len()))
    }

    pub fn touch(&self, id: BufferId) -> Result<()> {
        self.buffer(id)?.touch();
        Ok(())
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    // ----- ops -----

    /// Validates an op against the live buffers and returns the memory it touches.
    pub fn prepare(&self, op: &OpDesc) -> Result<OpMemory> {
        let table = self.buffers.read();
        let lookup = |v: &crate::op::TensorView| -> Result<usize> { Ok(table.get(v.buffer)?.len()) };
        validate(op, &lookup)?;
        let out = table.get(op.output.buffer)?;
        if out.read_only() {
            return Err(Error::invalid(format!("{}: output buffer is a read-only file mapping", op.kind)));
        }
        let mut buffers: Vec<Arc<Buffer>> = Vec::with_capacity(crate::op::MAX_INPUTS + 1);
        for v in op.views() {
            if !buffers.iter().any(|b| b.id() == v.buffer) {
                let b = table.get(v.buffer)?;
                b.check_mapping()?;
                buffers.push(b);
            }
        }
        Ok(OpMemory::new(buffers))
    }

    pub fn submit(&self, op: OpDesc) -> Result<Event> {
        let mem = self.prepare(&op)?;
        let event = Event::new(1);
        self.sched.submit(Arc::new(op), mem, self.policy(), event.clone());
        Ok(event)
    }

    /// Validates and appends an op to a graph.
    pub fn graph_add(&self, graph: &mut Graph, op: OpDesc) -> Result<()> {
        self.prepare(&op)?;
        graph.push_validated(op, self.id);
        Ok(())
    }

    /// Validates an op and puts it in place of op `index` of a graph (offsets or parameters
    /// that change between submissions, such as a KV-cache position).
    pub fn graph_set(&self, graph: &mut Graph, index: usize, op: OpDesc) -> Result<()> {
        if index >= graph.len() {
            return Err(Error::invalid(format!(
                "graph op index {index} is out of range: the graph has {} ops",
                graph.len()
            )));
        }
        self.prepare(&op)?;
        graph.replace_validated(index, op, self.id)
    }

    /// Submits every op of a graph; the event completes when all have.
    pub fn submit_graph(&self, graph: &Graph) -> Result<Event> {
        if graph.is_empty() {
            return Err(Error::invalid("graph has no ops"));
        }
        // Resolve everything first so a destroyed buffer rejects the whole graph, not half of it.
        let prepared: Vec<OpMemory> = if graph.validated_by() == self.id {
            // Validated here when recorded: each buffer handle is resolved once, and a live
            // handle is the buffer the ops were checked against (see graph.rs).
            let (ids, per_op) = graph.buffers();
            let resolved: Vec<Option<Arc<Buffer>>> = {
                let table = self.buffers.read();
                ids.iter().map(|id| id.map(|id| table.get(id)).transpose()).collect::<Result<_>>()?
            };
            for b in resolved.iter().flatten() {
                b.check_mapping()?;
            }
            let used = |i: u32| Arc::clone(resolved[i as usize].as_ref().expect("an op's buffer is in use"));
            per_op.iter().map(|idx| OpMemory::new(idx.iter().map(|&i| used(i)).collect())).collect()
        } else {
            graph.ops().map(|op| self.prepare(op)).collect::<Result<_>>()?
        };
        let policy = self.policy();
        let all = Event::new(graph.len() as u32);
        let ops = graph
            .shared_ops()
            .iter()
            .zip(prepared)
            // Every op completes one part of the graph's event (no event of its own).
            .map(|(op, mem)| (Arc::clone(op), mem, all.clone()))
            .collect();
        self.sched.submit_all(ops, policy, Some(graph.plan_cache()));
        Ok(all)
    }

    /// Where the active policy and the performance model would run a graph's ops now: the
    /// plan chosen, its segments, and why each ends where it does.
    pub fn explain_graph(&self, graph: &Graph) -> Result<String> {
        let ops = graph
            .shared_ops()
            .iter()
            .map(|op| Ok((Arc::clone(op), self.prepare(op)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.sched.explain_graph(ops, self.policy(), Some(graph.plan_cache())))
    }

    /// Blocks until every submitted op has completed.
    pub fn synchronize(&self) {
        self.sched.drain();
    }

    /// A consistent snapshot: completed + failed <= submitted, although ops keep running.
    pub fn stats(&self) -> RuntimeStats {
        let c = &self.sched.counters;
        // An op is counted submitted before it can finish: read the finished counts first, and
        // still clamp, as the counters are not updated together.
        let ops_failed = c.failed.load(Ordering::Acquire);
        let ops_completed = c.completed.load(Ordering::Acquire);
        let submitted = c.submitted.load(Ordering::Acquire);
        RuntimeStats {
            ops_submitted: submitted.max(ops_completed + ops_failed),
            ops_completed,
            ops_failed,
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            split_ops: c.split_ops.load(Ordering::Relaxed),
            inline_ops: c.inline_ops.load(Ordering::Relaxed),
            buffers_live: self.buffers.read().len() as u64,
        }
    }

    // ----- tracing -----

    pub fn trace_start(&self, path: &Path) -> Result<()> {
        self.sched.trace.start(path)
    }

    pub fn trace_stop(&self) -> Result<usize> {
        self.sched.trace.stop()
    }

    // ----- policy -----

    pub fn policy(&self) -> Arc<CompiledPolicy> {
        Arc::clone(&self.policy.read())
    }

    /// Compiles and swaps in a new policy. Ops already submitted finish under the old one;
    /// an invalid policy is rejected with the checker's message and the old one stays.
    pub fn load_policy(&self, source: &PolicySource) -> Result<()> {
        let compiled = compile_policy(source)?;
        *self.policy.write() = Arc::clone(&compiled);
        self.apply_policy_settings(&compiled);
        log::info!("policy '{}' is active", compiled.name());
        Ok(())
    }

    fn apply_policy_settings(&self, policy: &CompiledPolicy) {
        for d in &self.sched.devices {
            if !d.info.available {
                continue;
            }
            let settings = policy.settings(d.class);
            d.backend.set_limits(
                settings.max_in_flight.map(|n| n as usize),
                settings.batch_rows.map(|n| n as usize),
            );
            d.backend.set_keep_warm(settings.keep_warm);
            if let Some(mode) = settings.power_mode {
                match d.backend.set_power_mode(mode) {
                    Ok(()) => log::info!("{}: power mode {mode}", d.info.name),
                    Err(Error::Unsupported(_)) => {}
                    Err(e) => log::warn!("{}: could not set power mode {mode}: {e}", d.info.name),
                }
            }
        }
    }

    /// Which rule matches the op, which devices were considered and why each was or was not
    /// usable.
    pub fn explain(&self, op: &OpDesc) -> Result<String> {
        self.prepare(op)?;
        let policy = self.policy();
        let q = OpQuery::of(op);
        let mut text = policy.explain(&q);
        text.push_str("\ndevices:\n");
        let decision = policy.decide(&q);
        for d in &self.sched.devices {
            let listed = decision.candidates.iter().position(|c| *c == d.class);
            let verdict = device_verdict(d, op, policy.settings(d.class).enabled, listed);
            let expected = d.model.predict_ns(op) / 1000.0;
            text.push_str(&format!(
                "  [{}] {} ({}): {verdict}; predicted {expected:.1} us, queue {}\n",
                d.index,
                d.info.name,
                d.info.kind.name(),
                d.load.queued.load(Ordering::Relaxed)
            ));
        }
        Ok(text)
    }
}

fn device_verdict(d: &Device, op: &OpDesc, enabled: bool, listed: Option<usize>) -> String {
    let now = std::time::Instant::now();
    if !d.info.available {
        return format!("unavailable: {}", d.info.unavailable_reason);
    }
    if !enabled {
        return "disabled by the policy".into();
    }
    if !d.backend.supports(op) {
        // Name the operand type it does not take (a quantized weight, say), not only the op's.
        let types = |set: u32| -> Vec<&str> {
            crate::op::DType::ALL.iter().filter(|t| set & t.bit() != 0).map(|t| t.name()).collect()
        };
        return match op.views().map(|v| v.dtype).find(|t| d.info.dtypes & t.bit() == 0) {
            Some(t) if d.info.supports_kind(op.kind) => {
                format!("does not take {t} (it computes with {})", types(d.info.dtypes).join(", "))
            }
            _ if !d.info.supports_kind(op.kind) => format!("does not run {}", op.kind),
            _ if op.has_half_weight() => format!(
                "does not take this {} weight under f32 activations (no kernel of it widens one of this shape)",
                op.inputs[1].map_or(op.dtype(), |b| b.dtype)
            ),
            _ => format!("cannot run {} in {} (output type or sizes)", op.kind, op.dtype()),
        };
    }
    if d.is_degraded(now) {
        return "degraded after failures".into();
    }
    if d.load.thermally_excluded.load(Ordering::Relaxed) {
        return "excluded by a thermal rule".into();
    }
    match listed {
        Some(rank) => format!("candidate #{} of the rule", rank + 1),
        None if d.class == DeviceClass::Cpu => "not in the rule (backstop only)".into(),
        None => "not in the rule".into(),
    }
}

/// A device's own readings, completed from the sysfs sensors for what it does not report.
fn read_device(device: &Device, telemetry: Option<&TelemetryMonitor>) -> DeviceReadings {
    let mut r = device.backend.readings();
    if device.info.kind == crate::backend::DeviceKind::SimulatedNpu {
        return r; // a model has no sensors on this machine
    }
    if let Some(t) = telemetry {
        let latest = t.latest();
        r.temperature_c = r.temperature_c.or(latest.temperature(device.class));
        r.power_w = r.power_w.or(latest.power(device.class));
        if device.class == DeviceClass::Gpu {
            r.clock_mhz = r.clock_mhz.or(latest.gpu_clock_mhz);
        } else if device.class == DeviceClass::Npu {
            r.clock_mhz = r.clock_mhz.or(latest.npu_clock_mhz);
        }
    }
    r
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.thermal_stop.take();
        if let Some(t) = self.thermal_thread.take() {
            let _ = t.join();
        }
        // Ops in flight finish first: nothing is cancelled halfway through a write.
        self.sched.shutdown();
        if let Some(dir) = &self.perf_cache_dir {
            for d in &self.sched.devices {
                if d.model.samples() > 0 || d.model.is_calibrated() {
                    if let Err(e) = d.model.save(dir) {
                        log::warn!("could not save performance history to {}: {e}", dir.display());
                    }
                }
            }
            let plans = self.sched.plan_history.lock();
            if !plans.is_empty() {
                if let Err(e) = plans.save(dir) {
                    log::warn!("could not save measured placements to {}: {e}", dir.display());
                }
            }
        }
    }
}
