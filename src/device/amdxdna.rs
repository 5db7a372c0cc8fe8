//! The amdxdna kernel driver's own interface (Linux 6.14+, `include/uapi/drm/amdxdna_accel.h`):
//! power mode through `DRM_IOCTL_AMDXDNA_SET_STATE` / `GET_INFO`, and the sensors and clocks it
//! reports. This is what `xrt-smi configure --pmode` does underneath, without needing XRT.

use super::sysfs::SysRoot;
use super::PowerMode;
use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const DRM_COMMAND_BASE: u64 = 0x40;
const DRM_AMDXDNA_GET_INFO: u64 = 7;
const DRM_AMDXDNA_SET_STATE: u64 = 8;

/// `_IOWR('d', nr, size)` as Linux encodes it.
const fn drm_iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | ((b'd' as u64) << 8) | nr
}

/// `struct amdxdna_drm_get_info` and `struct amdxdna_drm_set_state` share this layout.
#[repr(C)]
struct ParamBuffer {
    param: u32,
    buffer_size: u32,
    buffer: u64,
}

pub const IOCTL_GET_INFO: u64 = drm_iowr(DRM_COMMAND_BASE + DRM_AMDXDNA_GET_INFO, 16);
pub const IOCTL_SET_STATE: u64 = drm_iowr(DRM_COMMAND_BASE + DRM_AMDXDNA_SET_STATE, 16);

// enum amdxdna_drm_get_param / amdxdna_drm_set_param
const QUERY_CLOCK_METADATA: u32 = 3;
const QUERY_SENSORS: u32 = 4;
const GET_POWER_MODE: u32 = 9;
const SET_POWER_MODE: u32 = 0;

/// `struct amdxdna_drm_{get,set}_power_mode`.
#[repr(C)]
#[derive(Default)]
struct PowerModeParam {
    power_mode: u8,
    pad: [u8; 7],
}

/// `struct amdxdna_drm_query_clock`.
#[repr(C)]
#[derive(Clone, Copy)]
struct QueryClock {
    name: [u8; 16],
    freq_mhz: u32,
    pad: u32,
}

/// `struct amdxdna_drm_query_sensor`.
#[repr(C)]
#[derive(Clone, Copy)]
struct QuerySensor {
    label: [u8; 64],
    input: u32,
    max: u32,
    average: u32,
    highest: u32,
    status: [u8; 64],
    units: [u8; 16],
    unitm: i8,
    kind: u8,
    pad: [u8; 6],
}

static_assertions::const_assert_eq!(std::mem::size_of::<ParamBuffer>(), 16);
static_assertions::const_assert_eq!(std::mem::size_of::<QueryClock>(), 24);
static_assertions::const_assert_eq!(std::mem::size_of::<QuerySensor>(), 168);

/// An NPU device node bound to amdxdna.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpuNode {
    /// `accel0`
    pub name: String,
    /// `/dev/accel/accel0` (a system path; resolve it through the `SysRoot`).
    pub dev: PathBuf,
}

/// Every `/sys/class/accel/accel*` whose driver is amdxdna.
pub fn find_npus(root: &SysRoot) -> Vec<NpuNode> {
    root.list("/sys/class/accel", "accel")
        .into_iter()
        .filter(|n| {
            root.link_name(format!("/sys/class/accel/{n}/device/driver")).as_deref() == Some("amdxdna")
        })
        .map(|name| NpuNode { dev: PathBuf::from(format!("/dev/accel/{name}")), name })
        .collect()
}

fn ioctl_name(request: u64) -> &'static str {
    if request == IOCTL_SET_STATE {
        "DRM_IOCTL_AMDXDNA_SET_STATE"
    } else {
        "DRM_IOCTL_AMDXDNA_GET_INFO"
    }
}

/// Opens an NPU node (GET_INFO needs read access, SET_STATE write access).
pub fn open_node(path: &Path, write: bool) -> Result<File> {
    crate::files::open(path, File::options().read(true).write(write), crate::files::Expect::CharDevice)
        .map_err(|e| super::sysfs::io_error("open", path, e))
}

/// Issues one GET_INFO / SET_STATE with `value` as the parameter buffer.
fn param_ioctl<T>(path: &Path, request: u64, param: u32, what: &str, value: &mut T) -> Result<()> {
    let file = open_node(path, request == IOCTL_SET_STATE)?;
    param_ioctl_on(&file, path, request, param, what, value)
}

