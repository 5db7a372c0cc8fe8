//! The hybrid scheduler: takes the policy's candidates for each op, drops devices that are
//! unavailable, degraded or thermally excluded, picks one by the rule's strategy (earliest
//! expected completion by default), splits matmuls where the policy says so, runs ops as
//! soon as their inputs are ready and falls back to the next device when one fails.

mod calibrate;
pub mod device;
mod fasthash;
mod hazards;
mod plan_times;
pub use plan_times::PlanHistory;
pub mod perf_model;
mod segment;
mod segment_exec;
pub mod split;
mod task;
pub mod thermal;

pub use device::{Device, DeviceStats};
pub use segment_exec::PlanCache;
pub use task::Task;

use crate::backend::OpMemory;
use crate::error::{Error, Result};
use crate::event::{Event, EventInfo};
use crate::op::{OpDesc, OpKind};
use crate::policy::{CompiledPolicy, Decision, OpQuery, Strategy};
use crate::trace::Trace;
use crossbeam_channel::{Receiver, Sender};
use hazards::HazardTracker;
use parking_lot::{Condvar, Mutex, RwLock};
use segment::SegmentRun;
use serde_json::json;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use task::Placement;

/// Ops predicted to take less than this on a host device run on the submitting thread when
/// that device is idle: a thread hand-off would cost more than the op.
const INLINE_BELOW_NS: f64 = 20_000.0;
/// Submission blocks while this many ops are unfinished (backpressure: a caller far ahead
/// of the devices waits instead of queueing without bound).
pub const MAX_OPS_IN_FLIGHT: usize = 4096;
/// A matmul is split only if every part gets at least this many rows/columns.
const MIN_SPLIT_EXTENT: usize = 16;

/// Runtime-wide counters.
#[derive(Default)]
pub struct Counters {
    pub submitted: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub fallbacks: AtomicU64,
    pub split_ops: AtomicU64,
    pub inline_ops: AtomicU64,
}

/// A thread's next jobs: ops released by the job it just ran, for a worker's own device, or
/// (on a thread inside `submit_all`) tiny ops for the otherwise idle host device, which the
/// thread runs after the one that released them: a graph's chain of tiny ops, fan-outs
/// included (a decode step's q, k and v projections), runs on the caller without a thread
/// hand-off, and without recursion. A hand-off costs more than a tiny op, and a chain split
/// across two threads pays one at every fan-out and at the end (waking the caller).
#[derive(Default)]
struct LocalJob {
    device: Option<usize>,
    submitting: bool,
    jobs: std::collections::VecDeque<Job>,
}

impl LocalJob {
    /// Keeps `job` if this thread may run it next; else gives it back. Any number of tiny
    /// host jobs are kept, else only one: longer jobs are better run in parallel elsewhere.
    /// `tiny_host`: the job is for a host device that has nothing queued but what this thread
    /// keeps, and predicted to be short.
    fn keep(&mut self, job: Job, tiny_host: bool) -> Option<Job> {
        let mine = self.device == Some(job.device) || (self.submitting && tiny_host);
        if mine && (self.jobs.is_empty() || tiny_host) {
            self.jobs.push_back(job);
            None
        } else {
            Some(job)
        }
    }

    /// Jobs kept for `device`: they count in its queue, but this thread runs them.
    fn kept_for(&self, device: usize) -> usize {
        self.jobs.iter().filter(|j| j.device == device).count()
    }
}

/// Marks the current thread as submitting while it lives (restores the previous state).
struct Submitting(bool);

impl Submitting {
    fn enter() -> Submitting {
        Submitting(LOCAL_JOB.with(|slot| std::mem::replace(&mut slot.borrow_mut().submitting, true)))
    }
}

impl Drop for Submitting {
    fn drop(&mut self) {
        LOCAL_JOB.with(|slot| slot.borrow_mut().submitting = self.0);
    }
}

thread_local! {
    static LOCAL_JOB: std::cell::RefCell<LocalJob> = std::cell::RefCell::new(LocalJob::default());
}

