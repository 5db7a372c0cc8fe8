//! Runs a sequence of ops as one submission: uploads (skipped for current replicas), one
//! dispatch per op (barriers only between dependent commands), downloads, recorded into a few
//! command buffers (chunks) that are submitted as soon as each is recorded, so the GPU starts
//! while the host records the rest; the last one signals a timeline semaphore; then the outputs
//! are written back to the host views, which stay the truth. Timestamps around each chunk give
//! the device's busy time always; timestamps around each op only on sampled submissions
//! (`OpTimestamps`), since on an H100 they cost about 7 us of GPU time per op. An op whose input is exactly an earlier op's output in the
//! same sequence reads that device result directly, a partial overlap is patched in on the device
//! where an element-to-element map exists, else it starts a new submission.

use super::alloc::{Allocation, Heap, HeapKind};
use super::context::{vk_err, Context};
use super::host_alias::HostAliases;
use super::ops::{self, Features, Step};
use super::pack;
use super::pipelines::{Pipelines, BINDINGS};
use super::residency::{ReplicaKey, ResidencyCache};
use crate::backend::{ExecReport, OpMemory, SegmentPhases, SegmentReport};
use crate::error::{Error, Result};
use crate::memory::BufferId;
use crate::op::{OpDesc, OpKind, TensorView};
use ash::vk;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ops per submission (sizes the descriptor and query pools).
pub const MAX_OPS: usize = 256;
/// Queries of the per-op timestamps come first (two per op), then two per chunk.
const CHUNK_QUERIES: u32 = 2 * MAX_OPS as u32;
/// Chunks per submission at most (a chunk holds at least one op).
const MAX_CHUNKS: usize = MAX_OPS;
const WAIT: Duration = Duration::from_secs(300);
/// A version no buffer has (versions count up from 1).
const NEVER_CURRENT: u64 = u64::MAX;

pub struct State {
    ctx: Arc<Context>,
    device_heap: Heap,
    /// Host-visible memory for transfers; None on unified-memory devices.
    staging: Option<Heap>,
    /// Host buffers imported as device memory (VK_EXT_external_memory_host): read in place
    /// (`read_in_place`, unified memory), or copied by the GPU into replicas
    /// (`import_uploads`, a discrete GPU: no staging copy on the host).
    aliases: Option<HostAliases>,
    read_in_place: bool,
    import_uploads: bool,
    pub residency: ResidencyCache<Allocation>,
    pub pipelines: Pipelines,
    cmd_pool: vk::CommandPool,
    /// One command buffer per chunk of a submission, allocated as chunks first need them.
    cmds: Vec<vk::CommandBuffer>,
    desc_pool: vk::DescriptorPool,
    queries: vk::QueryPool,
    timeline: vk::Semaphore,
    /// The value the last command buffer submitted signals.
    timeline_value: u64,
    /// Submissions run (each one or more command buffers).
    submissions: u64,
    /// Bound to unused binding slots.
    dummy: Allocation,
    /// Bytes of replicas kept between submissions.
    budget: u64,
    /// Set after a device loss or a hung submission; every later call fails.
    lost: Option<String>,
    /// Bytes copied from host views to the device so far.
    uploaded: u64,
    /// Bytes written back to host views so far.
    written_back: u64,
    /// Bytes of host views read in place so far.
    zero_copy: u64,
    /// Bytes of `uploaded` the GPU copied straight from imported host memory.
    imported_uploads: u64,
    /// A submission timed out: the GPU may still use its memory, so none is freed.
    hung: bool,
    /// Which submissions time each op (the model's per-op kernel times).
    op_timestamps: OpTimestamps,
    /// Submissions of more than `ALWAYS_TIMED_OPS` ops so far (the sampling counts them).
    long_runs: u64,
    /// Where a submission is cut into command buffers.
    chunking: Chunking,
}

/// Which submissions write timestamps around each op. `NPUHYBRID_VULKAN_OP_TIMESTAMPS`: `0`
/// never (to measure what they cost), `1` every submission, else sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpTimestamps {
    Never,
    Always,
    /// The first `SAMPLED_FIRST` long submissions, then one in `SAMPLE_EVERY`; short ones
    /// (at most `ALWAYS_TIMED_OPS` ops: lone ops, calibration) always.
    Sampled,
}

/// Long submissions timed op by op before sampling starts: the model's first estimates.
const SAMPLED_FIRST: u64 = 8;
/// Then one long submission in this many is timed op by op (a decode step: every 16th token).
const SAMPLE_EVERY: u64 = 16;
/// Submissions this short are always timed op by op: there is no overlap between dispatches
/// for the timestamps to lose, and lone ops and calibration learn from their kernel times.
const ALWAYS_TIMED_OPS: usize = 8;

impl OpTimestamps {
    pub fn from_env() -> OpTimestamps {
        match std::env::var("NPUHYBRID_VULKAN_OP_TIMESTAMPS").as_deref() {
            Ok("0") => OpTimestamps::Never,
            Ok("1") => OpTimestamps::Always,
            _ => OpTimestamps::Sampled,
        }
    }

    /// Whether a submission of `ops` ops, after `long_runs` long ones, times each op.
    fn times_ops(self, long_runs: u64, ops: usize) -> bool {
        match self {
            OpTimestamps::Never => false,
            OpTimestamps::Always => true,
            OpTimestamps::Sampled => {
                ops <= ALWAYS_TIMED_OPS || long_runs < SAMPLED_FIRST || long_runs % SAMPLE_EVERY == 0
            }
        }
    }
}

/// Where a submission is cut into command buffers: after `first` ops (the GPU starts early),
/// then every `every` ops. `NPUHYBRID_VULKAN_CHUNK=first,every`, or `0` for one command
/// buffer per submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunking {
    pub first: usize,
    pub every: usize,
}

impl Chunking {
    /// One command buffer per submission.
    pub const WHOLE: Chunking = Chunking { first: MAX_OPS, every: MAX_OPS };
    /// 8, then every 32: the H100's 1B decode step took 7.0 ms so, 8.1 at 16/64, 8.2 at
    /// 32/128 and 8.8 in one command buffer (2026-12-07).
    pub const DEFAULT: Chunking = Chunking { first: 8, every: 32 };

    pub fn from_env() -> Chunking {
        let Ok(v) = std::env::var("NPUHYBRID_VULKAN_CHUNK") else { return Chunking::DEFAULT };
        if v == "0" {
            return Chunking::WHOLE;
        }
        let parts: Vec<usize> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match parts[..] {
            [first, every] if first > 0 && every > 0 => Chunking { first, every },
            _ => {
                log::warn!("NPUHYBRID_VULKAN_CHUNK={v}: expected 'first,every' or '0'; using the default");
                Chunking::DEFAULT
            }
        }
    }

    /// The end (exclusive) of each chunk of `ops` ops. A last chunk under half of `every` joins
    /// the one before (unless that is the first): a command buffer of its own would only add
    /// a submission.
    pub fn ends(self, ops: usize) -> Vec<usize> {
        let (first, every) = (self.first.max(1), self.every.max(1));
        let mut ends = Vec::new();
        let mut end = first;
        while end < ops {
            ends.push(end);
            end += every;
        }
        if ends.len() > 1 && ops - ends[ends.len() - 1] < every.div_ceil(2) {
            ends.pop();
        }
        ends.push(ops);
        ends
    }
}

// Vulkan handles and mapped pointers are used only under the backend's mutex.
unsafe impl Send for State {}

