//! The environment switches of Vulkan submissions, read when a backend opens: a test binary
//! of its own, since it sets process-wide variables.

mod vulkan_util;

use npuhybrid::backend::vulkan::{Chunking, VulkanBackend};
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::op::{DType, OpDesc, OpKind};
use vulkan_util::*;

fn open_with(timestamps: &str, chunk: &str) -> VulkanBackend {
    std::env::set_var("NPUHYBRID_VULKAN_OP_TIMESTAMPS", timestamps);
    std::env::set_var("NPUHYBRID_VULKAN_CHUNK", chunk);
    VulkanBackend::probe().expect("a Vulkan device").remove(0)
}

/// Twelve adds in a row, each reading the one before.
fn adds() -> (Vec<Tensor>, Vec<(OpDesc, OpMemory)>) {
    let mut t = vec![Tensor::new(DType::F32, &[16], &[1.0; 16])];
    let mut ops = Vec::new();
    for i in 0..12 {
        t.push(Tensor::zeros(DType::F32, &[16]));
        let (a, b) = (&t[i], &t[i + 1]);
        ops.push((OpDesc::new(OpKind::Add, &[a.view, a.view], b.view), memory(&[a, b])));
    }
    (t, ops)
}

#[test]
fn timestamps_and_chunks_follow_the_environment() {
    let (t, ops) = adds();
    let pairs: Vec<(&OpDesc, &OpMemory)> = ops.iter().map(|(op, m)| (op, m)).collect();

    let never = open_with("0", "2,3");
    assert!(!never.times_kernels());
    let before = never.stats().command_buffers;
    let report = never.execute_segment(&pairs);
    assert!(report.error.is_none());
    assert!(report.reports.iter().all(|r| r.device_ns.is_none()), "=0: no op is timed");
    let chunks = Chunking { first: 2, every: 3 }.ends(12).len() as u64;
    assert_eq!(never.stats().command_buffers - before, chunks, "=2,3: chunks of 2, then 3");
    assert_eq!(t[12].values(), vec![4096.0; 16]);

    let always = open_with("1", "0");
    assert!(always.times_kernels());
    for _ in 0..20 {
        let before = always.stats().command_buffers;
        let report = always.execute_segment(&pairs);
        assert!(report.reports.iter().all(|r| r.device_ns.is_some()), "=1: every submission times its ops");
        assert_eq!(always.stats().command_buffers - before, 1, "0: one command buffer");
    }

    let sampled = open_with("", "");
    assert!(sampled.times_kernels(), "unset or anything else: sampled");
    let timed = (0..20).filter(|_| sampled.execute_segment(&pairs).reports[0].device_ns.is_some()).count();
    assert_eq!(timed, 8 + 1, "the first 8 long submissions, then the 16th");
}
