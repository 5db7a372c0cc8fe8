//! Graphs placed as a whole and run in segments: a chain of GPU ops is one submission, a
//! device that fails midway hands the rest of its segment to another device without losing
//! or repeating an op, and a new GPU is measured before it gets work another device can do.

mod common;

use common::*;
use npuhybrid::backend::sim::{Fault, SimNpu, SimNpuConfig};
use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::{Backend, DeviceInfo, ExecReport, OpMemory, SegmentReport};
use npuhybrid::graph::Graph;
use npuhybrid::memory::BufferId;
use npuhybrid::op::{OpDesc, OpKind, OpParams};
use npuhybrid::{Error, PolicySource, Result, Runtime, RuntimeConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn policy(text: &str) -> RuntimeConfig {
    RuntimeConfig { policy: PolicySource::Source { origin: "test".into(), text: text.into() }, ..config() }
}

/// Lavapipe, copying host buffers into replicas as a discrete GPU does (it could read them in
/// place: unified memory): these tests count what crosses to device memory.
fn lavapipe() -> Arc<VulkanBackend> {
    let gpu = VulkanBackend::probe()
        .unwrap_or_else(|e| panic!("no Vulkan device for the tests (install mesa-vulkan-drivers): {e}"))
        .remove(0);
    gpu.set_host_import(false);
    Arc::new(gpu)
}

/// x <- x * 0.5 + y, `rounds` times, as scale / add pairs through a scratch buffer; returns
/// the graph and what x holds afterwards.
fn chain(rt: &Runtime, x: BufferId, y: BufferId, tmp: BufferId, n: usize, rounds: usize) -> Graph {
    let mut g = Graph::new();
    for _ in 0..rounds {
        let scale = OpDesc::new(OpKind::Scale, &[t(x, &[n])], t(tmp, &[n]))
            .with_params(OpParams { alpha: 0.5, ..Default::default() });
        rt.graph_add(&mut g, scale).unwrap();
        rt.graph_add(&mut g, add(tmp, y, x, n)).unwrap();
    }
    g
}

fn expected_chain(x: &[f32], y: &[f32], rounds: usize) -> Vec<f32> {
    let mut x = x.to_vec();
    for _ in 0..rounds {
        for (a, b) in x.iter_mut().zip(y) {
            *a = *a * 0.5 + b;
        }
    }
    x
}

/// A runtime over the CPU and `gpu` under "every op: gpu, cpu by earliest completion", the
/// GPU measured as `priors` (fast: it gets the chain; slow: the CPU does).
fn gpu_runtime(gpu: Box<dyn Backend>, priors: npuhybrid::sched::perf_model::Priors) -> Runtime {
    let rt = Runtime::with_backends(
        policy("policy \"gpu\"\nrule all {\n use gpu, cpu\n strategy earliest_completion\n}\n"),
        vec![cpu(), gpu],
    )
    .unwrap();
    rt.scheduler().devices[1].model.calibrate(priors);
    rt
}

const FAST: npuhybrid::sched::perf_model::Priors = npuhybrid::sched::perf_model::Priors {
    launch_ns: 1_000.0,
    op_ns: 10.0,
    peak_gflops: 1e6,
    bandwidth_gbs: 1e6,
};

#[test]
fn a_chain_of_gpu_ops_is_one_submission_and_its_results_are_exact() {
    let gpu = lavapipe();
    // The model's choice for every op of the chain.
    let rt = gpu_runtime(Box::new(Arc::clone(&gpu)), FAST);
    let n = 1000;
    let (x0, y) = (random(n, 1), random(n, 2));
    let (x, yb, tmp) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap());
    let rounds = 12;
    let g = chain(&rt, x, yb, tmp, n, rounds);
    let explained = rt.explain_graph(&g).unwrap();
    assert!(explained.contains("ops 0..24 on [1]") && explained.contains("one segment"), "{explained}");
    let before = gpu.stats().submissions;
    let ev = rt.submit_graph(&g).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.devices_mask, 1 << 1, "every op ran on the GPU");
    assert_eq!(gpu.stats().submissions - before, 1, "24 ops, one submission");
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, rounds), 1e-5);
    // tmp is written by every round: only its last value went back to the host.
    let last_tmp: Vec<f32> = expected_chain(&x0, &y, rounds - 1).iter().map(|v| v * 0.5).collect();
    assert_close(&download(&rt, tmp, n), &last_tmp, 1e-5);
}

