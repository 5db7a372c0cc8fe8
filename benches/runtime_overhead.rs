//! Runtime overheads and split efficiency, each next to its baseline measured in the same run:
//!  1. submit + wait of a tiny op (add of 16 floats) vs calling the CPU kernel directly;
//!  2. a recorded graph of 100 dependent tiny ops vs 100 direct kernel calls;
//!  3. scheduling overhead per op (decision + hazard tracking + queueing) for ops bound to a
//!     device that does no work;
//!  4. a matmul split across the CPU and a timed device of the CPU's measured speed vs the sum
//!     of the two devices' separate throughputs.
//!
//! Run: `cargo bench --bench runtime_overhead [-- dispatch|scheduling|split]` (release).
//! Medians over repeated rounds.

use npuhybrid::backend::cpu::{execute_on_host, CpuBackend};
use npuhybrid::backend::{Backend, DeviceInfo, DeviceKind, ExecReport, OpMemory};
use npuhybrid::graph::Graph;
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use npuhybrid::{PolicySource, Result, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn config(policy: &str) -> RuntimeConfig {
    RuntimeConfig {
        perf_cache_dir: None,
        thermal_period: None,
        telemetry_period: None,
        threads: 2,
        policy: PolicySource::Source { origin: "bench.nhp".into(), text: policy.into() },
        ..Default::default()
    }
}

fn t(b: u64, shape: &[usize]) -> TensorView {
    TensorView::contiguous(b, DType::F32, shape, 0)
}

/// A device whose ops take `flops / gflops` of wall time without using a CPU core (a sleep),
/// standing in for an accelerator of a chosen speed. It computes nothing: benchmark only.
struct TimedDevice {
    info: DeviceInfo,
    gflops: f64,
}

impl TimedDevice {
    fn new(kind: DeviceKind, gflops: f64) -> TimedDevice {
        let mut info = DeviceInfo::unavailable(kind, "timed device (benchmark stand-in)", "");
        info.available = true;
        info.ops = u32::MAX;
        info.dtypes = u32::MAX;
        info.peak_gflops = gflops.max(1e-3);
        info.bandwidth_gbs = 50.0;
        info.max_in_flight = 1;
        TimedDevice { info, gflops }
    }
}

impl Backend for TimedDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn execute(&self, op: &OpDesc, _mem: &OpMemory) -> Result<ExecReport> {
        if self.gflops > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(op.flops() / (self.gflops * 1e9)));
        }
        Ok(ExecReport::default())
    }
}

const CPU_ONLY: &str = "policy \"cpu\"\nrule all {\n  use cpu\n}\n";

fn tiny_dispatch() {
    let rt = Runtime::with_backends(config(CPU_ONLY), vec![Box::new(CpuBackend::new(2).unwrap())]).unwrap();
    let a = rt.alloc(64).unwrap();
    let op = OpDesc::new(OpKind::Add, &[t(a, &[16]), t(a, &[16])], t(a, &[16]));
    let mem = rt.prepare(&op).unwrap();
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let n = 2000;
        let t0 = Instant::now();
        for _ in 0..n {
            rt.submit(op.clone()).unwrap().wait(None).unwrap();
        }
        ours.push(t0.elapsed().as_nanos() as f64 / n as f64);
        let t0 = Instant::now();
        for _ in 0..n {
            execute_on_host(&op, &mem).unwrap();
        }
        direct.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    println!(
        "| submit + wait, add of 16 f32 | {:.2} us | {:.2} us | target < 5 us |",
        median(ours) / 1e3,
        median(direct) / 1e3
    );

    let mut graph = Graph::new();
    for _ in 0..100 {
        rt.graph_add(&mut graph, op.clone()).unwrap();
    }
    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let n = 50;
        let t0 = Instant::now();
        for _ in 0..n {
            rt.submit_graph(&graph).unwrap().wait(None).unwrap();
        }
        ours.push(t0.elapsed().as_nanos() as f64 / n as f64);
        let t0 = Instant::now();
        for _ in 0..n * 100 {
            execute_on_host(&op, &mem).unwrap();
        }
        direct.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    println!(
        "| graph of 100 dependent tiny adds, submit + wait | {:.1} us | {:.1} us | target < 100 us |",
        median(ours) / 1e3,
        median(direct) / 1e3
    );
}

