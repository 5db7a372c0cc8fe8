//! Vulkan matmul and GEMV throughput, timed by GPU timestamps (the kernel alone, like CUDA
//! events around a cuBLAS call), median of the runs. Each case is checked on sampled
//! elements against f64 dot products on the host before it is timed.
//!
//! cargo bench --bench vulkan_matmul [-- --quick | --sizes 2048,4096 | --quant [NxK,..]]
//! Prints one `RESULT` line per case: square matmuls f32 and f16 and f16 GEMVs in both weight
//! layouts at 1024, 2048, 4096 and 8192 (`--sizes` measures those matmul sizes only);
//! `benches/vulkan_torch_baseline.py` prints the cuBLAS figures for the same cases on the same
//! GPU and `benches/device/compare.py` puts the two side by side. Quantized-weight GEMVs
//! (q8_0, q4_0, q4_g128 [n, k] weights, f32 activations) at Llama-3.2-1B decode shapes print
//! `RESULT case=gemv_<type>_<n>x<k>` lines whose `weight_gbs` is the rate the weight bytes
//! were read at (decode's bound: compare it with the GPU's memory bandwidth); `--quant` measures
//! only those, at the default shapes or at the `NxK` ones given. `NPUHYBRID_VULKAN_GEMVQ=
//! wg,nr,us` forces the quantized GEMV's shape (threads, rows per workgroup, units in flight).

use half::f16;
use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, TensorView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

struct Case {
    name: String,
    dt: DType,
    m: usize,
    k: usize,
    n: usize,
    trans_b: bool,
}

fn buffer(pool: &Arc<HostPool>, id: u64, bytes: usize) -> Arc<Buffer> {
    Arc::new(Buffer::pooled(id, pool.alloc(bytes).unwrap(), bytes))
}

