//! What the GPU benchmarks share: a runtime over every core and the Vulkan GPU, with no
//! saved history and no background threads, and the index of its usable GPU.

use npuhybrid::backend::DeviceKind;
use npuhybrid::runtime::DeviceSelection;
use npuhybrid::{PolicySource, Runtime, RuntimeConfig};

pub fn config(policy: PolicySource) -> RuntimeConfig {
    RuntimeConfig {
        devices: DeviceSelection { gpu: true, ..Default::default() },
        perf_cache_dir: None,
        thermal_period: None,
        telemetry_period: None,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        policy,
        ..Default::default()
    }
}

/// Index of the first available GPU, if any.
pub fn gpu_index(rt: &Runtime) -> Option<usize> {
    (0..rt.device_count()).find(|&i| {
        let info = rt.device_info(i).unwrap();
        info.available && info.kind == DeviceKind::Gpu
    })
}
