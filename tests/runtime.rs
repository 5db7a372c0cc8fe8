//! Black-box tests of the runtime through its Rust API: ops, graphs and hazards, fallback,
//! degradation, buffers, tracing, statistics and performance history.

mod common;

use common::*;
use npuhybrid::backend::DeviceKind;
use npuhybrid::op::{OpDesc, OpKind};
use npuhybrid::{Error, Runtime};
use std::time::Duration;

#[test]
fn matmul_runs_and_is_correct() {
    let rt = runtime_with(vec![]);
    let (m, k, n) = (17, 33, 9);
    let (a, b) = (random(m * k, 1), random(k * n, 2));
    let (ba, bb) = (upload(&rt, &a), upload(&rt, &b));
    let bc = rt.alloc(m * n * 4).unwrap();
    let ev = rt.submit(matmul(ba, bb, bc, m, k, n)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.device, Some(0));
    assert_close(&download(&rt, bc, m * n), &reference_matmul(&a, &b, m, k, n), 1e-4);
}

#[test]
fn dependent_ops_in_a_graph_run_in_order() {
    // x <- x + one, 100 times: any reordering or overlap changes the result.
    let rt = runtime_with(vec![Box::new(
        ScriptedDevice::new(DeviceKind::Gpu, "slow gpu", 1.0, Script::Works)
            .with_delay(Duration::from_micros(200)),
    )]);
    let n = 1000;
    let x = upload(&rt, &vec![0.0; n]);
    let one = upload(&rt, &vec![1.0; n]);
    let mut graph = npuhybrid::graph::Graph::new();
    for _ in 0..100 {
        rt.graph_add(&mut graph, add(x, one, x, n)).unwrap();
    }
    rt.submit_graph(&graph).unwrap().wait(None).unwrap();
    assert!(download(&rt, x, n).iter().all(|v| *v == 100.0));
    // Submitted again: graphs are replayable.
    rt.submit_graph(&graph).unwrap().wait(None).unwrap();
    assert!(download(&rt, x, n).iter().all(|v| *v == 200.0));
}

#[test]
fn write_after_read_waits_for_the_reader() {
    let rt = runtime_with(vec![]);
    let n = 1 << 16;
    let a = upload(&rt, &vec![2.0; n]);
    let b = upload(&rt, &vec![3.0; n]);
    let c = rt.alloc(n * 4).unwrap();
    let d = rt.alloc(n * 4).unwrap();
    // c = a + b reads a; then a = b + b overwrites a; then d = c + a.
    rt.submit(add(a, b, c, n)).unwrap();
    rt.submit(add(b, b, a, n)).unwrap();
    rt.submit(add(c, a, d, n)).unwrap().wait(None).unwrap();
    assert!(download(&rt, d, n).iter().all(|v| *v == 11.0));
}

#[test]
fn a_failing_device_falls_back_without_losing_the_op() {
    // The failing device looks 1000x faster, so earliest-completion picks it first.
    let rt = runtime_with(vec![Box::new(ScriptedDevice::new(
        DeviceKind::Gpu,
        "broken gpu",
        1e6,
        Script::AlwaysFails,
    ))]);
    let (m, k, n) = (256, 256, 256);
    let (a, b) = (random(m * k, 3), random(k * n, 4));
    let (ba, bb) = (upload(&rt, &a), upload(&rt, &b));
    let bc = rt.alloc(m * n * 4).unwrap();
    let ev = rt.submit(matmul(ba, bb, bc, m, k, n)).unwrap();
    ev.wait(None).unwrap();
    let info = ev.outcome().1;
    assert_eq!(info.device, Some(0), "must end on the CPU");
    assert_eq!(info.fallbacks, 1);
    assert_close(&download(&rt, bc, m * n), &reference_matmul(&a, &b, m, k, n), 1e-4);
    // The default policy retries once on the same device before falling back.
    assert_eq!(rt.device_stats(1).unwrap().failures, 2);
    assert_eq!(rt.device_stats(1).unwrap().fallbacks, 1);
    assert_eq!(rt.stats().fallbacks, 1);
}

