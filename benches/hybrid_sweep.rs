//! Finds the CPU/GPU crossover: for square f32 matmuls from tiny to large, the time under a
//! CPU-only policy, a GPU-only policy and the hybrid `default`-style policy (earliest expected
//! completion, learned from history), all in one run on one machine.
//!
//! Run where a Vulkan GPU exists: `cargo bench --bench hybrid_sweep -- [max_n]` (default 4096).

#[path = "support/gpu.rs"]
mod gpu;

use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use npuhybrid::{PolicySource, Runtime};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn policy(text: &str) -> PolicySource {
    PolicySource::Source { origin: "sweep.nhp".into(), text: text.into() }
}

const CPU: &str = "policy \"cpu\"\nrule all {\n  use cpu\n}\n";
const GPU: &str = "policy \"gpu\"\nrule mm {\n  when op = matmul\n  use gpu\n}\nrule rest {\n  use cpu\n}\n";
const HYBRID: &str = "policy \"hybrid\"\nrule mm {\n  when op = matmul\n  use gpu, cpu\n  strategy earliest_completion\n}\nrule rest {\n  use cpu\n}\n";

fn main() {
    let max_n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(4096);
    let cfg = gpu::config(policy(HYBRID));
    let threads = cfg.threads;
    let rt = Runtime::new(cfg).expect("runtime");
    let gpu = gpu::gpu_index(&rt);
    let Some(gpu) = gpu else {
        println!("no usable Vulkan GPU: nothing to measure");
        return;
    };
    println!(
        "CPU: {} ({threads} threads); GPU: {}",
        rt.device_info(0).unwrap().name,
        rt.device_info(gpu).unwrap().name
    );
    println!("| n | CPU-only ms | GPU-only ms | hybrid ms | hybrid ran on | hybrid / best |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut n = 16;
    while n <= max_n {
        let bytes = n * n * 4;
        let a = rt.alloc(bytes).unwrap();
        let b = rt.alloc(bytes).unwrap();
        let c = rt.alloc(bytes).unwrap();
        let t = |id| TensorView::contiguous(id, DType::F32, &[n, n], 0);
        let op = OpDesc::new(OpKind::Matmul, &[t(a), t(b)], t(c));
        let reps = if n >= 4096 {
            3
        } else if n >= 1024 {
            5
        } else {
            21
        };
        let measure = |p: &str| -> (f64, Option<usize>) {
            rt.load_policy(&policy(p)).unwrap();
            let mut last = None;
            // Warm-up: pipelines, uploads of the inputs, and history for the hybrid model.
            for _ in 0..3 {
                let ev = rt.submit(op.clone()).unwrap();
                ev.wait(None).unwrap();
            }
            let mut times = Vec::new();
            for _ in 0..reps {
                let t0 = Instant::now();
                let ev = rt.submit(op.clone()).unwrap();
                ev.wait(None).unwrap();
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                last = ev.outcome().1.device;
            }
            (median(times), last)
        };
        let (cpu, _) = measure(CPU);
        let (gpu_ms, _) = measure(GPU);
        let (hybrid, ran_on) = measure(HYBRID);
        let best = cpu.min(gpu_ms);
        let on = match ran_on {
            Some(0) => "cpu".to_string(),
            Some(d) if d == gpu => "gpu".to_string(),
            other => format!("{other:?}"),
        };
        println!("| {n} | {cpu:.3} | {gpu_ms:.3} | {hybrid:.3} | {on} | {:.2} |", hybrid / best);
        for id in [a, b, c] {
            rt.destroy_buffer(id).unwrap();
        }
        n *= 2;
    }
}
