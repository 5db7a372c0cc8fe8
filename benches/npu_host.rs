//! Host-side costs of the NPU path, measured in one process:
//! - XRT tiling: packing, k-accumulation and epilogue per launch (a launch that returns at once
//!   stands in for the NPU), against a plain memcpy of the same bytes and against the time the
//!   simulated NPU model gives the launch;
//! - the simulated NPU's `admit` (the model's cost per op in the scheduler's path);
//! - one telemetry sample of this machine's real /sys.
//!
//! Run: `cargo bench --bench npu_host` (`cargo test` runs a small smoke version).

use npuhybrid::backend::sim::{SimNpu, SimNpuConfig};
use npuhybrid::backend::xrt::manifest::{ArgLayout, BLayout, KernelSpec, Tile};
use npuhybrid::backend::xrt::tiling::{launches, run_tiled, TileSlot};
use npuhybrid::backend::OpMemory;
use npuhybrid::device::{telemetry, PowerMode, SysRoot};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use npuhybrid::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// A launch that completes at once with C = 0: what remains is the host's work.
struct NullSlot {
    a: Vec<u8>,
    b: Vec<u8>,
    c: Vec<u8>,
}

impl TileSlot for NullSlot {
    fn inputs(&mut self) -> (&mut [u8], &mut [u8]) {
        (&mut self.a, &mut self.b)
    }
    fn start(&mut self) -> Result<()> {
        Ok(())
    }
    fn wait(&mut self) -> Result<&[u8]> {
        Ok(&self.c)
    }
}

fn spec(t: usize) -> KernelSpec {
    KernelSpec {
        dtype_in: DType::BF16,
        dtype_out: DType::F32,
        tile: Tile { m: t, k: t, n: t },
        b_layout: BLayout::RowMajor,
        xclbin: "-".into(),
        instructions: "-".into(),
        kernel_name: "MLIR_AIE".into(),
        opcode: 3,
        args: ArgLayout::default(),
        gflops: None,
    }
}

fn tiling(n: usize, tile: usize) {
    let pool = HostPool::new(0);
    let buf = |id, bytes: usize| Arc::new(Buffer::pooled(id, pool.alloc(bytes).unwrap(), bytes));
    let (a, b, c) = (buf(1, n * n * 2), buf(2, n * n * 2), buf(3, n * n * 4));
    let op = OpDesc::new(
        OpKind::Matmul,
        &[
            TensorView::contiguous(1, DType::BF16, &[n, n], 0),
            TensorView::contiguous(2, DType::BF16, &[n, n], 0),
        ],
        TensorView::contiguous(3, DType::F32, &[n, n], 0),
    );
    let mem = OpMemory::new(vec![a.clone(), b, c]);
    let s = spec(tile);
    let mut slots: Vec<NullSlot> = (0..3)
        .map(|_| NullSlot { a: vec![0; s.a_bytes()], b: vec![0; s.b_bytes()], c: vec![0; s.c_bytes()] })
        .collect();
    let host = median_secs(7, || {
        run_tiled(&op, &mem, &s, &mut slots).unwrap();
    });
    let count = launches(&s, 1, n, n, n);
    // Baseline: copying the bytes every launch packs, with nothing else.
    let per_launch_bytes = s.a_bytes() + s.b_bytes();
    let src = vec![1u8; per_launch_bytes];
    let mut dst = vec![0u8; per_launch_bytes];
    let copy = median_secs(7, || {
        for _ in 0..count {
            dst.copy_from_slice(std::hint::black_box(&src));
        }
    });
    let sim = SimNpu::new(SimNpuConfig { virtual_time: true, units: 1, ..Default::default() });
    let cfg = sim.config();
    let tile_op = OpDesc::new(
        OpKind::Matmul,
        &[
            TensorView::contiguous(1, DType::BF16, &[tile, tile], 0),
            TensorView::contiguous(2, DType::BF16, &[tile, tile], 0),
        ],
        TensorView::contiguous(3, DType::F32, &[tile, tile], 0),
    );
    let npu = cfg.op_duration(&tile_op, PowerMode::Performance, 1.0).as_secs_f64();
    println!(
        "tiling {n}^3 bf16 on {tile}^3 tiles: {count} launches, host {:.1} us/launch \
         (memcpy of the packed bytes alone {:.1} us/launch; modelled NPU time {:.1} us/launch)",
        host / count as f64 * 1e6,
        copy / count as f64 * 1e6,
        npu * 1e6
    );
}

fn sim_admit(n: usize) {
    let npu = SimNpu::new(SimNpuConfig { virtual_time: true, ..Default::default() });
    let v = TensorView::contiguous(1, DType::BF16, &[512, 512], 0);
    let op = OpDesc::new(OpKind::Matmul, &[v, v], v);
    let t = median_secs(5, || {
        for _ in 0..n {
            npu.admit(&op).unwrap();
        }
    });
    println!("simulated NPU admit (model + thermal step): {:.0} ns/op", t / n as f64 * 1e9);
}

fn telemetry_sample() {
    let root = SysRoot::real();
    let r = telemetry::sample(&root);
    let t = median_secs(51, || {
        std::hint::black_box(telemetry::sample(&root));
    });
    println!(
        "telemetry sample of this machine: {:.1} us ({} thermal zones, cpu {:?} C, gpu {:?} C)",
        t * 1e6,
        r.zones.len(),
        r.cpu_temp_c,
        r.gpu_temp_c
    );
    let _ = Duration::ZERO;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[(usize, usize)] = if full { &[(1024, 256), (2048, 256), (1024, 64)] } else { &[(128, 64)] };
    for &(n, tile) in sizes {
        tiling(n, tile);
    }
    sim_admit(if full { 100_000 } else { 1_000 });
    telemetry_sample();
}