fn fill(b: &Buffer, dt: DType, vals: &[f32]) {
    let bytes: Vec<u8> = match dt {
        DType::F16 => vals.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        _ => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    b.write(0, &bytes).unwrap();
}

/// Every element of a buffer as f64 (one read: element-wise reads of 8192^2 took seconds).
fn read_all(b: &Buffer, dt: DType, len: usize) -> Vec<f64> {
    let mut x = vec![0u8; len * dt.size()];
    b.read(0, &mut x).unwrap();
    match dt {
        DType::F16 => x.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        _ => x.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
    }
}

/// Medians of the GPU's own time for `op`: one op per submission (its output written back
/// each time), and per op when 10 run back to back in one command buffer as a framework's
/// stream runs them. An untimed run first uploads the inputs and compiles; the first batch
/// only brings the clocks up.
fn time_op(gpu: &VulkanBackend, op: &OpDesc, mem: &OpMemory, iters: usize) -> (f64, f64) {
    gpu.execute(op, mem).expect("first run");
    let batch: Vec<(&OpDesc, &OpMemory)> = (0..iters.min(10)).map(|_| (op, mem)).collect();
    gpu.execute_batch(&batch).unwrap();
    let mut batched = Vec::new();
    for _ in 0..iters.div_ceil(10) {
        let reports = gpu.execute_batch(&batch).unwrap();
        batched.extend(reports[1..].iter().map(|r| r.device_ns.unwrap()));
    }
    let single: Vec<u64> =
        (0..iters).map(|_| gpu.execute(op, mem).unwrap().device_ns.expect("timestamps")).collect();
    (median(single) as f64, median(batched) as f64)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Measures one case; returns whether its sampled check passed.
fn run(gpu: &VulkanBackend, c: &Case, iters: usize, rng: &mut StdRng) -> bool {
    let pool = HostPool::new(0);
    let es = c.dt.size();
    let (m, k, n) = (c.m, c.k, c.n);
    let av: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bv: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (a, b, out) =
        (buffer(&pool, 1, m * k * es), buffer(&pool, 2, k * n * es), buffer(&pool, 3, m * n * es));
    fill(&a, c.dt, &av);
    fill(&b, c.dt, &bv);
    let bshape = if c.trans_b { [n, k] } else { [k, n] };
    let op = OpDesc::new(
        OpKind::Matmul,
        &[TensorView::contiguous(1, c.dt, &[m, k], 0), TensorView::contiguous(2, c.dt, &bshape, 0)],
        TensorView::contiguous(3, c.dt, &[m, n], 0),
    )
    .with_params(OpParams { trans_b: c.trans_b, ..OpParams::default() });
    let mem = OpMemory::new(vec![a.clone(), b.clone(), out.clone()]);
    let (ns, bns) = time_op(gpu, &op, &mem, iters);
    // Check sampled outputs against f64 dot products of the rounded inputs (after timing, so
    // the slow host check does not let the GPU clock down in between).
    let (ar, br, outr) = (read_all(&a, c.dt, m * k), read_all(&b, c.dt, k * n), read_all(&out, c.dt, m * n));
    let mut worst = 0.0f64;
    for _ in 0..64 {
        let (i, j) = (rng.random_range(0..m), rng.random_range(0..n));
        let want: f64 = (0..k)
            .map(|p| {
                let bij = if c.trans_b { br[j * k + p] } else { br[p * n + j] };
                ar[i * k + p] * bij
            })
            .sum();
        let got = outr[i * n + j];
        worst = worst.max((got - want).abs() / (k as f64).sqrt());
    }
    let limit = if c.dt == DType::F16 { 2e-2 } else { 1e-4 };
    let ok = worst < limit;
    let flops = 2.0 * (m * n * k) as f64;
    let bytes = ((m * k + k * n + m * n) * es) as f64;
    println!(
        "RESULT case={} dtype={} m={m} k={k} n={n} us={:.1} tflops={:.2} gbs={:.0} batched_us={:.1} batched_tflops={:.2} batched_gbs={:.0} check={} err={:.2e}",
        c.name,
        c.dt,
        ns / 1e3,
        flops / ns / 1e3,
        bytes / ns,
        bns / 1e3,
        flops / bns / 1e3,
        bytes / bns,
        if ok { "ok" } else { "FAILED" },
        worst
    );
    ok
}

/// One GEMV y = x W^T with a quantized W ([n, k]); returns whether its sampled check passed.
fn run_quant(gpu: &VulkanBackend, wt: DType, n: usize, k: usize, iters: usize, rng: &mut StdRng) -> bool {
    let pool = HostPool::new(0);
    let xv: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let wv: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut wq = vec![0u8; wt.bytes_of(n * k)];
    npuhybrid::quant::quantize_row(wt, &wv, &mut wq);
    drop(wv);
    let (x, w, out) = (buffer(&pool, 1, k * 4), buffer(&pool, 2, wq.len()), buffer(&pool, 3, n * 4));
    fill(&x, DType::F32, &xv);
    w.write(0, &wq).unwrap();
    let op = OpDesc::new(
        OpKind::Matmul,
        &[TensorView::contiguous(1, DType::F32, &[1, k], 0), TensorView::contiguous(2, wt, &[n, k], 0)],
        TensorView::contiguous(3, DType::F32, &[1, n], 0),
    )
    .with_params(OpParams { trans_b: true, ..OpParams::default() });
    let mem = OpMemory::new(vec![x.clone(), w.clone(), out.clone()]);
    // The first run uploads the weights; later ones read the device replica.
    let (ns, bns) = time_op(gpu, &op, &mem, iters);
    // Sampled rows against f64 dot products with the dequantised weights.
    let outr = read_all(&out, DType::F32, n);
    let row_bytes = wt.bytes_of(k);
    let mut row = vec![0f32; k];
    let mut worst = 0.0f64;
    for _ in 0..64 {
        let j = rng.random_range(0..n);
        npuhybrid::quant::dequantize_row(wt, &wq[j * row_bytes..][..row_bytes], &mut row);
        let want: f64 = xv.iter().zip(&row).map(|(a, b)| *a as f64 * *b as f64).sum();
        worst = worst.max((outr[j] - want).abs() / (k as f64).sqrt());
    }
    let ok = worst < 1e-4;
    // The GEMV's [threads, rows of W per workgroup, units in flight per thread].
    let shape = npuhybrid::backend::vulkan::quant_gemv_shape(k, n, 1);
    let flops = 2.0 * (n * k) as f64;
    let wbytes = wq.len() as f64;
    let bytes = wbytes + ((k + n) * 4) as f64;
    println!(
        "RESULT case=gemv_{wt}_{n}x{k} dtype={wt} m=1 k={k} n={n} us={:.1} tflops={:.2} gbs={:.0} batched_us={:.1} batched_tflops={:.2} batched_gbs={:.0} weight_gbs={:.0} batched_weight_gbs={:.0} shape={} check={} err={:.2e}",
        ns / 1e3,
        flops / ns / 1e3,
        bytes / ns,
        bns / 1e3,
        flops / bns / 1e3,
        bytes / bns,
        wbytes / ns,
        wbytes / bns,
        shape.map(|s| s.to_string()).join(","),
        if ok { "ok" } else { "FAILED" },
        worst
    );
    ok
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and then only a quick smoke run is done (CI runs on lavapipe).
    let quick = std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let all = VulkanBackend::probe().expect("a Vulkan device");
    let gpu = &all[0];
    let info = gpu.info();
    println!("device: {} ({})", info.name, info.driver);
    println!("coopmat f16 path: {}", gpu.uses_coopmat());
    for (k, v) in &info.details {
        println!("  {k}: {v}");
    }
    // `--sizes 3968,4096` measures square matmuls of these sizes only.
    let args: Vec<String> = std::env::args().collect();
    let custom: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(|x| x.parse().expect("size")).collect());
    // `--quant [2048x2048,..]`: the quantized GEMVs alone, at these n x k shapes if given.
    let quant_only = args.iter().position(|a| a == "--quant");
    let quant_custom: Option<Vec<(usize, usize)>> =
        quant_only.and_then(|i| args.get(i + 1)).filter(|s| !s.starts_with("--")).map(|s| {
            s.split(',')
                .map(|x| {
                    let (n, k) = x.split_once('x').expect("NxK");
                    (n.parse().expect("n"), k.parse().expect("k"))
                })
                .collect()
        });
    if let Some(env) = std::env::var_os("NPUHYBRID_VULKAN_GEMVQ") {
        println!("NPUHYBRID_VULKAN_GEMVQ={}", env.to_string_lossy());
    }
    let sizes: &[usize] = match &custom {
        Some(v) => v,
        None if quant_only.is_some() => &[],
        None if quick => &[64, 200],
        None => &[1024, 2048, 4096, 8192],
    };
    let mut cases = Vec::new();
    for &s in sizes {
        for dt in [DType::F32, DType::F16] {
            cases.push(Case { name: format!("matmul_{dt}_{s}"), dt, m: s, k: s, n: s, trans_b: false });
        }
    }
    let gemv_sizes: &[usize] = match &custom {
        Some(_) => &[],
        None if quant_only.is_some() => &[],
        None if quick => &[300],
        None => &[1024, 2048, 4096, 8192],
    };
    for &g in gemv_sizes {
        for trans_b in [true, false] {
            cases.push(Case {
                name: format!("gemv_f16_{g}_{}", if trans_b { "nt" } else { "nn" }),
                dt: DType::F16,
                m: 1,
                k: g,
                n: g,
                trans_b,
            });
        }
    }
    // Quantized decode GEMVs at Llama-3.2-1B shapes (n x k): attention output (and Q), the
    // fused gate/up projection's halves, the down projection, the vocabulary projection.
    let quant_shapes: &[(usize, usize)] = match (&custom, &quant_custom) {
        (_, Some(v)) => v,
        (Some(_), None) => &[],
        (None, None) if quick => &[(300, 256)],
        (None, None) => &[(2048, 2048), (8192, 2048), (2048, 8192), (128256, 2048)],
    };
    let iters = if quick { 3 } else { 20 };
    let mut rng = StdRng::seed_from_u64(1);
    let mut failed = cases.iter().filter(|c| !run(gpu, c, iters, &mut rng)).count();
    for &(n, k) in quant_shapes {
        for wt in [DType::Q8_0, DType::Q4_0, DType::Q4G128] {
            failed += usize::from(!run_quant(gpu, wt, n, k, iters, &mut rng));
        }
    }
    if failed > 0 {
        eprintln!("{failed} case(s) failed their check");
        std::process::exit(1);
    }
}
