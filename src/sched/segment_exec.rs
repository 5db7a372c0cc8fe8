//! The scheduler's side of segments: placing a graph when it is submitted, and running a
//! segment on its device when all of its members are ready, with fallback op by op (in
//! order, so the members' own dependencies hold) when the device fails midway.

use super::fasthash::FastMap;
use super::perf_model::DeviceModel;
use super::plan_times::{self, PlanTimes};
use super::segment::{self, Costs, SegmentRun};
use super::task::{Access, Placement, Task};
use super::{device, dims_json, panic_message, tags_text, Device, Scheduler, Work};
use crate::error::{Error, Result};
use crate::event::EventInfo;
use crate::op::{OpDesc, OpKind};
use crate::policy::Strategy;
use serde_json::json;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A graph's placement kept between its submissions: planning a 200-op decode step costs
/// about as much as running it on a fast device. It is reused while the graph has the same
/// ops (kinds; replaced ops keep theirs), the policy is the same, and it is young (under
/// `PLAN_REUSE` submissions and `PLAN_AGE`), so the model's learning and devices' health
/// still reach the placement. Beside it, the measured times of the placements the graph ran
/// under (`PlanTimes`): a new plan is chosen as soon as one of them becomes known.
#[derive(Debug, Default)]
pub struct PlanCache(parking_lot::Mutex<PlanState>);

#[derive(Debug, Default)]
struct PlanState {
    cached: Option<CachedPlan>,
    stable: StableInputs,
    times: PlanTimes,
    /// The scheduler's history, where the times go when they change and when the graph is
    /// dropped (its last submission is harvested only then).
    history: Option<Arc<parking_lot::Mutex<plan_times::PlanHistory>>>,
}

impl Drop for PlanCache {
    fn drop(&mut self) {
        let state = self.0.get_mut();
        state.times.harvest();
        if let (Some(signature), Some(history)) = (state.times.signature(), &state.history) {
            history.lock().keep(signature, state.times.to_keep());
        }
    }
}

const PLAN_REUSE: u32 = 64;
const PLAN_AGE: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug)]
struct CachedPlan {
    kinds: Vec<OpKind>,
    policy: usize,
    made: Instant,
    uses: u32,
    /// None: no device but the host could take any op.
    plan: Option<Arc<GraphPlan>>,
}

impl PlanCache {
    pub fn clear(&self) {
        self.0.lock().cached = None;
    }
}

/// For each buffer a graph reads, how many submissions in a row it was read unchanged (same
/// version) or changed only by the graph itself (state such as a KV cache, which stays where
/// the graph runs). Uploading an input to a device is paid once while it stays there, so the
/// planner spreads that cost over the submissions it expects the bytes to stay put: as many as
/// they already have (the ski-rental rule: rent the host until the rent paid matches the
/// purchase). Weights are amortised within a few submissions; inputs only the host rewrites
/// before each submission never are.
#[derive(Debug, Default)]
pub struct StableInputs(FastMap<crate::memory::BufferId, (u64, u32)>);

/// Inputs tracked per op of the graph before the record starts afresh.
const MAX_TRACKED_PER_OP: usize = 4;

/// The most submissions an upload is spread over.
const MAX_AMORTISATION: u32 = 64;

impl StableInputs {
    /// Records one submission's reads.
    fn observe(&mut self, tasks: &[Arc<Task>]) {
        // A graph whose ops are pointed at new buffers every time would grow this forever.
        if self.0.len() > MAX_TRACKED_PER_OP * tasks.len().max(64) {
            self.0.clear();
        }
        // Runs once per submission of a replayed graph (every decode step): no SipHash.
        let written: FastMap<crate::memory::BufferId, ()> =
            tasks.iter().map(|t| (t.op.output.buffer, ())).collect();
        let mut read: FastMap<crate::memory::BufferId, u64> = FastMap::default();
        for t in tasks {
            for v in t.op.inputs.iter().flatten() {
                if let std::collections::hash_map::Entry::Vacant(e) = read.entry(v.buffer) {
                    if let Ok(b) = t.mem.buffer(v.buffer) {
                        e.insert(b.version());
                    }
                }
            }
        }
        for (buffer, version) in read {
            let seen = self.0.entry(buffer).or_insert((version, 0));
            let kept = seen.0 == version || written.contains_key(&buffer);
            *seen = (version, if kept { seen.1.saturating_add(1) } else { 0 });
        }
    }