/// Per-op timestamps are sampled: the first 8 long submissions, then 1 in 16. The segments in
/// between teach the GPU's model nothing per op (their wall time holds recording and waiting),
/// and their events still carry the GPU's time: its busy time, shared among the ops.
#[test]
fn unsampled_segments_leave_the_model_alone_and_still_report_the_gpus_time() {
    let gpu = lavapipe();
    let rt = Runtime::with_backends(
        policy("policy \"gpu\"\nrule all {\n use gpu\n strategy earliest_completion\n}\n"),
        vec![cpu(), Box::new(Arc::clone(&gpu))],
    )
    .unwrap();
    let model = &rt.scheduler().devices[1].model;
    model.calibrate(FAST);
    assert!(gpu.times_kernels());
    let n = 256;
    let (x0, y) = (random(n, 5), random(n, 6));
    let (x, yb, tmp) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap());
    let g = chain(&rt, x, yb, tmp, n, 12);
    let step = || {
        let ev = rt.submit_graph(&g).unwrap();
        ev.wait(None).unwrap();
        let info = ev.outcome().1;
        assert_eq!(info.devices_mask, 1 << 1, "every op ran on the GPU");
        assert!(info.device_ns > 0, "the GPU's time, timed op by op or not");
    };
    for _ in 0..8 {
        step();
    }
    let (learned, overhead) = (model.samples(), model.op_overhead_ns());
    assert_eq!(learned, 8 * 24, "the first 8 submissions teach every op");
    for _ in 8..16 {
        step();
    }
    assert_eq!(model.samples(), learned, "submissions 9 to 16 are not timed op by op");
    assert_eq!(model.op_overhead_ns(), overhead);
    step();
    assert_eq!(model.samples(), learned + 24, "the 17th is");
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, 17 * 12), 1e-4);
}

#[test]
fn a_slow_gpu_gets_no_part_of_a_graph_the_cpu_runs_sooner() {
    let gpu = lavapipe();
    let rt = gpu_runtime(
        Box::new(Arc::clone(&gpu)),
        npuhybrid::sched::perf_model::Priors {
            launch_ns: 5e6,
            op_ns: 1e5,
            peak_gflops: 0.5,
            bandwidth_gbs: 0.5,
        },
    );
    let n = 256;
    let (x0, y) = (random(n, 3), random(n, 4));
    let (x, yb, tmp) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap());
    let before = gpu.stats().submissions;
    let g = chain(&rt, x, yb, tmp, n, 4);
    let explained = rt.explain_graph(&g).unwrap();
    assert!(explained.contains("one device: 0") && explained.contains("op by op"), "{explained}");
    let ev = rt.submit_graph(&g).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.devices_mask, 1, "every op ran on the CPU");
    assert_eq!(gpu.stats().submissions, before);
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, 4), 1e-5);
}

