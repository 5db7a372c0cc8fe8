//! Pipelines made ahead of use (on GPUs by default; turned on here under lavapipe): an op whose
//! pipeline does not exist yet is not ready on the device, its pipeline is made in the
//! background, and then the op is ready, without having run there. A later process (a new
//! backend on the same cache) takes ops whose pipelines the cache holds at once.

use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::Backend;
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use std::time::{Duration, Instant};

fn add() -> OpDesc {
    let v = |b| TensorView::contiguous(b, DType::F32, &[16], 0);
    OpDesc::new(OpKind::Add, &[v(1), v(2)], v(3))
}

fn softmax() -> OpDesc {
    OpDesc::new(
        OpKind::Softmax,
        &[TensorView::contiguous(1, DType::F32, &[4, 4], 0)],
        TensorView::contiguous(2, DType::F32, &[4, 4], 0),
    )
}

#[test]
fn a_missing_pipeline_is_made_in_the_background_then_the_op_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    // One test in this binary, so setting the variable races with nothing: an empty pipeline
    // cache, so the pipeline is really missing.
    std::env::set_var("NPUHYBRID_CACHE_DIR", dir.path());
    let gpu = VulkanBackend::probe().expect("a Vulkan device").remove(0);
    assert!(gpu.kernels_ready(&softmax()), "a CPU implementation compiles on first use");
    gpu.set_pipelines_ahead(true);
    assert!(!gpu.kernels_ready(&softmax()), "no softmax pipeline yet");
    let started = Instant::now();
    while !gpu.kernels_ready(&softmax()) {
        assert!(started.elapsed() < Duration::from_secs(120), "the pipeline was never made");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(gpu);

    let again = VulkanBackend::probe().expect("a Vulkan device").remove(0);
    again.set_pipelines_ahead(true);
    assert!(again.kernels_ready(&softmax()), "the cache holds the softmax pipeline an earlier run made");
    assert!(!again.kernels_ready(&add()), "no run made an add pipeline");
}