    /// Submissions an upload of `buffer` is expected to serve (1 for a buffer never seen
    /// unchanged); counts this submission's own observation as one.
    fn expected_uses(&self, buffer: crate::memory::BufferId) -> f64 {
        self.0.get(&buffer).map_or(1.0, |&(_, unchanged)| unchanged.clamp(1, MAX_AMORTISATION) as f64)
    }
}

impl Clone for PlanCache {
    /// A copy of a graph plans for itself.
    fn clone(&self) -> Self {
        PlanCache::default()
    }
}

/// A run of consecutive ops on one device, and why it ends where it does.
#[derive(Debug)]
struct Run {
    device: usize,
    start: usize,
    end: usize,
    ends: String,
}

/// A graph's placement and its runs.
#[derive(Debug)]
struct GraphPlan {
    plan: segment::Plan,
    /// Each candidate's measured time (`PlanTimes`), where it has one.
    measured: Vec<Option<f64>>,
    runs: Vec<Run>,
}

impl GraphPlan {
    fn describe(&self, devices: &[Device]) -> String {
        let mut text = format!(
            "{} ops; plan: {} (expected {:.1} us); {} runs:\n",
            self.plan.devices.len(),
            self.plan.chosen,
            self.plan.expected_ns / 1e3,
            self.runs.len()
        );
        let considered: Vec<String> = self
            .plan
            .candidates
            .iter()
            .zip(&self.measured)
            .map(|((name, ns), measured)| match measured {
                Some(m) => format!("{name} {:.1} us (measured {:.1} us)", ns / 1e3, m / 1e3),
                None => format!("{name} {:.1} us", ns / 1e3),
            })
            .collect();
        text.push_str(&format!("  candidates: {}\n", considered.join(", ")));
        for r in &self.runs {
            let d = &devices[r.device];
            let how = if r.end - r.start >= 2 && !d.is_host() { "one segment" } else { "op by op" };
            text.push_str(&format!(
                "  ops {}..{} on [{}] {} ({how}): ends at {}\n",
                r.start, r.end, d.index, d.info.name, r.ends
            ));
        }
        let loose = self.plan.devices.iter().filter(|d| d.is_none()).count();
        if loose > 0 {
            text.push_str(&format!("  {loose} ops are dispatched on their own when ready\n"));
        }
        text
    }
}

/// The scheduler's performance models as the planner's costs.
struct ModelCosts<'a> {
    devices: &'a [Device],
    tasks: &'a [Arc<Task>],
    stable: Option<&'a StableInputs>,
}

impl ModelCosts<'_> {
    /// Time to move `bytes` across one device's link to the host (0 for host memory).
    fn hop_ns(&self, device: usize, bytes: usize) -> f64 {
        self.devices.get(device).and_then(|d| d.backend.link_gbs()).map_or(0.0, |gbs| bytes as f64 / gbs)
    }
}

impl Costs for ModelCosts<'_> {
    fn run_ns(&self, op: usize, device: usize) -> f64 {
        self.devices[device].run_ns(&self.tasks[op].op, device::host_of(self.devices))
    }

    fn transfer_ns(&self, bytes: usize, from: usize, to: usize) -> f64 {
        self.hop_ns(from, bytes) + self.hop_ns(to, bytes)
    }

    fn input_ns(&self, op: usize, input: usize, device: usize) -> f64 {
        let task = &self.tasks[op];
        let Some(v) = task.op.inputs[input] else { return 0.0 };
        let uses = self.stable.map_or(1.0, |s| s.expected_uses(v.buffer));
        self.devices[device].backend.input_upload_ns(&v, &task.mem) / uses
    }

    fn segment_start_ns(&self, device: usize) -> f64 {
        let d = &self.devices[device];
        if d.is_host() {
            0.0
        } else {
            d.model.launch_ns()
        }
    }
}

/// Each member's share of a segment's run time: its kernel time (the device's timestamps) plus
/// an even share of the rest (recording, submission, gaps between dispatches), which costs
/// about the same for every op whatever its kernel time; evenly without timestamps. When the
/// kernels overlapped (their sum exceeds the run), in proportion to kernel time.
/// `kernels`: every member's kernel time (`kernel_times`), or None.
fn member_times(run: f64, members: usize, kernels: Option<&[f64]>) -> Vec<f64> {
    let n = members.max(1) as f64;
    match kernels {
        Some(k) if k.iter().sum::<f64>() > 0.0 => {
            let total: f64 = k.iter().sum();
            if total <= run {
                let rest = (run - total) / n;
                k.iter().map(|ns| ns + rest).collect()
            } else {
                k.iter().map(|ns| run * ns / total).collect()
            }
        }
        _ => vec![run / n; members],
    }
}