#[test]
fn a_simulated_npu_that_fails_midway_hands_the_rest_of_its_segment_to_the_cpu() {
    let npu = Arc::new(SimNpu::new(SimNpuConfig {
        virtual_time: true,
        peak_gflops: vec![(npuhybrid::op::DType::F32, 1e6)],
        launch_latency: std::time::Duration::ZERO,
        ..Default::default()
    }));
    let rt = Runtime::with_backends(
        policy("policy \"npu\"\nrule all {\n use npu, cpu\n strategy earliest_completion\n}\n"),
        vec![cpu(), Box::new(Arc::clone(&npu)) as Box<dyn Backend>],
    )
    .unwrap();
    // x <- x W + y with W = I / 2: matmuls large enough that the NPU's model wins.
    let (m, k) = (64, 256);
    let n = m * k;
    let mut w = vec![0.0f32; k * k];
    for i in 0..k {
        w[i * k + i] = 0.5;
    }
    let (x0, y) = (random(n, 5), random(n, 6));
    let (x, yb, tmp, wb) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap(), upload(&rt, &w));
    let rounds = 10;
    let mut g = Graph::new();
    for _ in 0..rounds {
        rt.graph_add(&mut g, matmul(x, wb, tmp, m, k, k)).unwrap();
        rt.graph_add(&mut g, add(tmp, yb, x, n)).unwrap();
    }
    // The 7th op fails: 6 ran on the NPU, the other 14 on the CPU, in order, once each.
    npu.inject_fault(Fault::FailNth(7)).unwrap();
    let ev = rt.submit_graph(&g).unwrap();
    ev.wait(None).unwrap();
    let info = ev.outcome().1;
    assert_eq!(info.devices_mask, 0b11, "both devices ran ops: {info:?}");
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, rounds), 1e-5);
    assert_eq!(npu.stats().failed, 1);
    assert_eq!(rt.stats().ops_failed, 0);
}

/// A GPU that reports device lost after running `ok` ops of a segment.
struct LosingGpu {
    inner: Arc<VulkanBackend>,
    ok: usize,
    lost: std::sync::atomic::AtomicBool,
    ran: AtomicUsize,
}

impl Backend for LosingGpu {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::DeviceLost("test: the GPU is gone".into()));
        }
        self.ran.fetch_add(1, Ordering::SeqCst);
        self.inner.execute(op, mem)
    }

    fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        if self.lost.swap(true, Ordering::SeqCst) {
            return SegmentReport {
                reports: vec![],
                error: Some(Error::DeviceLost("test: the GPU is gone".into())),
                ..Default::default()
            };
        }
        let ok = self.ok.min(ops.len());
        let mut report = self.inner.execute_segment(&ops[..ok]);
        self.ran.fetch_add(report.reports.len(), Ordering::SeqCst);
        if report.error.is_none() {
            report.error = Some(Error::DeviceLost("test: the GPU fell off the bus".into()));
        }
        report
    }

    fn link_gbs(&self) -> Option<f64> {
        self.inner.link_gbs()
    }
}

#[test]
fn a_gpu_lost_midway_through_a_segment_loses_no_op_and_repeats_none() {
    let gpu = Arc::new(LosingGpu { inner: lavapipe(), ok: 5, lost: false.into(), ran: AtomicUsize::new(0) });
    // The model's choice for every op of the chain.
    let rt = gpu_runtime(Box::new(Arc::clone(&gpu)), FAST);
    let n = 300;
    let (x0, y) = (random(n, 7), random(n, 8));
    let (x, yb, tmp) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap());
    // x <- x * 0.5 + y is not idempotent: an op run twice would show in the result.
    let ev = rt.submit_graph(&chain(&rt, x, yb, tmp, n, 8)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(gpu.ran.load(Ordering::SeqCst), 5);
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, 8), 1e-5);
    let stats = rt.device_stats(1).unwrap();
    assert!(stats.degraded, "a lost device is left out");
    // Later graphs run on the CPU.
    let ev = rt.submit_graph(&chain(&rt, x, yb, tmp, n, 2)).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.devices_mask, 1);
}