fn scheduling_overhead() {
    let policy = "policy \"gpu\"\nrule all {\n  use gpu, cpu\n  strategy earliest_completion\n}\n";
    let rt = Runtime::with_backends(
        config(policy),
        vec![Box::new(CpuBackend::new(2).unwrap()), Box::new(TimedDevice::new(DeviceKind::Gpu, 0.0))],
    )
    .unwrap();
    let n = 1000;
    let a = rt.alloc(64 * 64 * 4).unwrap();
    let outs: Vec<_> = (0..n).map(|_| rt.alloc(64 * 64 * 4).unwrap()).collect();
    let ops: Vec<_> = outs
        .iter()
        .map(|&o| OpDesc::new(OpKind::Matmul, &[t(a, &[64, 64]), t(a, &[64, 64])], t(o, &[64, 64])))
        .collect();
    let mut per_op = Vec::new();
    let mut validate = Vec::new();
    for _ in 0..15 {
        let t0 = Instant::now();
        for op in &ops {
            rt.submit(op.clone()).unwrap();
        }
        per_op.push(t0.elapsed().as_nanos() as f64 / n as f64);
        rt.synchronize();
        let t0 = Instant::now();
        for op in &ops {
            std::hint::black_box(rt.prepare(op).unwrap());
        }
        validate.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    let (submit, check) = (median(per_op), median(validate));
    println!(
        "| scheduling per op (decision + hazards + queueing) | {:.2} us | validation alone {:.2} us | target < 2 us |",
        (submit - check) / 1e3,
        check / 1e3
    );
}

fn split_efficiency() {
    let (m, k, n) = (1024, 1024, 1024);
    let flops = 2.0 * (m * k * n) as f64;
    let run = |policy: &str, npu_gflops: f64| -> f64 {
        let rt = Runtime::with_backends(
            config(policy),
            vec![
                Box::new(CpuBackend::new(2).unwrap()),
                Box::new(TimedDevice::new(DeviceKind::SimulatedNpu, npu_gflops)),
            ],
        )
        .unwrap();
        let a = rt.alloc(m * k * 4).unwrap();
        let b = rt.alloc(k * n * 4).unwrap();
        let c = rt.alloc(m * n * 4).unwrap();
        let op = OpDesc::new(OpKind::Matmul, &[t(a, &[m, k]), t(b, &[k, n])], t(c, &[m, n]));
        let mut times = Vec::new();
        for i in 0..17 {
            let t0 = Instant::now();
            rt.submit(op.clone()).unwrap().wait(None).unwrap();
            if i >= 2 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        flops / median(times) / 1e9
    };
    let cpu = run(CPU_ONLY, 0.0);
    let npu_only = "policy \"npu\"\nrule mm {\n  when op = matmul\n  use npu\n}\nrule rest {\n  use cpu\n}\n";
    let npu = run(npu_only, cpu);
    let split = "policy \"split\"\nrule mm {\n  when op = matmul\n  use npu, cpu\n  split rows dynamic npu, cpu\n}\nrule rest {\n  use cpu\n}\n";
    let both = run(split, cpu);
    println!(
        "| split matmul 1024^3, CPU + timed device at the CPU's speed | {both:.1} GFLOP/s | CPU {cpu:.1} + device {npu:.1} = {:.1} GFLOP/s | ratio {:.2} (target >= 0.85) |",
        cpu + npu,
        both / (cpu + npu)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `-- dispatch|scheduling|split` runs only those parts.
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |s: &str| which.is_empty() || which.iter().any(|w| w == s);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("threads: 2 (CPU backend); medians of 15 rounds");
    println!("| what | ours | baseline (same run) | note |");
    println!("| --- | --- | --- | --- |");
    if wants("dispatch") {
        tiny_dispatch();
    }
    if wants("scheduling") {
        scheduling_overhead();
    }
    if wants("split") {
        split_efficiency();
    }
}