#[test]
fn a_device_that_keeps_failing_is_degraded_and_left_alone() {
    let dev = ScriptedDevice::new(DeviceKind::Gpu, "flaky gpu", 1e6, Script::AlwaysFails);
    let calls = dev.calls.clone();
    let rt = runtime_with(vec![Box::new(dev)]);
    let a = upload(&rt, &vec![1.0; 256 * 256]);
    let out = rt.alloc(256 * 256 * 4).unwrap();
    for _ in 0..20 {
        let op = OpDesc::new(OpKind::Matmul, &[t(a, &[256, 256]), t(a, &[256, 256])], t(out, &[256, 256]));
        rt.submit(op).unwrap().wait(None).unwrap();
    }
    // The default policy retries once and degrades after 3 consecutive failures: op 1 fails
    // twice, op 2 fails once more and the device is degraded; no further op goes there.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    let s = rt.device_stats(1).unwrap();
    assert!(s.degraded);
    assert_eq!(rt.stats().ops_completed, 20);
    assert!(download(&rt, out, 256 * 256).iter().all(|v| *v == 256.0));
}

#[test]
fn a_lost_device_is_degraded_at_once() {
    let dev = ScriptedDevice::new(DeviceKind::SimulatedNpu, "lost npu", 1e6, Script::Lost);
    let calls = dev.calls.clone();
    let rt = runtime_with(vec![Box::new(dev)]);
    let a = upload(&rt, &vec![1.0; 256 * 256]);
    let out = rt.alloc(256 * 256 * 4).unwrap();
    for _ in 0..5 {
        let op = OpDesc::new(OpKind::Matmul, &[t(a, &[256, 256]), t(a, &[256, 256])], t(out, &[256, 256]));
        rt.submit(op).unwrap().wait(None).unwrap();
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(rt.device_stats(1).unwrap().degraded);
}

/// Lost is not a bad moment: the device stays out past any degradation period, until the
/// caller says it is back.
#[test]
fn a_lost_device_stays_out_until_it_is_reset() {
    let dev = ScriptedDevice::new(DeviceKind::SimulatedNpu, "lost npu", 1e6, Script::Lost);
    let calls = dev.calls.clone();
    let rt = runtime_with(vec![Box::new(dev)]);
    let policy = "policy \"npu\"\nrule mm {\n  use npu, cpu\n}\nfallback {\n  degrade_for = 1 ms\n}\n";
    rt.load_policy(&npuhybrid::PolicySource::Source { origin: "npu.nhp".into(), text: policy.into() })
        .unwrap();
    let a = upload(&rt, &[1.0; 64]);
    let out = rt.alloc(64 * 4).unwrap();
    let run = || rt.submit(add(a, a, out, 64)).unwrap().wait(None).unwrap();
    run();
    std::thread::sleep(std::time::Duration::from_millis(20));
    run();
    run();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "tried once, then left out");
    assert!(rt.device_stats(1).unwrap().degraded);
    rt.reset_device(1).unwrap();
    assert!(!rt.device_stats(1).unwrap().degraded);
    run();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "back in service after the reset");
    assert!(rt.reset_device(7).is_err());
}

#[test]
fn a_graph_over_a_destroyed_buffer_is_rejected_whole() {
    let rt = runtime_with(vec![]);
    let a = upload(&rt, &[1.0; 4]);
    let b = rt.alloc(16).unwrap();
    let mut graph = npuhybrid::graph::Graph::new();
    rt.graph_add(&mut graph, add(a, a, b, 4)).unwrap();
    rt.graph_add(&mut graph, add(b, b, b, 4)).unwrap();
    rt.destroy_buffer(b).unwrap();
    assert!(matches!(rt.submit_graph(&graph), Err(Error::InvalidHandle(_))));
    assert_eq!(rt.stats().ops_submitted, 0, "nothing of a rejected graph may run");
}