/// What running an op on a device is expected to cost, in nanoseconds.
#[derive(Clone, Copy, Debug)]
struct Expected {
    /// From now until it would complete: queued work, uploads, run.
    completion: f64,
    /// The device's own time for it: uploads + run.
    busy: f64,
    upload: f64,
}

struct Job {
    task: Arc<Task>,
    /// The task's op, or one part of it (split); shared, so queueing copies no descriptor.
    op: Arc<OpDesc>,
    device: usize,
    /// Predicted time on the device: uploads + run (queue accounting, inlining).
    predicted_ns: f64,
    /// The uploads' part of it, taken out of the measured time before the model learns.
    upload_ns: f64,
    /// Devices that already failed this job.
    tried: u64,
    attempts_here: u32,
    fallbacks: u32,
}

impl Job {
    /// The first attempt of `op` (the task's op or one of its split parts) on `device`.
    fn first(task: Arc<Task>, op: Arc<OpDesc>, device: usize, expected: Expected) -> Job {
        Job {
            task,
            op,
            device,
            predicted_ns: expected.busy,
            upload_ns: expected.upload,
            tried: 0,
            attempts_here: 0,
            fallbacks: 0,
        }
    }
}

/// What a device worker runs: one op (or part), or a segment of a graph.
enum Work {
    Op(Job),
    Segment(Arc<SegmentRun>),
}

pub struct Scheduler {
    pub devices: Vec<Device>,
    /// Cleared at shutdown, which disconnects the workers' channels.
    queues: RwLock<Vec<Sender<Work>>>,
    hazards: Mutex<HazardTracker>,
    pub trace: Trace,
    pub counters: Counters,
    /// Unfinished ops; `drained` is notified when it reaches 0 or drops below the limit.
    in_flight: Mutex<usize>,
    drained: Condvar,
    next_task: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Calibration threads (joined at shutdown) and the flag that stops them early.
    calibrations: Mutex<Vec<JoinHandle<()>>>,
    stop_calibration: Arc<std::sync::atomic::AtomicBool>,
    /// Measured placement times of graphs, kept between runs (`plan_times.rs`).
    /// Shared with the graphs' plan caches, which keep their last times when dropped.
    pub plan_history: Arc<Mutex<PlanHistory>>,
}

