//! Regret of the hybrid schedule on a mixed workload: one transformer layer (RMSNorm, QKV
//! projection, RoPE, causal attention, output projection, residual, SwiGLU FFN) recorded as a
//! graph, at several sequence lengths (decode-sized to prefill-sized), run under a CPU-only
//! policy, a GPU-only policy and the built-in `default` policy (per-op placement by earliest
//! expected completion). Prints per size the three medians and hybrid / best single device.
//!
//! Run where a Vulkan GPU exists: `cargo bench --bench hybrid_mixed -- [hidden] [seqs]`
//! (defaults: hidden 1024, seqs 1,16,64,256,1024). Without a GPU it says so and exits.
//!
//! `-- --stand-in [hidden] [seqs]` replaces the GPU by a timed stand-in device (it sleeps for
//! an op's modelled time and computes nothing) calibrated to this CPU's measured matmul and
//! elementwise speed: two devices of comparable speed, where the hybrid schedule should beat
//! both single-device ones by running independent ops (gate/up, rope q/k) at once.
//! With `NH_BENCH_TRACE_DIR=DIR` each size's timed rounds are traced to DIR.

#[path = "support/gpu.rs"]
mod gpu;
#[path = "support/timed_device.rs"]
mod timed_device;

use npuhybrid::backend::cpu::CpuBackend;
use npuhybrid::backend::{Backend, DeviceKind};
use npuhybrid::graph::Graph;
use npuhybrid::memory::BufferId;
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, Tags, TensorView};
use npuhybrid::{PolicySource, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};
use timed_device::TimedDevice;

const CPU: &str = "policy \"cpu\"\nrule all {\n  use cpu\n}\n";
const GPU: &str = "policy \"gpu\"\nrule all {\n  use gpu\n}\n";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn source(name: &str, text: &str) -> PolicySource {
    PolicySource::Source { origin: format!("{name}.nhp"), text: text.into() }
}

/// Buffers of one layer at sequence length `s`, filled with small deterministic values.
struct Layer {
    graph: Graph,
    buffers: Vec<BufferId>,
}

fn filled(rt: &Runtime, n: usize, seed: u32, scale: f32) -> BufferId {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let bytes: Vec<u8> = (0..n)
        .flat_map(|_| {
            {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (((s >> 8) & 0xFFFF) as f32 / 32768.0 - 1.0) * scale
            }
            .to_le_bytes()
        })
        .collect();
    let id = rt.alloc(n * 4).expect("alloc");
    rt.write(id, 0, &bytes).expect("write");
    id
}

