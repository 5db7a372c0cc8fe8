//! Which devices a runtime opens, and opening them. The CPU is always device 0: it runs
//! every op and is the backstop of every policy.

use super::RuntimeConfig;
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::error::Result;

#[derive(Clone, Debug, Default)]
pub struct DeviceSelection {
    /// Look for Vulkan GPUs.
    pub gpu: bool,
    /// Look for an AMD NPU through XRT.
    pub npu: bool,
    /// Add a simulated NPU (a model, never presented as hardware).
    pub simulated_npu: bool,
}

pub fn probe(config: &RuntimeConfig) -> Result<Vec<Box<dyn Backend>>> {
    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        config.threads
    };
    let devices: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new(threads)?)];
    Ok(devices)
}