/// Every member's kernel time, when the device reported all of them.
fn kernel_times(reports: &[ExecReport]) -> Option<Vec<f64>> {
    reports.iter().map(|r| r.device_ns.map(|ns| ns as f64)).collect()
}

/// `total` shared in proportion to `weights` (evenly when they are all 0).
fn in_proportion(total: f64, weights: &[f64]) -> Vec<f64> {
    let sum: f64 = weights.iter().sum();
    if sum > 0.0 {
        weights.iter().map(|w| total * w / sum).collect()
    } else {
        vec![total / weights.len().max(1) as f64; weights.len()]
    }
}

/// What a segment took: `run`, its wall time less launch and set-up; `transfers`, its
/// uploads and write-backs at the link's modelled rate; the device's time for each op, if
/// it reported them all.
struct MeasuredSegment<'a> {
    run: f64,
    transfers: f64,
    kernels: Option<&'a [f64]>,
}

/// Folds a segment into its device's model. A device that times its kernels keeps kernel
/// times per op and learns the rest apart (`record_timed_segment`); when it did not time this
/// segment's ops (sampled timestamps), nothing is learned per op: shares of a wall time that
/// holds recording and waiting would read as kernel time. Other devices learn shares of the
/// run time.
fn learn_from_segment(model: &DeviceModel, times_kernels: bool, ops: &[&OpDesc], m: &MeasuredSegment) {
    match (times_kernels, m.kernels) {
        (true, Some(k)) => {
            let rest = m.run - k.iter().sum::<f64>() - m.transfers;
            let timed: Vec<(&OpDesc, f64)> = ops.iter().copied().zip(k.iter().copied()).collect();
            model.record_timed_segment(&timed, rest, m.transfers);
        }
        (true, None) => {}
        (false, kernels) => {
            for (op, op_ns) in ops.iter().zip(member_times(m.run, ops.len(), kernels)) {
                model.record_in_segment(op, op_ns);
            }
        }
    }
}

impl Scheduler {
    /// Plans a graph's placement (see `segment.rs`). Under `earliest_completion` the plan
    /// picks among the rule's devices; under `first_available` an op's device is the rule's
    /// first usable one. Ops the policy splits or balances by load are left to per-op
    /// dispatch. Among the candidate placements the model's cheapest wins, or, given the
    /// graph's measured times, the one `PlanTimes::choose` picks. None when no device but the
    /// host could take any op.
    fn plan_graph(
        &self,
        tasks: &[Arc<Task>],
        stable: Option<&StableInputs>,
        times: Option<&PlanTimes>,
    ) -> Option<GraphPlan> {
        let mut rules = Vec::with_capacity(tasks.len());
        let choices: Vec<Vec<usize>> = tasks
            .iter()
            .map(|t| {
                let decision = t.policy.decide(&Self::query(&t.op));
                rules.push(decision.rule_label.to_string());
                if decision.split.is_some() && t.op.kind == OpKind::Matmul {
                    return Vec::new();
                }
                let candidates = self.candidates(&t.op, &decision, 0);
                match decision.strategy {
                    Strategy::EarliestCompletion => {
                        super::settled(candidates, &t.op).iter().map(|d| d.index).collect()
                    }
                    Strategy::FirstAvailable => candidates.first().map(|d| d.index).into_iter().collect(),
                    Strategy::LeastLoaded => Vec::new(),
                }
            })
            .collect();
        if choices.iter().flatten().all(|&d| self.devices[d].is_host()) {
            return None;
        }
        let ops: Vec<&OpDesc> = tasks.iter().map(|t| &*t.op).collect();
        let all = segment::candidates(&ops, &choices, &ModelCosts { devices: &self.devices, tasks, stable });
        let chosen = times.map_or_else(|| segment::cheapest(&all), |t| t.choose(&all));
        let measured = all.iter().map(|c| times.and_then(|t| t.measured_ns(&c.name))).collect();
        let plan = segment::plan_from(all, chosen);
        let runs = segment::runs(&plan.devices)
            .into_iter()
            .map(|(device, start, end)| {
                let op = |i: usize| format!("op {i} ({})", tasks[i].op.kind);
                let ends = if end == tasks.len() {
                    "end of graph".to_string()
                } else if choices[end].is_empty() {
                    format!(
                        "{} is dispatched on its own (rule '{}' splits it or balances load)",
                        op(end),
                        rules[end]
                    )
                } else if !choices[end].contains(&device) {
                    format!(
                        "{} cannot run on {} under rule '{}'",
                        op(end),
                        self.devices[device].info.name,
                        rules[end]
                    )
                } else {
                    format!("the model expects {} to finish sooner on another device", op(end))
                };
                Run { device, start, end, ends }
            })
            .collect();
        Some(GraphPlan { plan, measured, runs })
    }

