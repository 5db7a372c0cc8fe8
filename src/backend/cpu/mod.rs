//! CPU backend (placeholder until the CPU kernels land on this branch).

use crate::error::{Error, Result};
use crate::op::OpDesc;

use super::OpMemory;

/// Runs any op on the host, on the current rayon pool. Every other backend may use it as its
/// reference or for the math of a simulated device.
pub fn execute_on_host(op: &OpDesc, _mem: &OpMemory) -> Result<()> {
    Err(Error::Unsupported(format!("{} not yet implemented on the CPU", op.kind)))
}

/// TEMPORARY until the CPU backend lands.
pub struct CpuBackend {
    info: super::DeviceInfo,
}

impl CpuBackend {
    pub fn new(_threads: usize) -> Result<CpuBackend> {
        let mut info = super::DeviceInfo::unavailable(super::DeviceKind::Cpu, "cpu", "");
        info.available = true;
        info.ops = u32::MAX;
        info.dtypes = u32::MAX;
        info.peak_gflops = 50.0;
        info.bandwidth_gbs = 10.0;
        Ok(CpuBackend { info })
    }
}

impl super::Backend for CpuBackend {
    fn info(&self) -> &super::DeviceInfo {
        &self.info
    }
    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<super::ExecReport> {
        execute_on_host(op, mem).map(|_| super::ExecReport::default())
    }
}
