//! Helpers for black-box tests: runtimes over the CPU plus scripted test devices.
#![allow(dead_code)]

use npuhybrid::backend::cpu::{execute_on_host, CpuBackend};
use npuhybrid::backend::{Backend, DeviceInfo, DeviceKind, ExecReport, OpMemory};
use npuhybrid::memory::BufferId;
use npuhybrid::op::{DType, OpDesc, OpKind, TensorView};
use npuhybrid::{Error, Result, Runtime, RuntimeConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a scripted device behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Script {
    Works,
    AlwaysFails,
    Lost,
    /// Fails the first n ops, then works.
    FailsFirst(u64),
    /// Panics inside `execute` (a bug in a backend).
    Panics,
}

/// A test device: computes with the CPU kernels, optionally fails, optionally slow.
pub struct ScriptedDevice {
    info: DeviceInfo,
    script: Script,
    delay: Duration,
    /// Predicted upload time it reports for the input at position `missing` (it holds no
    /// copy of that operand), if any.
    upload_ns: f64,
    missing: Option<usize>,
    pub calls: Arc<AtomicU64>,
    /// Whether its kernels are made (`Backend::kernels_ready`); None: always.
    kernels_ready: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Times `Backend::prepare_kernels` was called.
    pub prepared: Arc<AtomicU64>,
}

impl ScriptedDevice {
    pub fn new(kind: DeviceKind, name: &str, peak_gflops: f64, script: Script) -> ScriptedDevice {
        let mut info = DeviceInfo::unavailable(kind, name, "");
        info.available = true;
        info.ops = u32::MAX;
        info.dtypes = DType::F32.bit() | DType::F16.bit() | DType::BF16.bit();
        info.peak_gflops = peak_gflops;
        info.bandwidth_gbs = peak_gflops;
        info.max_in_flight = 1;
        ScriptedDevice {
            info,
            script,
            delay: Duration::ZERO,
            upload_ns: 0.0,
            missing: None,
            calls: Arc::new(AtomicU64::new(0)),
            kernels_ready: None,
            prepared: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Its kernels are ready while `flag` is set.
    pub fn with_kernels_ready(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> ScriptedDevice {
        self.kernels_ready = Some(flag);
        self
    }

    /// Reports `ns` of upload time for input `index` of every op.
    pub fn without_copy_of_input(mut self, index: usize, ns: f64) -> Self {
        self.missing = Some(index);
        self.upload_ns = ns;
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl Backend for ScriptedDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&self, op: &OpDesc, mem: &OpMemory) -> Result<ExecReport> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.script {
            Script::AlwaysFails => {
                return Err(Error::DeviceFailed(format!("{} injected failure", self.info.name)))
            }
            Script::Lost => return Err(Error::DeviceLost(format!("{} is gone", self.info.name))),
            Script::FailsFirst(k) if n < k => return Err(Error::DeviceFailed("injected".into())),
            Script::Panics => panic!("backend bug"),
            _ => {}
        }
        std::thread::sleep(self.delay);
        execute_on_host(op, mem)?;
        Ok(ExecReport::default())
    }

    fn prepare_kernels(&self, _stop: &std::sync::atomic::AtomicBool) -> usize {
        self.prepared.fetch_add(1, Ordering::SeqCst);
        0
    }

    fn kernels_ready(&self, _op: &OpDesc) -> bool {
        self.kernels_ready.as_ref().is_none_or(|f| f.load(Ordering::Relaxed))
    }

    fn upload_ns(&self, op: &OpDesc, _mem: &OpMemory) -> f64 {
        match self.missing {
            Some(i) if op.inputs[i].is_some() => self.upload_ns,
            _ => 0.0,
        }
    }
}

pub fn config() -> RuntimeConfig {
    RuntimeConfig {
        perf_cache_dir: None,
        thermal_period: None,
        telemetry_period: None,
        threads: 2,
        // Placement in these tests follows the declared figures; tests/segments.rs covers
        // calibration.
        calibrate: false,
        ..Default::default()
    }
}

pub fn cpu() -> Box<dyn Backend> {
    Box::new(CpuBackend::new(2).unwrap())
}

pub fn runtime_with(extra: Vec<Box<dyn Backend>>) -> Runtime {
    let mut backends = vec![cpu()];
    backends.extend(extra);
    Runtime::with_backends(config(), backends).unwrap()
}

pub fn upload(rt: &Runtime, data: &[f32]) -> BufferId {
    let id = rt.alloc(data.len() * 4).unwrap();
    rt.write(id, 0, bytemuck_f32(data)).unwrap();
    id
}

pub fn download(rt: &Runtime, id: BufferId, n: usize) -> Vec<f32> {
    let mut bytes = vec![0u8; n * 4];
    rt.read(id, 0, &mut bytes).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

pub fn bytemuck_f32(data: &[f32]) -> &[u8] {
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, data.len() * 4) }
}

pub fn t(buffer: BufferId, shape: &[usize]) -> TensorView {
    TensorView::contiguous(buffer, DType::F32, shape, 0)
}

pub fn matmul(a: BufferId, b: BufferId, c: BufferId, m: usize, k: usize, n: usize) -> OpDesc {
    OpDesc::new(OpKind::Matmul, &[t(a, &[m, k]), t(b, &[k, n])], t(c, &[m, n]))
}

pub fn add(a: BufferId, b: BufferId, out: BufferId, n: usize) -> OpDesc {
    OpDesc::new(OpKind::Add, &[t(a, &[n]), t(b, &[n])], t(out, &[n]))
}

pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn reference_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>() as f32;
        }
    }
    c
}

pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {i}: got {g}, want {w}");
    }
}