    /// Places a graph's ops before they are registered: runs of two or more ops on a device
    /// other than the host become segments, the rest are pinned to their device.
    pub(super) fn place_graph(&self, tasks: &[Arc<Task>], cache: Option<&PlanCache>) {
        let Some(gp) = self.cached_plan(tasks, cache) else { return };
        for run in &gp.runs {
            let Run { device, start, end, ref ends } = *run;
            self.trace.instant(
                Some(device),
                "segment",
                || json!({"first_op": start, "ops": end - start, "plan": gp.plan.chosen, "ends": ends}),
            );
            if end - start < 2 || self.devices[device].is_host() {
                for t in &tasks[start..end] {
                    let _ = t.placement.set(Placement::Device(device));
                }
                continue;
            }
            let seg = Arc::new(SegmentRun {
                device,
                tasks: parking_lot::Mutex::new(tasks[start..end].to_vec()),
                waiting: AtomicUsize::new(end - start),
            });
            for t in &tasks[start..end] {
                let _ = t.placement.set(Placement::Segment(Arc::clone(&seg)));
            }
        }
    }

    /// The graph's plan: the cached one while it holds (see `PlanCache`), else a new one.
    fn cached_plan(&self, tasks: &[Arc<Task>], cache: Option<&PlanCache>) -> Option<Arc<GraphPlan>> {
        // Only the host can run anything: nothing to plan.
        if !self.devices.iter().any(|d| !d.is_host() && d.info.available) {
            return None;
        }
        let policy = Arc::as_ptr(&tasks[0].policy) as usize;
        let Some(cache) = cache else { return self.plan_graph(tasks, None, None).map(Arc::new) };
        let mut guard = cache.0.lock();
        let state = &mut *guard;
        state.stable.observe(tasks);
        if state.times.harvest() > 0 {
            if let Some(signature) = state.times.signature() {
                self.plan_history.lock().keep(signature, state.times.to_keep());
            }
        }
        let newly_measured = state.times.take_fresh();
        if let Some(c) = state.cached.as_mut() {
            let same = c.policy == policy
                && !newly_measured
                && c.uses < PLAN_REUSE
                && c.made.elapsed() < PLAN_AGE
                && c.kinds.len() == tasks.len()
                && c.kinds.iter().zip(tasks).all(|(k, t)| *k == t.op.kind);
            if same {
                c.uses += 1;
                if let Some(gp) = &c.plan {
                    state.times.submitted(&gp.plan.chosen, &tasks[0].event);
                }
                return c.plan.clone();
            }
        }
        let ops: Vec<&OpDesc> = tasks.iter().map(|t| &*t.op).collect();
        state.times.adopt(plan_times::signature(&ops), &self.plan_history.lock());
        state.history.get_or_insert_with(|| Arc::clone(&self.plan_history));
        let plan = self.plan_graph(tasks, Some(&state.stable), Some(&state.times)).map(Arc::new);
        if let Some(gp) = &plan {
            log::debug!("graph of {} ops: {}", tasks.len(), gp.describe(&self.devices));
            state.times.submitted(&gp.plan.chosen, &tasks[0].event);
        }
        state.cached = Some(CachedPlan {
            kinds: tasks.iter().map(|t| t.op.kind).collect(),
            policy,
            made: Instant::now(),
            uses: 1,
            plan: plan.clone(),
        });
        plan
    }

