//! The pipeline cache is written to the cache directory when the backend closes and read
//! back by the next one.

use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use std::sync::Arc;

fn run_softmax(gpu: &VulkanBackend) {
    let pool = HostPool::new(0);
    let a = Arc::new(Buffer::pooled(1, pool.alloc(64).unwrap(), 64));
    let o = Arc::new(Buffer::pooled(2, pool.alloc(64).unwrap(), 64));
    a.write(0, &[0u8; 64]).unwrap();
    let op = OpDesc::new(
        OpKind::Softmax,
        &[TensorView::contiguous(1, DType::F32, &[4, 4], 0)],
        TensorView::contiguous(2, DType::F32, &[4, 4], 0),
    );
    gpu.execute(&op, &OpMemory::new(vec![a, o.clone()])).unwrap();
    let mut back = [0u8; 4];
    o.read(0, &mut back).unwrap();
    assert_eq!(f32::from_le_bytes(back), 0.25);
}

#[test]
fn the_pipeline_cache_persists_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    // One test in this binary, so setting the variable races with nothing.
    std::env::set_var("NPUHYBRID_CACHE_DIR", dir.path());
    let gpu = VulkanBackend::probe().expect("a Vulkan device").remove(0);
    let file = gpu.pipeline_cache_file().expect("a cache file name");
    assert!(file.starts_with(dir.path()));
    run_softmax(&gpu);
    drop(gpu);
    let size = std::fs::metadata(&file).expect("cache written on close").len();
    assert!(size > 0);
    // A second backend starts from the file and still works.
    let gpu = VulkanBackend::probe().unwrap().remove(0);
    run_softmax(&gpu);
}