fn layer(rt: &Runtime, s: usize, d: usize) -> Layer {
    let (heads, dh, f) = (d / 64, 64, 4 * d);
    let ws = 1.0 / (d as f32).sqrt();
    let x = filled(rt, s * d, 1, 1.0);
    let (norm1, norm2) = (filled(rt, d, 2, 1.0), filled(rt, d, 3, 1.0));
    let (w_qkv, w_o) = (filled(rt, d * 3 * d, 4, ws), filled(rt, d * d, 5, ws));
    let (w_gate, w_up) = (filled(rt, d * f, 6, ws), filled(rt, d * f, 7, ws));
    let w_down = filled(rt, f * d, 8, 1.0 / (f as f32).sqrt());
    let zero = |n: usize| rt.alloc(n * 4).expect("alloc");
    let (h, qkv, attn, o, x2, h2) =
        (zero(s * d), zero(s * 3 * d), zero(s * d), zero(s * d), zero(s * d), zero(s * d));
    let (g, u, dn, y) = (zero(s * f), zero(s * f), zero(s * d), zero(s * d));

    let t2 = |b, r, c| TensorView::contiguous(b, DType::F32, &[r, c], 0);
    let t1 = |b, n| TensorView::contiguous(b, DType::F32, &[n], 0);
    // q, k or v of the packed [s, 3d] projection as [heads, s, dh], and as [s, heads, dh].
    let heads_view = |which: usize| TensorView {
        strides: [dh, 3 * d, 1, 0],
        ..TensorView::contiguous(qkv, DType::F32, &[heads, s, dh], which * d * 4)
    };
    let rope_view = |which: usize| TensorView {
        strides: [3 * d, dh, 1, 0],
        ..TensorView::contiguous(qkv, DType::F32, &[s, heads, dh], which * d * 4)
    };
    let attn_out =
        TensorView { strides: [dh, d, 1, 0], ..TensorView::contiguous(attn, DType::F32, &[heads, s, dh], 0) };
    let mut tags = Tags::new();
    tags.set("phase", if s == 1 { "decode" } else { "prefill" });
    let op = |kind, inputs: &[TensorView], out| OpDesc::new(kind, inputs, out).with_tags(tags.clone());
    let causal = OpParams { causal: true, ..OpParams::default() };
    let ops = vec![
        op(OpKind::RmsNorm, &[t2(x, s, d), t1(norm1, d)], t2(h, s, d)),
        op(OpKind::Matmul, &[t2(h, s, d), t2(w_qkv, d, 3 * d)], t2(qkv, s, 3 * d)),
        op(OpKind::Rope, &[rope_view(0)], rope_view(0)),
        op(OpKind::Rope, &[rope_view(1)], rope_view(1)),
        op(OpKind::Attention, &[heads_view(0), heads_view(1), heads_view(2)], attn_out).with_params(causal),
        op(OpKind::Matmul, &[t2(attn, s, d), t2(w_o, d, d)], t2(o, s, d)),
        op(OpKind::Add, &[t2(x, s, d), t2(o, s, d)], t2(x2, s, d)),
        op(OpKind::RmsNorm, &[t2(x2, s, d), t1(norm2, d)], t2(h2, s, d)),
        op(OpKind::Matmul, &[t2(h2, s, d), t2(w_gate, d, f)], t2(g, s, f)),
        op(OpKind::Matmul, &[t2(h2, s, d), t2(w_up, d, f)], t2(u, s, f)),
        op(OpKind::Silu, &[t2(g, s, f)], t2(g, s, f)),
        op(OpKind::Mul, &[t2(g, s, f), t2(u, s, f)], t2(g, s, f)),
        op(OpKind::Matmul, &[t2(g, s, f), t2(w_down, f, d)], t2(dn, s, d)),
        op(OpKind::Add, &[t2(x2, s, d), t2(dn, s, d)], t2(y, s, d)),
    ];
    let mut graph = Graph::new();
    for o in ops {
        rt.graph_add(&mut graph, o).expect("graph_add");
    }
    let buffers =
        vec![x, norm1, norm2, w_qkv, w_o, w_gate, w_up, w_down, h, qkv, attn, o, x2, h2, g, u, dn, y];
    Layer { graph, buffers }
}