    /// What `place_graph` would do with these ops now, in words: the plan chosen, each run of
    /// ops with its device and why it ends where it does.
    /// `cache`: the graph's own, whose measured times and stable inputs then take part as they
    /// would.
    pub fn explain_graph(
        &self,
        ops: Vec<(Arc<OpDesc>, crate::backend::OpMemory)>,
        policy: Arc<crate::policy::CompiledPolicy>,
        cache: Option<&PlanCache>,
    ) -> String {
        let tasks: Vec<Arc<Task>> = ops
            .into_iter()
            .enumerate()
            .map(|(i, (op, mem))| {
                Arc::new(Task::new(i as u64, op, mem, crate::event::Event::new(1), Arc::clone(&policy)))
            })
            .collect();
        let mut state = cache.map(|c| c.0.lock());
        if let Some(s) = state.as_deref_mut() {
            s.times.harvest();
        }
        // The graph's own record of which inputs stay put: uploads spread as the plan spreads
        // them, not counted whole.
        let (stable, times) = state.as_deref().map_or((None, None), |s| (Some(&s.stable), Some(&s.times)));
        match self.plan_graph(&tasks, stable, times) {
            None => format!(
                "{} ops: every op runs on the host, one by one (no other device could take any)\n",
                tasks.len()
            ),
            Some(gp) => gp.describe(&self.devices),
        }
    }

    /// All members are ready: queue the segment on its device.
    pub(super) fn enqueue_segment(self: &Arc<Self>, seg: Arc<SegmentRun>) {
        let device = &self.devices[seg.device];
        let predicted: f64 = seg.tasks.lock().iter().map(|t| device.model.run_ns(&t.op)).sum();
        device.load.queued.fetch_add(1, Ordering::Relaxed);
        device.load.queued_ns.fetch_add(predicted as u64, Ordering::Relaxed);
        let sent = match self.queues.read().get(seg.device) {
            Some(queue) => queue.send(Work::Segment(seg)).map_err(|e| e.into_inner()),
            None => Err(Work::Segment(seg)),
        };
        if let Err(Work::Segment(seg)) = sent {
            // Only while shutting down: the members fail, none is dropped.
            device.load.queued.fetch_sub(1, Ordering::Relaxed);
            device.load.queued_ns.fetch_sub(predicted as u64, Ordering::Relaxed);
            let tasks = std::mem::take(&mut *seg.tasks.lock());
            for t in tasks {
                self.finish_part(
                    &t,
                    Err(Error::Internal("runtime is shutting down".into())),
                    &EventInfo::default(),
                );
            }
        }
    }

    /// Runs a segment on its device's worker: in one unit where the device is still usable,
    /// then whatever did not complete op by op elsewhere.
    pub(super) fn run_segment(self: &Arc<Self>, seg: Arc<SegmentRun>) {
        let tasks = std::mem::take(&mut *seg.tasks.lock());
        let device = &self.devices[seg.device];
        let predicted: f64 = tasks.iter().map(|t| device.model.run_ns(&t.op)).sum();
        let release = || {
            device.load.queued.fetch_sub(1, Ordering::Relaxed);
            device.load.queued_ns.fetch_sub(predicted as u64, Ordering::Relaxed);
        };
        let now = Instant::now();
        let usable = tasks.iter().all(|t| self.usable(device, &t.op, now));
        let any_failed_input = tasks.iter().any(|t| t.failed_input.lock().is_some());
        if !usable || any_failed_input {
            release();
            self.run_in_order(&tasks, 0, Vec::new());
            return;
        }
        if !device.backend.touches_outputs() {
            for t in &tasks {
                if let Ok(out) = t.mem.buffer(t.op.output.buffer) {
                    out.touch();
                }
            }
        }
        let pairs: Vec<(&OpDesc, &crate::backend::OpMemory)> =
            tasks.iter().map(|t| (&*t.op, &t.mem)).collect();
        let started = Instant::now();
        let report = catch_unwind(AssertUnwindSafe(|| device.backend.execute_segment(&pairs)))
            .unwrap_or_else(|p| crate::backend::SegmentReport {
                reports: Vec::new(),
                error: Some(Error::DeviceFailed(format!("backend panicked: {}", panic_message(&p)))),
                phases: None,
            });
        let finished = Instant::now();
        release();
        let done = report.reports.len().min(tasks.len());
        let span = Span { started, finished, phases: report.phases };
        self.complete_members(device, &tasks[..done], &report.reports[..done], span);
        let Some(err) = report.error else {
            if done < tasks.len() {
                // A backend that stopped without saying why: run the rest elsewhere.
                self.run_in_order(&tasks, done, vec![seg.device]);
            }
            return;
        };
        let Some(failed) = tasks.get(done) else { return };
        if matches!(err, Error::Unsupported(_)) {
            // The device cannot run this op after all (no fault of the device's): the rest
            // runs elsewhere.
            self.run_in_order(&tasks, done, vec![seg.device]);
        } else if err.is_device_fault() {
            let decision = failed.policy.decide(&Self::query(&failed.op));
            self.record_fault(device, &failed.op, &err, decision.fallback);
            log::info!(
                "a segment of {} ops failed on {} at op {done} ({err}); the rest runs op by op elsewhere",
                tasks.len(),
                device.info.name
            );
            self.run_in_order(&tasks, done, vec![seg.device]);
        } else {
            let info =
                EventInfo { device: Some(seg.device), devices_mask: 1 << seg.device, ..Default::default() };
            self.finish_part(failed, Err(err.clone()), &info);
            self.run_in_order_after_failure(&tasks, done, err);
        }
    }