impl State {
    pub fn new(ctx: Arc<Context>) -> Result<State> {
        let unified = ctx.caps.unified_memory();
        let aliases = HostAliases::new(ctx.clone());
        use vk::MemoryPropertyFlags as M;
        let device_heap = if unified {
            Heap::new(
                ctx.clone(),
                HeapKind::Device,
                M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT,
                M::HOST_CACHED,
            )?
        } else {
            Heap::new(ctx.clone(), HeapKind::Device, M::DEVICE_LOCAL, M::DEVICE_LOCAL)?
        };
        let staging = if unified {
            None
        } else {
            Some(Heap::new(
                ctx.clone(),
                HeapKind::Staging,
                M::HOST_VISIBLE | M::HOST_COHERENT,
                M::HOST_CACHED,
            )?)
        };
        let pipelines = Pipelines::new(ctx.clone())?;
        let d = &ctx.device;
        // Objects are created one by one; `cleanup` runs on the error path so nothing leaks.
        let mut made = Made::default();
        let result = (|| -> Result<()> {
            made.cmd_pool = unsafe {
                d.create_command_pool(
                    &vk::CommandPoolCreateInfo::default()
                        .queue_family_index(ctx.caps.queue_family)
                        .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
                    None,
                )
            }
            .map_err(|e| vk_err("vkCreateCommandPool", e))?;
            made.cmd = allocate_command_buffer(d, made.cmd_pool)?;
            let sizes = [vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::STORAGE_BUFFER)
                .descriptor_count(BINDINGS * DESCRIPTOR_SETS)];
            made.desc_pool = unsafe {
                d.create_descriptor_pool(
                    &vk::DescriptorPoolCreateInfo::default().max_sets(DESCRIPTOR_SETS).pool_sizes(&sizes),
                    None,
                )
            }
            .map_err(|e| vk_err("vkCreateDescriptorPool", e))?;
            made.queries = unsafe {
                d.create_query_pool(
                    &vk::QueryPoolCreateInfo::default()
                        .query_type(vk::QueryType::TIMESTAMP)
                        .query_count(CHUNK_QUERIES + 2 * MAX_CHUNKS as u32),
                    None,
                )
            }
            .map_err(|e| vk_err("vkCreateQueryPool", e))?;
            let mut kind = vk::SemaphoreTypeCreateInfo::default()
                .semaphore_type(vk::SemaphoreType::TIMELINE)
                .initial_value(0);
            made.timeline =
                unsafe { d.create_semaphore(&vk::SemaphoreCreateInfo::default().push_next(&mut kind), None) }
                    .map_err(|e| vk_err("vkCreateSemaphore", e))?;
            Ok(())
        })();
        if let Err(e) = result {
            made.destroy(d);
            return Err(e);
        }
        let mut device_heap = device_heap;
        let dummy = match device_heap.allocate(256) {
            Ok(a) => a,
            Err(e) => {
                made.destroy(d);
                return Err(e);
            }
        };
        // Keep replicas within half of device memory (a quarter on shared-memory devices,
        // where it is also the host's).
        let total = ctx.caps.device_local_bytes();
        let budget = if unified { total / 4 } else { total / 2 };
        Ok(State {
            device_heap,
            staging,
            aliases,
            read_in_place: ctx.reads_host_in_place(),
            import_uploads: ctx.uploads_from_host_imports(),
            residency: ResidencyCache::default(),
            pipelines,
            cmd_pool: made.cmd_pool,
            cmds: vec![made.cmd],
            desc_pool: made.desc_pool,
            queries: made.queries,
            timeline: made.timeline,
            timeline_value: 0,
            submissions: 0,
            dummy,
            budget,
            lost: None,
            hung: false,
            op_timestamps: OpTimestamps::from_env(),
            long_runs: 0,
            chunking: Chunking::from_env(),
            uploaded: 0,
            written_back: 0,
            zero_copy: 0,
            imported_uploads: 0,
            ctx,
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            replicas: self.residency.len(),
            replica_bytes: self.residency.bytes(),
            reserved_bytes: self.device_heap.reserved,
            uploaded_bytes: self.uploaded,
            written_back_bytes: self.written_back,
            zero_copy_bytes: self.zero_copy,
            imported_upload_bytes: self.imported_uploads,
            submissions: self.submissions,
            command_buffers: self.timeline_value,
        }
    }

    /// Turns in-place reads of host buffers off (replicas are copied as on a discrete GPU)
    /// or back on where the device can import host memory (the caller checks it can).
    pub fn set_host_import(&mut self, on: bool) {
        self.read_in_place = on && self.aliases.is_some();
    }

    /// Uploads copied by the GPU from imported host memory (on), or through staging memory
    /// the host fills (off). On by default on discrete GPUs that can import host memory.
    pub fn set_import_uploads(&mut self, on: bool) -> bool {
        self.import_uploads = on && self.aliases.is_some();
        self.import_uploads
    }

    /// Whether ops' kernels are timed, on some submissions at least (timestamps supported
    /// and not turned off).
    pub fn op_timestamps(&self) -> bool {
        self.op_timestamps != OpTimestamps::Never && self.has_timestamps()
    }

    fn has_timestamps(&self) -> bool {
        self.ctx.caps.timestamp_bits > 0
    }

    pub fn set_op_timestamps(&mut self, mode: OpTimestamps) {
        self.op_timestamps = mode;
    }

    pub fn set_chunking(&mut self, chunking: Chunking) {
        self.chunking = chunking;
    }

    /// Whether the next submission of `ops` ops times each op; counts it among the long ones.
    fn sample_op_times(&mut self, ops: usize) -> bool {
        let timed = self.has_timestamps() && self.op_timestamps.times_ops(self.long_runs, ops);
        if ops > ALWAYS_TIMED_OPS {
            self.long_runs += 1;
        }
        timed
    }

    pub fn set_budget(&mut self, bytes: u64) {
        self.budget = bytes;
    }

    fn free(&mut self, a: Allocation) {
        match a.heap {
            HeapKind::Device => self.device_heap.free(&a),
            HeapKind::Staging => {
                if let Some(h) = self.staging.as_mut() {
                    h.free(&a)
                }
            }
            HeapKind::HostAlias => {}
        }
    }

    fn free_all(&mut self, list: Vec<Allocation>) {
        for a in list {
            self.free(a);
        }
    }

    /// Device memory, evicting unused replicas when it runs out.
    fn alloc_device(&mut self, bytes: u64) -> Result<Allocation> {
        match self.device_heap.allocate(bytes) {
            Err(Error::OutOfMemory(_)) => {
                let mut evicted = Vec::new();
                self.residency.evict_to(0, &mut evicted);
                self.free_all(evicted);
                self.device_heap.allocate(bytes)
            }
            other => other,
        }
    }

    fn alloc_staging(&mut self, bytes: u64) -> Result<Allocation> {
        self.staging.as_mut().expect("staging heap exists on devices that need it").allocate(bytes)
    }

