//! Recorded graphs: a sequence of validated ops submitted as one unit. Ordering between
//! them comes from the same read/write hazard tracking as single ops, so independent ops of
//! a graph run at once on different devices.

use crate::op::OpDesc;

#[derive(Clone, Debug, Default)]
pub struct Graph {
    ops: Vec<OpDesc>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds an op that the runtime already validated.
    pub(crate) fn push_validated(&mut self, op: OpDesc) {
        self.ops.push(op);
    }

    pub fn ops(&self) -> &[OpDesc] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
