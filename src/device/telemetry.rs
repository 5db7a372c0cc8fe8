//! Telemetry: a monitor thread samples thermal zones, hwmon (k10temp/zenpower for the CPU,
//! amdgpu for the iGPU, amdxdna for the NPU) and, where hwmon has nothing for the NPU, the
//! amdxdna driver's GET_INFO, at a fixed period, and keeps recent history for the policy's
//! thermal rules and the C API. Reading the NPU never wakes it: see `NpuReader`.

use super::amdxdna;
use super::sysfs::SysRoot;
use crate::policy::DeviceClass;
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One set of readings. A sensor the machine does not have stays `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readings {
    /// CPU die temperature (k10temp `Tctl`/`Tdie`, else an `x86_pkg_temp` zone).
    pub cpu_temp_c: Option<f32>,
    /// iGPU temperature (amdgpu `edge`).
    pub gpu_temp_c: Option<f32>,
    /// iGPU (on APUs: whole package) power from amdgpu `power1_average`/`power1_input`.
    pub gpu_power_w: Option<f32>,
    pub gpu_clock_mhz: Option<f32>,
    /// NPU power (amdxdna hwmon `NPU_power`, else GET_INFO's sensor) and clock (GET_INFO).
    pub npu_power_w: Option<f32>,
    pub npu_clock_mhz: Option<f32>,
    /// NPU temperature (amdxdna hwmon `NPU_temperature`, where the platform's PMF reports it).
    pub npu_temp_c: Option<f32>,
    /// Every thermal zone: (type, degrees C).
    pub zones: Vec<(String, f32)>,
}

impl Readings {
    /// The temperature that governs a device class. The NPU sits on the same die as the CPU
    /// cores; where the driver reports no NPU temperature it shares the CPU's.
    pub fn temperature(&self, class: DeviceClass) -> Option<f32> {
        match class {
            DeviceClass::Cpu => self.cpu_temp_c,
            DeviceClass::Npu => self.npu_temp_c.or(self.cpu_temp_c),
            DeviceClass::Gpu => self.gpu_temp_c.or(self.cpu_temp_c),
        }
    }

    pub fn power(&self, class: DeviceClass) -> Option<f32> {
        match class {
            DeviceClass::Cpu => None,
            DeviceClass::Gpu => self.gpu_power_w,
            DeviceClass::Npu => self.npu_power_w,
        }
    }
}

/// Readings with the time they were taken, relative to the monitor's start.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at: Duration,
    pub readings: Readings,
}

fn milli(v: i64) -> f32 {
    v as f32 / 1000.0
}

/// hwmon values: temperatures in millidegrees C, power in microwatts, frequency in Hz.
fn hwmon_temp_by_label(root: &SysRoot, dir: &str, labels: &[&str]) -> Option<f32> {
    for label in labels {
        for i in 1..=16 {
            if root.read(format!("{dir}/temp{i}_label")).as_deref() == Some(*label) {
                return root.read_i64(format!("{dir}/temp{i}_input")).map(milli);
            }
        }
    }
    None
}

/// The CPU die temperature alone (k10temp/zenpower, else an `x86_pkg_temp` zone): a cheaper
/// read than `sample` for a backend's own readings.
pub fn cpu_temperature(root: &SysRoot) -> Option<f32> {
    for hw in root.list("/sys/class/hwmon", "hwmon") {
        let dir = format!("/sys/class/hwmon/{hw}");
        if matches!(root.read(format!("{dir}/name")).as_deref(), Some("k10temp") | Some("zenpower")) {
            return hwmon_temp_by_label(root, &dir, &["Tctl", "Tdie"])
                .or_else(|| root.read_i64(format!("{dir}/temp1_input")).map(milli));
        }
    }
    root.list("/sys/class/thermal", "thermal_zone").into_iter().find_map(|zone| {
        let dir = format!("/sys/class/thermal/{zone}");
        (root.read(format!("{dir}/type")).as_deref() == Some("x86_pkg_temp"))
            .then(|| root.read_i64(format!("{dir}/temp")).map(milli))
            .flatten()
    })
}

/// Reads every sensor once (the NPU's through a fresh `NpuReader`).
pub fn sample(root: &SysRoot) -> Readings {
    let mut r = sample_without_npu(root);
    let npu = NpuReader::default().read(root);
    (r.npu_power_w, r.npu_temp_c, r.npu_clock_mhz) = (npu.power_w, npu.temp_c, npu.clock_mhz);
    r
}

fn sample_without_npu(root: &SysRoot) -> Readings {
    let mut r = Readings::default();
    for zone in root.list("/sys/class/thermal", "thermal_zone") {
        let dir = format!("/sys/class/thermal/{zone}");
        if let (Some(kind), Some(t)) =
            (root.read(format!("{dir}/type")), root.read_i64(format!("{dir}/temp")))
        {
            r.zones.push((kind, milli(t)));
        }
    }
    for hw in root.list("/sys/class/hwmon", "hwmon") {
        let dir = format!("/sys/class/hwmon/{hw}");
        match root.read(format!("{dir}/name")).as_deref() {
            Some("k10temp") | Some("zenpower") if r.cpu_temp_c.is_none() => {
                r.cpu_temp_c = hwmon_temp_by_label(root, &dir, &["Tctl", "Tdie"])
                    .or_else(|| root.read_i64(format!("{dir}/temp1_input")).map(milli));
            }
            Some("amdgpu") if r.gpu_temp_c.is_none() && r.gpu_power_w.is_none() => {
                r.gpu_temp_c = hwmon_temp_by_label(root, &dir, &["edge"])
                    .or_else(|| root.read_i64(format!("{dir}/temp1_input")).map(milli));
                r.gpu_power_w = root
                    .read_i64(format!("{dir}/power1_average"))
                    .or_else(|| root.read_i64(format!("{dir}/power1_input")))
                    .map(|uw| uw as f32 / 1e6);
                r.gpu_clock_mhz = root.read_i64(format!("{dir}/freq1_input")).map(|hz| hz as f32 / 1e6);
            }
            _ => {}
        }
    }
    if r.cpu_temp_c.is_none() {
        r.cpu_temp_c = r.zones.iter().find(|(kind, _)| kind == "x86_pkg_temp").map(|(_, t)| *t);
    }
    r
}

/// What the NPU reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NpuReading {
    pub power_w: Option<f32>,
    pub temp_c: Option<f32>,
    pub clock_mhz: Option<f32>,
}

/// The shortest time between two GET_INFO queries: the driver's autosuspend delay (5 s).
pub const NPU_QUERY_INTERVAL: Duration = Duration::from_secs(5);

/// Reads the NPU without waking it. The amdxdna hwmon device (2026 drivers: `NPU_power`,
/// `NPU_temperature` where PMF provides it) is read first: it does not resume the NPU. Every
/// GET_INFO does resume a runtime-suspended NPU, so it is only issued while the device is
/// already awake (`power/runtime_status` "active"), at most once per `NPU_QUERY_INTERVAL`,
/// on one descriptor kept open (each open also binds a client to the device).
#[derive(Default)]
pub struct NpuReader {
    node: Option<(PathBuf, File)>,
    last_query: Option<Instant>,
    last_clock_mhz: Option<f32>,
    last_power_w: Option<f32>,
    /// GET_INFO attempts so far (tests check the limit).
    pub queries: u64,
}

impl NpuReader {
    pub fn read(&mut self, root: &SysRoot) -> NpuReading {
        let mut out = NpuReading::default();
        for hw in root.list("/sys/class/hwmon", "hwmon") {
            let dir = format!("/sys/class/hwmon/{hw}");
            if root.read(format!("{dir}/name")).as_deref() == Some("amdxdna") {
                out.power_w = root.read_i64(format!("{dir}/power1_input")).map(|uw| uw as f32 / 1e6);
                out.temp_c = hwmon_temp_by_label(root, &dir, &["NPU_temperature"]);
                break;
            }
        }
        let Some(npu) = amdxdna::find_npus(root).into_iter().next() else { return out };
        let status = root.read(format!("/sys/class/accel/{}/device/power/runtime_status", npu.name));
        let awake = status.as_deref().is_none_or(|s| s == "active");
        let due = self.last_query.is_none_or(|t| t.elapsed() >= NPU_QUERY_INTERVAL);
        if awake && due {
            self.last_query = Some(Instant::now());
            self.queries += 1;
            let path = root.path(&npu.dev);
            if self.node.as_ref().is_none_or(|(p, _)| *p != path) {
                self.node = amdxdna::open_node(&path, false).ok().map(|f| (path.clone(), f));
            }
            if let Some((p, f)) = &self.node {
                if let Ok(s) = amdxdna::read_sensors_on(f, p) {
                    self.last_clock_mhz = s.h_clock_mhz.or(s.mp_npu_clock_mhz);
                    self.last_power_w = s.power_w;
                }
            }
        }
        if !awake {
            // Suspended: its clock is off; the last active reading no longer holds.
            self.last_clock_mhz = None;
            self.last_power_w = None;
        }
        out.power_w = out.power_w.or(self.last_power_w);
        out.clock_mhz = self.last_clock_mhz;
        out
    }
}

struct Shared {
    history: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl Shared {
    fn push(&self, s: Sample) {
        let mut h = self.history.lock();
        if h.len() == self.capacity {
            h.pop_front();
        }
        h.push_back(s);
    }
}

/// Samples on its own thread until dropped.
pub struct TelemetryMonitor {
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    period: Duration,
}

/// Samples kept by `start`: ten minutes at one sample a second.
pub const DEFAULT_HISTORY: usize = 600;

impl TelemetryMonitor {
    pub fn start(root: SysRoot, period: Duration) -> Self {
        Self::with_history(root, period, DEFAULT_HISTORY)
    }

    /// Takes the first sample before returning, so `latest` is meaningful at once.
    pub fn with_history(root: SysRoot, period: Duration, capacity: usize) -> Self {
        let shared = Arc::new(Shared {
            history: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            capacity: capacity.max(1),
        });
        let t0 = Instant::now();
        let mut npu = NpuReader::default();
        let sample_with = |root: &SysRoot, npu: &mut NpuReader| {
            let mut r = sample_without_npu(root);
            let n = npu.read(root);
            (r.npu_power_w, r.npu_temp_c, r.npu_clock_mhz) = (n.power_w, n.temp_c, n.clock_mhz);
            r
        };
        shared.push(Sample { at: Duration::ZERO, readings: sample_with(&root, &mut npu) });
        let (stop, stopped) = bounded::<()>(0);
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("nh-telemetry".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    worker.push(Sample { at: t0.elapsed(), readings: sample_with(&root, &mut npu) });
                }
            })
            .ok();
        TelemetryMonitor { shared, stop: Some(stop), thread, period }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn latest(&self) -> Readings {
        self.shared.history.lock().back().map(|s| s.readings.clone()).unwrap_or_default()
    }

    /// Oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.shared.history.lock().iter().cloned().collect()
    }
}

impl Drop for TelemetryMonitor {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn put(root: &SysRoot, at: &str, text: &str) {
        let p = root.path(at);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// Files as a Ryzen 7840U laptop shows them (values and trailing newlines as the kernel
    /// writes them).
    fn laptop_tree() -> (tempfile::TempDir, SysRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        put(&root, "/sys/class/thermal/thermal_zone0/type", "acpitz\n");
        put(&root, "/sys/class/thermal/thermal_zone0/temp", "48000\n");
        put(&root, "/sys/class/thermal/thermal_zone1/type", "acpitz\n");
        put(&root, "/sys/class/thermal/thermal_zone1/temp", "0\n");
        put(&root, "/sys/class/hwmon/hwmon0/name", "ACAD\n");
        put(&root, "/sys/class/hwmon/hwmon2/name", "nvme\n");
        put(&root, "/sys/class/hwmon/hwmon2/temp1_input", "38850\n");
        put(&root, "/sys/class/hwmon/hwmon4/name", "k10temp\n");
        put(&root, "/sys/class/hwmon/hwmon4/temp1_label", "Tctl\n");
        put(&root, "/sys/class/hwmon/hwmon4/temp1_input", "61375\n");
        put(&root, "/sys/class/hwmon/hwmon10/name", "amdgpu\n");
        put(&root, "/sys/class/hwmon/hwmon10/temp1_label", "edge\n");
        put(&root, "/sys/class/hwmon/hwmon10/temp1_input", "57000\n");
        put(&root, "/sys/class/hwmon/hwmon10/power1_input", "14081000\n");
        put(&root, "/sys/class/hwmon/hwmon10/freq1_input", "800000000\n");
        put(&root, "/sys/class/hwmon/hwmon10/freq1_label", "sclk\n");
        (dir, root)
    }

    #[test]
    fn parses_real_format_files() {
        let (_d, root) = laptop_tree();
        let r = sample(&root);
        assert_eq!(r.cpu_temp_c, Some(61.375));
        assert_eq!(r.gpu_temp_c, Some(57.0));
        assert_eq!(r.gpu_power_w, Some(14.081));
        assert_eq!(r.gpu_clock_mhz, Some(800.0));
        assert_eq!(r.zones, [("acpitz".to_string(), 48.0), ("acpitz".to_string(), 0.0)]);
        assert_eq!(r.npu_power_w, None, "no amdxdna node in this tree");
        assert_eq!(r.temperature(DeviceClass::Npu), Some(61.375));
        assert_eq!(r.temperature(DeviceClass::Gpu), Some(57.0));
        assert_eq!(cpu_temperature(&root), Some(61.375));
    }

    #[test]
    fn older_kernels_power_average_and_tdie_and_zone_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        put(&root, "/sys/class/hwmon/hwmon1/name", "k10temp\n");
        put(&root, "/sys/class/hwmon/hwmon1/temp1_label", "Tctl\n");
        put(&root, "/sys/class/hwmon/hwmon1/temp2_label", "Tdie\n");
        put(&root, "/sys/class/hwmon/hwmon1/temp2_input", "70125\n");
        put(&root, "/sys/class/hwmon/hwmon3/name", "amdgpu\n");
        put(&root, "/sys/class/hwmon/hwmon3/power1_average", "5000000\n");
        let r = sample(&root);
        assert_eq!(r.cpu_temp_c, None, "Tctl is labelled but has no input");
        assert_eq!(r.gpu_power_w, Some(5.0));
        assert_eq!(r.gpu_temp_c, None);

        put(&root, "/sys/class/hwmon/hwmon1/temp1_input", "71000\n");
        assert_eq!(sample(&root).cpu_temp_c, Some(71.0));

        let intel = tempfile::tempdir().unwrap();
        let root = SysRoot::new(intel.path());
        put(&root, "/sys/class/thermal/thermal_zone3/type", "x86_pkg_temp\n");
        put(&root, "/sys/class/thermal/thermal_zone3/temp", "66000\n");
        assert_eq!(sample(&root).cpu_temp_c, Some(66.0));
        assert_eq!(cpu_temperature(&root), Some(66.0));
    }

    /// An amdxdna node as sysfs shows it, with its runtime PM status.
    fn npu_node(root: &SysRoot, status: &str) {
        let dev = root.path("/sys/class/accel/accel0/device");
        fs::create_dir_all(dev.join("power")).unwrap();
        let _ = std::os::unix::fs::symlink("../../../../bus/pci/drivers/amdxdna", dev.join("driver"));
        fs::write(dev.join("power/runtime_status"), format!("{status}\n")).unwrap();
        put(root, "/dev/accel/accel0", "");
    }

    #[test]
    fn npu_power_and_temperature_come_from_the_amdxdna_hwmon() {
        let (_d, root) = laptop_tree();
        put(&root, "/sys/class/hwmon/hwmon7/name", "amdxdna\n");
        put(&root, "/sys/class/hwmon/hwmon7/power1_label", "NPU_power\n");
        put(&root, "/sys/class/hwmon/hwmon7/power1_input", "1830000\n");
        put(&root, "/sys/class/hwmon/hwmon7/temp1_label", "NPU_temperature\n");
        put(&root, "/sys/class/hwmon/hwmon7/temp1_input", "52000\n");
        let r = sample(&root);
        assert_eq!((r.npu_power_w, r.npu_temp_c), (Some(1.83), Some(52.0)));
        assert_eq!(r.temperature(DeviceClass::Npu), Some(52.0), "its own, not the CPU's");
        assert_eq!(r.power(DeviceClass::Npu), Some(1.83));
        // Phoenix without PMF temperature: reading temp1_input fails, the CPU's stands in.
        fs::remove_file(root.path("/sys/class/hwmon/hwmon7/temp1_input")).unwrap();
        assert_eq!(sample(&root).temperature(DeviceClass::Npu), Some(61.375));
    }

    #[test]
    fn get_info_only_while_the_npu_is_awake_and_at_most_every_5_s() {
        let (_d, root) = laptop_tree();
        npu_node(&root, "suspended");
        let mut reader = NpuReader::default();
        for _ in 0..3 {
            reader.read(&root);
        }
        assert_eq!(reader.queries, 0, "a suspended NPU is never woken for telemetry");
        npu_node(&root, "active");
        reader.read(&root);
        reader.read(&root);
        assert_eq!(reader.queries, 1, "at most one query per {NPU_QUERY_INTERVAL:?}");
        assert!(reader.node.is_some(), "the descriptor is kept for the next query");
        reader.last_query = Some(Instant::now() - NPU_QUERY_INTERVAL);
        reader.read(&root);
        assert_eq!(reader.queries, 2);
    }

    #[test]
    fn monitor_samples_periodically_and_bounds_history() {
        let (_d, root) = laptop_tree();
        let mon = TelemetryMonitor::with_history(root.clone(), Duration::from_millis(5), 4);
        assert_eq!(mon.latest().cpu_temp_c, Some(61.375), "first sample is taken at start");
        put(&root, "/sys/class/hwmon/hwmon4/temp1_input", "90000\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while mon.latest().cpu_temp_c != Some(90.0) {
            assert!(Instant::now() < deadline, "monitor never saw the new reading");
            std::thread::sleep(Duration::from_millis(2));
        }
        while mon.history().len() < 4 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20));
        let h = mon.history();
        assert_eq!(h.len(), 4, "history is capped");
        assert!(h.windows(2).all(|w| w[0].at < w[1].at));
        drop(mon); // joins the thread promptly
    }
}