    /// Runs the ops in order, in as few submissions as their overlaps allow; one report per
    /// op that completed. A failed submission stops the run: ops before it are done and
    /// written back, it and the ops after it did not write anything to the host.
    pub fn run(&mut self, features: Features, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        let mut out = SegmentReport::default();
        if let Some(why) = &self.lost {
            out.error = Some(Error::DeviceLost(why.clone()));
            return out;
        }
        let mut phases = SegmentPhases::default();
        let moved_before = self.uploaded + self.written_back;
        // Decided once for the run: every op reports a kernel time or none does.
        let timed = self.sample_op_times(ops.len());
        let mut start = 0;
        while start < ops.len() {
            let end = segment_end(&ops[start..]) + start;
            match self.run_segment(features, &ops[start..end], &mut phases, timed) {
                Ok(reports) => out.reports.extend(reports),
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
            start = end;
        }
        phases.moved_bytes = self.uploaded + self.written_back - moved_before;
        out.phases = Some(phases);
        out
    }

    fn run_segment(
        &mut self,
        features: Features,
        ops: &[(&OpDesc, &OpMemory)],
        phases: &mut SegmentPhases,
        timed: bool,
    ) -> Result<Vec<ExecReport>> {
        let steps = ops.iter().map(|(op, _)| ops::plan(op, features)).collect::<Result<Vec<_>>>()?;
        let mut dead = Vec::new();
        self.residency.next_tick();
        self.residency.evict_dead(&mut dead);
        self.free_all(dead);
        if let (Some(a), false) = (self.aliases.as_mut(), self.hung) {
            a.evict_dead();
        }

        let mut seg = Segment::default();
        let started = Instant::now();
        let result = self.prepare(ops, &mut seg).and_then(|_| {
            phases.prepare_ns += started.elapsed().as_nanos() as u64;
            self.record_and_submit(ops, &steps, &seg, phases, timed)
        });
        match result {
            Ok((times, setup)) => {
                let finishing = Instant::now();
                self.finish(ops, seg)?;
                phases.finish_ns += finishing.elapsed().as_nanos() as u64;
                phases.submissions += 1;
                self.submissions += 1;
                Ok(times
                    .into_iter()
                    .zip(setup)
                    .map(|(device_ns, setup_ns)| ExecReport { device_ns, setup_ns })
                    .collect())
            }
            Err(e) => {
                if matches!(e, Error::DeviceLost(_)) {
                    self.lost = Some(e.to_string());
                }
                // Replicas patched in place may hold half of this submission's writes.
                let mut list = Vec::new();
                for u in seg.used.iter().filter(|u| u.looked_up) {
                    let patched =
                        self.residency.peek(&u.key).is_some_and(|a| seg.patches.iter().any(|p| p.dst == a));
                    if patched {
                        list.extend(self.residency.forget(&u.key));
                    }
                }
                if !self.hung {
                    // The GPU no longer uses anything of this segment.
                    list.extend(seg.temporary);
                    list.extend(seg.new_replicas.into_iter().map(|r| r.alloc));
                    list.extend(seg.outputs.into_iter().map(|o| o.alloc));
                    self.free_all(list);
                }
                Err(e)
            }
        }
    }

    /// Resolves every operand to device memory and schedules the uploads and device-side
    /// copies it needs.
    fn prepare(&mut self, ops: &[(&OpDesc, &OpMemory)], seg: &mut Segment) -> Result<()> {
        let mut stale = Vec::new();
        for (i, (op, mem)) in ops.iter().enumerate() {
            let mut slots = [None; BINDINGS as usize];
            for (slot, v) in op.inputs.iter().enumerate() {
                let Some(v) = v else { continue };
                let (alloc, _) = self.resolve(i, v, mem, seg, &mut stale, false)?;
                slots[slot] = Some(alloc);
            }
            let out = &op.output;
            let alloc = if op.kind == OpKind::Matmul && op.params.beta != 0.0 {
                // C = alpha*AB + beta*C needs the current C on the device: a fresh upload
                // becomes the output; a copy held elsewhere is copied into a new output.
                let (current, fresh) = self.resolve(i, out, mem, seg, &mut stale, true)?;
                if fresh {
                    current
                } else {
                    let a = self.alloc_device(out.bytes() as u64)?;
                    seg.patches.push(Patch {
                        op: i,
                        src: current,
                        dst: a,
                        copy: PatchCopy::Regions(vec![(0, 0, out.bytes() as u64)]),
                    });
                    a
                }
            } else {
                self.alloc_device(out.bytes() as u64)?
            };
            slots[BINDINGS as usize - 1] = Some(alloc);
            seg.push_output(Output {
                key: ReplicaKey::of(out),
                view: *out,
                alloc,
                staging: None,
                written_back: true,
            });
            seg.slots.push(slots);
        }
        self.free_all(stale);
        // An output that a later op of this submission writes again over all its bytes (the
        // same view, or a scratch buffer the next layer fills) never reaches the host: the host
        // sees the last value, as if the ops ran one by one.
        for (i, (op, _)) in ops.iter().enumerate() {
            let v = &op.output;
            let rewritten = seg.outputs_of(v.buffer).iter().filter(|&&k| k > i).any(|&k| {
                let w = &ops[k].0.output;
                w == v || (w.is_contiguous() && covers(w, v))
            });
            seg.outputs[i].written_back = !rewritten;
        }
        // Downloads need staging space on devices without shared memory.
        if self.staging.is_some() {
            for ((op, _), out) in ops.iter().zip(seg.outputs.iter_mut()) {
                if !out.written_back {
                    continue;
                }
                let s = self.alloc_staging(op.output.bytes() as u64)?;
                seg.temporary.push(s);
                out.staging = Some(s);
            }
        }
        Ok(())
    }

    /// Device memory holding view `v` as op `i` of the submission must see it: an earlier op's
    /// output through the same view; else a replica (or an upload of the host bytes, which
    /// hold the state before the submission) brought up to date on the device with the parts
    /// earlier ops of the submission wrote (`device_patch` regions, recorded before op `i`).
    /// `own`: the caller writes into the memory (a matmul's C): never a shared replica, and
    /// a fresh upload is not kept as one. Returns the memory and whether it is fresh.
    fn resolve(
        &mut self,
        i: usize,
        v: &TensorView,
        mem: &OpMemory,
        seg: &mut Segment,
        stale: &mut Vec<Allocation>,
        own: bool,
    ) -> Result<(Allocation, bool)> {
        let key = ReplicaKey::of(v);
        if let Some(&e) = seg.outputs_of(v.buffer).iter().rev().find(|&&k| seg.outputs[k].key == key) {
            return self.resolve_after_output(i, e, v, seg, own);
        }
        let buf = mem.buffer(v.buffer)?;
        // What earlier ops of the submission wrote into v, in op order.
        let overlapping = seg.overlapping(v);
        let (alloc, fresh) = if let Some(r) = seg.new_replicas.iter().find(|r| r.key == key).filter(|_| !own)
        {
            (r.alloc, false)
        } else {
            // The caller may write imported memory without telling the library, so a replica
            // of it is never trusted: it is uploaded for every submission.
            let wanted = if buf.is_imported() { NEVER_CURRENT } else { buf.version() };
            match self.residency.lookup(&key, wanted, stale) {
                Some(a) => {
                    if !seg.used.iter().any(|u| u.key == key) {
                        seg.used.push(Used { key, view: *v, first_op: i, looked_up: true });
                    }
                    (a, false)
                }
                None => {
                    // On unified memory, a view that no earlier op of the submission wrote
                    // into is read where it lies: no copy, no replica.
                    let in_place = self.read_in_place && !own && overlapping.is_empty();
                    if let (true, Some(aliases)) = (in_place, self.aliases.as_mut()) {
                        if let Some(a) = aliases.view(buf, v) {
                            self.zero_copy += v.bytes() as u64;
                            return Ok((a, false));
                        }
                    }
                    // Bytes an earlier op of the submission wrote through a dense view over
                    // all of v are patched in below: the host's older copy need not travel.
                    let covered = seg.outputs_of(v.buffer).iter().any(|&k| {
                        let o = &seg.outputs[k].view;
                        o.is_contiguous() && covers(o, v)
                    });
                    let a = if covered {
                        self.alloc_device(v.bytes() as u64)?
                    } else {
                        self.upload(v, mem, seg)?
                    };
                    if !own {
                        seg.new_replicas.push(NewReplica {
                            key,
                            owner: Arc::downgrade(buf),
                            alloc: a,
                            bytes: v.bytes() as u64,
                        });
                        seg.used.push(Used { key, view: *v, first_op: i, looked_up: false });
                    }
                    (a, true)
                }
            }
        };
        for k in overlapping {
            let (w, src) = (seg.outputs[k].view, seg.outputs[k].alloc);
            if let Some(copy) = self.patch_copy(&w, v, seg) {
                seg.patch_dispatches += matches!(copy, PatchCopy::Shader { .. }) as usize;
                seg.patches.push(Patch { op: i, src, dst: alloc, copy });
            }
        }
        Ok((alloc, fresh))
    }

    /// `v` as op `i` must see it, where output `e` of the submission wrote exactly `v`: that
    /// output itself, or, when later ops wrote part of it (a scratch buffer reused under
    /// another shape, as each layer does), a copy of it with their writes patched in.
    fn resolve_after_output(
        &mut self,
        i: usize,
        e: usize,
        v: &TensorView,
        seg: &mut Segment,
        own: bool,
    ) -> Result<(Allocation, bool)> {
        let later: Vec<usize> = seg.overlapping(v).into_iter().filter(|&k| k > e).collect();
        let base = seg.outputs[e].alloc;
        if later.is_empty() {
            return Ok((base, false));
        }
        let copy = self.alloc_device(v.bytes() as u64)?;
        if !own {
            seg.temporary.push(copy);
        }
        let whole = PatchCopy::Regions(vec![(0, 0, v.bytes() as u64)]);
        seg.patches.push(Patch { op: i, src: base, dst: copy, copy: whole });
        for k in later {
            let o = &seg.outputs[k];
            let (w, src) = (o.view, o.alloc);
            if let Some(patch) = self.patch_copy(&w, v, seg) {
                seg.patch_dispatches += matches!(patch, PatchCopy::Shader { .. }) as usize;
                seg.patches.push(Patch { op: i, src, dst: copy, copy: patch });
            }
        }
        Ok((copy, true))
    }

    /// How what an op wrote through `w` reaches the device copy of `r`: copy regions where
    /// both are dense (one region), else the `patch` shader (one thread per element; as
    /// regions, a strided view is one region per row, and some drivers run each as a copy).
    /// None when nothing of `w` lands in `r`.
    fn patch_copy(&self, w: &TensorView, r: &TensorView, seg: &Segment) -> Option<PatchCopy> {
        let shader = match w.dtype.size() {
            4 => Some("patch_b32"),
            2 if self.ctx.caps.shader_f16 && self.ctx.caps.storage_16bit => Some("patch_b16"),
            _ => None,
        };
        let dense = w.is_contiguous() && r.is_contiguous();
        if let (Some(shader), false, true) = (shader, dense, seg.patch_dispatches < MAX_PATCH_DISPATCHES) {
            if let Some(push) = pack::patch_push(w, r) {
                let groups = ops::fold(w.numel().div_ceil(256));
                return Some(PatchCopy::Shader { shader, push, groups });
            }
        }
        // segment_end keeps unmappable overlaps out of a submission.
        let regions = pack::device_patch(w, r).expect("segment_end admits mappable overlaps only");
        (!regions.is_empty()).then_some(PatchCopy::Regions(regions))
    }

    /// Copies a host view into fresh device memory (directly when mapped, else via staging).
    fn upload(&mut self, v: &TensorView, mem: &OpMemory, seg: &mut Segment) -> Result<Allocation> {
        let bytes = v.bytes();
        let dst = self.alloc_device(bytes as u64)?;
        self.uploaded += bytes as u64;
        if self.import_uploads {
            let imported = self.aliases.as_mut().and_then(|a| a.view(mem.buffer(v.buffer).ok()?, v));
            if let Some(src) = imported {
                self.imported_uploads += bytes as u64;
                seg.copies_in.push((src, dst, bytes as u64));
                return Ok(dst);
            }
        }
        let src = mem.ptr(v)?;
        if dst.mapped.is_some() {
            unsafe { pack::pack(v, src, dst.bytes_mut(bytes)) };
            return Ok(dst);
        }
        let staging = match self.alloc_staging(bytes as u64) {
            Ok(s) => s,
            Err(e) => {
                self.free(dst);
                return Err(e);
            }
        };
        unsafe { pack::pack(v, src, staging.bytes_mut(bytes)) };
        seg.temporary.push(staging);
        seg.copies_in.push((staging, dst, bytes as u64));
        Ok(dst)
    }

    /// Points each set's bindings at its slots (the dummy buffer for empty ones), in one call.
    fn bind_all(&self, sets: &[vk::DescriptorSet], slots: &[[Option<Allocation>; BINDINGS as usize]]) {
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = slots
            .iter()
            .flatten()
            .map(|s| {
                let a = s.unwrap_or(self.dummy);
                // Whole words: quantized weights (blocks of 18 or 34 bytes) may end inside
                // one, and shaders read them as words. Allocations are rounded far beyond that.
                [vk::DescriptorBufferInfo::default()
                    .buffer(a.buffer)
                    .offset(a.offset)
                    .range(a.size.next_multiple_of(4))]
            })
            .collect();
        let per_set = BINDINGS as usize;
        let writes: Vec<vk::WriteDescriptorSet> = infos
            .iter()
            .enumerate()
            .map(|(j, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(sets[j / per_set])
                    .dst_binding((j % per_set) as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        unsafe { self.ctx.device.update_descriptor_sets(&writes, &[]) };
    }

    /// Records the submission chunk by chunk, submitting each chunk as soon as it is recorded
    /// (the GPU starts on the first ops while the host records the rest), and waits for the
    /// last one. Returns each op's kernel time (on submissions that time ops) and set-up.
    fn record_and_submit(
        &mut self,
        ops: &[(&OpDesc, &OpMemory)],
        steps: &[Step],
        seg: &Segment,
        phases: &mut SegmentPhases,
        timed: bool,
    ) -> Result<(Vec<Option<u64>>, Vec<u64>)> {
        let recording = Instant::now();
        let (bound, setup) = self.bind_resources(ops.len(), steps, seg)?;
        let ends = self.chunking.ends(ops.len());
        let before = self.timeline_value;
        let recorded = self.record_chunks(ops, steps, seg, &bound, &ends, timed);
        let submitted = Instant::now();
        phases.record_ns += submitted.duration_since(recording).as_nanos() as u64;
        if let Err(e) = recorded {
            // Chunks already submitted may still use this segment's memory.
            if self.timeline_value > before {
                self.wait_timeline(self.timeline_value)?;
            }
            return Err(e);
        }
        self.wait_timeline(self.timeline_value)?;
        phases.wait_ns += submitted.elapsed().as_nanos() as u64;
        let times = if timed { self.op_times(ops.len())? } else { vec![None; ops.len()] };
        if self.has_timestamps() {
            let busy = self.busy_ns(ends.len())?;
            phases.device_ns = Some(phases.device_ns.unwrap_or(0) + busy);
        }
        Ok((times, setup))
    }

    /// Pipelines for every step and patch shader, and a descriptor set for each (written per
    /// chunk). Pipeline creation (driver compilation on a cold cache) is set-up, not run time.
    fn bind_resources(&mut self, n: usize, steps: &[Step], seg: &Segment) -> Result<(Bound, Vec<u64>)> {
        let mut pipelines = Vec::with_capacity(n);
        let mut setup = vec![0u64; n];
        for (s, setup) in steps.iter().zip(&mut setup) {
            let started = std::time::Instant::now();
            pipelines.push(match s {
                Step::Dispatch { shader, .. } => Some(self.pipelines.get(shader)?),
                Step::CopyBuffer { .. } => None,
            });
            if self.pipelines.take_created() {
                *setup = started.elapsed().as_nanos() as u64;
            }
        }
        let mut patch_pipelines = Vec::new();
        for p in &seg.patches {
            if let PatchCopy::Shader { shader, .. } = p.copy {
                patch_pipelines.push(self.pipelines.get(shader)?);
            }
        }
        let d = &self.ctx.device;
        let layouts = vec![self.pipelines.set_layout; n + patch_pipelines.len()];
        let sets = unsafe {
            d.reset_descriptor_pool(self.desc_pool, vk::DescriptorPoolResetFlags::empty())
                .map_err(|e| vk_err("vkResetDescriptorPool", e))?;
            d.allocate_descriptor_sets(
                &vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(self.desc_pool)
                    .set_layouts(&layouts),
            )
            .map_err(|e| vk_err("vkAllocateDescriptorSets", e))?
        };
        Ok((Bound { pipelines, patch_pipelines, sets }, setup))
    }

    /// The command buffer of chunk `c`, allocated on first use.
    fn command_buffer(&mut self, c: usize) -> Result<vk::CommandBuffer> {
        while self.cmds.len() <= c {
            let cb = allocate_command_buffer(&self.ctx.device, self.cmd_pool)?;
            self.cmds.push(cb);
        }
        Ok(self.cmds[c])
    }

    /// Records and submits each chunk `[previous end, end)` of the ops. Hazards carry over
    /// from chunk to chunk: a barrier orders everything earlier in submission order, whichever
    /// command buffer it was in.
    fn record_chunks(
        &mut self,
        ops: &[(&OpDesc, &OpMemory)],
        steps: &[Step],
        seg: &Segment,
        bound: &Bound,
        ends: &[usize],
        timed: bool,
    ) -> Result<()> {
        let ctx = self.ctx.clone();
        let d = &ctx.device;
        let chunk_timestamps = self.has_timestamps();
        let mut hazards = Hazards::default();
        let mut next_patch = 0;
        let mut start = 0;
        for (c, &end) in ends.iter().enumerate() {
            let cb = self.command_buffer(c)?;
            unsafe {
                d.reset_command_buffer(cb, vk::CommandBufferResetFlags::empty())
                    .map_err(|e| vk_err("vkResetCommandBuffer", e))?;
                d.begin_command_buffer(
                    cb,
                    &vk::CommandBufferBeginInfo::default()
                        .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                )
                .map_err(|e| vk_err("vkBeginCommandBuffer", e))?;
                if c == 0 {
                    // Blocks made since the last submission start zeroed (unmapped memory).
                    let fresh = if self.device_heap.mapped() {
                        Vec::new()
                    } else {
                        self.device_heap.take_fresh_blocks()
                    };
                    self.record_prologue(cb, seg, &fresh, ends.len(), timed);
                }
                if chunk_timestamps {
                    let q = CHUNK_QUERIES + 2 * c as u32;
                    d.cmd_write_timestamp(cb, vk::PipelineStageFlags::TOP_OF_PIPE, self.queries, q);
                }
                self.bind_chunk(bound, seg, ops.len(), start..end, next_patch);
                for (i, step) in steps.iter().enumerate().take(end).skip(start) {
                    self.record_op(cb, i, step, seg, bound, ops.len(), &mut hazards, &mut next_patch, timed);
                }
                if c + 1 == ends.len() {
                    self.record_write_backs(cb, ops, seg);
                }
                if chunk_timestamps {
                    let q = CHUNK_QUERIES + 2 * c as u32 + 1;
                    d.cmd_write_timestamp(cb, vk::PipelineStageFlags::BOTTOM_OF_PIPE, self.queries, q);
                }
                d.end_command_buffer(cb).map_err(|e| vk_err("vkEndCommandBuffer", e))?;
            }
            self.submit(cb)?;
            start = end;
        }
        Ok(())
    }

    /// Writes the descriptor sets of ops `range` and of their patch shaders (the chunk's first
    /// is patch shader `first_patch`: patches are in op order), in one driver call.
    fn bind_chunk(
        &self,
        bound: &Bound,
        seg: &Segment,
        n: usize,
        range: std::ops::Range<usize>,
        first_patch: usize,
    ) {
        let patch_slots: Vec<[Option<Allocation>; BINDINGS as usize]> = seg
            .patches
            .iter()
            .filter(|p| range.contains(&p.op))
            .filter_map(|p| match p.copy {
                PatchCopy::Shader { .. } => {
                    let mut slots = [None; BINDINGS as usize];
                    slots[0] = Some(p.src);
                    slots[BINDINGS as usize - 1] = Some(p.dst);
                    Some(slots)
                }
                PatchCopy::Regions(_) => None,
            })
            .collect();
        let patch_sets = &bound.sets[n + first_patch..n + first_patch + patch_slots.len()];
        let sets: Vec<vk::DescriptorSet> =
            bound.sets[range.clone()].iter().chain(patch_sets).copied().collect();
        let slots: Vec<[Option<Allocation>; BINDINGS as usize]> =
            seg.slots[range].iter().copied().chain(patch_slots.iter().copied()).collect();
        self.bind_all(&sets, &slots);
    }

    /// The start of the first chunk: query resets, zeroed fresh blocks, uploads from staging.
    unsafe fn record_prologue(
        &self,
        cb: vk::CommandBuffer,
        seg: &Segment,
        fresh: &[vk::Buffer],
        chunks: usize,
        timed: bool,
    ) {
        let d = &self.ctx.device;
        let n = seg.slots.len();
        if timed {
            d.cmd_reset_query_pool(cb, self.queries, 0, 2 * n as u32);
        }
        if self.has_timestamps() {
            d.cmd_reset_query_pool(cb, self.queries, CHUNK_QUERIES, 2 * chunks as u32);
        }
        for b in fresh {
            d.cmd_fill_buffer(cb, *b, 0, vk::WHOLE_SIZE, 0);
        }
        if !fresh.is_empty() {
            barrier(d, cb);
        }
        for (src, dst, bytes) in &seg.copies_in {
            let region = vk::BufferCopy::default().src_offset(src.offset).dst_offset(dst.offset).size(*bytes);
            d.cmd_copy_buffer(cb, src.buffer, dst.buffer, &[region]);
        }
        barrier(d, cb);
    }

    /// Op `i`: the device copies that bring earlier ops' writes into what it reads, then its
    /// dispatch (or copy), with a barrier first where it touches what unfenced commands did
    /// (independent dispatches, such as q, k and v, or gate and up, overlap).
    #[allow(clippy::too_many_arguments)]
    unsafe fn record_op(
        &self,
        cb: vk::CommandBuffer,
        i: usize,
        step: &Step,
        seg: &Segment,
        bound: &Bound,
        n: usize,
        hazards: &mut Hazards,
        next_patch: &mut usize,
        timed: bool,
    ) {
        let d = &self.ctx.device;
        for p in seg.patches.iter().filter(|p| p.op == i) {
            if hazards.conflict(&[p.src], &[p.dst]) {
                barrier(d, cb);
                hazards.clear();
            }
            match &p.copy {
                PatchCopy::Regions(regions) => {
                    let regions: Vec<vk::BufferCopy> = regions
                        .iter()
                        .map(|&(s, t, len)| {
                            vk::BufferCopy::default()
                                .src_offset(p.src.offset + s)
                                .dst_offset(p.dst.offset + t)
                                .size(len)
                        })
                        .collect();
                    d.cmd_copy_buffer(cb, p.src.buffer, p.dst.buffer, &regions);
                }
                PatchCopy::Shader { push, groups, .. } => {
                    let set = bound.sets[n + *next_patch];
                    self.dispatch(cb, bound.patch_pipelines[*next_patch], set, push, *groups);
                    *next_patch += 1;
                }
            }
            hazards.note(&[p.src], &[p.dst]);
        }
        let slots = &seg.slots[i];
        let reads: Vec<Allocation> = slots[..BINDINGS as usize - 1].iter().flatten().copied().collect();
        let writes: Vec<Allocation> = slots[BINDINGS as usize - 1].into_iter().collect();
        if hazards.conflict(&reads, &writes) {
            barrier(d, cb);
            hazards.clear();
        }
        if timed {
            d.cmd_write_timestamp(cb, vk::PipelineStageFlags::COMPUTE_SHADER, self.queries, 2 * i as u32);
        }
        match step {
            Step::Dispatch { push, groups, .. } => {
                let pipeline = bound.pipelines[i].expect("dispatch has a pipeline");
                self.dispatch(cb, pipeline, bound.sets[i], push, *groups);
            }
            Step::CopyBuffer { bytes } => {
                let (src, dst) = (
                    slots[0].expect("copy has an input"),
                    slots[BINDINGS as usize - 1].expect("copy has an output"),
                );
                let region =
                    vk::BufferCopy::default().src_offset(src.offset).dst_offset(dst.offset).size(*bytes);
                d.cmd_copy_buffer(cb, src.buffer, dst.buffer, &[region]);
            }
        }
        hazards.note(&reads, &writes);
        if timed {
            d.cmd_write_timestamp(cb, vk::PipelineStageFlags::COMPUTE_SHADER, self.queries, 2 * i as u32 + 1);
        }
    }

    unsafe fn dispatch(
        &self,
        cb: vk::CommandBuffer,
        pipeline: vk::Pipeline,
        set: vk::DescriptorSet,
        push: &[u8],
        groups: [u32; 3],
    ) {
        let d = &self.ctx.device;
        let layout = self.pipelines.layout;
        d.cmd_bind_pipeline(cb, vk::PipelineBindPoint::COMPUTE, pipeline);
        d.cmd_bind_descriptor_sets(cb, vk::PipelineBindPoint::COMPUTE, layout, 0, &[set], &[]);
        d.cmd_push_constants(cb, layout, vk::ShaderStageFlags::COMPUTE, 0, push);
        d.cmd_dispatch(cb, groups[0], groups[1], groups[2]);
    }

    /// The end of the last chunk: outputs copied to staging, made visible to the host.
    unsafe fn record_write_backs(&self, cb: vk::CommandBuffer, ops: &[(&OpDesc, &OpMemory)], seg: &Segment) {
        let d = &self.ctx.device;
        // The copies back read what the dispatches wrote.
        barrier(d, cb);
        for (i, o) in seg.outputs.iter().enumerate() {
            if let (true, Some(s)) = (o.written_back, o.staging) {
                let region = vk::BufferCopy::default()
                    .src_offset(o.alloc.offset)
                    .dst_offset(s.offset)
                    .size(ops[i].0.output.bytes() as u64);
                d.cmd_copy_buffer(cb, o.alloc.buffer, s.buffer, &[region]);
            }
        }
        let to_host = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        d.cmd_pipeline_barrier(
            cb,
            vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER,
            vk::PipelineStageFlags::HOST,
            vk::DependencyFlags::empty(),
            &[to_host],
            &[],
            &[],
        );
    }

    /// Submits one chunk, signalling the next timeline value.
    fn submit(&mut self, cb: vk::CommandBuffer) -> Result<()> {
        let values = [self.timeline_value + 1];
        let mut timeline_info = vk::TimelineSemaphoreSubmitInfo::default().signal_semaphore_values(&values);
        let cbs = [cb];
        let sems = [self.timeline];
        let submit = vk::SubmitInfo::default()
            .command_buffers(&cbs)
            .signal_semaphores(&sems)
            .push_next(&mut timeline_info);
        unsafe { self.ctx.device.queue_submit(self.ctx.queue, &[submit], vk::Fence::null()) }
            .map_err(|e| vk_err("vkQueueSubmit", e))?;
        self.timeline_value += 1;
        Ok(())
    }

    /// Waits until the timeline reaches `value`. A submission that does not finish in time
    /// may still use its memory: the device is marked hung and nothing more is freed.
    fn wait_timeline(&mut self, value: u64) -> Result<()> {
        let (values, sems) = ([value], [self.timeline]);
        let wait = vk::SemaphoreWaitInfo::default().semaphores(&sems).values(&values);
        match unsafe { self.ctx.device.wait_semaphores(&wait, WAIT.as_nanos() as u64) } {
            Ok(()) => Ok(()),
            Err(vk::Result::TIMEOUT) => {
                let why = format!("a submission did not finish within {WAIT:?}");
                self.lost = Some(why.clone());
                self.hung = true;
                Err(Error::DeviceLost(why))
            }
            Err(e) => Err(vk_err("vkWaitSemaphores", e)),
        }
    }

    /// Timestamps `first..first + count` of the last submission, in ticks (masked to the
    /// valid bits, relative to the first so a wrap-around cannot matter).
    fn read_ticks(&self, first: u32, count: usize) -> Result<Vec<u64>> {
        let mut raw = vec![0u64; count];
        unsafe {
            self.ctx.device.get_query_pool_results(
                self.queries,
                first,
                &mut raw,
                vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
            )
        }
        .map_err(|e| vk_err("vkGetQueryPoolResults", e))?;
        let bits = self.ctx.caps.timestamp_bits;
        let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
        let origin = raw.first().copied().unwrap_or(0);
        Ok(raw.iter().map(|t| t.wrapping_sub(origin) & mask).collect())
    }

    fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as f64 * self.ctx.caps.timestamp_period as f64).round() as u64
    }

    /// Each op's kernel time, from the timestamps around it.
    fn op_times(&self, n: usize) -> Result<Vec<Option<u64>>> {
        let ticks = self.read_ticks(0, 2 * n)?;
        Ok(ticks.chunks(2).map(|p| Some(self.ticks_to_ns(p[1].saturating_sub(p[0])))).collect())
    }

    /// The device's busy time over the submission's chunks.
    fn busy_ns(&self, chunks: usize) -> Result<u64> {
        let ticks = self.read_ticks(CHUNK_QUERIES, 2 * chunks)?;
        let spans: Vec<(u64, u64)> = ticks.chunks(2).map(|p| (p[0], p[1])).collect();
        Ok(self.ticks_to_ns(union_length(spans)))
    }
    /// Writes outputs back to the host views, records the new replicas, frees the rest.
    fn finish(&mut self, ops: &[(&OpDesc, &OpMemory)], mut seg: Segment) -> Result<()> {
        let mut release = std::mem::take(&mut seg.temporary);
        let new_replicas = std::mem::take(&mut seg.new_replicas);
        let mut written = Vec::with_capacity(ops.len());
        for ((op, mem), o) in ops.iter().zip(&seg.outputs) {
            let v = &op.output;
            if o.written_back {
                self.written_back += v.bytes() as u64;
                let src = o.staging.unwrap_or(o.alloc);
                let dst = mem.ptr(v)?;
                unsafe { pack::unpack(v, src.bytes_mut(v.bytes()), dst) };
            }
            let buf = mem.buffer(v.buffer)?;
            buf.touch();
            written.push((o, buf.clone()));
        }
        // A replica the submission read is current for the final version when no op from its
        // first reader on wrote into it (earlier writes were patched into it on the device);
        // else it is dropped. Outputs through the same view replace it below.
        let outputs = &seg.outputs;
        let is_output = |u: &Used| seg.outputs_of(u.view.buffer).iter().any(|&k| outputs[k].key == u.key);
        let verdict = |u: &Used| -> Option<u64> {
            if is_output(u) {
                return None;
            }
            let later_write = seg
                .outputs_of(u.view.buffer)
                .iter()
                .any(|&k| k >= u.first_op && overlaps(&outputs[k].view, &u.view));
            if later_write {
                return None;
            }
            ops[u.first_op].1.buffer(u.view.buffer).ok().map(|b| b.version())
        };
        for u in seg.used.iter().filter(|u| u.looked_up) {
            match verdict(u) {
                Some(version) => self.residency.set_version(&u.key, version),
                None if is_output(u) => {}
                None => release.extend(self.residency.forget(&u.key)),
            }
        }
        for r in new_replicas {
            let Some(u) = seg.used.iter().find(|u| u.key == r.key && !u.looked_up) else {
                release.push(r.alloc);
                continue;
            };
            match verdict(u) {
                Some(version) => {
                    if let Some(old) = self.residency.insert(r.key, version, r.owner, r.alloc, r.bytes) {
                        release.push(old);
                    }
                }
                None => release.push(r.alloc),
            }
        }
        // The device copy of each output is current for the version just written: keep it
        // as a replica so a following op reads it without an upload.
        for (i, (o, buf)) in written.into_iter().enumerate() {
            let bytes = o.alloc.size;
            // A later output of this segment that overlaps differently made this copy stale.
            let v = &ops[i].0.output;
            let overwritten = seg.outputs_of(v.buffer).iter().filter(|&&k| k > i).any(|&k| {
                let w = &outputs[k].view;
                overlaps(w, v) && w != v
            });
            if overwritten {
                release.push(o.alloc);
                continue;
            }
            if let Some(old) =
                self.residency.insert(o.key, buf.version(), Arc::downgrade(&buf), o.alloc, bytes)
            {
                if old != o.alloc {
                    release.push(old);
                }
            }
        }
        self.free_all(release);
        let mut evicted = Vec::new();
        self.residency.evict_to(self.budget, &mut evicted);
        self.free_all(evicted);
        Ok(())
    }
}

/// Counters for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Host views with a current copy in device memory.
    pub replicas: usize,
    pub replica_bytes: u64,
    /// Device memory held in pool blocks.
    pub reserved_bytes: u64,
    /// Bytes uploaded from host views since the backend opened.
    pub uploaded_bytes: u64,
    /// Bytes written back to host views since the backend opened.
    pub written_back_bytes: u64,
    /// Bytes of host views the GPU read in place (unified memory), not counted as uploads.
    pub zero_copy_bytes: u64,
    /// Bytes of the uploads the GPU copied straight from imported host memory (no staging).
    pub imported_upload_bytes: u64,
    /// Submissions run (a segment takes more than one only where an overlap cannot be
    /// mapped on the device).
    pub submissions: u64,
    /// Command buffers submitted (a submission is cut into chunks, `Chunking`).
    pub command_buffers: u64,
}

fn allocate_command_buffer(d: &ash::Device, pool: vk::CommandPool) -> Result<vk::CommandBuffer> {
    let info = vk::CommandBufferAllocateInfo::default()
        .command_pool(pool)
        .level(vk::CommandBufferLevel::PRIMARY)
        .command_buffer_count(1);
    let cbs =
        unsafe { d.allocate_command_buffers(&info) }.map_err(|e| vk_err("vkAllocateCommandBuffers", e))?;
    Ok(cbs[0])
}

/// What the commands of a submission bind: a pipeline per op (None for copies), the patch
/// shaders' pipelines in the order of `Segment::patches`, and descriptor sets: the ops' first,
/// then the patch shaders'.
struct Bound {
    pipelines: Vec<Option<vk::Pipeline>>,
    patch_pipelines: Vec<vk::Pipeline>,
    sets: Vec<vk::DescriptorSet>,
}

/// Total length of the union of `[start, end)` spans: a chunk may start while the one before
/// still runs, and the GPU waiting for the host between chunks is not busy.
fn union_length(mut spans: Vec<(u64, u64)>) -> u64 {
    spans.sort_unstable();
    let (mut total, mut reach) = (0, 0);
    for (start, end) in spans {
        let from = start.max(reach);
        total += end.saturating_sub(from);
        reach = reach.max(end);
    }
    total
}

/// Makes every earlier shader or transfer write visible to every later read or write.
unsafe fn barrier(d: &ash::Device, cb: vk::CommandBuffer) {
    let all = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
    let b = vk::MemoryBarrier::default()
        .src_access_mask(vk::AccessFlags::SHADER_WRITE | vk::AccessFlags::TRANSFER_WRITE)
        .dst_access_mask(
            vk::AccessFlags::SHADER_READ
                | vk::AccessFlags::SHADER_WRITE
                | vk::AccessFlags::TRANSFER_READ
                | vk::AccessFlags::TRANSFER_WRITE,
        );
    d.cmd_pipeline_barrier(cb, all, all, vk::DependencyFlags::empty(), &[b], &[], &[]);
}

/// Length of the longest prefix that can share one submission: at most MAX_OPS ops, and an
/// op that reads memory an earlier op of the prefix wrote must read it either through that
/// op's own output view, or through a view the written part maps into (`device_patch`: a
/// KV-cache row into the whole cache, a scratch buffer written under another shape).
pub fn segment_end(ops: &[(&OpDesc, &OpMemory)]) -> usize {
    for j in 1..ops.len().min(MAX_OPS) {
        let op = ops[j].0;
        let beta_reads_c = op.kind == OpKind::Matmul && op.params.beta != 0.0;
        let reads = op.inputs.iter().flatten().chain(beta_reads_c.then_some(&op.output));
        for r in reads {
            let unmappable = ops[..j].iter().any(|(earlier, _)| {
                let w = &earlier.output;
                w.buffer == r.buffer && w != r && overlaps(w, r) && !pack::mappable(w, r)
            });
            if unmappable {
                return j;
            }
        }
    }
    ops.len().min(MAX_OPS)
}

/// Memory touched since the last barrier of a command buffer.
#[derive(Default)]
struct Hazards {
    read: Vec<Allocation>,
    written: Vec<Allocation>,
}

impl Hazards {
    /// A command reading `reads` and writing `writes` must wait for earlier ones: it reads
    /// what they wrote, or writes what they read or wrote.
    fn conflict(&self, reads: &[Allocation], writes: &[Allocation]) -> bool {
        let meet = |a: &Allocation, b: &Allocation| {
            a.buffer == b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size
        };
        reads.iter().any(|r| self.written.iter().any(|w| meet(r, w)))
            || writes.iter().any(|w| self.written.iter().chain(&self.read).any(|x| meet(w, x)))
    }

