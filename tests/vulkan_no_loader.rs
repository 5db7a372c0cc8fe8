//! Without a Vulkan loader (hidden by pointing the backend at a missing library) or without
//! any device, probing fails with a reason instead of taking the process down, and the CPU
//! backend still runs ops.

use npuhybrid::backend::cpu::CpuBackend;
use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use npuhybrid::Error;
use std::sync::Arc;

#[test]
fn a_missing_loader_or_device_is_reported_and_the_cpu_still_works() {
    // One test in this binary, so changing the environment races with nothing.
    std::env::set_var("NPUHYBRID_VULKAN_LOADER", "/nonexistent/libvulkan.so.1");
    match VulkanBackend::probe() {
        Err(Error::DeviceUnavailable(why)) => assert!(why.contains("loader"), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("probe found a device without a loader"),
    }
    std::env::remove_var("NPUHYBRID_VULKAN_LOADER");
    // A loader with no drivers: no device.
    std::env::set_var("VK_DRIVER_FILES", "/nonexistent/icd.json");
    std::env::set_var("VK_ICD_FILENAMES", "/nonexistent/icd.json");
    match VulkanBackend::probe() {
        Err(Error::DeviceUnavailable(why)) => assert!(!why.is_empty()),
        Err(e) => panic!("wrong error: {e}"),
        Ok(v) => panic!("found {} devices without drivers", v.len()),
    }

    let cpu = CpuBackend::new(1).unwrap();
    let pool = HostPool::new(0);
    let a = Arc::new(Buffer::pooled(1, pool.alloc(16).unwrap(), 16));
    let o = Arc::new(Buffer::pooled(2, pool.alloc(16).unwrap(), 16));
    let vals: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    a.write(0, &vals).unwrap();
    let op = OpDesc::new(
        OpKind::Scale,
        &[TensorView::contiguous(1, DType::F32, &[4], 0)],
        TensorView::contiguous(2, DType::F32, &[4], 0),
    );
    cpu.execute(&op, &OpMemory::new(vec![a, o.clone()])).unwrap();
    let mut back = [0u8; 16];
    o.read(0, &mut back).unwrap();
    assert_eq!(back, vals.as_slice());
}
