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
//!
//! Diagnostics (benches/device/run.sh `gemvdiag`): `--gemv NxK,..` measures f16 GEMVs
//! (x W^T, W [N, K]) at those shapes only; `--repeat R` measures every case R times in a row
//! (`rep=` on each line); `--cold` cycles through copies of the weights (256 MiB in all, more
//! than the GPU's L2 cache holds) so that no run finds its weights in the cache;
//! `--qtypes q8_0,q4_0` limits the quantized types; `--sustain-ms T` keeps the GPU busy for T ms before each case is timed (clocks up). Every
//! line also gives the spread of the single runs (`min_us`, `max_us`, `first_us`) and the time
//! of day it was printed (`at=`, UTC, to line up with `nvidia-smi` samples).

use half::f16;
use npuhybrid::backend::vulkan::{OpTimestamps, VulkanBackend};
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, TensorView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

fn to_bytes(dt: DType, vals: &[f32]) -> Vec<u8> {
    match dt {
        DType::F16 => vals.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        _ => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn from_bytes(dt: DType, x: &[u8]) -> Vec<f64> {
    match dt {
        DType::F16 => x.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        _ => x.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
    }
}

fn fill(b: &Buffer, dt: DType, vals: &[f32]) {
    b.write(0, &to_bytes(dt, vals)).unwrap();
}

/// Every element of a buffer as f64 (one read: element-wise reads of 8192^2 took seconds).
fn read_all(b: &Buffer, dt: DType, len: usize) -> Vec<f64> {
    let mut x = vec![0u8; len * dt.size()];
    b.read(0, &mut x).unwrap();
    from_bytes(dt, &x)
}

/// How cases are timed (see the diagnostics in the header).
#[derive(Clone, Copy)]
struct Timing {
    iters: usize,
    /// Cycle through copies of the weights so that none is read from the L2 cache.
    cold: bool,
    /// Back-to-back batches before timing, so the GPU's clocks are up.
    sustain: Duration,
}

/// Weight bytes the copies of `--cold` add up to: several times the L2 cache of an H100 or
/// H200 (50 MiB), so a weight read once is gone from it by the time it is read again.
const COLD_BYTES: usize = 256 << 20;

/// Copies of a weight of `bytes` a case cycles through.
fn weight_copies(bytes: usize, t: &Timing) -> usize {
    if t.cold {
        COLD_BYTES.div_ceil(bytes.max(1)).clamp(2, 32)
    } else {
        1
    }
}

/// The GPU's own time of each run of an op: `single`, one op per submission (its output
/// written back each time), and `batched`, per op when 10 run back to back in one command
/// buffer as a framework's stream runs them. `ops` are the same op over different copies of
/// its weights, taken in turn. An untimed run of each first uploads the inputs and compiles;
/// then batches run untimed for `t.sustain` (at least one batch: with the default 0, a few
/// microseconds of work for small cases, which need not bring an idle GPU's clocks up).
struct Samples {
    single: Vec<u64>,
    batched: Vec<u64>,
}

fn time_op(gpu: &VulkanBackend, ops: &[(OpDesc, OpMemory)], t: &Timing) -> Samples {
    for (op, mem) in ops {
        gpu.execute(op, mem).expect("first run");
    }
    let batch: Vec<(&OpDesc, &OpMemory)> =
        (0..t.iters.min(10)).map(|i| (&ops[i % ops.len()].0, &ops[i % ops.len()].1)).collect();
    let busy = Instant::now();
    loop {
        gpu.execute_batch(&batch).unwrap();
        if busy.elapsed() >= t.sustain {
            break;
        }
    }
    let mut batched = Vec::new();
    for _ in 0..t.iters.div_ceil(10) {
        let reports = gpu.execute_batch(&batch).unwrap();
        batched.extend(reports[1..].iter().map(|r| r.device_ns.unwrap()));
    }
    let single = (0..t.iters)
        .map(|i| {
            let (op, mem) = &ops[i % ops.len()];
            gpu.execute(op, mem).unwrap().device_ns.expect("timestamps")
        })
        .collect();
    Samples { single, batched }
}

/// The fields every RESULT line ends with: the spread of the single runs, the copies of
/// the weights cycled through and the time of day (UTC, milliseconds).
fn spread_fields(s: &Samples, copies: usize) -> String {
    let min = s.single.iter().min().copied().unwrap_or(0);
    let max = s.single.iter().max().copied().unwrap_or(0);
    let first = s.single.first().copied().unwrap_or(0);
    let ms =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis()) % 86_400_000;
    let (h, m, sec, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!(
        "min_us={:.1} max_us={:.1} first_us={:.1} copies={copies} at={h:02}:{m:02}:{sec:02}.{milli:03}",
        min as f64 / 1e3,
        max as f64 / 1e3,
        first as f64 / 1e3
    )
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Buffer id of copy `c` of a case's weights (copy 0 is buffer 2).
fn weight_id(c: usize) -> u64 {
    if c == 0 {
        2
    } else {
        10 + c as u64
    }
}

/// The op over each copy of the weights: `make(id)` builds the op reading weight buffer `id`;
/// every copy holds `bytes`.
fn with_copies(
    pool: &Arc<HostPool>,
    copies: usize,
    bytes: &[u8],
    others: &[Arc<Buffer>],
    make: impl Fn(u64) -> OpDesc,
) -> Vec<(OpDesc, OpMemory)> {
    (0..copies)
        .map(|c| {
            let w = buffer(pool, weight_id(c), bytes.len());
            w.write(0, bytes).unwrap();
            let mut all = others.to_vec();
            all.insert(1, w);
            (make(weight_id(c)), OpMemory::new(all))
        })
        .collect()
}

/// Measures one case; returns whether its sampled check passed.
fn run(gpu: &VulkanBackend, c: &Case, t: &Timing, rng: &mut StdRng) -> bool {
    let pool = HostPool::new(0);
    let es = c.dt.size();
    let (m, k, n) = (c.m, c.k, c.n);
    let av: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bv: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (a, out) = (buffer(&pool, 1, m * k * es), buffer(&pool, 3, m * n * es));
    fill(&a, c.dt, &av);
    let b_bytes = to_bytes(c.dt, &bv);
    drop(bv);
    let bshape = if c.trans_b { [n, k] } else { [k, n] };
    let make = |id: u64| {
        OpDesc::new(
            OpKind::Matmul,
            &[TensorView::contiguous(1, c.dt, &[m, k], 0), TensorView::contiguous(id, c.dt, &bshape, 0)],
            TensorView::contiguous(3, c.dt, &[m, n], 0),
        )
        .with_params(OpParams { trans_b: c.trans_b, ..OpParams::default() })
    };
    let copies = weight_copies(b_bytes.len(), t);
    let ops = with_copies(&pool, copies, &b_bytes, &[a.clone(), out.clone()], make);
    let samples = time_op(gpu, &ops, t);
    let (ns, bns) = (median(samples.single.clone()) as f64, median(samples.batched.clone()) as f64);
    // The last run read the copy it ended on, which holds the same values as every other.
    // Check sampled outputs against f64 dot products of the rounded inputs (after timing, so
    // the slow host check does not let the GPU clock down in between).
    let (ar, br, outr) = (read_all(&a, c.dt, m * k), from_bytes(c.dt, &b_bytes), read_all(&out, c.dt, m * n));
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
        "RESULT case={} dtype={} m={m} k={k} n={n} us={:.1} tflops={:.2} gbs={:.0} batched_us={:.1} batched_tflops={:.2} batched_gbs={:.0} check={} err={:.2e} {}",
        c.name,
        c.dt,
        ns / 1e3,
        flops / ns / 1e3,
        bytes / ns,
        bns / 1e3,
        flops / bns / 1e3,
        bytes / bns,
        if ok { "ok" } else { "FAILED" },
        worst,
        spread_fields(&samples, copies) + &gemv_path(c)
    );
    ok
}

/// Which shader an f16 GEMV of [N, K] weights takes: ` gemv_path=rows:wg,nr,us` under
/// NPUHYBRID_VULKAN_GEMV=rows (gemv_quant.comp's shape), else ` gemv_path=gemv`; nothing for
/// other cases.
fn gemv_path(c: &Case) -> String {
    if c.m != 1 || c.dt != DType::F16 || !c.trans_b {
        return String::new();
    }
    let rows = std::env::var("NPUHYBRID_VULKAN_GEMV").is_ok_and(|v| v == "rows") && c.k % 8 == 0;
    if !rows {
        return " gemv_path=gemv".into();
    }
    let shape = npuhybrid::backend::vulkan::quant_gemv_shape(c.k, c.n, 1);
    format!(" gemv_path=rows:{}", shape.map(|s| s.to_string()).join(","))
}

/// One GEMV y = x W^T with a quantized W ([n, k]); returns whether its sampled check passed.
fn run_quant(gpu: &VulkanBackend, wt: DType, n: usize, k: usize, t: &Timing, rng: &mut StdRng) -> bool {
    let pool = HostPool::new(0);
    let xv: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let wv: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut wq = vec![0u8; wt.bytes_of(n * k)];
    npuhybrid::quant::quantize_row(wt, &wv, &mut wq);
    drop(wv);
    let (x, out) = (buffer(&pool, 1, k * 4), buffer(&pool, 3, n * 4));
    fill(&x, DType::F32, &xv);
    let make = |id: u64| {
        OpDesc::new(
            OpKind::Matmul,
            &[TensorView::contiguous(1, DType::F32, &[1, k], 0), TensorView::contiguous(id, wt, &[n, k], 0)],
            TensorView::contiguous(3, DType::F32, &[1, n], 0),
        )
        .with_params(OpParams { trans_b: true, ..OpParams::default() })
    };
    let copies = weight_copies(wq.len(), t);
    let ops = with_copies(&pool, copies, &wq, &[x.clone(), out.clone()], make);
    // The first run of each copy uploads its weights; later ones read the device replica.
    let samples = time_op(gpu, &ops, t);
    let (ns, bns) = (median(samples.single.clone()) as f64, median(samples.batched.clone()) as f64);
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
        "RESULT case=gemv_{wt}_{n}x{k} dtype={wt} m=1 k={k} n={n} us={:.1} tflops={:.2} gbs={:.0} batched_us={:.1} batched_tflops={:.2} batched_gbs={:.0} weight_gbs={:.0} batched_weight_gbs={:.0} shape={} check={} err={:.2e} {}",
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
        worst,
        spread_fields(&samples, copies)
    );
    ok
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it,
    // and then only a quick smoke run is done (CI runs on lavapipe).
    let quick = std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let all = VulkanBackend::probe().expect("a Vulkan device");
    let gpu = &all[0];
    // Every batch reports per-op times (they are sampled by default).
    gpu.set_op_timestamps(OpTimestamps::Always);
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
    let quant_custom =
        quant_only.and_then(|i| args.get(i + 1)).filter(|s| !s.starts_with("--")).map(|s| shapes(s));
    // `--gemv 128256x2048,..`: f16 GEMVs (x W^T) at these n x k shapes alone.
    let gemv_custom = value_of(&args, "--gemv").map(|s| shapes(&s));
    let repeat: usize = value_of(&args, "--repeat").map_or(1, |s| s.parse().expect("--repeat R"));
    let sustain_ms: u64 = value_of(&args, "--sustain-ms").map_or(0, |s| s.parse().expect("--sustain-ms T"));
    let cold = args.iter().any(|a| a == "--cold");
    // `--qtypes q8_0,q4_0`: these weight types only.
    let qtypes: Vec<DType> = value_of(&args, "--qtypes")
        .map_or(vec![DType::Q8_0, DType::Q4_0, DType::Q4G128], |s| {
            s.split(',').map(|t| DType::from_name(t).expect("a quantized type")).collect()
        });
    if let Some(env) = std::env::var_os("NPUHYBRID_VULKAN_GEMVQ") {
        println!("NPUHYBRID_VULKAN_GEMVQ={}", env.to_string_lossy());
    }
    let only_some = custom.is_some() || quant_only.is_some() || gemv_custom.is_some();
    let sizes: &[usize] = match &custom {
        Some(v) => v,
        None if only_some => &[],
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
        _ if only_some => &[],
        _ if quick => &[300],
        _ => &[1024, 2048, 4096, 8192],
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
    for &(n, k) in gemv_custom.iter().flatten() {
        cases.push(Case { name: format!("gemv_f16_{n}x{k}_nt"), dt: DType::F16, m: 1, k, n, trans_b: true });
    }
    // Quantized decode GEMVs at Llama-3.2-1B shapes (n x k): attention output (and Q), the
    // fused gate/up projection's halves, the down projection, the vocabulary projection.
    let quant_shapes: &[(usize, usize)] = match &quant_custom {
        Some(v) => v,
        None if quant_only.is_some() => &[(2048, 2048), (8192, 2048), (2048, 8192), (128256, 2048)],
        None if only_some => &[],
        None if quick => &[(300, 256)],
        None => &[(2048, 2048), (8192, 2048), (2048, 8192), (128256, 2048)],
    };
    let t = Timing {
        iters: if quick { 3 } else { 20 },
        cold: cold || (quick && !only_some),
        sustain: Duration::from_millis(sustain_ms),
    };
    let mut rng = StdRng::seed_from_u64(1);
    let mut failed = 0;
    for c in &cases {
        for rep in 0..repeat {
            print_rep(repeat, rep);
            failed += usize::from(!run(gpu, c, &t, &mut rng));
        }
    }
    for &(n, k) in quant_shapes {
        for &wt in &qtypes {
            for rep in 0..repeat {
                print_rep(repeat, rep);
                failed += usize::from(!run_quant(gpu, wt, n, k, &t, &mut rng));
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} case(s) failed their check");
        std::process::exit(1);
    }
}

/// With `--repeat`, which repetition the next RESULT line is (a line of its own, so the
/// RESULT lines keep the fields compare.py reads).
fn print_rep(repeat: usize, rep: usize) {
    if repeat > 1 {
        println!("rep={rep}");
    }
}

/// The argument after `flag`, if any.
fn value_of(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

/// `NxK,NxK,..` as (n, k) pairs.
fn shapes(s: &str) -> Vec<(usize, usize)> {
    s.split(',')
        .map(|x| {
            let (n, k) = x.split_once('x').expect("NxK");
            (n.parse().expect("n"), k.parse().expect("k"))
        })
        .collect()
}
