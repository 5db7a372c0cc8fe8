//! A device's first use: a few measured runs (a lone tiny op, a batch of tiny ops, a
//! bandwidth-bound op, a matmul) replace the figures its backend declares, so placement is
//! never decided by a guess (lavapipe declares 50 GFLOP/s and delivers about 1) nor learned
//! from the user's own work. Pipeline compilation is reported apart and not counted.

use super::perf_model::{DeviceModel, Priors};
use crate::backend::{Backend, HostWorkPaused, OpMemory};
use crate::error::{Error, Result};
use crate::memory::{Buffer, BufferId, HostPool};
use crate::op::{DType, OpDesc, OpKind, TensorView};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What calibration measured, and what it cost.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub priors: Priors,
    /// Wall time of the whole calibration.
    pub took: Duration,
    /// The part of it spent creating pipelines or kernels.
    pub setup: Duration,
}

/// Scratch buffers for calibration. Their ids have generation 0, which no runtime handle has
/// (handles start at generation 1), so device replicas of them never alias a caller's.
struct Scratch {
    pool: Arc<HostPool>,
    buffers: Vec<Arc<Buffer>>,
}

impl Scratch {
    fn buffer(&mut self, bytes: usize) -> Result<BufferId> {
        let id = self.buffers.len() as BufferId + 1;
        let block = self.pool.alloc(bytes)?;
        let buf = Arc::new(Buffer::pooled(id, block, bytes));
        // Small non-zero values: no denormals, no infinities.
        let fill: Vec<u8> =
            (0..bytes / 4).flat_map(|i| (1.0f32 + (i % 7) as f32 / 8.0).to_le_bytes()).collect();
        buf.write(0, &fill)?;
        self.buffers.push(buf);
        Ok(id)
    }

    fn memory(&self) -> OpMemory {
        OpMemory::new(self.buffers.clone())
    }
}

fn f32_view(buffer: BufferId, shape: &[usize]) -> TensorView {
    TensorView::contiguous(buffer, DType::F32, shape, 0)
}

/// Pauses the runtime's own work on the host's cores while it lives (see `calibrate`).
pub type QuietHost<'a> = &'a dyn Fn() -> Vec<HostWorkPaused<'a>>;

/// Best of `runs` timed runs of a segment, after one untimed run (uploads, compilation): its
/// wall time, and the device's own time for its ops where the device reports one (GPU
/// timestamps). The timed runs keep the host quiet.
fn best_of(
    backend: &dyn Backend,
    ops: &[OpDesc],
    mem: &OpMemory,
    runs: usize,
    setup: &mut Duration,
    quiet: QuietHost,
) -> Result<(f64, Option<f64>)> {
    let pairs: Vec<(&OpDesc, &OpMemory)> = ops.iter().map(|op| (op, mem)).collect();
    let (mut best, mut best_device) = (f64::INFINITY, None::<f64>);
    let mut paused = Vec::new();
    for i in 0..=runs {
        if i == 1 {
            paused = quiet();
        }
        let started = Instant::now();
        let report = backend.execute_segment(&pairs);
        let wall = started.elapsed();
        if let Some(e) = report.error {
            return Err(e);
        }
        let compiled: u64 = report.reports.iter().map(|r| r.setup_ns).sum();
        *setup += Duration::from_nanos(compiled);
        if i > 0 {
            best = best.min(wall.as_nanos().saturating_sub(compiled as u128) as f64);
            let device: Option<u64> = report.reports.iter().map(|r| r.device_ns).sum();
            if let Some(d) = device {
                best_device = Some(best_device.map_or(d as f64, |b| b.min(d as f64)));
            }
        }
    }
    drop(paused);
    Ok((best, best_device))
}

/// The time an op keeps the device busy inside a segment: its own timer where it has one
/// (the wall time of a lone op also pays the submission and the copy of its output back to
/// the host, which inside a graph it does not; on a discrete GPU that copy over PCIe is most
/// of a 12 MiB add's wall time), else the wall time less a launch.
fn in_segment((wall, device): (f64, Option<f64>), launch: f64, op_ns: f64) -> f64 {
    device.unwrap_or(wall - launch).max(op_ns)
}

/// Calibrations made in this process, by device identity: runtimes created one after
/// another (tests, short-lived tools) measure a device once.
static MEASURED: parking_lot::Mutex<Vec<(String, Priors)>> = parking_lot::Mutex::new(Vec::new());