    fn note(&mut self, reads: &[Allocation], writes: &[Allocation]) {
        self.read.extend_from_slice(reads);
        self.written.extend_from_slice(writes);
    }

    fn clear(&mut self) {
        self.read.clear();
        self.written.clear();
    }
}

/// Whether dense view `w` spans every byte of `r` (so writing it rewrites all of `r`).
fn covers(w: &TensorView, r: &TensorView) -> bool {
    let (w0, w1) = w.byte_range();
    let (r0, r1) = r.byte_range();
    w.dtype.size() == r.dtype.size() && w0 <= r0 && r1 <= w1 && (r0 - w0) % w.dtype.size() == 0
}

fn overlaps(a: &TensorView, b: &TensorView) -> bool {
    let (a0, a1) = a.byte_range();
    let (b0, b1) = b.byte_range();
    a0 < b1 && b0 < a1
}

#[derive(Default)]
struct Segment {
    /// Per op: the allocation bound to each slot.
    slots: Vec<[Option<Allocation>; BINDINGS as usize]>,
    outputs: Vec<Output>,
    /// Indices into `outputs` by buffer, ascending: operands look up only the outputs of
    /// their own buffer (a 211-op decode step scanned every output for every operand).
    outputs_by_buffer: HashMap<BufferId, Vec<usize>>,
    new_replicas: Vec<NewReplica>,
    /// Staging copies recorded before the first dispatch: (staging, device, bytes).
    copies_in: Vec<(Allocation, Allocation, u64)>,
    /// Freed after the segment, whatever happens.
    temporary: Vec<Allocation>,
    /// Device copies recorded just before an op's dispatch.
    patches: Vec<Patch>,
    /// How many of them run the `patch` shader (each takes a descriptor set).
    patch_dispatches: usize,
    /// Replicas the submission read (looked up or made), with the first op that read them.
    used: Vec<Used>,
}

impl Segment {
    fn push_output(&mut self, o: Output) {
        self.outputs_by_buffer.entry(o.view.buffer).or_default().push(self.outputs.len());
        self.outputs.push(o);
    }

