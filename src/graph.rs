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
    /// Where each buffer sits in `buffers`, and how many ops use it (0: a replaced op's
    /// buffer no op needs now; submission skips it, and the list is compacted when such
    /// entries pile up). Replacing an op is then proportional to that op, not to the graph.
    position: std::collections::HashMap<BufferId, u32>,
    users: Vec<u32>,
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
        if index >= n {
            return Err(crate::Error::invalid(format!(
                "graph op index {index} is out of range: the graph has {n} ops"
            )));
        }
        let idx = self.buffer_indices(&op);
        for &i in &std::mem::replace(&mut self.op_buffers[index], idx) {
            self.users[i as usize] -= 1;
        }
        self.ops[index] = Arc::new(op);
        self.note_validator(runtime);
        let unused = self.users.iter().filter(|&&u| u == 0).count();
        if unused > 16 && unused * 2 > self.buffers.len() {
            self.rebuild_buffers();
        }
        Ok(())
    }

    fn note_validator(&mut self, runtime: u64) {
        self.validated_by = if self.ops.is_empty() || self.validated_by == runtime { runtime } else { 0 };
    }

    /// Indices of the op's distinct buffers in `self.buffers` (adding new ones), each counted
    /// as used once more.
    fn buffer_indices(&mut self, op: &OpDesc) -> Vec<u32> {
        let mut idx: Vec<u32> = Vec::with_capacity(crate::op::MAX_INPUTS + 1);
        for v in op.views() {
            let i = *self.position.entry(v.buffer).or_insert_with(|| {
                self.buffers.push(v.buffer);
                self.users.push(0);
                (self.buffers.len() - 1) as u32
            });
            if !idx.contains(&i) {
                idx.push(i);
                self.users[i as usize] += 1;
            }
        }
        idx
    }

    /// The buffer list again from the ops, dropping buffers no op uses.
    fn rebuild_buffers(&mut self) {
        self.buffers.clear();
        self.position.clear();
        self.users.clear();
        let ops = std::mem::take(&mut self.ops);
        self.op_buffers = ops.iter().map(|op| self.buffer_indices(op)).collect();
        self.ops = ops;
    }

    /// The runtime that validated every op, if one did (0 otherwise).
    pub(crate) fn validated_by(&self) -> u64 {
        self.validated_by
    }

    /// Distinct buffers of the graph (None where no op uses one now), and per op the indices
    /// of the ones it uses.
    pub(crate) fn buffers(&self) -> (Vec<Option<BufferId>>, &[Vec<u32>]) {
        let ids = self.buffers.iter().zip(&self.users).map(|(&b, &u)| (u > 0).then_some(b)).collect();
        (ids, &self.op_buffers)
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