impl Scheduler {
    /// Starts one worker thread per op a device runs at once (`in_flight[i]`).
    pub fn start(devices: Vec<Device>, in_flight: &[usize]) -> Arc<Scheduler> {
        let lanes = devices.iter().map(|d| format!("{}: {}", d.index, d.info.name)).collect();
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in &devices {
            let (tx, rx) = crossbeam_channel::unbounded::<Work>();
            senders.push(tx);
            receivers.push(rx);
        }
        let sched = Arc::new(Scheduler {
            devices,
            queues: RwLock::new(senders),
            hazards: Mutex::new(HazardTracker::default()),
            trace: Trace::new(lanes),
            counters: Counters::default(),
            in_flight: Mutex::new(0),
            drained: Condvar::new(),
            next_task: AtomicU64::new(1),
            workers: Mutex::new(Vec::new()),
            calibrations: Mutex::new(Vec::new()),
            stop_calibration: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            plan_history: Arc::new(Mutex::new(PlanHistory::default())),
        });
        let mut workers = Vec::new();
        for (i, rx) in receivers.into_iter().enumerate() {
            let n = in_flight.get(i).copied().unwrap_or(1).max(1);
            for w in 0..n {
                let rx: Receiver<Work> = rx.clone();
                let weak = Arc::downgrade(&sched);
                let name = format!("nh-dev{i}-{w}");
                // Only the first worker moves into the pool, so other threads can still use it.
                // The seat is taken here, before any op can run in the pool (`cpu/seat.rs`).
                let seat = if w == 0 { sched.devices[i].backend.host_seat() } else { None };
                let handle = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        let serve = move || {
                            LOCAL_JOB.with(|slot| slot.borrow_mut().device = Some(i));
                            while let Ok(work) = rx.recv() {
                                let Some(s) = weak.upgrade() else { break };
                                match work {
                                    Work::Op(job) => s.run_job(job),
                                    Work::Segment(seg) => s.run_segment(seg),
                                }
                                // A dependent this job released for this same device runs
                                // next on this thread: no hand-off, no wake-up.
                                s.run_local_jobs();
                            }
                        };
                        match seat {
                            Some(seat) => seat.run(Box::new(serve)),
                            None => serve(),
                        }
                    })
                    .expect("spawning a device worker thread");
                workers.push(handle);
            }
        }
        *sched.workers.lock() = workers;
        sched
    }

    /// Submits one validated op. Its event completes when it ran (or failed everywhere).
    pub fn submit(
        self: &Arc<Self>,
        op: Arc<OpDesc>,
        mem: OpMemory,
        policy: Arc<CompiledPolicy>,
        event: Event,
    ) {
        self.submit_all(vec![(op, mem, event)], policy, None);
    }

    /// Submits ops in order. They are all registered with the hazard tracker before any is
    /// dispatched, so a graph's chain runs on the device's worker without racing the
    /// submitting thread (submission blocks in chunks while too many ops are in flight).
    /// `plan`: where a graph keeps its placement between submissions (see `segment_exec.rs`).
    pub fn submit_all(
        self: &Arc<Self>,
        ops: Vec<(Arc<OpDesc>, OpMemory, Event)>,
        policy: Arc<CompiledPolicy>,
        plan: Option<&PlanCache>,
    ) {
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let admitted = {
                let mut n = self.in_flight.lock();
                while *n >= MAX_OPS_IN_FLIGHT {
                    self.drained.wait(&mut n);
                }
                let room = MAX_OPS_IN_FLIGHT - *n;
                let chunk: Vec<_> = ops.by_ref().take(room).collect();
                *n += chunk.len();
                chunk
            };
            self.counters.submitted.fetch_add(admitted.len() as u64, Ordering::Relaxed);
            let tasks: Vec<Arc<Task>> = admitted
                .into_iter()
                .map(|(op, mem, event)| {
                    let id = self.next_task.fetch_add(1, Ordering::Relaxed);
                    Arc::new(Task::new(id, op, mem, event, Arc::clone(&policy)))
                })
                .collect();
            if tasks.len() > 1 {
                self.place_graph(&tasks, plan);
            }
            let mut ready = Vec::new();
            {
                let mut hazards = self.hazards.lock();
                for task in tasks {
                    if hazards.register(&task) == 0 {
                        ready.push(task);
                    }
                }
            }
            let _submitting = Submitting::enter();
            for task in ready {
                self.dispatch(task, true);
                self.run_local_jobs();
            }
        }
    }

    /// Runs the jobs this thread kept for itself (see `LocalJob`) until none is left.
    fn run_local_jobs(self: &Arc<Self>) {
        while let Some(next) = LOCAL_JOB.with(|slot| slot.borrow_mut().jobs.pop_front()) {
            self.run_job(next);
        }
    }

    /// Blocks until every submitted op has completed.
    pub fn drain(&self) {
        let mut n = self.in_flight.lock();
        while *n > 0 {
            self.drained.wait(&mut n);
        }
    }

    /// Events of unfinished ops touching `buffer`.
    pub fn pending_on(&self, buffer: crate::memory::BufferId) -> Vec<Event> {
        self.hazards.lock().pending_on(buffer)
    }

    /// Measures, on a background thread each, the devices that need it (see `calibrate.rs`),
    /// then has every device other than the host make its kernels ahead of use (in every
    /// process: a new one starts with none made). A device measured earlier in this process
    /// is not measured again.
    pub fn start_calibration(self: &Arc<Self>) {
        for device in self.devices.iter().filter(|d| d.info.available && !d.is_host()) {
            let mut measure = device.needs_calibration();
            if let Some(p) = calibrate::measured_in_this_process(&device.model).filter(|_| measure) {
                device.model.calibrate(p);
                measure = false;
            }
            device.calibrating.store(measure, Ordering::Relaxed);
            let weak = Arc::downgrade(self);
            let stop = Arc::clone(&self.stop_calibration);
            let index = device.index;
            let spawned =
                std::thread::Builder::new().name(format!("nh-calibrate-{index}")).spawn(move || {
                    let Some(s) = weak.upgrade() else { return };
                    let d = &s.devices[index];
                    if measure {
                        s.calibrate(d);
                    }
                    if !stop.load(Ordering::Relaxed) {
                        let made = d.backend.prepare_kernels(&stop);
                        log::debug!("{}: {made} kernels prepared ahead of use", d.info.name);
                    }
                });
            match spawned {
                Ok(handle) => self.calibrations.lock().push(handle),
                Err(_) => device.calibrating.store(false, Ordering::Relaxed),
            }
        }
    }

    /// Measures `d` (on its calibration thread) and adopts what it measured.
    fn calibrate(&self, d: &Device) {
        let quiet = || self.devices.iter().filter_map(|h| h.backend.pause_host_work()).collect();
        match calibrate::calibrate(&*d.backend, &quiet) {
            Ok(c) => {
                d.model.calibrate(c.priors);
                calibrate::remember(&d.model);
                self.trace.instant(Some(d.index), "calibrated", || {
                    json!({"took_ms": c.took.as_secs_f64() * 1e3, "setup_ms": c.setup.as_secs_f64() * 1e3})
                });
                log::info!(
                    "calibrated {} in {:.0} ms ({:.0} ms of it compiling): launch {:.1} us, {:.2} us per \
                     batched op, {:.1} GFLOP/s f32 matmul, {:.1} GB/s",
                    d.info.name,
                    c.took.as_secs_f64() * 1e3,
                    c.setup.as_secs_f64() * 1e3,
                    c.priors.launch_ns / 1e3,
                    c.priors.op_ns / 1e3,
                    c.priors.peak_gflops,
                    c.priors.bandwidth_gbs
                );
            }
            Err(e) => log::info!("{} was not calibrated ({e}); its declared figures stand", d.info.name),
        }
        d.calibrating.store(false, Ordering::Relaxed);
    }

    /// Blocks until every calibration started by `start_calibration` has ended.
    pub fn wait_calibrated(&self) {
        for handle in std::mem::take(&mut *self.calibrations.lock()) {
            let _ = handle.join();
        }
    }

    /// Stops the workers after draining. Called once, when the runtime is destroyed.
    pub fn shutdown(&self) {
        self.stop_calibration.store(true, Ordering::Relaxed);
        self.wait_calibrated();
        self.drain();
        self.queues.write().clear();
        for worker in std::mem::take(&mut *self.workers.lock()) {
            if worker.thread().id() != std::thread::current().id() {
                let _ = worker.join();
            }
        }
    }

    fn query<'a>(op: &'a OpDesc) -> OpQuery<'a> {
        OpQuery::of(op)
    }

    /// `from_submitter`: called on the caller's thread (not from a completing op), where a
    /// tiny host op may run inline without growing the stack along a dependency chain.
    fn dispatch(self: &Arc<Self>, task: Arc<Task>, from_submitter: bool) {
        if let Some(seg) = task.segment() {
            // The segment checks its members' failed inputs when it runs.
            if seg.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
                let seg = Arc::clone(seg);
                self.enqueue_segment(seg);
            }
            return;
        }
        if let Some(err) = task.failed_input.lock().take() {
            self.finish_part(&task, Err(err), &EventInfo::default());
            return;
        }
        if let Some(&Placement::Device(d)) = task.placement.get() {
            let device = &self.devices[d];
            if self.usable(device, &task.op, Instant::now()) {
                let expected = self.expected_ns(device, &task.op, &task.mem);
                let op = Arc::clone(&task.op);
                self.enqueue(Job::first(task, op, d, expected), from_submitter);
                return;
            }
        }
        let decision = task.policy.decide(&Self::query(&task.op));
        if let Some(parts) = self.plan_split(&task.op, &task.mem, &decision) {
            self.counters.split_ops.fetch_add(1, Ordering::Relaxed);
            task.parts_left.store(parts.len() as u32, Ordering::Release);
            task.event.add_parts(parts.len() as u32 - 1);
            self.trace.instant(None, "split", || json!({"op": task.op.kind.name(), "parts": parts.len()}));
            for (device, op) in parts {
                let expected = self.expected_ns(&self.devices[device], &op, &task.mem);
                self.enqueue(Job::first(Arc::clone(&task), Arc::new(op), device, expected), false);
            }
            return;
        }
        match self.choose(&task.op, &task.mem, &decision, 0) {
            Some((device, expected)) => {
                let op = Arc::clone(&task.op);
                self.enqueue(Job::first(task, op, device, expected), from_submitter)
            }
            None => {
                let err = Error::Unsupported(format!(
                    "no device can run {} in {} (rule '{}')",
                    task.op.kind,
                    task.op.dtype(),
                    decision.rule_label
                ));
                self.finish_part(&task, Err(err), &EventInfo::default());
            }
        }
    }

    /// Whether `device` may take `op` now.
    fn usable(&self, device: &Device, op: &OpDesc, now: Instant) -> bool {
        device.backend.supports(op)
            && !device.is_degraded(now)
            && !device.load.thermally_excluded.load(Ordering::Relaxed)
    }

    /// Expected completion: queued work + uploads of operands not resident there + predicted
    /// run time.
    fn expected_ns(&self, device: &Device, op: &OpDesc, mem: &OpMemory) -> Expected {
        let run = device.predict_ns(op, device::host_of(&self.devices));
        let upload = device.backend.upload_ns(op, mem);
        let queued = device.load.queued_ns.load(Ordering::Relaxed) as f64;
        let in_flight = device.info.max_in_flight.max(1) as f64;
        Expected { completion: queued / in_flight + upload + run, busy: upload + run, upload }
    }

    /// Picks a device for `op` by the policy decision, skipping devices in `tried`. Falls
    /// back to any device that can run the op when no policy candidate can (nothing is lost).
    fn choose(
        &self,
        op: &OpDesc,
        mem: &OpMemory,
        decision: &Decision,
        tried: u64,
    ) -> Option<(usize, Expected)> {
        let mut candidates = self.candidates(op, decision, tried);
        // Thermal load shifting sends a fraction of a hot device's ops to the others.
        if candidates.len() > 1 {
            // (The trace shows the rule's transitions, not every op it moves.)
            if let Some(pos) = candidates.iter().position(|d| d.shifted_away()) {
                candidates.remove(pos);
            }
        }
        let with_cost = |d: &Device| (d.index, self.expected_ns(d, op, mem));
        match decision.strategy {
            Strategy::FirstAvailable => candidates.first().map(|d| with_cost(d)),
            Strategy::LeastLoaded => {
                candidates.iter().min_by_key(|d| d.load.queued.load(Ordering::Relaxed)).map(|d| with_cost(d))
            }
            // The estimate that picked the device is the one its job carries.
            Strategy::EarliestCompletion => settled(candidates, op)
                .iter()
                .map(|d| with_cost(d))
                .min_by(|a, b| a.1.completion.total_cmp(&b.1.completion)),
        }
    }

    /// The devices that may take `op` now, in the rule's order, skipping devices in `tried`;
    /// when none of the rule's can, any device that can run it, CPU first (nothing is lost).
    fn candidates(&self, op: &OpDesc, decision: &Decision, tried: u64) -> Vec<&Device> {
        let now = Instant::now();
        let mut candidates: Vec<&Device> = Vec::with_capacity(self.devices.len());
        for class in decision.candidates {
            for d in self.devices.iter().filter(|d| d.class == *class) {
                if tried & (1 << d.index) == 0 && self.usable(d, op, now) {
                    candidates.push(d);
                }
            }
        }
        if candidates.is_empty() {
            // Backstop outside the rule's list: any device that can run it, CPU first.
            let backstop = self
                .devices
                .iter()
                .filter(|d| tried & (1 << d.index) == 0 && self.usable(d, op, now))
                .min_by_key(|d| !d.is_host());
            if let Some(d) = backstop {
                log::debug!(
                    "rule '{}' has no usable device for {}; using {}",
                    decision.rule_label,
                    op.kind,
                    d.info.name
                );
                candidates.push(d);
            }
        }
        candidates
    }

    /// Parts of a split matmul, one per usable device of the split's classes, sized by the
    /// fixed ratios or by predicted throughput (`dynamic`). None when the op is not split.
    fn plan_split(&self, op: &OpDesc, mem: &OpMemory, decision: &Decision) -> Option<Vec<(usize, OpDesc)>> {
        let spec = decision.split?;
        if op.kind != OpKind::Matmul {
            return None;
        }
        let now = Instant::now();
        let mut devices = Vec::new();
        let mut weights = Vec::new();
        for (i, class) in spec.devices.iter().enumerate() {
            let Some(d) = self.devices.iter().find(|d| d.class == *class && self.usable(d, op, now)) else {
                continue;
            };
            let weight = match &spec.ratios {
                Some(r) => r.get(i).copied().unwrap_or(0.0) as f64,
                None => 1.0 / self.expected_ns(d, op, mem).completion.max(1.0),
            };
            devices.push(d.index);
            weights.push(weight);
        }
        let extent = split::split_extent(op, spec.axis);
        if devices.len() < 2 || extent < MIN_SPLIT_EXTENT * devices.len() {
            return None;
        }
        let sizes = split::chunk_sizes(extent, &weights, 1);
        let mut parts = Vec::new();
        let mut start = 0;
        for (device, len) in devices.into_iter().zip(sizes) {
            if len > 0 {
                parts.push((device, split::matmul_part(op, spec.axis, start, len)));
            }
            start += len;
        }
        (parts.len() > 1).then_some(parts)
    }

    fn enqueue(self: &Arc<Self>, job: Job, may_inline: bool) {
        let device = &self.devices[job.device];
        let kept_here = LOCAL_JOB.with(|slot| slot.borrow().kept_for(job.device));
        let idle = device.load.queued.fetch_add(1, Ordering::Relaxed) == kept_here;
        device.load.queued_ns.fetch_add(job.predicted_ns as u64, Ordering::Relaxed);
        let tiny_host = idle && device.is_host() && job.predicted_ns < INLINE_BELOW_NS;
        if may_inline && tiny_host {
            self.counters.inline_ops.fetch_add(1, Ordering::Relaxed);
            self.run_job(job);
            return;
        }
        // On a worker of this device, or on the submitting thread for a tiny host op, keep
        // one released dependent for this thread to run next.
        let job = match LOCAL_JOB.with(|slot| slot.borrow_mut().keep(job, tiny_host)) {
            None => {
                if tiny_host && LOCAL_JOB.with(|slot| slot.borrow().device.is_none()) {
                    self.counters.inline_ops.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Some(job) => job,
        };
        let sent = match self.queues.read().get(device.index) {
            Some(queue) => queue.send(Work::Op(job)).map_err(|e| e.into_inner()),
            None => Err(Work::Op(job)),
        };
        if let Err(Work::Op(job)) = sent {
            // Only possible while shutting down: complete the op with an error, never drop it.
            self.release_load(&job);
            self.finish_part(
                &job.task,
                Err(Error::Internal("runtime is shutting down".into())),
                &EventInfo::default(),
            );
        }
    }

    fn release_load(&self, job: &Job) {
        let load = &self.devices[job.device].load;
        load.queued.fetch_sub(1, Ordering::Relaxed);
        load.queued_ns.fetch_sub(job.predicted_ns as u64, Ordering::Relaxed);
    }

    fn run_job(self: &Arc<Self>, job: Job) {
        let device = &self.devices[job.device];
        // The output changes: a new version makes every device replica of it stale (the
        // Vulkan backend keeps replicas keyed by version). Before running is early enough,
        // since readers of these bytes wait for this op (hazards), and a backend that keeps
        // its output resident records the version it sees after writing.
        if !device.backend.touches_outputs() {
            if let Ok(out) = job.task.mem.buffer(job.op.output.buffer) {
                out.touch();
            }
        }
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| device.backend.execute(&job.op, &job.task.mem)))
            .unwrap_or_else(|panic| {
                Err(Error::DeviceFailed(format!("backend panicked: {}", panic_message(&panic))))
            });
        let finished = Instant::now();
        self.release_load(&job);
        let elapsed = finished.duration_since(started).as_nanos() as u64;
        match result {
            Ok(report) => {
                let load = &device.load;
                load.ops_run.fetch_add(1, Ordering::Relaxed);
                load.busy_ns.fetch_add(elapsed, Ordering::Relaxed);
                load.bytes_moved.fetch_add(job.op.views().map(|v| v.bytes() as u64).sum(), Ordering::Relaxed);
                load.consecutive_failures.store(0, Ordering::Relaxed);
                // Wall time on the worker (submission, waits, write-back included) is what
                // the caller waits for; a GPU timestamp alone would make small ops look free.
                // Uploads are predicted apart (they happen once per buffer version), so
                // their estimate is taken out, never below a tenth of the wall time.
                // Set-up (pipeline compilation) is not run time either.
                let worked = elapsed.saturating_sub(report.setup_ns) as f64;
                let run_ns = (worked - job.upload_ns).max(worked / 10.0);
                device.model.record(&job.op, run_ns);
                self.trace.slice(
                    device.index,
                    job.op.kind.name(),
                    started,
                    finished,
                    || json!({"dtype": job.op.dtype().name(), "dims": dims_json(&job.op), "tags": tags_text(&job.op), "fallbacks": job.fallbacks, "task": job.task.id}),
                );
                let info = EventInfo {
                    device: Some(device.index),
                    devices_mask: 1 << device.index,
                    started: Some(started),
                    finished: Some(finished),
                    device_ns: report.device_ns.unwrap_or(elapsed),
                    fallbacks: job.fallbacks,
                    ..Default::default()
                };
                self.finish_part(&job.task, Ok(()), &info);
            }
            Err(err) if err.is_device_fault() => self.fall_back(job, err),
            Err(err) => {
                let info = EventInfo {
                    device: Some(device.index),
                    devices_mask: 1 << device.index,
                    ..Default::default()
                };
                self.finish_part(&job.task, Err(err), &info);
            }
        }
    }

    /// A device failed `job`: retry there per policy, else move it to the next candidate.
    fn fall_back(self: &Arc<Self>, mut job: Job, err: Error) {
        let device = &self.devices[job.device];
        let decision = job.task.policy.decide(&Self::query(&job.task.op));
        let fallback = decision.fallback;
        let degrade = self.record_fault(device, &job.op, &err, fallback);
        if !degrade && job.attempts_here < fallback.retries {
            job.attempts_here += 1;
            self.enqueue(job, false);
            return;
        }
        job.tried |= 1 << job.device;
        match self.choose(&job.op, &job.task.mem, &decision, job.tried) {
            Some((next, expected)) => {
                device.load.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                log::info!(
                    "{} failed on {} ({err}); falling back to {}",
                    job.op.kind,
                    device.info.name,
                    self.devices[next].info.name
                );
                job.device = next;
                job.predicted_ns = expected.busy;
                job.upload_ns = expected.upload;
                job.attempts_here = 0;
                job.fallbacks += 1;
                self.enqueue(job, false);
            }
            None => {
                let info = EventInfo { fallbacks: job.fallbacks, ..Default::default() };
                self.finish_part(&job.task, Err(err), &info);
            }
        }
    }

    /// Counts a device fault, degrades the device when the policy says so, traces it.
    /// Returns whether the device is now degraded.
    fn record_fault(
        &self,
        device: &Device,
        op: &OpDesc,
        err: &Error,
        fallback: &crate::policy::FallbackSpec,
    ) -> bool {
        device.load.failures.fetch_add(1, Ordering::Relaxed);
        let streak = device.load.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let lost = matches!(err, Error::DeviceLost(_));
        let degrade = lost || streak >= fallback.degrade_after.max(1);
        if lost && !device.lost.swap(true, Ordering::Relaxed) {
            log::warn!(
                "device {} ({}) lost: {err}; left out until nh_device_reset brings it back",
                device.index,
                device.info.name
            );
            self.trace.instant(Some(device.index), "lost", || json!({"error": err.to_string()}));
        }
        if degrade && !lost {
            let mut until = device.load.degraded_until.lock();
            if until.is_none() {
                log::warn!(
                    "device {} ({}) degraded for {:?}: {err}",
                    device.index,
                    device.info.name,
                    fallback.degrade_for
                );
                self.trace.instant(Some(device.index), "degraded", || json!({"error": err.to_string()}));
            }
            *until = Some(Instant::now() + fallback.degrade_for);
        }
        self.trace.instant(
            Some(device.index),
            "fault",
            || json!({"op": op.kind.name(), "error": err.to_string()}),
        );
        degrade
    }

    /// Completes one part of a task; the last part retires it and releases its dependents.
    fn finish_part(self: &Arc<Self>, task: &Arc<Task>, result: Result<()>, info: &EventInfo) {
        if let Err(e) = &result {
            task.error.lock().get_or_insert_with(|| e.clone());
        }
        if task.parts_left.fetch_sub(1, Ordering::AcqRel) != 1 {
            task.event.complete_part(result, info);
            return;
        }
        let dependents = self.hazards.lock().retire(task);
        let error = task.error.lock().clone();
        // Count before completing the event, so a waiter that wakes sees the counters.
        let counter = if error.is_some() { &self.counters.failed } else { &self.counters.completed };
        counter.fetch_add(1, Ordering::Relaxed);
        task.event.complete_part(result, info);
        for dep in dependents {
            if let Some(e) = &error {
                dep.failed_input.lock().get_or_insert_with(|| {
                    Error::DeviceFailed(format!("an op this one depends on failed: {e}"))
                });
            }
            if dep.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.dispatch(dep, false);
            }
        }
        let mut n = self.in_flight.lock();
        *n -= 1;
        if *n == 0 || *n + 1 == MAX_OPS_IN_FLIGHT {
            self.drained.notify_all();
        }
    }
}