#[test]
fn a_new_gpu_is_measured_before_it_takes_work_the_cpu_can_do() {
    let gpu = lavapipe();
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeConfig { calibrate: true, perf_cache_dir: Some(dir.path().to_path_buf()), ..config() };
    let rt = Runtime::with_backends(cfg.clone(), vec![cpu(), Box::new(Arc::clone(&gpu)) as Box<dyn Backend>])
        .unwrap();
    let declared = rt.device_info(1).unwrap().peak_gflops;
    rt.scheduler().wait_calibrated();
    let model = &rt.scheduler().devices[1].model;
    assert!(model.is_calibrated());
    let measured = model.priors();
    assert!(measured.peak_gflops < declared, "lavapipe delivers less than it declares: {measured:?}");
    assert!(measured.launch_ns > 0.0 && measured.bandwidth_gbs > 0.0);
    drop(rt);
    // The next runtime starts from the saved calibration and measures nothing.
    let rt =
        Runtime::with_backends(cfg, vec![cpu(), Box::new(Arc::clone(&gpu)) as Box<dyn Backend>]).unwrap();
    let model = &rt.scheduler().devices[1].model;
    assert!(model.is_calibrated());
    let again = model.priors();
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs();
    assert!(
        same(again.peak_gflops, measured.peak_gflops) && same(again.launch_ns, measured.launch_ns),
        "{again:?}"
    );
    assert!(!rt.scheduler().devices[1].calibrating.load(Ordering::Relaxed));
}

/// A decode step's KV-cache pattern: a row written into the cache, updated in place, then the
/// whole cache read through a head-major strided view. One submission per step, and the cache
/// is not uploaded again each step: the written row is copied into the device's copy of it.
#[test]
fn a_kv_cache_row_written_then_read_whole_stays_on_the_gpu() {
    let gpu = lavapipe();
    let rt = Runtime::with_backends(
        policy("policy \"gpu\"\nrule all {\n use gpu\n}\n"),
        vec![cpu(), Box::new(Arc::clone(&gpu)) as Box<dyn Backend>],
    )
    .unwrap();
    let (positions, heads, hd) = (16, 2, 4);
    let width = heads * hd;
    let mut cache = random(positions * width, 9);
    let cb = upload(&rt, &cache);
    let out = rt.alloc(positions * width * 4).unwrap();
    let src = rt.alloc(width * 4).unwrap();
    let row = |p: usize| {
        npuhybrid::op::TensorView::contiguous(cb, npuhybrid::op::DType::F32, &[1, width], p * width * 4)
    };
    let mut whole = t(cb, &[heads, positions, hd]);
    whole.strides[..3].copy_from_slice(&[hd, width, 1]);
    let step_ops = |p: usize| {
        vec![
            OpDesc::new(OpKind::Copy, &[t(src, &[1, width])], row(p)),
            OpDesc::new(OpKind::Scale, &[row(p)], row(p))
                .with_params(OpParams { alpha: 2.0, ..Default::default() }),
            OpDesc::new(OpKind::Copy, &[whole], t(out, &[heads, positions, hd])),
        ]
    };
    let mut g = Graph::new();
    for op in step_ops(0) {
        rt.graph_add(&mut g, op).unwrap();
    }
    for p in 0..6 {
        if p > 0 {
            for (i, op) in step_ops(p).into_iter().enumerate() {
                rt.graph_set(&mut g, i, op).unwrap();
            }
        }
        let new_row = random(width, 100 + p as u64);
        rt.write(src, 0, bytemuck_f32(&new_row)).unwrap();
        for (c, v) in cache[p * width..(p + 1) * width].iter_mut().zip(&new_row) {
            *c = 2.0 * v;
        }
        let (subs, uploaded) = (gpu.stats().submissions, gpu.stats().uploaded_bytes);
        let ev = rt.submit_graph(&g).unwrap();
        ev.wait(None).unwrap();
        assert_eq!(ev.outcome().1.devices_mask, 1 << 1);
        assert_eq!(gpu.stats().submissions - subs, 1, "step {p}: one submission");
        if p > 0 {
            // Only the new source row goes up; the cache stays on the device.
            assert_eq!(gpu.stats().uploaded_bytes - uploaded, (width * 4) as u64, "step {p}");
        }
        let mut want = vec![0.0f32; positions * width];
        for h in 0..heads {
            for s in 0..positions {
                for d in 0..hd {
                    want[(h * positions + s) * hd + d] = cache[s * width + h * hd + d];
                }
            }
        }
        assert_close(&download(&rt, out, positions * width), &want, 0.0);
        assert_close(&download(&rt, cb, positions * width), &cache, 0.0);
    }
}