    /// Indices of the outputs written into `buffer`, in op order.
    fn outputs_of(&self, buffer: BufferId) -> &[usize] {
        self.outputs_by_buffer.get(&buffer).map_or(&[], |v| v.as_slice())
    }

    /// Indices of the outputs that overlap `v`, in op order.
    fn overlapping(&self, v: &TensorView) -> Vec<usize> {
        self.outputs_of(v.buffer).iter().copied().filter(|&k| overlaps(&self.outputs[k].view, v)).collect()
    }
}

/// What an earlier op of the submission wrote (`src`) brought into `dst` before op `op`.
struct Patch {
    op: usize,
    src: Allocation,
    dst: Allocation,
    copy: PatchCopy,
}

enum PatchCopy {
    /// (source byte, destination byte, bytes).
    Regions(Vec<(u64, u64, u64)>),
    /// The `patch` shader over `src` (binding 0) into `dst` (binding 4).
    Shader { shader: &'static str, push: Vec<u8>, groups: [u32; 3] },
}

/// Patch dispatches one submission may hold (each takes a descriptor set).
const MAX_PATCH_DISPATCHES: usize = 3 * MAX_OPS;
/// A set per op and per patch dispatch.
const DESCRIPTOR_SETS: u32 = (MAX_OPS + MAX_PATCH_DISPATCHES) as u32;

struct Used {
    key: ReplicaKey,
    view: TensorView,
    first_op: usize,
    /// An existing replica (patches change it in place), not one made by this submission.
    looked_up: bool,
}

struct Output {
    key: ReplicaKey,
    view: TensorView,
    alloc: Allocation,
    staging: Option<Allocation>,
    /// Copied back to the host view (false: a later op of the submission overwrites it).
    written_back: bool,
}

struct NewReplica {
    key: ReplicaKey,
    owner: std::sync::Weak<crate::memory::Buffer>,
    alloc: Allocation,
    bytes: u64,
}

#[derive(Default)]
struct Made {
    cmd_pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    desc_pool: vk::DescriptorPool,
    queries: vk::QueryPool,
    timeline: vk::Semaphore,
}

impl Made {
    fn destroy(&self, d: &ash::Device) {
        unsafe {
            d.destroy_semaphore(self.timeline, None);
            d.destroy_query_pool(self.queries, None);
            d.destroy_descriptor_pool(self.desc_pool, None);
            d.destroy_command_pool(self.cmd_pool, None);
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let d = &self.ctx.device;
        unsafe {
            let _ = d.device_wait_idle();
        }
        let mut all = Vec::new();
        self.residency.clear(&mut all);
        all.push(self.dummy);
        if !self.hung {
            self.free_all(all);
        }
        Made {
            cmd_pool: self.cmd_pool,
            cmd: self.cmds[0],
            desc_pool: self.desc_pool,
            queries: self.queries,
            timeline: self.timeline,
        }
        .destroy(&self.ctx.device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ash::vk::Handle;

    fn at(buffer: u64, offset: u64, size: u64) -> Allocation {
        Allocation {
            heap: HeapKind::Device,
            block: 0,
            buffer: vk::Buffer::from_raw(buffer),
            offset,
            size,
            mapped: None,
        }
    }

    #[test]
    fn chunks_start_small_then_grow_and_a_short_tail_joins_the_last() {
        let c = Chunking { first: 16, every: 64 };
        assert_eq!(c.ends(211), vec![16, 80, 144, 211], "a 3-op tail joins the chunk before");
        assert_eq!(c.ends(240), vec![16, 80, 144, 208, 240], "a 32-op tail is its own chunk");
        assert_eq!(c.ends(24), vec![16, 24], "the first chunk stays small whatever follows");
        assert_eq!(c.ends(16), vec![16]);
        assert_eq!(c.ends(3), vec![3]);
        assert_eq!(Chunking::WHOLE.ends(MAX_OPS), vec![MAX_OPS]);
        assert_eq!(Chunking { first: 1, every: 1 }.ends(3), vec![1, 2, 3]);
    }

    #[test]
    fn long_submissions_are_timed_op_by_op_at_first_then_one_in_sixteen() {
        let timed: Vec<u64> = (0..64).filter(|&runs| OpTimestamps::Sampled.times_ops(runs, 211)).collect();
        let mut expected: Vec<u64> = (0..SAMPLED_FIRST).collect();
        expected.extend([16, 32, 48]);
        assert_eq!(timed, expected);
        assert!(
            (0..64).all(|runs| OpTimestamps::Sampled.times_ops(runs, ALWAYS_TIMED_OPS)),
            "short ones always"
        );
        assert!((0..64).all(|runs| OpTimestamps::Always.times_ops(runs, 211)));
        assert!(!(0..64).any(|runs| OpTimestamps::Never.times_ops(runs, 1)));
    }

    #[test]
    fn busy_time_counts_overlapping_chunks_once_and_gaps_not_at_all() {
        assert_eq!(union_length(vec![(0, 10), (5, 20)]), 20, "the next chunk started early");
        assert_eq!(union_length(vec![(30, 40), (0, 10)]), 20, "the GPU waited for the host between");
        assert_eq!(union_length(vec![(0, 50), (10, 20)]), 50, "one inside the other");
        assert_eq!(union_length(Vec::new()), 0);
    }

    #[test]
    fn barriers_only_where_commands_touch_what_unfenced_ones_wrote_or_read() {
        let mut h = Hazards::default();
        let (x, q, k, y) = (at(1, 0, 64), at(1, 64, 64), at(1, 128, 64), at(2, 0, 64));
        h.note(&[x], &[q]);
        assert!(!h.conflict(&[x], &[k]), "k = x Wk is independent of q = x Wq");
        h.note(&[x], &[k]);
        assert!(h.conflict(&[q], &[y]), "reads what an unfenced command wrote");
        assert!(h.conflict(&[y], &[x]), "writes what an unfenced command read");
        assert!(h.conflict(&[], &[at(1, 100, 8)]), "writes into what one wrote");
        assert!(!h.conflict(&[at(1, 192, 8)], &[at(3, 0, 8)]), "neighbouring bytes are not shared");
        h.clear();
        assert!(!h.conflict(&[q, k], &[x]), "a barrier fences everything before it");
    }
}
