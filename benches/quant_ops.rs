//! Quantized-weight matmuls on the CPU backend against the same shapes with f32 and f16
//! weights, timed in alternation in one process (the machine is shared and noisy).
//! Decode shapes (m = 1) are bound by reading the weight: the table gives the weight bytes
//! read per second and the speed-up over f32 weights.
//!
//! Run: `cargo bench --bench quant_ops [-- decode|rows|prefill]`; threads: `NH_BENCH_THREADS` (2).

use npuhybrid::backend::cpu::CpuBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, TensorView};
use std::sync::Arc;
use std::time::Instant;

/// Weight types, and whether the op allows int8 activations (`q8a` rows: the integer path).
const WEIGHTS: [(DType, bool); 9] = [
    (DType::F32, false),
    (DType::F16, false),
    (DType::Q8_0, false),
    (DType::Q4_1, false),
    (DType::Q4_0, false),
    (DType::Q4G128, false),
    (DType::Q8_0, true),
    (DType::Q4_1, true),
    (DType::Q4_0, true),
];

struct Tensors {
    pool: Arc<HostPool>,
    bufs: Vec<Arc<Buffer>>,
}

impl Tensors {
    /// A dense tensor of `shape` holding random values in [-0.5, 0.5) (quantized as needed).
    fn tensor(&mut self, dtype: DType, shape: &[usize]) -> TensorView {
        let id = self.bufs.len() as u64 + 1;
        let view = TensorView::contiguous(id, dtype, shape, 0);
        let buf = Buffer::pooled(id, self.pool.alloc(view.bytes()).unwrap(), view.bytes());
        let mut seed = 0x9e37_79b9_u32.wrapping_mul(id as u32 + 1);
        let vals: Vec<f32> = (0..view.numel())
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let bytes: Vec<u8> = match dtype {
            DType::F32 => vals.iter().flat_map(|v| v.to_ne_bytes()).collect(),
            DType::F16 => vals.iter().flat_map(|v| half::f16::from_f32(*v).to_ne_bytes()).collect(),
            q => {
                let mut out = vec![0u8; view.bytes()];
                npuhybrid::quant::quantize_row(q, &vals, &mut out);
                out
            }
        };
        buf.write(0, &bytes).unwrap();
        self.bufs.push(Arc::new(buf));
        view
    }
}

/// Medians of several closures timed in alternation.
fn medians(runs: usize, fns: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    fns.iter_mut().for_each(|f| f());
    let mut times = vec![Vec::new(); fns.len()];
    for _ in 0..runs {
        for (f, t) in fns.iter_mut().zip(&mut times) {
            let at = Instant::now();
            f();
            t.push(at.elapsed().as_secs_f64());
        }
    }
    times
        .iter_mut()
        .map(|v| {
            v.sort_by(|x, y| x.total_cmp(y));
            v[v.len() / 2]
        })
        .collect()
}

fn bench(cpu: &CpuBackend, label: &str, m: usize, n: usize, k: usize, runs: usize) {
    let mut t = Tensors { pool: HostPool::new(0), bufs: Vec::new() };
    let a = t.tensor(DType::F32, &[m, k]);
    let c = t.tensor(DType::F32, &[m, n]);
    let ops: Vec<(String, OpDesc, usize)> = WEIGHTS
        .iter()
        .filter(|(_, q8)| !q8 || m <= 8)
        .map(|&(dt, q8)| {
            let w = t.tensor(dt, &[n, k]);
            let p = OpParams { trans_b: true, allow_q8_activations: q8, ..OpParams::default() };
            let label = if q8 { format!("{dt} q8a") } else { dt.to_string() };
            (label, OpDesc::new(OpKind::Matmul, &[a, w], c).with_params(p), w.bytes())
        })
        .collect();
    let mem = OpMemory::new(t.bufs.clone());
    let mut fns: Vec<Box<dyn FnMut() + '_>> = ops
        .iter()
        .map(|(_, op, _)| {
            let mem = &mem;
            Box::new(move || {
                cpu.execute(op, mem).unwrap();
            }) as Box<dyn FnMut()>
        })
        .collect();
    let times = medians(runs, &mut fns);
    for ((dt, _, bytes), s) in ops.iter().zip(&times) {
        println!(
            "| {label} | {m} | {n} | {k} | {dt} | {:.3} | {:.1} | {:.1} | {:.2}x |",
            s * 1e3,
            *bytes as f64 / s / 1e9,
            2.0 * (m * n * k) as f64 / s / 1e9,
            times[0] / s
        );
    }
}

fn main() {
    let threads: usize = std::env::var("NH_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |s: &str| filter.as_deref().is_none_or(|f| s.contains(f));
    let cpu = CpuBackend::new(threads).expect("cpu backend");
    println!("threads {threads}; medians, weights [n, k] with trans_b, activations f32 (q8a: int8 blocks)\n");
    println!("| case | m | n | k | weight | ms | weight GB/s | GFLOP/s | vs f32 |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|");
    if want("decode") {
        // 1.1B llama shapes (hidden 2048, FFN 5632, vocab 32000).
        bench(&cpu, "decode", 1, 5632, 2048, 40);
        bench(&cpu, "decode", 1, 2048, 5632, 40);
        bench(&cpu, "decode", 1, 32000, 2048, 15);
    }
    if want("rows") {
        // A few rows at once (speculative or batched decode): each weight read once for all.
        bench(&cpu, "rows", 4, 5632, 2048, 20);
        bench(&cpu, "rows", 8, 5632, 2048, 20);
    }
    if want("prefill") {
        bench(&cpu, "prefill", 512, 2048, 2048, 5);
        bench(&cpu, "prefill", 64, 5632, 2048, 5);
    }
}
