//! Which devices a runtime opens, and opening them. The CPU is always device 0: it runs
//! every op and is the backstop of every policy. Devices that were asked for and cannot be
//! used are still listed, unavailable, with the reason.

use super::RuntimeConfig;
use crate::backend::cpu::CpuBackend;
use crate::backend::sim::{SimNpu, SimNpuConfig};
use crate::backend::vulkan::VulkanBackend;
use crate::backend::xrt::XrtBackend;
use crate::backend::{Backend, DeviceKind, UnavailableBackend};
use crate::error::Result;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct DeviceSelection {
    /// Look for Vulkan GPUs.
    pub gpu: bool,
    /// Look for an AMD NPU through XRT.
    pub npu: bool,
    /// Directory of prebuilt NPU kernels (else `NPUHYBRID_XRT_KERNELS`).
    pub xrt_kernel_dir: Option<PathBuf>,
    /// Add a simulated NPU with this model (a model, never presented as hardware).
    pub simulated_npu: Option<SimNpuConfig>,
}

pub fn probe(config: &RuntimeConfig) -> Result<Vec<Box<dyn Backend>>> {
    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        config.threads
    };
    let mut devices: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::with_options(threads, config.cpu)?)];
    let sel = &config.devices;
    if sel.gpu {
        match VulkanBackend::probe() {
            Ok(gpus) if !gpus.is_empty() => {
                devices.extend(gpus.into_iter().map(|g| Box::new(g) as Box<dyn Backend>))
            }
            Ok(_) => devices.push(Box::new(UnavailableBackend::new(
                DeviceKind::Gpu,
                "Vulkan GPU",
                "no Vulkan device with a compute queue",
            ))),
            Err(e) => {
                devices.push(Box::new(UnavailableBackend::new(DeviceKind::Gpu, "Vulkan GPU", e.to_string())))
            }
        }
    }
    if sel.npu {
        match XrtBackend::probe(sel.xrt_kernel_dir.as_deref()) {
            Ok(npu) => devices.push(Box::new(npu)),
            Err(reason) => {
                devices.push(Box::new(UnavailableBackend::new(DeviceKind::Npu, "AMD NPU (XRT)", reason)))
            }
        }
    }
    if let Some(cfg) = &sel.simulated_npu {
        devices.push(Box::new(SimNpu::new(cfg.clone())));
    }
    for d in &devices {
        let info = d.info();
        if info.available {
            log::info!("device: {} ({})", info.name, info.kind.name());
        } else {
            log::info!("device: {} unavailable: {}", info.name, info.unavailable_reason);
        }
    }
    Ok(devices)
}