/// This CPU's matmul GFLOP/s (1024 x 1024 x 1024) and add GB/s (4 Mi floats), through the
/// runtime, median of 5: what the stand-in device is given.
fn cpu_speed(cfg: &RuntimeConfig) -> (f64, f64) {
    let rt = Runtime::new(RuntimeConfig { policy: source("cpu", CPU), ..cfg.clone() }).expect("runtime");
    let time = |op: OpDesc| {
        let times = (0..6)
            .map(|_| {
                let t0 = Instant::now();
                rt.submit(op.clone()).unwrap().wait(None).unwrap();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        median(times)
    };
    let n = 1024;
    let (a, c) = (filled(&rt, n * n, 1, 1.0), rt.alloc(n * n * 4).unwrap());
    let t = |b, len| TensorView::contiguous(b, DType::F32, &[len], 0);
    let sq = TensorView::contiguous(a, DType::F32, &[n, n], 0);
    let mm = time(OpDesc::new(OpKind::Matmul, &[sq, sq], TensorView { buffer: c, ..sq }));
    let add = time(OpDesc::new(OpKind::Add, &[t(a, n * n), t(a, n * n)], t(c, n * n)));
    (2.0 * (n * n * n) as f64 / mm / 1e9, 3.0 * (n * n * 4) as f64 / add / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let d: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let seqs: Vec<usize> = args
        .get(1)
        .map(|a| a.split(',').map(|x| x.parse().expect("seq length")).collect())
        .unwrap_or_else(|| vec![1, 16, 64, 256, 1024]);
    let cfg = gpu::config(PolicySource::Builtin("default".into()));
    let threads = cfg.threads;
    let stand_in = std::env::args().any(|a| a == "--stand-in");
    // NH_BENCH_TRACE_DIR: one Chrome trace per size, of the timed rounds.
    let trace_dir = std::env::var_os("NH_BENCH_TRACE_DIR").map(std::path::PathBuf::from);
    let rt = if stand_in {
        let (gflops, gbs) = cpu_speed(&cfg);
        println!("stand-in GPU calibrated to the CPU: {gflops:.1} GFLOP/s, {gbs:.1} GB/s, 20 us a launch");
        let devices: Vec<Box<dyn Backend>> = vec![
            Box::new(CpuBackend::new(threads).expect("cpu")),
            Box::new(TimedDevice::new(DeviceKind::Gpu, gflops, gbs, Duration::from_micros(20))),
        ];
        Runtime::with_backends(cfg, devices).expect("runtime")
    } else {
        Runtime::new(cfg).expect("runtime")
    };
    let gpu = gpu::gpu_index(&rt);
    let Some(gpu) = gpu else {
        println!("no usable Vulkan GPU: nothing to measure");
        return;
    };
    println!(
        "CPU: {} ({threads} threads); GPU: {}; layer hidden {d}, ffn {}, f32, as one graph",
        rt.device_info(0).unwrap().name,
        rt.device_info(gpu).unwrap().name,
        4 * d
    );
    println!("| seq | CPU-only ms | GPU-only ms | hybrid (default policy) ms | hybrid ops per run on cpu/gpu | hybrid / best |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &s in &seqs {
        let layer = layer(&rt, s, d);
        let reps = if s >= 512 { 7 } else { 21 };
        let policies = [source("cpu", CPU), source("gpu", GPU), PolicySource::Builtin("default".into())];
        let run = || rt.submit_graph(&layer.graph).unwrap().wait(None).unwrap();
        // Warm-up: pipelines, weight uploads, and history for the performance model.
        for p in &policies {
            rt.load_policy(p).unwrap();
            (0..5).for_each(|_| run());
        }
        // Rounds of one timed run per policy (after one untimed run under it), so load from
        // other processes and clock changes hit the three alike.
        let mut times = [vec![], vec![], vec![]];
        if let Some(dir) = &trace_dir {
            rt.trace_start(&dir.join(format!("hybrid_mixed_{s}.trace.json"))).unwrap();
        }
        let mut hybrid_ops = (0, 0);
        for _ in 0..reps {
            for (i, (p, t)) in policies.iter().zip(times.iter_mut()).enumerate() {
                rt.load_policy(p).unwrap();
                run();
                let ops = (rt.device_stats(0).unwrap().ops_run, rt.device_stats(gpu).unwrap().ops_run);
                let t0 = Instant::now();
                run();
                t.push(t0.elapsed().as_secs_f64() * 1e3);
                if i == 2 {
                    // Ops of the timed hybrid run, per device.
                    hybrid_ops.0 += rt.device_stats(0).unwrap().ops_run - ops.0;
                    hybrid_ops.1 += rt.device_stats(gpu).unwrap().ops_run - ops.1;
                }
            }
        }
        if trace_dir.is_some() {
            rt.trace_stop().unwrap();
        }
        let [cpu, gpu_ms, hybrid] = times.map(median);
        let best = cpu.min(gpu_ms);
        println!(
            "| {s} | {cpu:.3} | {gpu_ms:.3} | {hybrid:.3} | {:.1}/{:.1} | {:.2} |",
            hybrid_ops.0 as f64 / reps as f64,
            hybrid_ops.1 as f64 / reps as f64,
            hybrid / best
        );
        for id in layer.buffers {
            rt.destroy_buffer(id).unwrap();
        }
    }
}
