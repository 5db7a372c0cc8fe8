//! CPU backend (placeholder until the CPU kernels land on this branch).

use crate::error::{Error, Result};
use crate::op::OpDesc;

use super::OpMemory;

/// Runs any op on the host, on the current rayon pool. Every other backend may use it as its
/// reference or for the math of a simulated device.
pub fn execute_on_host(op: &OpDesc, _mem: &OpMemory) -> Result<()> {
    Err(Error::Unsupported(format!(
        "{} not yet implemented on the CPU",
        op.kind
    )))
}