#[test]
fn imported_memory_is_used_without_copies() {
    let rt = runtime_with(vec![]);
    let mut host = vec![1.5f32; 256];
    let id = unsafe { rt.import(host.as_mut_ptr() as *mut u8, host.len() * 4).unwrap() };
    rt.submit(add(id, id, id, 256)).unwrap().wait(None).unwrap();
    rt.destroy_buffer(id).unwrap();
    assert!(host.iter().all(|v| *v == 3.0), "the op must have written the caller's memory");
}

#[test]
fn mapped_files_are_read_only_inputs() {
    let rt = runtime_with(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    std::fs::write(&path, bytemuck_f32(&[2.0f32; 16])).unwrap();
    let w = rt.map_file(&path).unwrap();
    let out = rt.alloc(64).unwrap();
    rt.submit(add(w, w, out, 16)).unwrap().wait(None).unwrap();
    assert!(download(&rt, out, 16).iter().all(|v| *v == 4.0));
    let err = rt.submit(add(out, out, w, 16)).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(rt.write(w, 0, &[0; 4]).is_err());
}

/// Issue 17, item 8: a mapped file truncated after mapping used to kill the process with
/// SIGBUS on the next read or op; reads and submits now notice it first and fail.
#[test]
fn a_mapped_file_truncated_later_is_an_error_not_sigbus() {
    let rt = runtime_with(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    std::fs::write(&path, vec![0u8; 3 * 4096]).unwrap();
    let w = rt.map_file(&path).unwrap();
    let out = rt.alloc(3 * 4096).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
    let mut back = vec![0u8; 3 * 4096];
    let err = rt.read(w, 0, &mut back).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    let err = rt.submit(add(w, w, out, 3 * 1024)).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    assert!(rt.map(w).is_err());
}

#[test]
fn pool_memory_returns_to_baseline() {
    let rt = runtime_with(vec![]);
    let before = rt.pool_stats();
    let ids: Vec<_> = (0..32).map(|i| rt.alloc(1000 + i * 4096).unwrap()).collect();
    assert!(rt.pool_stats().bytes_in_use > before.bytes_in_use);
    for id in ids {
        rt.destroy_buffer(id).unwrap();
    }
    let after = rt.pool_stats();
    assert_eq!(after.bytes_in_use, before.bytes_in_use);
    let again = rt.alloc(1000).unwrap();
    assert!(rt.pool_stats().reuses > after.reuses, "a freed block must be reused");
    rt.destroy_buffer(again).unwrap();
}

#[test]
fn trace_has_one_lane_per_device_and_one_slice_per_op() {
    let rt = runtime_with(vec![Box::new(ScriptedDevice::new(DeviceKind::Gpu, "gpu", 1e6, Script::Works))]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    rt.trace_start(&path).unwrap();
    let a = upload(&rt, &[1.0; 64]);
    let out = rt.alloc(256).unwrap();
    for _ in 0..5 {
        rt.submit(OpDesc::new(OpKind::Matmul, &[t(a, &[8, 8]), t(a, &[8, 8])], t(out, &[8, 8]))).unwrap();
    }
    rt.synchronize();
    rt.trace_stop().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let slices: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), 5);
    assert!(slices.iter().all(|e| e["name"] == "matmul" && e["dur"].as_f64().unwrap() >= 0.0));
    let lanes: Vec<_> = events.iter().filter(|e| e["name"] == "thread_name").collect();
    assert_eq!(lanes.len(), 3, "cpu, gpu and the scheduler lane");
    assert!(rt.trace_stop().is_err(), "no trace is running any more");
}

#[test]
fn many_threads_submit_at_once() {
    let rt = std::sync::Arc::new(runtime_with(vec![Box::new(ScriptedDevice::new(
        DeviceKind::SimulatedNpu,
        "npu",
        50.0,
        Script::Works,
    ))]));
    let handles: Vec<_> = (0..8)
        .map(|tid| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                let n = 256;
                let x = upload(&rt, &vec![0.0; n]);
                let one = upload(&rt, &vec![1.0; n]);
                let mut last = None;
                for _ in 0..200 {
                    last = Some(rt.submit(add(x, one, x, n)).unwrap());
                }
                last.unwrap().wait(None).unwrap();
                let v = download(&rt, x, n);
                assert!(v.iter().all(|e| *e == 200.0), "thread {tid}: {}", v[0]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = rt.stats();
    assert_eq!(s.ops_submitted, 1600);
    assert_eq!(s.ops_completed, 1600);
}

#[test]
fn tiny_ops_run_inline_on_an_idle_cpu() {
    let rt = runtime_with(vec![]);
    let a = upload(&rt, &[1.0; 16]);
    rt.submit(add(a, a, a, 16)).unwrap().wait(None).unwrap();
    assert_eq!(rt.stats().inline_ops, 1);
}

#[test]
fn a_graph_of_tiny_ops_runs_on_the_submitting_thread_fan_outs_included() {
    // x2 feeds three adds (a fan-out released by an op, as a decode step's rmsnorm releases
    // its q, k and v projections), which two more join: every op is tiny, so none is handed
    // to the CPU's worker thread.
    let rt = runtime_with(vec![]);
    let n = 16;
    let x = upload(&rt, &[1.0; 16]);
    let [x2, y1, y2, y3, z, w] = [(); 6].map(|_| rt.alloc(n * 4).unwrap());
    let mut graph = npuhybrid::graph::Graph::new();
    let ops = [
        add(x, x, x2, n),
        add(x2, x2, y1, n),
        add(x2, x2, y2, n),
        add(x2, x2, y3, n),
        add(y1, y2, z, n),
        add(z, y3, w, n),
    ];
    for op in ops {
        rt.graph_add(&mut graph, op).unwrap();
    }
    // Whether an op is tiny is the model's prediction, which the first runs teach (a cold
    // first run may look long): some run of twenty must have run every op inline.
    let mut most_inline = 0;
    for _ in 0..20 {
        let before = rt.stats().inline_ops;
        rt.submit_graph(&graph).unwrap().wait(None).unwrap();
        most_inline = most_inline.max(rt.stats().inline_ops - before);
    }
    assert!(download(&rt, w, n).iter().all(|v| *v == 12.0));
    assert_eq!(most_inline, 6, "every op ran on the submitting thread");
}

#[test]
fn performance_history_is_saved_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || npuhybrid::RuntimeConfig { perf_cache_dir: Some(dir.path().to_path_buf()), ..config() };
    {
        let rt = Runtime::with_backends(cfg(), vec![cpu()]).unwrap();
        let a = upload(&rt, &random(64 * 64, 5));
        let c = rt.alloc(64 * 64 * 4).unwrap();
        for _ in 0..5 {
            rt.submit(matmul(a, a, c, 64, 64, 64)).unwrap().wait(None).unwrap();
        }
        assert!(rt.scheduler().devices[0].model.samples() >= 5);
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().count() >= 1, "history file written");
    let rt = Runtime::with_backends(cfg(), vec![cpu()]).unwrap();
    assert!(rt.scheduler().devices[0].model.samples() >= 5, "second run starts calibrated");
    drop(rt);
    // Asked to, a runtime starts without it (NPUHYBRID_PERF_RESET sets this by default).
    let rt =
        Runtime::with_backends(npuhybrid::RuntimeConfig { perf_reset: true, ..cfg() }, vec![cpu()]).unwrap();
    assert_eq!(rt.scheduler().devices[0].model.samples(), 0, "history was reset");
}

#[test]
fn destroying_a_runtime_waits_for_ops_in_flight() {
    let dev = ScriptedDevice::new(DeviceKind::Gpu, "slow", 1e6, Script::Works)
        .with_delay(Duration::from_millis(20));
    let rt = runtime_with(vec![Box::new(dev)]);
    let a = upload(&rt, &[1.0; 64]);
    let out = rt.alloc(256).unwrap();
    let events: Vec<_> = (0..5)
        .map(|_| {
            rt.submit(OpDesc::new(OpKind::Matmul, &[t(a, &[8, 8]), t(a, &[8, 8])], t(out, &[8, 8]))).unwrap()
        })
        .collect();
    drop(rt);
    assert!(events.iter().all(|e| e.is_done() && e.wait(None).is_ok()));
}

#[test]
fn a_panicking_backend_fails_that_op_there_and_it_falls_back() {
    let rt =
        runtime_with(vec![Box::new(ScriptedDevice::new(DeviceKind::Gpu, "buggy gpu", 1e6, Script::Panics))]);
    let (m, k, n) = (256, 256, 256);
    let (a, b) = (random(m * k, 5), random(k * n, 6));
    let (ba, bb) = (upload(&rt, &a), upload(&rt, &b));
    let bc = rt.alloc(m * n * 4).unwrap();
    let ev = rt.submit(matmul(ba, bb, bc, m, k, n)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.device, Some(0));
    assert!(ev.outcome().1.fallbacks >= 1);
    assert_close(&download(&rt, bc, m * n), &reference_matmul(&a, &b, m, k, n), 1e-4);
}

/// Issue 17, item 9: statistics read while ops run are a consistent snapshot.
#[test]
fn stats_never_count_more_finished_than_submitted() {
    let rt = std::sync::Arc::new(runtime_with(vec![]));
    let n = 64;
    let x = upload(&rt, &vec![0.0; n]);
    let one = upload(&rt, &vec![1.0; n]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let submitter = {
        let (rt, stop) = (std::sync::Arc::clone(&rt), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 200_000 {
                let y = if i % 2 == 0 { x } else { one };
                rt.submit(add(y, y, y, n)).unwrap();
                i += 1;
            }
        })
    };
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let s = rt.stats();
        assert!(s.ops_completed + s.ops_failed <= s.ops_submitted, "{s:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    submitter.join().unwrap();
}

/// What the checker's "uses only npu" warning promises: with no NPU, such a rule's ops are not
/// lost, the backstop runs them on the CPU.
#[test]
fn an_npu_only_rule_without_an_npu_runs_on_the_backstop() {
    let policy = npuhybrid::PolicySource::Source {
        origin: "npu_only.nhp".into(),
        text: "rule m {\n  when op = matmul\n  use npu\n}\nrule rest {\n  use cpu\n}\n".into(),
    };
    let rt = Runtime::with_backends(npuhybrid::RuntimeConfig { policy, ..config() }, vec![cpu()]).unwrap();
    assert_eq!(rt.policy().warnings().len(), 1, "{:?}", rt.policy().warnings());
    let a = upload(&rt, &random(16 * 16, 3));
    let c = rt.alloc(16 * 16 * 4).unwrap();
    let ev = rt.submit(matmul(a, a, c, 16, 16, 16)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.device, Some(0));
}

/// Replacing a graph's ops (a decode step's position-dependent ops, every token) costs the
/// replaced op, not the graph, and a buffer that only replaced ops used is no longer needed:
/// destroying it leaves the graph submittable, however many have come and gone.
#[test]
fn replaced_ops_release_their_buffers_from_the_graph() {
    let rt = runtime_with(vec![]);
    let n = 8;
    let x = upload(&rt, &[1.0; 8]);
    let y = rt.alloc(n * 4).unwrap();
    let mut g = npuhybrid::graph::Graph::new();
    rt.graph_add(&mut g, add(x, x, y, n)).unwrap();
    let first = upload(&rt, &[0.0; 8]);
    rt.graph_add(&mut g, add(y, first, y, n)).unwrap();
    let mut previous = first;
    for round in 1..=100 {
        let fresh = upload(&rt, &[round as f32; 8]);
        rt.graph_set(&mut g, 1, add(y, fresh, y, n)).unwrap();
        rt.destroy_buffer(previous).unwrap();
        previous = fresh;
        if round % 25 == 0 {
            rt.submit_graph(&g).unwrap().wait(None).unwrap();
            assert_eq!(download(&rt, y, n), vec![2.0 + round as f32; 8], "round {round}");
        }
    }
}