/// An op's sizes as JSON fields for the trace.
fn dims_json(op: &OpDesc) -> serde_json::Value {
    let d = op.dims();
    json!({"m": d.m, "n": d.n, "k": d.k, "batch": d.batch, "elements": d.elements})
}

/// The caller's tags of an op (`k=v,k=v`), so trace slices say which op of the model it was.
fn tags_text(op: &OpDesc) -> String {
    op.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Drops devices being calibrated, and devices whose kernels for `op` are still being made
/// (`Backend::kernels_ready`), where another candidate remains: the model's choice is not made
/// on a guess, nor is the user's work the experiment, nor does it wait for a compiler. (Rules
/// that name their order, first available or least loaded, keep it.)
fn settled<'a>(mut candidates: Vec<&'a Device>, op: &OpDesc) -> Vec<&'a Device> {
    // A lone candidate stays whatever it is doing: asking would only plan the op's kernel
    // (per op, on the dispatch path) for nothing.
    if candidates.len() < 2 {
        return candidates;
    }
    let ready: Vec<bool> = candidates
        .iter()
        .map(|d| !d.calibrating.load(Ordering::Relaxed) && d.backend.kernels_ready(op))
        .collect();
    if ready.iter().any(|r| *r) {
        let mut keep = ready.into_iter();
        candidates.retain(|_| keep.next().unwrap_or(false));
    }
    candidates
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
