//! Recorded graphs: a sequence of validated ops submitted as one unit. Ordering between
//! them comes from the same read/write hazard tracking as single ops, so independent ops of
//! a graph run at once on different devices.
//!
//! A graph keeps its validated form: which runtime validated its ops, the distinct buffers
//! they touch and, per op, which of those it uses. Submitting it to that runtime again only
//! resolves each buffer handle once (a destroyed buffer still rejects the whole graph): a
//! live handle names the very buffer the op was validated against, with the same size, so
//! shapes, strides and bounds need no second check.

use crate::memory::BufferId;
use crate::op::OpDesc;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Shared with the scheduler's tasks: submitting copies no descriptor.
    ops: Vec<Arc<OpDesc>>,
    /// The runtime that validated every op (`Runtime::id`); 0 when empty or mixed.
    validated_by: u64,
    /// Distinct buffers the ops touch, and per op the indices of its buffers in that list
    /// (in the order `Runtime::prepare` resolves them).
    buffers: Vec<BufferId>,
    op_buffers: Vec<Vec<u32>>,
    /// The placement of the last submissions, reused while it holds (a decode step's graph
    /// is submitted once a token with a few ops replaced).
    plan: crate::sched::PlanCache,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds an op that runtime `runtime` (its `Runtime::id`) already validated.
    pub(crate) fn push_validated(&mut self, op: OpDesc, runtime: u64) {
        self.note_validator(runtime);
        let idx = self.buffer_indices(&op);
        self.op_buffers.push(idx);
        self.ops.push(Arc::new(op));
        self.plan.clear();
    }

    /// Replaces op `index` by an op that runtime `runtime` already validated.
    pub(crate) fn replace_validated(&mut self, index: usize, op: OpDesc, runtime: u64) -> crate::Result<()> {
        let n = self.ops.len();
        let slot = self.ops.get_mut(index).ok_or_else(|| {
            crate::Error::invalid(format!("graph op index {index} is out of range: the graph has {n} ops"))
        })?;
        *slot = Arc::new(op);
        self.note_validator(runtime);
        // Rebuild the buffer list: a buffer only the old op used must not be required.
        self.buffers.clear();
        let ops = std::mem::take(&mut self.ops);
        self.op_buffers = ops.iter().map(|op| self.buffer_indices(op)).collect();
        self.ops = ops;
        Ok(())
    }

    fn note_validator(&mut self, runtime: u64) {
        self.validated_by = if self.ops.is_empty() || self.validated_by == runtime { runtime } else { 0 };
    }

    /// Indices of the op's distinct buffers in `self.buffers`, adding new ones.
    fn buffer_indices(&mut self, op: &OpDesc) -> Vec<u32> {
        let mut idx: Vec<u32> = Vec::with_capacity(crate::op::MAX_INPUTS + 1);
        for v in op.views() {
            let i = match self.buffers.iter().position(|&b| b == v.buffer) {
                Some(i) => i,
                None => {
                    self.buffers.push(v.buffer);
                    self.buffers.len() - 1
                }
            } as u32;
            if !idx.contains(&i) {
                idx.push(i);
            }
        }
        idx
    }

    /// The runtime that validated every op, if one did (0 otherwise).
    pub(crate) fn validated_by(&self) -> u64 {
        self.validated_by
    }

    /// Distinct buffers of the graph, and per op the indices of the ones it uses.
    pub(crate) fn buffers(&self) -> (&[BufferId], &[Vec<u32>]) {
        (&self.buffers, &self.op_buffers)
    }

    pub fn ops(&self) -> impl ExactSizeIterator<Item = &OpDesc> {
        self.ops.iter().map(|op| &**op)
    }

    pub(crate) fn shared_ops(&self) -> &[Arc<OpDesc>] {
        &self.ops
    }

    pub(crate) fn plan_cache(&self) -> &crate::sched::PlanCache {
        &self.plan
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
