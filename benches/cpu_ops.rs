//! CPU backend benchmark: our ops through `CpuBackend::execute` (and matmul also through
//! `Runtime::submit` + wait, the C API's path) against Debian's OpenBLAS
//! sgemm (loaded at run time) and against measured memcpy bandwidth, in the same process.
//!
//! Run: `cargo bench --bench cpu_ops [-- matmul|bandwidth|dispatch]`
//! Threads: `NH_BENCH_THREADS` (default 2), used by both sides and printed.
//! Kernels: `NPUHYBRID_CPU_ISA=avx2` runs our AVX2 path on an AVX-512 machine;
//! `OPENBLAS_CORETYPE=Haswell` does the same for OpenBLAS. Both are printed.
//! Clock: `NH_BENCH_CLOCK=cpu` times the process's CPU time instead of wall time (see `clock_secs`).

use npuhybrid::backend::cpu::CpuBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, OpParams, TensorView};
use npuhybrid::{Runtime, RuntimeConfig};
use std::ffi::c_int;
use std::sync::Arc;
use std::time::Instant;

/// Median seconds of `f` over repeated runs: at least `min_runs`, and until ~`budget_s`.
fn median_secs(min_runs: usize, budget_s: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: page faults, pool spin-up, caches
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_runs || (start.elapsed().as_secs_f64() < budget_s && times.len() < 1000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Seconds on the clock the side is timed by: wall time, or with `NH_BENCH_CLOCK=cpu` the
/// CPU time of the whole process (all threads, spinning included). On a shared machine the
/// latter compares one-thread kernels without the time other processes take from them.
fn clock_secs() -> f64 {
    static CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if *CPU.get_or_init(|| std::env::var("NH_BENCH_CLOCK").is_ok_and(|c| c == "cpu")) {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec to write.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
}

/// Medians of several functions timed in alternation, so load from other processes on a
/// shared machine hits every side alike.
fn median_alternating(min_runs: usize, budget_s: f64, fns: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    fns.iter_mut().for_each(|f| f());
    let start = Instant::now();
    let mut times = vec![Vec::new(); fns.len()];
    while times[0].len() < min_runs || (start.elapsed().as_secs_f64() < budget_s && times[0].len() < 1000) {
        for (f, t) in fns.iter_mut().zip(&mut times) {
            let at = clock_secs();
            f();
            t.push(clock_secs() - at);
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

fn median_pair(min_runs: usize, budget_s: f64, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    let t = median_alternating(min_runs, budget_s, &mut [&mut a, &mut b]);
    (t[0], t[1])
}

type SgemmFn = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const f32,
    c_int,
    *const f32,
    c_int,
    f32,
    *mut f32,
    c_int,
);

struct OpenBlas {
    _lib: libloading::Library,
    sgemm: SgemmFn,
    /// `openblas_get_corename()`: the kernel set it picked (`OPENBLAS_CORETYPE` overrides it).
    core: String,
}

impl OpenBlas {
    fn load(threads: usize) -> Option<OpenBlas> {
        // SAFETY: Debian's libopenblas0; the symbols have the documented CBLAS signatures.
        unsafe {
            let lib = libloading::Library::new("libopenblas.so.0").ok()?;
            let sgemm = *lib.get::<SgemmFn>(b"cblas_sgemm\0").ok()?;
            let set: libloading::Symbol<unsafe extern "C" fn(c_int)> =
                lib.get(b"openblas_set_num_threads\0").ok()?;
            set(threads as c_int);
            let core = lib
                .get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"openblas_get_corename\0")
                .map(|f| std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            Some(OpenBlas { _lib: lib, sgemm, core })
        }
    }

    /// Row-major C[m,n] = A[m,k] B[k,n] (B given as [n,k] when `trans_b`).
    fn sgemm(
        &self,
        (m, n, k): (usize, usize, usize),
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        trans_b: bool,
    ) {
        const ROW_MAJOR: c_int = 101;
        const NO_TRANS: c_int = 111;
        const TRANS: c_int = 112;
        let (tb, ldb) = if trans_b { (TRANS, k) } else { (NO_TRANS, n) };
        // SAFETY: the buffers hold m*k, k*n and m*n floats.
        unsafe {
            (self.sgemm)(
                ROW_MAJOR,
                NO_TRANS,
                tb,
                m as c_int,
                n as c_int,
                k as c_int,
                1.0,
                a,
                k as c_int,
                b,
                ldb as c_int,
                0.0,
                c,
                n as c_int,
            )
        }
    }
}

/// Buffers for one benchmark case, filled with small pseudo-random values.
struct Tensors {
    pool: Arc<HostPool>,
    bufs: Vec<Arc<Buffer>>,
}

impl Tensors {
    fn new() -> Tensors {
        Tensors { pool: HostPool::new(0), bufs: Vec::new() }
    }

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
            DType::BF16 => vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_ne_bytes()).collect(),
            _ => vec![0; view.bytes()],
        };
        buf.write(0, &bytes).unwrap();
        self.bufs.push(Arc::new(buf));
        view
    }

    fn ptr(&self, v: &TensorView) -> *mut f32 {
        self.bufs[v.buffer as usize - 1].as_ptr() as *mut f32
    }

    fn memory(&self) -> OpMemory {
        OpMemory::new(self.bufs.clone())
    }

    /// The same op on copies of its buffers inside a runtime, for submit + wait timing.
    fn in_runtime(&self, rt: &Runtime, op: &OpDesc) -> OpDesc {
        let ids: Vec<u64> = self
            .bufs
            .iter()
            .map(|b| {
                let id = rt.alloc(b.len()).unwrap();
                // SAFETY: nothing writes these benchmark buffers concurrently.
                rt.write(id, 0, unsafe { b.bytes() }).unwrap();
                id
            })
            .collect();
        let mut op = op.clone();
        for v in op.inputs.iter_mut().flatten().chain(std::iter::once(&mut op.output)) {
            v.buffer = ids[v.buffer as usize - 1];
        }
        op
    }
}

/// `NH_BENCH_ONLY=<text>` limits the cases to those whose label contains the text (matmul:
/// the shape, `2048x2048x2048`; bandwidth: op and dtype, `silu bf16`).
fn selected(label: &str) -> bool {
    std::env::var("NH_BENCH_ONLY").map_or(true, |only| label.contains(&only))
}

/// `NH_BENCH_DTYPES=f32` (comma-separated) limits the matmul rows to those operand types.
fn dtype_selected(dtype: DType) -> bool {
    std::env::var("NH_BENCH_DTYPES")
        .map_or(true, |list| list.split(',').any(|d| d.trim() == dtype.to_string()))
}

fn bench_matmul(cpu: &CpuBackend, rt: &Runtime, blas: Option<&OpenBlas>) {
    println!("\n## matmul (C = A B, row-major; GFLOP/s, median)\n");
    println!(
        "\"backend\": CpuBackend::execute; \"runtime\": Runtime::submit + Event::wait (what the C API's"
    );
    println!("nh_submit + nh_event_wait call); ratio = runtime / OpenBLAS, all timed in alternation.\n");
    println!("GEMV rows (M = 1) also time a memcpy of B's bytes (same threads): \"B GB/s\" = B's bytes /");
    println!("runtime time, next to that memcpy's GB/s (bytes read + written / time); \"time / bound\" =");
    println!("runtime time / (B's bytes / memcpy GB/s).\n");
    println!("| shape (MxKxN) | dtype | backend GFLOP/s | runtime GFLOP/s | OpenBLAS GFLOP/s | ratio | vs our f32 | GEMV: B GB/s, memcpy GB/s, time / bound |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    // 24 rows: a MiniLM sentence at batch 1 through its [out, in] weights (2.4 MB: from L3).
    let shapes: [(usize, usize, usize, bool); 11] = [
        (256, 256, 256, false),
        (512, 512, 512, false),
        (1024, 1024, 1024, false),
        (2048, 2048, 2048, false),
        (128, 384, 1536, false),
        (128, 1536, 384, false),
        (128, 384, 1536, true),
        (24, 384, 1536, true),
        (24, 1536, 384, true),
        (1, 4096, 4096, false),
        (1, 4096, 4096, true),
    ];
    let budget = 1.5;
    for (m, k, n, trans_b) in shapes {
        let flops = 2.0 * (m * n * k) as f64;
        let gflops = |secs: f64| flops / secs * 1e-9;
        let shape = format!("{m}x{k}x{n}{}", if trans_b { " (B^T)" } else { "" });
        if !selected(&shape) {
            continue;
        }
        let mut f32_secs = 0.0;
        for dtype in [DType::F32, DType::F16, DType::BF16].into_iter().filter(|d| dtype_selected(*d)) {
            let mut t = Tensors::new();
            let a = t.tensor(dtype, &[m, k]);
            let b = t.tensor(dtype, &if trans_b { [n, k] } else { [k, n] });
            let c = t.tensor(dtype, &[m, n]);
            let op = OpDesc::new(OpKind::Matmul, &[a, b], c)
                .with_params(OpParams { trans_b, ..Default::default() });
            let mem = t.memory();
            let rt_op = t.in_runtime(rt, &op);
            let mut backend = || {
                cpu.execute(&op, &mem).unwrap();
            };
            let mut runtime = || rt.submit(rt_op.clone()).unwrap().wait(None).unwrap();
            let mut theirs = || {
                if let (DType::F32, Some(blas)) = (dtype, blas) {
                    blas.sgemm((m, n, k), t.ptr(&a), t.ptr(&b), t.ptr(&c), trans_b)
                }
            };
            let b_bytes = k * n * dtype.size();
            let mut memcpy = (m == 1).then(|| Memcpy::new(cpu.threads(), b_bytes));
            let mut copy = || {
                if let Some(mc) = memcpy.as_mut() {
                    mc.run()
                }
            };
            let secs = median_alternating(
                5,
                3.0 * budget,
                &mut [&mut backend, &mut runtime, &mut theirs, &mut copy],
            );
            let gemv = if m == 1 {
                let bw = 2.0 * b_bytes as f64 / secs[3] * 1e-9;
                let ours = b_bytes as f64 / secs[1] * 1e-9;
                format!("{ours:.1}, {bw:.1}, {:.2}", bw / ours)
            } else {
                String::new()
            };
            if dtype == DType::F32 {
                f32_secs = secs[1];
            }
            let (blas_g, ratio) = match (dtype, blas) {
                (DType::F32, Some(_)) => {
                    (format!("{:.1}", gflops(secs[2])), format!("{:.2}", secs[2] / secs[1]))
                }
                _ => (String::new(), String::new()),
            };
            println!(
                "| {shape} | {dtype} | {:.1} | {:.1} | {blas_g} | {ratio} | {:.2} | {gemv} |",
                gflops(secs[0]),
                gflops(secs[1]),
                f32_secs / secs[1]
            );
        }
    }
}

/// A memcpy of `bytes` split over `threads` (the bandwidth reference), timed by the caller.
struct Memcpy {
    src: Vec<u8>,
    dst: Vec<u8>,
    pool: rayon::ThreadPool,
}

impl Memcpy {
    fn new(threads: usize, bytes: usize) -> Memcpy {
        Memcpy {
            src: vec![1u8; bytes],
            dst: vec![0u8; bytes],
            pool: rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap(),
        }
    }

    fn run(&mut self) {
        use rayon::prelude::*;
        let chunk = self.src.len().div_ceil(self.pool.current_num_threads() * 4);
        let (src, dst) = (&self.src, &mut self.dst);
        self.pool.install(|| {
            dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s))
        });
    }

    /// Bytes read + written by one run.
    fn bytes_moved(&self) -> usize {
        2 * self.src.len()
    }
}

fn bench_bandwidth(cpu: &CpuBackend) {
    println!("\n## bandwidth-bound ops (bytes read + written / median time)\n");
    println!("| op | elements | dtype | ours GB/s | memcpy GB/s (same run) | time / bound |");
    println!("|---|---:|---|---:|---:|---:|");
    // `NH_BENCH_ELEMENTS=65536,1048576` replaces the sizes (multiples of 8192): a size that
    // stays in L2 shows the kernels' arithmetic rate apart from the memory system.
    let sizes: Vec<usize> = std::env::var("NH_BENCH_ELEMENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1 << 20, 1 << 24]);
    for elements in sizes {
        let mut memcpy = Memcpy::new(cpu.threads(), elements * 4);
        let rows = elements / 1024;
        let cases: Vec<(&str, OpKind, DType, OpParams, bool)> = vec![
            ("copy", OpKind::Copy, DType::F32, OpParams::default(), false),
            ("add", OpKind::Add, DType::F32, OpParams::default(), true),
            ("mul", OpKind::Mul, DType::F32, OpParams::default(), true),
            ("scale", OpKind::Scale, DType::F32, OpParams { alpha: 0.5, ..Default::default() }, false),
            ("silu", OpKind::Silu, DType::F32, OpParams::default(), false),
            ("gelu (erf)", OpKind::Gelu, DType::F32, OpParams::default(), false),
            (
                "gelu (tanh)",
                OpKind::Gelu,
                DType::F32,
                OpParams { gelu_tanh: true, ..Default::default() },
                false,
            ),
            ("softmax [rows, 1024]", OpKind::Softmax, DType::F32, OpParams::default(), false),
            ("rmsnorm [rows, 1024]", OpKind::RmsNorm, DType::F32, OpParams::default(), false),
            ("layernorm [rows, 1024]", OpKind::LayerNorm, DType::F32, OpParams::default(), false),
            ("rope [rows, 8, 128]", OpKind::Rope, DType::F32, OpParams::default(), false),
            ("add", OpKind::Add, DType::F16, OpParams::default(), true),
            ("silu", OpKind::Silu, DType::BF16, OpParams::default(), false),
            ("silu", OpKind::Silu, DType::F16, OpParams::default(), false),
            ("gelu (erf)", OpKind::Gelu, DType::BF16, OpParams::default(), false),
            ("gelu (erf)", OpKind::Gelu, DType::F16, OpParams::default(), false),
            ("softmax [rows, 1024]", OpKind::Softmax, DType::F16, OpParams::default(), false),
        ];
        for (name, kind, dtype, params, binary) in cases {
            if !selected(&format!("{name} {dtype}")) {
                continue;
            }
            let mut t = Tensors::new();
            let shape: Vec<usize> =
                if kind == OpKind::Rope { vec![elements / (8 * 128), 8, 128] } else { vec![rows, 1024] };
            let a = t.tensor(dtype, &shape);
            let out = t.tensor(dtype, &shape);
            let mut inputs = vec![a];
            if binary {
                inputs.push(t.tensor(dtype, &shape));
            }
            let op = OpDesc::new(kind, &inputs, out).with_params(params);
            let mem = t.memory();
            let moved = memcpy.bytes_moved() as f64;
            let (secs, copy_secs) = median_pair(
                10,
                1.0,
                || {
                    cpu.execute(&op, &mem).unwrap();
                },
                || memcpy.run(),
            );
            let bytes = (inputs.len() + 1) * elements * dtype.size();
            let (gbs, bw) = (bytes as f64 / secs * 1e-9, moved / copy_secs * 1e-9);
            println!("| {name} | {elements} | {dtype} | {gbs:.1} | {bw:.1} | {:.2} |", bw / gbs);
        }
    }
}

fn bench_dispatch(cpu: &CpuBackend, rt: &Runtime) {
    println!("\n## dispatch (one tiny op, median)\n");
    let mut t = Tensors::new();
    let a = t.tensor(DType::F32, &[16]);
    let b = t.tensor(DType::F32, &[16]);
    let c = t.tensor(DType::F32, &[16]);
    let op = OpDesc::new(OpKind::Add, &[a, b], c);
    let mem = t.memory();
    let secs = median_secs(1000, 0.5, || {
        cpu.execute(&op, &mem).unwrap();
    });
    println!("add of 16 floats, CpuBackend::execute: {:.2} us median", secs * 1e6);
    let rt_op = t.in_runtime(rt, &op);
    let secs = median_secs(1000, 0.5, || rt.submit(rt_op.clone()).unwrap().wait(None).unwrap());
    println!("add of 16 floats, Runtime::submit + Event::wait: {:.2} us median", secs * 1e6);
}

fn main() {
    let threads: usize = std::env::var("NH_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |s: &str| which.is_empty() || which.iter().any(|w| w == s);
    let cpu = CpuBackend::new(threads).expect("cpu backend");
    let rt = Runtime::new(RuntimeConfig {
        threads,
        perf_cache_dir: None,
        thermal_period: None,
        ..Default::default()
    })
    .expect("runtime");
    let blas = OpenBlas::load(threads);
    println!("# npuhybrid CPU backend benchmark");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("clock: {}", std::env::var("NH_BENCH_CLOCK").unwrap_or_else(|_| "wall".into()));
    println!("load average at start: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    println!("cpu: {} ({})", cpu.info().name, cpu.info().driver);
    println!(
        "threads: ours {threads}, OpenBLAS {}",
        if blas.is_some() { threads.to_string() } else { "not loaded (libopenblas.so.0 missing)".into() }
    );
    // Which kernels each side runs: ours per NPUHYBRID_CPU_ISA (capped to the CPU), OpenBLAS's
    // per OPENBLAS_CORETYPE (e.g. Haswell for its AVX2 kernels on an AVX-512 machine).
    let isa = cpu.info().details.iter().find(|(k, _)| k == "isa").map_or("?", |(_, v)| v.as_str());
    println!(
        "kernels: ours {isa} (NPUHYBRID_CPU_ISA={}), OpenBLAS {} (OPENBLAS_CORETYPE={})",
        std::env::var("NPUHYBRID_CPU_ISA").unwrap_or_default(),
        blas.as_ref().map_or("-", |b| b.core.as_str()),
        std::env::var("OPENBLAS_CORETYPE").unwrap_or_default()
    );
    if wants("matmul") {
        bench_matmul(&cpu, &rt, blas.as_ref());
    }
    if wants("bandwidth") {
        bench_bandwidth(&cpu);
    }
    if wants("dispatch") {
        bench_dispatch(&cpu, &rt);
    }
}
