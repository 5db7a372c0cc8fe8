//! Plain data the compiled policy hands to the runtime: device classes, strategies, splits,
//! fallback, device settings and thermal rules.
//!
//! Everything here is shared with the build script (which compiles the built-in policies), so
//! it names other crate types only through `super::`.

use super::{DType, PowerMode};
use std::time::Duration;

/// Device classes a policy names. A simulated NPU plays the `npu` class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceClass {
    Cpu,
    Gpu,
    Npu,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 3] = [DeviceClass::Cpu, DeviceClass::Gpu, DeviceClass::Npu];

    pub fn name(self) -> &'static str {
        match self {
            DeviceClass::Cpu => "cpu",
            DeviceClass::Gpu => "gpu",
            DeviceClass::Npu => "npu",
        }
    }

    pub fn from_name(name: &str) -> Option<DeviceClass> {
        DeviceClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// How a rule picks among its available candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The first candidate in preference order that is available.
    FirstAvailable,
    /// The candidate with the fewest queued ops.
    LeastLoaded,
    /// The candidate with the earliest expected completion (queue + transfer + run time).
    EarliestCompletion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitAxis {
    Rows,
    Cols,
}

/// Split a matmul across devices.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitSpec {
    pub axis: SplitAxis,
    pub devices: Vec<DeviceClass>,
    /// Fixed ratios (same order as `devices`, summing to 1), or `None` for dynamic ratios
    /// from measured throughput.
    pub ratios: Option<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FallbackSpec {
    /// Retries on the same device before moving to the next candidate.
    pub retries: u32,
    /// Consecutive failures after which a device is marked degraded.
    pub degrade_after: u32,
    /// How long a degraded device is left out before it is tried again.
    pub degrade_for: Duration,
}

impl Default for FallbackSpec {
    fn default() -> Self {
        FallbackSpec { retries: 0, degrade_after: 3, degrade_for: Duration::from_secs(10) }
    }
}

/// Per device-class settings.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DeviceSettings {
    pub enabled: bool,
    pub power_mode: Option<PowerMode>,
    pub precision: Option<DType>,
    pub max_in_flight: Option<u32>,
    /// Rows of a matrix op per device launch (the NPU's dynamic batch size).
    pub batch_rows: Option<u32>,
    pub pool_bytes: Option<u64>,
    /// CPU: how long the pool's threads stay awake after an op (0 = they sleep at once).
    pub keep_warm: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThermalMetric {
    TemperatureC,
    PowerW,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ThermalAction {
    SetPowerMode(PowerMode),
    /// Move this fraction of the device's ops to the other candidates.
    ShiftLoad(f32),
    /// Stop using the device until the metric falls below the rule's `clear` level.
    Exclude,
}

/// A thermal rule: when `metric` of `device` stays at or above `trigger` for `hold`, apply
/// `actions`; undo them once it falls below `clear` (< trigger: hysteresis).
#[derive(Clone, Debug, PartialEq)]
pub struct ThermalRule {
    pub label: String,
    pub device: DeviceClass,
    pub metric: ThermalMetric,
    pub trigger: f32,
    pub clear: f32,
    pub hold: Duration,
    pub emergency: bool,
    pub actions: Vec<ThermalAction>,
}