fn param_ioctl_on<T>(
    file: &File,
    path: &Path,
    request: u64,
    param: u32,
    what: &str,
    value: &mut T,
) -> Result<()> {
    let write = request == IOCTL_SET_STATE;
    let mut arg =
        ParamBuffer { param, buffer_size: std::mem::size_of::<T>() as u32, buffer: value as *mut T as u64 };
    // SAFETY: `arg` points at a live buffer of `buffer_size` bytes for the call's duration.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, &mut arg as *mut ParamBuffer) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(ioctl_error(&format!("ioctl {}({what}) on {}", ioctl_name(request), path.display()), write, err))
}

/// What a refused ioctl means, in the driver's terms. SET_STATE's refusals of a mode depend on
/// the driver (`aie2_pm.c`): before AMD's 2026-03-31 staging driver, LOW and MEDIUM are
/// EOPNOTSUPP and TURBO is EINVAL while any hardware context exists; those are "this driver
/// cannot", not I/O failures.
fn ioctl_error(call: &str, set_state: bool, err: std::io::Error) -> Error {
    let msg = format!("{call}: {err}");
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            Error::Permission(format!("{msg} (changing the NPU power mode needs CAP_SYS_ADMIN)"))
        }
        Some(libc::EOPNOTSUPP) if set_state => Error::Unsupported(format!(
            "{msg}: this amdxdna driver does not offer that power mode (drivers before 2026-03-31 \
             accept only default, performance and turbo)"
        )),
        Some(libc::EINVAL) if set_state => Error::Unsupported(format!(
            "{msg}: the amdxdna driver refused the mode (drivers before 2026-03-31 refuse turbo \
             while any hardware context exists)"
        )),
        _ => Error::Io(msg),
    }
}

/// Whether this process may change the NPU's power mode: SET_STATE is DRM_ROOT_ONLY, i.e.
/// needs CAP_SYS_ADMIN (bit 21 of `CapEff` in /proc/self/status).
pub fn may_set_power_mode(root: &SysRoot) -> bool {
    root.read("/proc/self/status")
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

/// Reads the configured power mode.
pub fn get_power_mode(path: &Path) -> Result<PowerMode> {
    let mut p = PowerModeParam::default();
    param_ioctl(path, IOCTL_GET_INFO, GET_POWER_MODE, "GET_POWER_MODE", &mut p)?;
    PowerMode::from_raw(p.power_mode as u32).ok_or_else(|| {
        Error::Io(format!("{}: driver reports unknown power mode {}", path.display(), p.power_mode))
    })
}

/// Sets the power mode (needs CAP_SYS_ADMIN; the driver answers EACCES otherwise).
pub fn set_power_mode(path: &Path, mode: PowerMode) -> Result<()> {
    let mut p = PowerModeParam { power_mode: mode.amdxdna_value(), pad: [0; 7] };
    let what = format!("SET_POWER_MODE {}={}", mode.name(), mode.amdxdna_value());
    param_ioctl(path, IOCTL_SET_STATE, SET_POWER_MODE, &what, &mut p)
}

/// What the driver reports about the NPU right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NpuSensors {
    pub power_w: Option<f32>,
    pub mp_npu_clock_mhz: Option<f32>,
    pub h_clock_mhz: Option<f32>,
}

/// A sensor reading in its units: the driver reports `input` scaled by `10^unitm`
/// (e.g. milliwatts as input 4123, unitm -3).
fn sensor_value(input: u32, unitm: i8) -> f32 {
    input as f32 * 10f32.powi(unitm as i32)
}

/// Reads the power sensor and the clocks. Each part is optional: older firmware may lack one.
/// Every GET_INFO resumes a runtime-suspended NPU: see `telemetry::NpuReader` for when to ask.
pub fn read_sensors(path: &Path) -> Result<NpuSensors> {
    read_sensors_on(&open_node(path, false)?, path)
}

