//! A device whose ops take modelled wall time without using a CPU core (a sleep), standing in
//! for an accelerator of a chosen speed in scheduler benchmarks. It computes nothing: its
//! outputs are garbage, so it is for timing the scheduler only, never for results.

use npuhybrid::backend::{Backend, DeviceInfo, DeviceKind, ExecReport, OpMemory};
use npuhybrid::op::OpDesc;
use npuhybrid::Result;
use std::sync::Mutex;
use std::time::Duration;

pub struct TimedDevice {
    info: DeviceInfo,
    gflops: f64,
    gbs: f64,
    launch: Duration,
    /// One op at a time, like one engine, however many workers a policy gives the device.
    engine: Mutex<()>,
}

impl TimedDevice {
    /// An op takes `launch + max(flops / gflops, bytes / gbs)`; `gflops` = 0 makes it free.
    pub fn new(kind: DeviceKind, gflops: f64, gbs: f64, launch: Duration) -> TimedDevice {
        let mut info = DeviceInfo::unavailable(kind, "timed device (benchmark stand-in)", "");
        info.available = true;
        info.ops = u32::MAX;
        info.dtypes = u32::MAX;
        info.peak_gflops = gflops.max(1e-3);
        info.bandwidth_gbs = gbs.max(1e-3);
        info.max_in_flight = 1;
        TimedDevice { info, gflops, gbs, launch, engine: Mutex::new(()) }
    }
}

impl Backend for TimedDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&self, op: &OpDesc, _mem: &OpMemory) -> Result<ExecReport> {
        if self.gflops > 0.0 {
            let _engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            let bytes: usize = op.views().map(|v| v.bytes()).sum();
            let secs = (op.flops() / (self.gflops * 1e9)).max(bytes as f64 / (self.gbs * 1e9));
            std::thread::sleep(self.launch + Duration::from_secs_f64(secs));
        }
        Ok(ExecReport::default())
    }
}
