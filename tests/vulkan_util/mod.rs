//! Shared by the Vulkan tests: one backend per test binary (lavapipe in CI), tensors in host
//! buffers, and running an op on the GPU and on the CPU backend to compare.
#![allow(dead_code)]

use half::f16;
use npuhybrid::backend::cpu::execute_on_host;
use npuhybrid::backend::vulkan::VulkanBackend;
use npuhybrid::backend::{Backend, OpMemory};
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::validate::validate;
use npuhybrid::op::{DType, OpDesc, TensorView};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The first usable device. A machine without one fails the test with the probe's reason
/// (install mesa-vulkan-drivers for lavapipe).
pub fn gpu() -> &'static VulkanBackend {
    static GPU: OnceLock<VulkanBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut all = VulkanBackend::probe()
            .unwrap_or_else(|e| panic!("no Vulkan device for the tests (install mesa-vulkan-drivers): {e}"));
        all.remove(0)
    })
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn pool() -> &'static Arc<HostPool> {
    static POOL: OnceLock<Arc<HostPool>> = OnceLock::new();
    POOL.get_or_init(|| HostPool::new(0))
}

#[derive(Clone)]
pub struct Tensor {
    pub buf: Arc<Buffer>,
    pub view: TensorView,
}

/// A buffer id no other test buffer has.
#[allow(dead_code)]
pub fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub fn buffer(bytes: usize) -> Arc<Buffer> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let block = pool().alloc(bytes.max(1)).expect("host memory");
    let b = Arc::new(Buffer::pooled(id, block, bytes.max(1)));
    b.write(0, &vec![0u8; bytes.max(1)]).unwrap();
    b
}

fn encode(dt: DType, values: &[f32]) -> Vec<u8> {
    match dt {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        _ => panic!("tests use f32 and f16"),
    }
}

fn decode(dt: DType, bytes: &[u8]) -> f32 {
    match dt {
        DType::F32 => f32::from_le_bytes(bytes.try_into().unwrap()),
        DType::F16 => f16::from_le_bytes(bytes.try_into().unwrap()).to_f32(),
        _ => panic!("tests use f32 and f16"),
    }
}

impl Tensor {
    /// A dense tensor holding `values`.
    pub fn new(dt: DType, shape: &[usize], values: &[f32]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(n, values.len());
        let buf = buffer(n * dt.size());
        buf.write(0, &encode(dt, values)).unwrap();
        let view = TensorView::contiguous(buf.id(), dt, shape, 0);
        Tensor { buf, view }
    }

    pub fn random(rng: &mut StdRng, dt: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::new(dt, shape, &v)
    }

    pub fn zeros(dt: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::new(dt, shape, &vec![0.0; n])
    }

    /// A view of `shape` whose last two dims are stored swapped (a transposed matrix), with
    /// random contents.
    pub fn random_transposed(rng: &mut StdRng, dt: DType, shape: &[usize]) -> Tensor {
        let r = shape.len();
        let mut stored = shape.to_vec();
        stored.swap(r - 1, r - 2);
        let mut t = Tensor::random(rng, dt, &stored);
        t.view.shape.swap(r - 1, r - 2);
        t.view.strides.swap(r - 1, r - 2);
        t
    }

    /// Same shape and dtype, fresh zeroed buffer.
    pub fn like(&self) -> Tensor {
        Tensor::zeros(self.view.dtype, self.view.dims())
    }

    /// Elements in row-major order of the view.
    pub fn values(&self) -> Vec<f32> {
        let v = &self.view;
        let es = v.dtype.size();
        let mut out = Vec::with_capacity(v.numel());
        let dims = v.dims();
        let mut idx = vec![0usize; v.rank];
        for _ in 0..v.numel() {
            let off: usize = idx.iter().zip(v.strides()).map(|(i, s)| i * s).sum();
            let mut b = vec![0u8; es];
            self.buf.read(v.offset + off * es, &mut b).unwrap();
            out.push(decode(v.dtype, &b));
            for d in (0..v.rank).rev() {
                idx[d] += 1;
                if idx[d] < dims[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A matmul's operand views and the tensors behind them: A, B, and the bias when given.
pub fn matmul_operands<'a>(
    a: &'a Tensor,
    b: &'a Tensor,
    bias: Option<&'a Tensor>,
) -> (Vec<TensorView>, Vec<&'a Tensor>) {
    let ts: Vec<&Tensor> = [a, b].into_iter().chain(bias).collect();
    (ts.iter().map(|t| t.view).collect(), ts)
}

/// Memory of an op: the given tensors' buffers.
pub fn memory(ts: &[&Tensor]) -> OpMemory {
    let mut bufs: Vec<Arc<Buffer>> = Vec::new();
    for t in ts {
        if !bufs.iter().any(|b| b.id() == t.buf.id()) {
            bufs.push(t.buf.clone());
        }
    }
    OpMemory::new(bufs)
}

pub fn check_valid(op: &OpDesc, ts: &[&Tensor]) {
    let lens = |v: &TensorView| {
        ts.iter()
            .find(|t| t.buf.id() == v.buffer)
            .map(|t| t.buf.len())
            .ok_or_else(|| npuhybrid::Error::invalid("unknown buffer"))
    };
    validate(op, &lens).expect("test op is valid");
}

/// Runs `op` (whose output is `out`) on the GPU and, with a copy of `out`, on the CPU
/// backend; asserts they agree within `tol` (absolute + relative). Returns the GPU values.
pub fn compare(op: &OpDesc, inputs: &[&Tensor], out: &Tensor, tol: f32) -> Vec<f32> {
    compare_on(gpu(), op, inputs, out, tol)
}

/// `compare` on a given backend (one opened with other settings than `gpu()`).
pub fn compare_on(gpu: &VulkanBackend, op: &OpDesc, inputs: &[&Tensor], out: &Tensor, tol: f32) -> Vec<f32> {
    let mut all: Vec<&Tensor> = inputs.to_vec();
    all.push(out);
    check_valid(op, &all);
    assert!(gpu.supports(op), "GPU should support {:?}", op.kind);
    // The CPU gets its own output buffer with the same initial contents (beta reads it).
    let mut bytes = vec![0u8; out.buf.len()];
    out.buf.read(0, &mut bytes).unwrap();
    let cpu_buf = buffer(out.buf.len());
    cpu_buf.write(0, &bytes).unwrap();
    let cpu_out = Tensor { view: TensorView { buffer: cpu_buf.id(), ..out.view }, buf: cpu_buf };
    let mut cpu_op = op.clone();
    cpu_op.output = cpu_out.view;
    let mut cpu_all: Vec<&Tensor> = inputs.to_vec();
    cpu_all.push(&cpu_out);
    execute_on_host(&cpu_op, &memory(&cpu_all)).expect("cpu reference runs");

    let report = gpu.execute(op, &memory(&all)).expect("gpu runs the op");
    assert!(report.device_ns.is_some(), "timestamps are reported");
    let got = out.values();
    let want = cpu_out.values();
    assert_close(&got, &want, tol, &format!("{:?}", op.kind));
    got
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: gpu {g} vs cpu {w} (tol {tol})");
    }
}

pub fn tol(dt: DType) -> f32 {
    if dt == DType::F16 {
        1e-2
    } else {
        2e-5
    }
}