pub fn measured_in_this_process(model: &DeviceModel) -> Option<Priors> {
    MEASURED.lock().iter().find(|(id, _)| id == model.identity()).map(|(_, p)| *p)
}

pub fn remember(model: &DeviceModel) {
    let mut measured = MEASURED.lock();
    measured.retain(|(id, _)| id != model.identity());
    measured.push((model.identity().to_string(), model.priors()));
}

/// Measures the device. Takes a few milliseconds on a GPU; on a CPU implementation of
/// Vulkan most of it is compiling two pipelines (once: they are cached on disk). A runtime
/// destroyed meanwhile waits for it, so that the result is saved and the next run does not
/// pay it again. Launch and per-op costs are wall times, which the host's load inflates: a
/// first run's prefill on every core made an H100's batched op look 60 ms long, the GPU was
/// never tried and the figures were saved. So `quiet` pauses the runtime's own host work
/// during the timed runs (a few milliseconds; the untimed first runs, which compile, are
/// not paused).
pub fn calibrate(backend: &dyn Backend, quiet: QuietHost) -> Result<Calibration> {
    let started = Instant::now();
    let mut setup = Duration::ZERO;
    let mut s = Scratch { pool: HostPool::new(0), buffers: Vec::new() };

    // Launch: a lone 16-element add. Per-op cost inside a submission: 8 of them at once.
    let (a, b) = (s.buffer(64)?, s.buffer(64)?);
    let outs: Vec<BufferId> = (0..8).map(|_| s.buffer(64)).collect::<Result<_>>()?;
    let add = |out| OpDesc::new(OpKind::Add, &[f32_view(a, &[16]), f32_view(b, &[16])], f32_view(out, &[16]));
    let mem = s.memory();
    let launch = best_of(backend, &[add(outs[0])], &mem, 5, &mut setup, quiet)?.0;
    let eight: Vec<OpDesc> = outs.iter().map(|&o| add(o)).collect();
    let batch = best_of(backend, &eight, &mem, 3, &mut setup, quiet)?.0;
    // One more op in a submission cannot cost more than a submission of its own: more is
    // other work preempting the batch (what `quiet` does not pause: other processes).
    let op_ns = ((batch - launch) / 7.0).min(launch).max(launch / 100.0).max(100.0);

    // Bandwidth: a 1 Mi-element add reads 8 MiB and writes 4 MiB.
    const N: usize = 1 << 20;
    let (x, y, z) = (s.buffer(4 * N)?, s.buffer(4 * N)?, s.buffer(4 * N)?);
    let big = OpDesc::new(OpKind::Add, &[f32_view(x, &[N]), f32_view(y, &[N])], f32_view(z, &[N]));
    let t = best_of(backend, &[big], &s.memory(), 2, &mut setup, quiet)?;
    let bandwidth_gbs = (12 * N) as f64 / in_segment(t, launch, op_ns);

    // Compute: square f32 matmuls, doubling while one takes under a millisecond (a fast
    // GPU needs a large one to show its peak; a slow device stops at 256).
    let mut peak_gflops = 0.0f64;
    let mut n = 256;
    loop {
        let (p, q, r) = (s.buffer(4 * n * n)?, s.buffer(4 * n * n)?, s.buffer(4 * n * n)?);
        let mm =
            OpDesc::new(OpKind::Matmul, &[f32_view(p, &[n, n]), f32_view(q, &[n, n])], f32_view(r, &[n, n]));
        let flops = mm.flops();
        let t = best_of(backend, &[mm], &s.memory(), 2, &mut setup, quiet)?;
        let run = in_segment(t, launch, op_ns);
        peak_gflops = peak_gflops.max(flops / run);
        if run > 1e6 || n >= 2048 {
            break;
        }
        n *= 2;
    }
    if !(launch.is_finite() && bandwidth_gbs.is_finite() && peak_gflops.is_finite()) {
        return Err(Error::Internal(format!("{}: calibration measured no time", backend.info().name)));
    }
    Ok(Calibration {
        priors: Priors { launch_ns: launch, op_ns, peak_gflops, bandwidth_gbs },
        took: started.elapsed(),
        setup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DeviceInfo, DeviceKind, ExecReport, SegmentReport};

    /// A device whose ops take 2 us on its own timer per MiB of traffic, but whose every
    /// submission costs 1 ms of wall time plus 1 ms per 4 MiB of output (copied back to the
    /// host over a slow link).
    struct FastBehindSlowLink(DeviceInfo);

    impl Backend for FastBehindSlowLink {
        fn info(&self) -> &DeviceInfo {
            &self.0
        }
        fn execute(&self, _op: &OpDesc, _mem: &OpMemory) -> Result<ExecReport> {
            unreachable!("calibration runs segments")
        }
        fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
            let out: usize = ops.iter().map(|(op, _)| op.output.bytes()).sum();
            std::thread::sleep(Duration::from_millis(1) + Duration::from_nanos(out as u64 / 4));
            let reports = ops
                .iter()
                .map(|(op, _)| ExecReport {
                    device_ns: Some(1_000 + 2 * (op.dims().bytes as u64 >> 10)),
                    ..Default::default()
                })
                .collect();
            SegmentReport { reports, error: None, phases: None }
        }
    }

    #[test]
    fn bandwidth_and_compute_come_from_the_devices_own_timer() {
        let gpu = FastBehindSlowLink(DeviceInfo::unavailable(DeviceKind::Gpu, "test GPU", "test"));
        let c = calibrate(&gpu, &Vec::new).unwrap();
        // 12 MiB in about 26 us: some 480 GB/s; by wall time it would look like 12.
        assert!(c.priors.bandwidth_gbs > 200.0, "{:?}", c.priors);
        assert!(c.priors.launch_ns >= 1e6, "a lone op still pays the submission: {:?}", c.priors);
    }

    /// A device whose submissions take 1 ms of wall time, and 50 ms for a batch of several ops
    /// while the host's cores are busy (`host` not paused); it notes whether each run found the
    /// host paused.
    struct PreemptedByHostWork {
        info: DeviceInfo,
        host: parking_lot::RwLock<()>,
        paused_runs: parking_lot::Mutex<Vec<bool>>,
    }

    impl Backend for PreemptedByHostWork {
        fn info(&self) -> &DeviceInfo {
            &self.info
        }
        fn execute(&self, _op: &OpDesc, _mem: &OpMemory) -> Result<ExecReport> {
            unreachable!("calibration runs segments")
        }
        fn execute_segment(&self, ops: &[(&OpDesc, &OpMemory)]) -> SegmentReport {
            let paused = self.host.is_locked_exclusive();
            self.paused_runs.lock().push(paused);
            let busy_host = !paused && ops.len() > 1;
            std::thread::sleep(Duration::from_millis(if busy_host { 50 } else { 1 }));
            let reports =
                ops.iter().map(|_| ExecReport { device_ns: Some(1_000), ..Default::default() }).collect();
            SegmentReport { reports, error: None, phases: None }
        }
    }

    fn preempted_gpu() -> PreemptedByHostWork {
        PreemptedByHostWork {
            info: DeviceInfo::unavailable(DeviceKind::Gpu, "test GPU", "test"),
            host: parking_lot::RwLock::new(()),
            paused_runs: parking_lot::Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn timed_runs_pause_the_hosts_work_and_untimed_first_runs_do_not() {
        let gpu = preempted_gpu();
        let quiet = || vec![gpu.host.write()];
        let c = calibrate(&gpu, &quiet).unwrap();
        let runs = gpu.paused_runs.lock().clone();
        // Seven measurements (lone op, batch, bandwidth, four matmul sizes), each one untimed
        // run first.
        assert_eq!(runs.iter().filter(|p| !**p).count(), 7, "{runs:?}");
        assert!(!runs[0] && runs[1], "{runs:?}");
        assert!(c.priors.op_ns < 1e6, "the batch was timed on a quiet host: {:?}", c.priors);
    }

    #[test]
    fn a_batched_op_never_costs_more_than_a_submission_of_its_own() {
        // Nothing pauses the host's work here (another process's, say): the batch of eight
        // takes 50 ms against 1 ms alone, which would make each op 7 ms.
        let gpu = preempted_gpu();
        let c = calibrate(&gpu, &Vec::new).unwrap();
        assert!(c.priors.op_ns <= c.priors.launch_ns, "{:?}", c.priors);
    }
}
