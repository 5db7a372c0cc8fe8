//! Power modes, named as users know them from `xrt-smi configure --pmode`.

use std::fmt;

/// NPU power mode (C ABI values). Maps onto amdxdna's `enum amdxdna_power_mode_type`:
/// default -> POWER_MODE_DEFAULT, powersaver -> LOW, balanced -> MEDIUM,
/// performance -> HIGH, turbo -> TURBO.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PowerMode {
    Default = 0,
    Powersaver = 1,
    Balanced = 2,
    Performance = 3,
    Turbo = 4,
}

impl PowerMode {
    pub const ALL: [PowerMode; 5] = [
        PowerMode::Default,
        PowerMode::Powersaver,
        PowerMode::Balanced,
        PowerMode::Performance,
        PowerMode::Turbo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PowerMode::Default => "default",
            PowerMode::Powersaver => "powersaver",
            PowerMode::Balanced => "balanced",
            PowerMode::Performance => "performance",
            PowerMode::Turbo => "turbo",
        }
    }

    pub fn from_name(name: &str) -> Option<PowerMode> {
        PowerMode::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn from_raw(raw: u32) -> Option<PowerMode> {
        PowerMode::ALL.get(raw as usize).copied()
    }

    /// The value of amdxdna's `amdxdna_power_mode_type` for this mode.
    pub fn amdxdna_value(self) -> u8 {
        match self {
            PowerMode::Default => 0,
            PowerMode::Powersaver => 1,
            PowerMode::Balanced => 2,
            PowerMode::Performance => 3,
            PowerMode::Turbo => 4,
        }
    }
}

impl fmt::Display for PowerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