/// `read_sensors` on an already open node (`path` names it in errors).
pub fn read_sensors_on(file: &File, path: &Path) -> Result<NpuSensors> {
    let mut out = NpuSensors::default();
    let mut clocks = [QueryClock { name: [0; 16], freq_mhz: 0, pad: 0 }; 2];
    let clock_res =
        param_ioctl_on(file, path, IOCTL_GET_INFO, QUERY_CLOCK_METADATA, "QUERY_CLOCK_METADATA", &mut clocks);
    if clock_res.is_ok() {
        out.mp_npu_clock_mhz = Some(clocks[0].freq_mhz as f32);
        out.h_clock_mhz = Some(clocks[1].freq_mhz as f32);
    }
    let mut sensor = QuerySensor {
        label: [0; 64],
        input: 0,
        max: 0,
        average: 0,
        highest: 0,
        status: [0; 64],
        units: [0; 16],
        unitm: 0,
        kind: 0,
        pad: [0; 6],
    };
    let sensor_res = param_ioctl_on(file, path, IOCTL_GET_INFO, QUERY_SENSORS, "QUERY_SENSORS", &mut sensor);
    if sensor_res.is_ok() {
        out.power_w = Some(sensor_value(sensor.input, sensor.unitm));
    }
    match (clock_res, sensor_res) {
        (Err(e), Err(_)) => Err(e),
        _ => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // DRM_IOWR(0x40 + 8, 16-byte struct) and DRM_IOWR(0x40 + 7, 16-byte struct).
        assert_eq!(IOCTL_SET_STATE, 0xC010_6448);
        assert_eq!(IOCTL_GET_INFO, 0xC010_6447);
    }

    #[test]
    fn sensor_values_apply_the_unit_exponent() {
        assert_eq!(sensor_value(4123, -3), 4.123);
        assert_eq!(sensor_value(7, 0), 7.0);
        assert_eq!(sensor_value(0, -3), 0.0);
    }

    #[test]
    fn finds_only_amdxdna_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        for (node, driver) in [("accel0", "amdxdna"), ("accel1", "habanalabs")] {
            let dev = root.path(format!("/sys/class/accel/{node}/device"));
            std::fs::create_dir_all(&dev).unwrap();
            std::os::unix::fs::symlink(format!("../../../../bus/pci/drivers/{driver}"), dev.join("driver"))
                .unwrap();
        }
        let npus = find_npus(&root);
        assert_eq!(npus, [NpuNode { name: "accel0".into(), dev: "/dev/accel/accel0".into() }]);
    }

    #[test]
    fn driver_refusals_are_unsupported_with_the_reason() {
        let e = |code| ioctl_error("ioctl SET", true, std::io::Error::from_raw_os_error(code));
        assert!(
            matches!(e(libc::EOPNOTSUPP), Error::Unsupported(m) if m.contains("does not offer that power mode"))
        );
        assert!(matches!(e(libc::EINVAL), Error::Unsupported(m) if m.contains("refuse turbo")));
        assert!(matches!(e(libc::EACCES), Error::Permission(m) if m.contains("CAP_SYS_ADMIN")));
        assert!(matches!(e(libc::EIO), Error::Io(_)));
        let get = ioctl_error("ioctl GET", false, std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(get, Error::Io(_)), "a refused query is not a power-mode refusal");
    }

    #[test]
    fn cap_sys_admin_is_read_from_capeff() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        assert!(!may_set_power_mode(&root), "unknown: assume not");
        std::fs::create_dir_all(root.path("/proc/self")).unwrap();
        let status = |caps: &str| format!("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t{caps}\n");
        std::fs::write(root.path("/proc/self/status"), status("000001ffffffffff")).unwrap();
        assert!(may_set_power_mode(&root));
        std::fs::write(root.path("/proc/self/status"), status("0000000000000000")).unwrap();
        assert!(!may_set_power_mode(&root));
        std::fs::write(root.path("/proc/self/status"), status("0000000000200000")).unwrap();
        assert!(may_set_power_mode(&root), "CAP_SYS_ADMIN alone");
    }

    #[test]
    fn ioctl_on_a_non_device_reports_the_call_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accel0");
        std::fs::write(&file, "").unwrap();
        let err = get_power_mode(&file).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("DRM_IOCTL_AMDXDNA_GET_INFO(GET_POWER_MODE)") && msg.contains("accel0"),
            "{msg}"
        );
        assert!(read_sensors(&file).is_err());
    }
}
