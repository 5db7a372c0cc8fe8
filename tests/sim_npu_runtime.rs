//! The simulated NPU as a runtime device: real results, faults that the scheduler falls back
//! from, and the model's counters seen through a shared handle.

mod common;

use common::*;
use npuhybrid::backend::sim::{Fault, SimNpu, SimNpuConfig};
use npuhybrid::backend::{Backend, DeviceKind};
use std::sync::Arc;

fn sim(cfg: SimNpuConfig) -> (Arc<SimNpu>, Box<dyn Backend>) {
    let npu = Arc::new(SimNpu::new(SimNpuConfig { virtual_time: true, ..cfg }));
    (Arc::clone(&npu), Box::new(npu))
}

/// Runs the same matmul eight times, one after another, and checks its result.
fn eight_matmuls_checked(rt: &npuhybrid::Runtime) {
    let (m, k, n) = (256, 320, 192);
    let (a, b) = (random(m * k, 1), random(k * n, 2));
    let (ab, bb, cb) = (upload(rt, &a), upload(rt, &b), rt.alloc(m * n * 4).unwrap());
    for _ in 0..8 {
        rt.submit(matmul(ab, bb, cb, m, k, n)).unwrap().wait(None).unwrap();
    }
    assert_close(&download(rt, cb, m * n), &reference_matmul(&a, &b, m, k, n), 1e-4);
}

#[test]
fn runs_ops_with_correct_results() {
    let (npu, dev) = sim(SimNpuConfig {
        peak_gflops: vec![(npuhybrid::op::DType::F32, 1e6)],
        launch_latency: std::time::Duration::ZERO,
        ..Default::default()
    });
    let rt = runtime_with(vec![dev]);
    let info = rt.device_info(1).unwrap();
    assert_eq!(info.kind, DeviceKind::SimulatedNpu);
    assert!(info.name.contains("Simulated"));
    eight_matmuls_checked(&rt);
    let ran = npu.stats().ops;
    assert!(ran > 0, "a device 1000x faster than the CPU gets work");
    assert_eq!(ran + rt.device_stats(0).unwrap().ops_run, 8, "every op ran once somewhere");
}

#[test]
fn a_simulated_npu_computing_on_the_hosts_cores_is_never_expected_to_beat_the_host() {
    // The same NPU model, 1000x faster than the CPU, but on the wall clock: its math runs on
    // the host's cores, so the scheduler must not expect it to finish a matmul sooner than the
    // CPU would (its model alone sent every new graph shape there first).
    let npu = Arc::new(SimNpu::new(SimNpuConfig {
        peak_gflops: vec![(npuhybrid::op::DType::F32, 1e6)],
        launch_latency: std::time::Duration::ZERO,
        virtual_time: false,
        ..Default::default()
    }));
    let rt = runtime_with(vec![Box::new(Arc::clone(&npu))]);
    eight_matmuls_checked(&rt);
    assert_eq!(npu.stats().ops, 0, "no matmul went to the host's cores by way of the simulation");
    assert_eq!(rt.device_stats(0).unwrap().ops_run, 8);
}

#[test]
fn random_failures_and_loss_lose_no_op() {
    let (npu, dev) = sim(SimNpuConfig {
        faults: vec![Fault::FailFraction { fraction: 0.1, seed: 9 }],
        // Much faster than the CPU (the scheduler adds its own launch cost for NPUs) so the
        // scheduler keeps choosing it until it is lost.
        peak_gflops: vec![(npuhybrid::op::DType::F32, 1e6)],
        launch_latency: std::time::Duration::ZERO,
        ..Default::default()
    });
    let rt = runtime_with(vec![dev]);
    // Matmuls to the NPU first whatever the performance model has learned (it learns from
    // wall time, and the simulated NPU computes on the host), no retries there: every op meets
    // the NPU, so the faults are met and each one is a fallback.
    let policy = "policy \"npu_first\"\nrule mm {\n  when op = matmul\n  use npu, cpu\n  strategy first_available\n}\nrule rest {\n  use cpu\n}\nfallback {\n  retries = 0\n  degrade_for = 1 ms\n}\n";
    rt.load_policy(&npuhybrid::PolicySource::Source { origin: "npu_first.nhp".into(), text: policy.into() })
        .unwrap();
    let (m, k, n) = (256, 256, 256);
    let (a, b) = (random(m * k, 3), random(k * n, 4));
    let (ab, bb) = (upload(&rt, &a), upload(&rt, &b));
    let want = reference_matmul(&a, &b, m, k, n);
    for i in 0..60 {
        if i == 30 {
            npu.inject(Fault::DeviceLost);
        }
        let cb = rt.alloc(m * n * 4).unwrap();
        rt.submit(matmul(ab, bb, cb, m, k, n)).unwrap().wait(None).unwrap();
        assert_close(&download(&rt, cb, m * n), &want, 1e-4);
        rt.destroy_buffer(cb).unwrap();
    }
    let st = npu.stats();
    assert!(st.failed > 0 && st.ops > 0, "the NPU ran ops and failed some: {st:?}");
    assert!(npu.is_lost(), "lost half-way; every later op ran on the CPU");
    let stats = rt.stats();
    assert_eq!((stats.ops_completed, stats.ops_failed), (60, 0), "{stats:?}");
    let dev = rt.device_stats(1).unwrap();
    assert!(dev.failures >= 2, "a random failure before the loss and the loss itself: {dev:?}");
    assert_eq!(dev.fallbacks, dev.failures, "every failure fell back (no retries): {dev:?}");
    assert_eq!(stats.fallbacks, dev.fallbacks, "the runtime counts the same fallbacks");
    assert_eq!(rt.device_stats(0).unwrap().failures, 0, "the CPU never failed");
}
