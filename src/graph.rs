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

    /// Replaces op `index` by an op that the runtime already validated.
    pub(crate) fn replace_validated(&mut self, index: usize, op: OpDesc) -> crate::Result<()> {
        let n = self.ops.len();
        let slot = self.ops.get_mut(index).ok_or_else(|| {
            crate::Error::invalid(format!("graph op index {index} is out of range: the graph has {n} ops"))
        })?;
        *slot = op;
        Ok(())
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