/// A GPU whose link is slow: bringing any input it does not hold costs 20 ms (a model
/// figure; the data itself moves at lavapipe's speed).
struct FarGpu(Arc<VulkanBackend>);

impl Backend for FarGpu {
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        self.0.execute(op, mem)
    }
    fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        self.0.execute_segment(ops)
    }
    fn input_upload_ns(&self, view: &npuhybrid::op::TensorView, mem: &OpMemory) -> f64 {
        if self.0.input_upload_ns(view, mem) > 0.0 {
            20e6
        } else {
            0.0
        }
    }
    fn link_gbs(&self) -> Option<f64> {
        self.0.link_gbs()
    }
    fn touches_outputs(&self) -> bool {
        self.0.touches_outputs()
    }
}

/// A CPU that takes 1 ms an op, so the GPU (lavapipe, whose measured times the model learns
/// once it runs there) is worth its uploads once they are paid.
struct SlowCpu(Box<dyn Backend>);

impl Backend for SlowCpu {
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        self.0.execute(op, mem)
    }
}

/// The 1 ms-an-op CPU and the lavapipe GPU behind a 20 ms link, under a rule that picks the
/// earlier completion; the GPU's model starts from `FAST`.
fn slow_cpu_and_far_gpu() -> Runtime {
    let rt = Runtime::with_backends(
        policy("policy \"gpu\"\nrule all {\n use gpu, cpu\n strategy earliest_completion\n}\n"),
        vec![Box::new(SlowCpu(cpu())), Box::new(FarGpu(lavapipe()))],
    )
    .unwrap();
    rt.scheduler().devices[1].model.calibrate(FAST);
    rt
}

/// Inputs a replayed graph reads unchanged (weights) or only itself rewrites (its state)
/// are uploaded once: the planner spreads that cost over the submissions they stayed put,
/// so a graph the CPU runs at first moves to a faster GPU once the upload has paid off, and
/// stays there.
#[test]
fn uploads_of_inputs_that_stay_put_are_amortised_over_replays() {
    let rt = slow_cpu_and_far_gpu();
    let n = 1000;
    let (x0, y) = (random(n, 9), random(n, 10));
    let (x, yb, tmp) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap());
    let g = chain(&rt, x, yb, tmp, n, 4);
    let mut masks = Vec::new();
    for _ in 0..80 {
        let ev = rt.submit_graph(&g).unwrap();
        ev.wait(None).unwrap();
        masks.push(ev.outcome().1.devices_mask);
    }
    // 8 ops at 1 ms on the CPU against 40 ms of uploads: the CPU first.
    assert_eq!(masks[0], 1, "{masks:?}");
    let moved = masks.iter().position(|&m| m == 1 << 1).unwrap_or_else(|| panic!("never moved: {masks:?}"));
    assert!(masks[moved..].iter().all(|&m| m == 1 << 1), "moved back: {masks:?}");
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, 4 * 80), 1e-4);
}