    /// Records and completes the members that ran: their kernel times and the segment's rest
    /// where the device timed them (`record_timed_segment`), else shares of the wall time;
    /// set-up is not run time.
    fn complete_members(
        self: &Arc<Self>,
        device: &Device,
        tasks: &[Arc<Task>],
        reports: &[ExecReport],
        span: Span,
    ) {
        let Span { started, finished, phases } = span;
        if tasks.is_empty() {
            return;
        }
        let wall = finished.duration_since(started).as_nanos() as f64;
        let setup: f64 = reports.iter().map(|r| r.setup_ns as f64).sum();
        let run = (wall - setup - device.model.launch_ns()).max(wall / 10.0);
        let load = &device.load;
        load.ops_run.fetch_add(tasks.len() as u64, Ordering::Relaxed);
        load.busy_ns.fetch_add(wall as u64, Ordering::Relaxed);
        load.consecutive_failures.store(0, Ordering::Relaxed);
        let mut at = started;
        let ops: Vec<&OpDesc> = tasks.iter().map(|t| &*t.op).collect();
        let kernels = kernel_times(reports);
        let moved = phases.map_or(0, |p| p.moved_bytes) as f64;
        let transfers = device.backend.link_gbs().map_or(0.0, |gbs| moved / gbs);
        let segment = MeasuredSegment { run, transfers, kernels: kernels.as_deref() };
        learn_from_segment(&device.model, device.backend.times_kernels(), &ops, &segment);
        // Without the ops' own times, the device's busy time shared by the model's estimates.
        let device_times = kernels.or_else(|| {
            let busy = phases.and_then(|p| p.device_ns)?;
            let predicted: Vec<f64> = ops.iter().map(|op| device.model.run_ns(op)).collect();
            Some(in_proportion(busy as f64, &predicted))
        });
        let times = member_times(run, reports.len(), device_times.as_deref());
        self.trace.slice(device.index, "segment", started, finished, || {
            let mut args = json!({"ops": tasks.len(), "setup_us": setup / 1e3, "first_task": tasks[0].id});
            if let Some(p) = phases {
                let us = |ns: u64| ns as f64 / 1e3;
                args["prepare_us"] = json!(us(p.prepare_ns));
                args["record_us"] = json!(us(p.record_ns));
                args["wait_us"] = json!(us(p.wait_ns));
                args["finish_us"] = json!(us(p.finish_ns));
                args["submissions"] = json!(p.submissions);
                args["moved_mb"] = json!(p.moved_bytes as f64 / 1e6);
                if let Some(ns) = p.device_ns {
                    args["device_us"] = json!(us(ns));
                }
            }
            args
        });
        for (i, (t, op_ns)) in tasks.iter().zip(times).enumerate() {
            load.bytes_moved.fetch_add(t.op.views().map(|v| v.bytes() as u64).sum(), Ordering::Relaxed);
            let end = (at + std::time::Duration::from_nanos(op_ns as u64)).min(finished);
            self.trace.slice(device.index, t.op.kind.name(), at, end, || {
                json!({"dtype": t.op.dtype().name(), "dims": dims_json(&t.op), "tags": tags_text(&t.op), "task": t.id, "segment": true})
            });
            let info = EventInfo {
                device: Some(device.index),
                devices_mask: 1 << device.index,
                started: Some(at),
                finished: Some(end),
                device_ns: device_times.as_ref().map_or(op_ns, |d| d[i]) as u64,
                ..Default::default()
            };
            at = end;
            self.finish_part(t, Ok(()), &info);
        }
    }

