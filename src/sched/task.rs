//! A submitted op on its way through the scheduler.

use super::segment::SegmentRun;
use crate::backend::OpMemory;
use crate::event::Event;
use crate::memory::BufferId;
use crate::op::OpDesc;
use crate::policy::CompiledPolicy;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::sync::{Arc, OnceLock};

/// One byte range of one buffer that a task reads or writes.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub buffer: BufferId,
    pub start: usize,
    pub end: usize,
    pub write: bool,
}

impl Access {
    pub fn conflicts(&self, other: &Access) -> bool {
        self.buffer == other.buffer
            && (self.write || other.write)
            && self.start < other.end
            && other.start < self.end
    }
}

pub struct Task {
    pub id: u64,
    pub op: Arc<OpDesc>,
    pub mem: OpMemory,
    /// Completed once per part; a graph's ops share the graph's event (one part each).
    pub event: Event,
    /// The policy in force when the op was submitted: it finishes under it.
    pub policy: Arc<CompiledPolicy>,
    pub accesses: Vec<Access>,
    /// Unfinished tasks this one waits for.
    pub pending: AtomicUsize,
    /// Tasks waiting for this one (guarded by the hazard tracker's lock).
    pub dependents: Mutex<Vec<Arc<Task>>>,
    /// Parts (of a split op) still running; the last one retires the task.
    pub parts_left: AtomicU32,
    /// Set when an op this one depends on failed: this one fails too, without running.
    pub failed_input: Mutex<Option<crate::error::Error>>,
    /// The first error of any of its parts. Kept here, not read back from the event, which a
    /// graph's ops share.
    pub error: Mutex<Option<crate::error::Error>>,
    /// Where the graph's placement put it (unset: chosen when it is dispatched).
    pub placement: OnceLock<Placement>,
}

/// A graph op's place from the whole-graph plan (see `segment.rs`).
pub enum Placement {
    /// Runs on this device (per op), where it is still usable.
    Device(usize),
    /// Runs as part of a segment.
    Segment(Arc<SegmentRun>),
}

impl Task {
    pub fn segment(&self) -> Option<&Arc<SegmentRun>> {
        match self.placement.get() {
            Some(Placement::Segment(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether this task and `other` are members of the same segment.
    pub fn same_segment(&self, other: &Task) -> bool {
        matches!((self.segment(), other.segment()), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
    }
}

impl Task {
    pub fn new(id: u64, op: Arc<OpDesc>, mem: OpMemory, event: Event, policy: Arc<CompiledPolicy>) -> Task {
        let mut accesses = Vec::with_capacity(crate::op::MAX_INPUTS + 1);
        for v in op.inputs.iter().flatten() {
            let (start, end) = v.byte_range();
            accesses.push(Access { buffer: v.buffer, start, end, write: false });
        }
        let (start, end) = op.output.byte_range();
        accesses.push(Access { buffer: op.output.buffer, start, end, write: true });
        Task {
            id,
            op,
            mem,
            event,
            policy,
            accesses,
            pending: AtomicUsize::new(0),
            dependents: Mutex::new(Vec::new()),
            parts_left: AtomicU32::new(1),
            failed_input: Mutex::new(None),
            error: Mutex::new(None),
            placement: OnceLock::new(),
        }
    }
}