/// `explain_graph` counts uploads as the planner does: spread over the submissions the inputs
/// stayed put, not whole.
#[test]
fn explain_spreads_uploads_as_the_plan_does() {
    let rt = slow_cpu_and_far_gpu();
    let n = 1000;
    let (x, yb, tmp) = (upload(&rt, &random(n, 9)), upload(&rt, &random(n, 10)), rt.alloc(n * 4).unwrap());
    let g = chain(&rt, x, yb, tmp, n, 4);
    let gpu_us = |text: &str| -> f64 {
        let at = text.find("one device: 1 ").unwrap_or_else(|| panic!("{text}")) + "one device: 1 ".len();
        text[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let whole = gpu_us(&rt.explain_graph(&g).unwrap());
    for _ in 0..4 {
        rt.submit_graph(&g).unwrap().wait(None).unwrap();
    }
    let spread = gpu_us(&rt.explain_graph(&g).unwrap());
    // Every input was read unchanged, or rewritten only by the graph, four times over: each
    // 20 ms upload counts a quarter or less.
    assert!(whole >= 40_000.0 && spread < 0.6 * whole, "whole {whole} us, after four runs {spread} us");
}

/// Attention's pattern in one submission: a fused QKV matmul writes a dense [T, 3D] buffer,
/// ops read heads out of it through strided views, one writes heads back into a [T, D]
/// buffer through a strided view, and a matmul reads that buffer dense. The strided pieces
/// move on the device (the `patch` shader), results are exact, and QKV's stale host bytes
/// are not uploaded under the views that the matmul's output covers.
#[test]
fn head_views_of_a_fused_qkv_output_stay_on_the_gpu() {
    let gpu = lavapipe();
    let rt = Runtime::with_backends(
        policy("policy \"gpu\"\nrule all {\n use gpu\n}\n"),
        vec![cpu(), Box::new(Arc::clone(&gpu)) as Box<dyn Backend>],
    )
    .unwrap();
    let (tokens, heads, hd) = (6, 2, 3);
    let d = heads * hd;
    let (x, w, w2) = (random(tokens * d, 11), random(d * 3 * d, 12), random(d * d, 13));
    let (xb, wb, w2b) = (upload(&rt, &x), upload(&rt, &w), upload(&rt, &w2));
    let (qkv, qh, ctx, y) = (
        rt.alloc(tokens * 3 * d * 4).unwrap(),
        rt.alloc(tokens * d * 4).unwrap(),
        rt.alloc(tokens * d * 4).unwrap(),
        rt.alloc(tokens * d * 4).unwrap(),
    );
    // Head view [heads, tokens, hd] of a buffer with rows of `row` elements, from column `col`.
    let heads_of = |b: BufferId, row: usize, col: usize| {
        let mut v = npuhybrid::op::TensorView::contiguous(
            b,
            npuhybrid::op::DType::F32,
            &[heads, tokens, hd],
            col * 4,
        );
        v.strides[..3].copy_from_slice(&[hd, row, 1]);
        v
    };
    let mut g = Graph::new();
    for op in [
        matmul(xb, wb, qkv, tokens, d, 3 * d),
        // q's heads, densely; then k's heads (scaled) written into ctx through its head view.
        OpDesc::new(OpKind::Copy, &[heads_of(qkv, 3 * d, 0)], t(qh, &[heads, tokens, hd])),
        OpDesc::new(OpKind::Scale, &[heads_of(qkv, 3 * d, d)], heads_of(ctx, d, 0))
            .with_params(OpParams { alpha: 0.5, ..Default::default() }),
        matmul(ctx, w2b, y, tokens, d, d),
    ] {
        rt.graph_add(&mut g, op).unwrap();
    }
    let (subs, uploaded) = (gpu.stats().submissions, gpu.stats().uploaded_bytes);
    let ev = rt.submit_graph(&g).unwrap();
    ev.wait(None).unwrap();
    assert_eq!(ev.outcome().1.devices_mask, 1 << 1);
    assert_eq!(gpu.stats().submissions - subs, 1, "one submission");
    // x, both weights and ctx (written only through a strided view) go up; no piece of qkv.
    let want_up = (x.len() + w.len() + w2.len() + tokens * d) * 4;
    assert_eq!(gpu.stats().uploaded_bytes - uploaded, want_up as u64);
    let qkv_ref = reference_matmul(&x, &w, tokens, d, 3 * d);
    let mut q_ref = vec![0f32; tokens * d];
    let mut ctx_ref = vec![0f32; tokens * d];
    for h in 0..heads {
        for s in 0..tokens {
            for e in 0..hd {
                q_ref[(h * tokens + s) * hd + e] = qkv_ref[s * 3 * d + h * hd + e];
                ctx_ref[s * d + h * hd + e] = 0.5 * qkv_ref[s * 3 * d + d + h * hd + e];
            }
        }
    }
    assert_close(&download(&rt, qh, tokens * d), &q_ref, 1e-5);
    assert_close(&download(&rt, ctx, tokens * d), &ctx_ref, 1e-5);
    assert_close(&download(&rt, y, tokens * d), &reference_matmul(&ctx_ref, &w2, tokens, d, d), 1e-4);
}

/// A device the model misjudges and cannot correct, as the H100 was on 2026-12-07: its
/// kernels report 1 us each (what its timestamps said), while every segment costs the host
/// 20 ms, booked as transfers (which teach the model no overhead). It computes on the host.
struct MisjudgedGpu {
    info: DeviceInfo,
    segments: AtomicUsize,
}

impl MisjudgedGpu {
    const SEGMENT_COST: std::time::Duration = std::time::Duration::from_millis(20);

    fn new() -> MisjudgedGpu {
        let mut info = DeviceInfo::unavailable(npuhybrid::backend::DeviceKind::Gpu, "misjudged gpu", "");
        info.available = true;
        info.ops = u32::MAX;
        info.dtypes = npuhybrid::op::DType::F32.bit();
        info.peak_gflops = 1e6;
        info.bandwidth_gbs = 1e6;
        MisjudgedGpu { info, segments: AtomicUsize::new(0) }
    }
}

impl Backend for MisjudgedGpu {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        std::thread::sleep(Self::SEGMENT_COST);
        npuhybrid::backend::cpu::execute_on_host(op, mem)?;
        Ok(ExecReport { device_ns: Some(1_000), setup_ns: 0 })
    }

    fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
        self.segments.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Self::SEGMENT_COST);
        let mut out = SegmentReport::default();
        for (op, mem) in ops {
            match npuhybrid::backend::cpu::execute_on_host(op, mem) {
                Ok(()) => out.reports.push(ExecReport { device_ns: Some(1_000), setup_ns: 0 }),
                Err(e) => {
                    out.error = Some(e);
                    break;
                }
            }
        }
        let phases = npuhybrid::backend::SegmentPhases { moved_bytes: 10_000_000, ..Default::default() };
        out.phases = Some(phases);
        out
    }

    fn times_kernels(&self) -> bool {
        true
    }

    fn link_gbs(&self) -> Option<f64> {
        Some(1.0)
    }
}