    /// Runs members `from..` one at a time, in order, on the thread that called it: each on
    /// the best usable device except `excluded`, falling back per op on device faults.
    /// Members that depend on a failed member fail too.
    fn run_in_order(self: &Arc<Self>, tasks: &[Arc<Task>], from: usize, excluded: Vec<usize>) {
        let mut failed: Vec<Access> = Vec::new();
        for t in &tasks[from..] {
            if let Some(err) = t.failed_input.lock().take() {
                failed.extend(t.accesses.iter().filter(|a| a.write).copied());
                self.finish_part(t, Err(err), &EventInfo::default());
                continue;
            }
            if let Some(err) = depends_on_failed(t, &failed) {
                failed.extend(t.accesses.iter().filter(|a| a.write).copied());
                self.finish_part(t, Err(err), &EventInfo::default());
                continue;
            }
            if let Err(()) = self.run_one_now(t, &excluded) {
                failed.extend(t.accesses.iter().filter(|a| a.write).copied());
            }
        }
    }

    /// After member `failed_at` failed with a caller error: later members that depend on it
    /// fail, the others run op by op.
    fn run_in_order_after_failure(self: &Arc<Self>, tasks: &[Arc<Task>], failed_at: usize, err: Error) {
        for t in &tasks[failed_at + 1..] {
            if depends_on_failed(t, &tasks[failed_at].accesses).is_some() {
                t.failed_input.lock().get_or_insert_with(|| {
                    Error::DeviceFailed(format!("an op this one depends on failed: {err}"))
                });
            }
        }
        self.run_in_order(tasks, failed_at + 1, Vec::new());
    }

    /// Runs one task to completion on this thread (no queue), trying devices in the rule's
    /// order of expected completion. Err(()) when it failed everywhere (already completed).
    fn run_one_now(self: &Arc<Self>, task: &Arc<Task>, excluded: &[usize]) -> std::result::Result<(), ()> {
        let decision = task.policy.decide(&Self::query(&task.op));
        let mut tried: u64 = excluded.iter().fold(0, |m, d| m | 1 << d);
        let mut fallbacks = excluded.len() as u32;
        let mut last_err =
            Error::Unsupported(format!("no device can run {} in {}", task.op.kind, task.op.dtype()));
        while let Some((index, _)) = self.choose(&task.op, &task.mem, &decision, tried) {
            let device = &self.devices[index];
            if !device.backend.touches_outputs() {
                if let Ok(out) = task.mem.buffer(task.op.output.buffer) {
                    out.touch();
                }
            }
            let started = Instant::now();
            let result: Result<ExecReport> =
                catch_unwind(AssertUnwindSafe(|| device.backend.execute(&task.op, &task.mem)))
                    .unwrap_or_else(|p| {
                        Err(Error::DeviceFailed(format!("backend panicked: {}", panic_message(&p))))
                    });
            let finished = Instant::now();
            match result {
                Ok(report) => {
                    let elapsed = finished.duration_since(started).as_nanos() as u64;
                    device.load.ops_run.fetch_add(1, Ordering::Relaxed);
                    device.load.busy_ns.fetch_add(elapsed, Ordering::Relaxed);
                    let measured = elapsed.saturating_sub(report.setup_ns) as f64;
                    match report.device_ns.filter(|_| device.backend.times_kernels()) {
                        // Its uploads are not known here: a lone op teaches its kernel time only.
                        Some(kernel) => device.model.record_in_segment(&task.op, kernel as f64),
                        None => device.model.record(&task.op, measured),
                    }
                    self.trace.slice(index, task.op.kind.name(), started, finished, || {
                        json!({"dtype": task.op.dtype().name(), "dims": dims_json(&task.op), "tags": tags_text(&task.op), "task": task.id, "fallbacks": fallbacks})
                    });
                    let info = EventInfo {
                        device: Some(index),
                        devices_mask: 1 << index,
                        started: Some(started),
                        finished: Some(finished),
                        device_ns: report.device_ns.unwrap_or(elapsed),
                        fallbacks,
                        ..Default::default()
                    };
                    if fallbacks > 0 {
                        self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
                    }
                    self.finish_part(task, Ok(()), &info);
                    return Ok(());
                }
                Err(err) if err.is_device_fault() => {
                    self.record_fault(device, &task.op, &err, decision.fallback);
                    device.load.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tried |= 1 << index;
                    fallbacks += 1;
                    last_err = err;
                }
                Err(err) => {
                    let info =
                        EventInfo { device: Some(index), devices_mask: 1 << index, ..Default::default() };
                    self.finish_part(task, Err(err), &info);
                    return Err(());
                }
            }
        }
        let info = EventInfo { fallbacks, ..Default::default() };
        self.finish_part(task, Err(last_err), &info);
        Err(())
    }
}

