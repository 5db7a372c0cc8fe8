//! Device configuration (power modes, performance levels) and sensors (temperatures, power).
//! Every file and device node is reached through one `SysRoot`, so tests run against a fake tree.

pub mod amdxdna;
pub mod config;
mod power;
pub mod sysfs;
pub mod telemetry;

pub use config::{apply, Action, ConfigPlan, Configurable};
pub use power::PowerMode;
pub use sysfs::SysRoot;
pub use telemetry::{Readings, Sample, TelemetryMonitor};