#[test]
fn a_placement_that_measures_slower_than_predicted_gives_way_to_the_fastest_measured_one() {
    let gpu = Arc::new(MisjudgedGpu::new());
    let rt = gpu_runtime(Box::new(Arc::clone(&gpu)), FAST);
    // Large enough that the CPU's model never undercuts the GPU's 1 us kernels.
    let n = 1 << 18;
    let (x0, y) = (random(n, 5), random(n, 6));
    let (x, yb, tmp) = (upload(&rt, &x0), upload(&rt, &y), rt.alloc(n * 4).unwrap());
    let rounds = 12;
    let g = chain(&rt, x, yb, tmp, n, rounds);
    assert!(rt.explain_graph(&g).unwrap().contains("ops 0..24 on [1]"), "the model prefers the GPU");
    let mut masks = Vec::new();
    for _ in 0..16 {
        let ev = rt.submit_graph(&g).unwrap();
        ev.wait(None).unwrap();
        masks.push(ev.outcome().1.devices_mask);
    }
    // The GPU ran first (as the model wanted), then the CPU was tried and measured faster.
    assert_eq!(masks[0], 1 << 1, "{masks:?}");
    assert!(masks[masks.len() - 4..].iter().all(|&m| m == 1), "settles on the CPU: {masks:?}");
    let explained = rt.explain_graph(&g).unwrap();
    assert!(explained.contains("one device: 0") && explained.contains("measured"), "{explained}");
    assert_close(&download(&rt, x, n), &expected_chain(&x0, &y, 16 * rounds), 1e-5);
    // The model still misjudges the GPU: the measured times, not the model, moved the graph.
    assert!(rt.scheduler().devices[1].model.run_ns(&add(tmp, yb, x, n)) < 100_000.0);
}