/// The error for a task that reads or writes what a failed member wrote.
/// When a segment ran on its device's worker, and where the backend's host time went.
struct Span {
    started: Instant,
    finished: Instant,
    phases: Option<crate::backend::SegmentPhases>,
}

fn depends_on_failed(task: &Task, failed_writes: &[Access]) -> Option<Error> {
    let hit = task.accesses.iter().any(|a| failed_writes.iter().any(|w| w.write && a.conflicts(w)));
    hit.then(|| Error::DeviceFailed("an op this one depends on failed".into()))
}

use crate::backend::ExecReport;

#[cfg(test)]
mod tests {
    use super::{in_proportion, kernel_times, learn_from_segment, member_times, MeasuredSegment};
    use crate::backend::{Backend, ExecReport};
    use crate::op::{DType, OpDesc, OpKind, TensorView};
    use crate::sched::perf_model::DeviceModel;

    fn shares(run: f64, kernels: &[Option<u64>]) -> Vec<f64> {
        let reports: Vec<ExecReport> =
            kernels.iter().map(|&device_ns| ExecReport { device_ns, setup_ns: 0 }).collect();
        member_times(run, reports.len(), kernel_times(&reports).as_deref())
    }

    #[test]
    fn the_time_outside_kernels_is_shared_evenly() {
        // A long matmul and two short elementwise ops, 600 ns of recording and gaps.
        let t = shares(1_000.0, &[Some(380), Some(10), Some(10)]);
        assert_eq!(t, vec![580.0, 210.0, 210.0]);
        assert_eq!(t.iter().sum::<f64>(), 1_000.0);
    }

    #[test]
    fn overlapped_kernels_share_in_proportion_and_missing_timestamps_evenly() {
        assert_eq!(shares(100.0, &[Some(150), Some(50)]), vec![75.0, 25.0]);
        assert_eq!(shares(90.0, &[Some(150), None, Some(50)]), vec![30.0; 3]);
        assert_eq!(shares(90.0, &[Some(0), Some(0)]), vec![45.0; 2]);
    }

    fn matmul(m: usize) -> OpDesc {
        let t = |id, r, c| TensorView::contiguous(id, DType::F32, &[r, c], 0);
        OpDesc::new(OpKind::Matmul, &[t(1, m, 256), t(2, 256, 256)], t(3, m, 256))
    }

    fn model() -> DeviceModel {
        DeviceModel::new(crate::backend::cpu::CpuBackend::new(1).unwrap().info())
    }

    /// A 4-op segment of a device that times its kernels, sampled or not: 10 us kernels in
    /// 1 ms of wall time (recording and waiting).
    fn learn(model: &DeviceModel, times_kernels: bool, kernels: Option<&[f64]>) {
        let a = matmul(64);
        let ops = [&a; 4];
        let m = MeasuredSegment { run: 1_000_000.0, transfers: 0.0, kernels };
        learn_from_segment(model, times_kernels, &ops, &m);
    }

    #[test]
    fn a_segment_without_its_kernel_times_teaches_a_timing_device_nothing() {
        let (timed, wall) = (model(), model());
        let before = timed.run_ns(&matmul(64));
        learn(&timed, true, None);
        assert_eq!(timed.samples(), 0, "the wall time is not shared among the ops");
        assert_eq!(timed.run_ns(&matmul(64)), before);
        assert_eq!(timed.op_overhead_ns(), 0.0);
        // Sampled: kernel times per op, the rest apart.
        learn(&timed, true, Some(&[10_000.0; 4]));
        assert_eq!(timed.samples(), 4);
        assert!((timed.op_overhead_ns() - 240_000.0).abs() < 1e-6);
        assert!((timed.run_ns(&matmul(64)) - 250_000.0).abs() < 1e-6);
        // A later unsampled segment leaves both as they are.
        learn(&timed, true, None);
        assert_eq!(timed.samples(), 4);
        assert!((timed.run_ns(&matmul(64)) - 250_000.0).abs() < 1e-6);
        // A device whose times are not kernel times learns shares of the wall time.
        learn(&wall, false, None);
        assert_eq!(wall.samples(), 4);
        assert!((wall.run_ns(&matmul(64)) - 250_000.0).abs() < 1e-6);
    }

    #[test]
    fn busy_time_is_shared_by_the_estimates() {
        assert_eq!(in_proportion(100.0, &[3.0, 1.0]), vec![75.0, 25.0]);
        assert_eq!(in_proportion(100.0, &[0.0, 0.0]), vec![50.0, 50.0]);
        assert!(in_proportion(100.0, &[]).is_empty());
    }
}
