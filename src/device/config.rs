//! Device configuration: NPU power mode (amdxdna), iGPU performance level (amdgpu sysfs) and
//! CPU energy/performance preference (cpufreq sysfs). A plan is turned into exact actions
//! first (the dry run returns them); applying is all or nothing: on the first refusal every
//! change already made is undone in reverse order.

use super::amdxdna::{self, NpuNode};
use super::sysfs::SysRoot;
use super::PowerMode;
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// Levels amdgpu accepts in `power_dpm_force_performance_level`.
pub const GPU_PERFORMANCE_LEVELS: [&str; 8] = [
    "auto",
    "low",
    "high",
    "manual",
    "profile_standard",
    "profile_min_sclk",
    "profile_min_mclk",
    "profile_peak",
];

/// What to change; `None` leaves a setting alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigPlan {
    pub npu_power_mode: Option<PowerMode>,
    /// One of `GPU_PERFORMANCE_LEVELS`.
    pub gpu_performance_level: Option<String>,
    /// One of the values the kernel lists in `energy_performance_available_preferences`.
    pub cpu_energy_preference: Option<String>,
}

/// One change, with the value it replaces (used to roll back).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write `value` to the sysfs attribute `path` (a system path, e.g. `/sys/...`).
    WriteSysfs { path: PathBuf, value: String, previous: String },
    /// `DRM_IOCTL_AMDXDNA_SET_STATE(DRM_AMDXDNA_SET_POWER_MODE)` on `node`. `previous` is None
    /// only in a dry run whose read of the current mode failed (say, on a fake tree).
    NpuPowerMode { node: PathBuf, mode: PowerMode, previous: Option<PowerMode> },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteSysfs { path, value, previous } => {
                write!(f, "write '{value}' to {} (was '{previous}')", path.display())
            }
            Action::NpuPowerMode { node, mode, previous } => write!(
                f,
                "ioctl DRM_IOCTL_AMDXDNA_SET_STATE(DRM_AMDXDNA_SET_POWER_MODE, {}={}) on {} (was {})",
                mode.name(),
                mode.amdxdna_value(),
                node.display(),
                previous.map_or("unknown: the current mode could not be read", |p| p.name())
            ),
        }
    }
}

/// Reads and sets the NPU power mode. The real one is the amdxdna ioctl; tests substitute
/// their own to exercise rollback across the ioctl.
pub trait NpuPowerControl {
    fn get(&self, node: &Path) -> Result<PowerMode>;
    fn set(&self, node: &Path, mode: PowerMode) -> Result<()>;
}

/// The amdxdna DRM ioctls on the device node.
pub struct AmdxdnaIoctl;

impl NpuPowerControl for AmdxdnaIoctl {
    fn get(&self, node: &Path) -> Result<PowerMode> {
        amdxdna::get_power_mode(node)
    }
    fn set(&self, node: &Path, mode: PowerMode) -> Result<()> {
        amdxdna::set_power_mode(node, mode)
    }
}

/// An amdgpu card with a performance level knob.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuKnob {
    pub card: String,
    pub path: PathBuf,
    pub current: String,
}

/// One cpufreq policy with an energy/performance preference knob.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuKnob {
    pub policy: String,
    pub path: PathBuf,
    pub current: String,
    pub available: Vec<String>,
}

/// What this machine lets us configure. Nothing is listed that the hardware does not have.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Configurable {
    pub npus: Vec<NpuNode>,
    pub gpus: Vec<GpuKnob>,
    pub cpus: Vec<CpuKnob>,
}

impl Configurable {
    pub fn discover(root: &SysRoot) -> Configurable {
        let gpus = root
            .list("/sys/class/drm", "card")
            .into_iter()
            .filter(|c| c[4..].chars().all(|ch| ch.is_ascii_digit()))
            .filter(|c| {
                root.link_name(format!("/sys/class/drm/{c}/device/driver")).as_deref() == Some("amdgpu")
            })
            .filter_map(|card| {
                let path =
                    PathBuf::from(format!("/sys/class/drm/{card}/device/power_dpm_force_performance_level"));
                let current = root.read(&path)?;
                Some(GpuKnob { card, path, current })
            })
            .collect();
        let cpufreq = "/sys/devices/system/cpu/cpufreq";
        let cpus = root
            .list(cpufreq, "policy")
            .into_iter()
            .filter_map(|policy| {
                let dir = format!("{cpufreq}/{policy}");
                let path = PathBuf::from(format!("{dir}/energy_performance_preference"));
                let current = root.read(&path)?;
                let available = root
                    .read(format!("{dir}/energy_performance_available_preferences"))
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default();
                Some(CpuKnob { policy, path, current, available })
            })
            .collect();
        Configurable { npus: amdxdna::find_npus(root), gpus, cpus }
    }

    /// `key: value` lines for device info.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for n in &self.npus {
            let modes: Vec<&str> = PowerMode::ALL.iter().map(|m| m.name()).collect();
            out.push((
                format!("npu {} power mode", n.name),
                format!("{} via {}", modes.join("|"), n.dev.display()),
            ));
        }
        for g in &self.gpus {
            out.push((
                format!("gpu {} performance level", g.card),
                format!("{} (now {})", GPU_PERFORMANCE_LEVELS.join("|"), g.current),
            ));
        }
        for c in &self.cpus {
            out.push((
                format!("cpu {} energy preference", c.policy),
                format!("{} (now {})", c.available.join("|"), c.current),
            ));
        }
        out
    }
}

/// The exact actions `plan` needs on this machine, skipping settings already in place.
/// A dry run lists an NPU action even when the current mode cannot be read (its previous
/// mode is then unknown); a real run needs it, to roll back.
pub fn plan_actions(
    root: &SysRoot,
    plan: &ConfigPlan,
    npu: &dyn NpuPowerControl,
    dry_run: bool,
) -> Result<Vec<Action>> {
    let found = Configurable::discover(root);
    let mut actions = Vec::new();
    if let Some(level) = &plan.gpu_performance_level {
        if !GPU_PERFORMANCE_LEVELS.contains(&level.as_str()) {
            return Err(Error::invalid(format!(
                "unknown GPU performance level '{level}' (one of {})",
                GPU_PERFORMANCE_LEVELS.join(", ")
            )));
        }
        if found.gpus.is_empty() {
            return Err(Error::Unsupported(
                "no amdgpu card with power_dpm_force_performance_level under /sys/class/drm".into(),
            ));
        }
        for g in found.gpus.iter().filter(|g| &g.current != level) {
            actions.push(Action::WriteSysfs {
                path: g.path.clone(),
                value: level.clone(),
                previous: g.current.clone(),
            });
        }
    }
    if let Some(pref) = &plan.cpu_energy_preference {
        if found.cpus.is_empty() {
            return Err(Error::Unsupported(
                "no cpufreq policy with energy_performance_preference (needs amd-pstate active mode or intel_pstate)".into(),
            ));
        }
        for c in &found.cpus {
            if !c.available.is_empty() && !c.available.contains(pref) {
                return Err(Error::invalid(format!(
                    "CPU energy preference '{pref}' is not offered by {} (one of {})",
                    c.policy,
                    c.available.join(", ")
                )));
            }
        }
        for c in found.cpus.iter().filter(|c| &c.current != pref) {
            actions.push(Action::WriteSysfs {
                path: c.path.clone(),
                value: pref.clone(),
                previous: c.current.clone(),
            });
        }
    }
    if let Some(mode) = plan.npu_power_mode {
        if found.npus.is_empty() {
            return Err(Error::Unsupported(
                "no NPU: no /sys/class/accel/accel* is bound to the amdxdna driver".into(),
            ));
        }
        for n in &found.npus {
            let previous = match npu.get(&root.path(&n.dev)) {
                Ok(previous) => Some(previous),
                Err(_) if dry_run => None,
                Err(e) => return Err(e),
            };
            if previous != Some(mode) {
                actions.push(Action::NpuPowerMode { node: n.dev.clone(), mode, previous });
            }
        }
    }
    Ok(actions)
}

fn perform(root: &SysRoot, action: &Action, npu: &dyn NpuPowerControl) -> Result<()> {
    match action {
        Action::WriteSysfs { path, value, .. } => root.write(path, value),
        Action::NpuPowerMode { node, mode, .. } => npu.set(&root.path(node), *mode),
    }
}

fn undo(root: &SysRoot, action: &Action, npu: &dyn NpuPowerControl) -> Result<()> {
    match action {
        Action::WriteSysfs { path, previous, .. } => root.write(path, previous),
        Action::NpuPowerMode { node, previous: Some(previous), .. } => npu.set(&root.path(node), *previous),
        // Only dry runs have an unknown previous mode, and they change nothing.
        Action::NpuPowerMode { previous: None, .. } => Ok(()),
    }
}

/// Applies `plan` with the real amdxdna ioctl. See `apply_with`.
pub fn apply(root: &SysRoot, plan: &ConfigPlan, dry_run: bool) -> Result<Vec<Action>> {
    apply_with(root, plan, dry_run, &AmdxdnaIoctl)
}

/// Returns the actions taken (or, with `dry_run`, those that would be). On failure nothing stays
/// changed: earlier actions are undone and the error names the refused path or call.
pub fn apply_with(
    root: &SysRoot,
    plan: &ConfigPlan,
    dry_run: bool,
    npu: &dyn NpuPowerControl,
) -> Result<Vec<Action>> {
    let actions = plan_actions(root, plan, npu, dry_run)?;
    if dry_run {
        return Ok(actions);
    }
    for (done, action) in actions.iter().enumerate() {
        if let Err(err) = perform(root, action, npu) {
            let mut failed_undo = Vec::new();
            for earlier in actions[..done].iter().rev() {
                if let Err(e) = undo(root, earlier, npu) {
                    failed_undo.push(e.to_string());
                }
            }
            let note = if failed_undo.is_empty() {
                format!("; rolled back {done} earlier change(s)")
            } else {
                format!("; rollback FAILED: {}", failed_undo.join("; "))
            };
            return Err(with_note(err, &note));
        }
    }
    Ok(actions)
}

fn with_note(err: Error, note: &str) -> Error {
    match err {
        Error::Permission(m) => Error::Permission(m + note),
        Error::Io(m) => Error::Io(m + note),
        Error::Unsupported(m) => Error::Unsupported(m + note),
        other => Error::Internal(format!("{other}{note}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::fs;

    /// A tree like a Ryzen AI laptop: one amdgpu card, two cpufreq policies, one NPU node.
    fn fake_tree() -> (tempfile::TempDir, SysRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let link = |at: &str, target: &str| {
            let p = root.path(at);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        };
        let file = |at: &str, text: &str| {
            let p = root.path(at);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        link("/sys/class/drm/card1/device/driver", "../../../bus/pci/drivers/amdgpu");
        file("/sys/class/drm/card1/device/power_dpm_force_performance_level", "auto\n");
        fs::create_dir_all(root.path("/sys/class/drm/card1-eDP-1")).unwrap();
        for p in ["policy0", "policy1"] {
            let d = format!("/sys/devices/system/cpu/cpufreq/{p}");
            file(&format!("{d}/energy_performance_preference"), "balance_performance\n");
            file(
                &format!("{d}/energy_performance_available_preferences"),
                "default performance balance_performance balance_power power \n",
            );
        }
        link("/sys/class/accel/accel0/device/driver", "../../../bus/pci/drivers/amdxdna");
        file("/dev/accel/accel0", "");
        (dir, root)
    }

    /// Stands in for the ioctl: keeps a mode, can refuse like the driver does without root.
    struct FakeNpu {
        mode: Mutex<PowerMode>,
        refuse: bool,
    }

    impl NpuPowerControl for FakeNpu {
        fn get(&self, _: &Path) -> Result<PowerMode> {
            Ok(*self.mode.lock())
        }
        fn set(&self, node: &Path, mode: PowerMode) -> Result<()> {
            if self.refuse {
                return Err(Error::Permission(format!(
                    "ioctl DRM_IOCTL_AMDXDNA_SET_STATE on {}: Permission denied (os error 13)",
                    node.display()
                )));
            }
            *self.mode.lock() = mode;
            Ok(())
        }
    }

    fn full_plan() -> ConfigPlan {
        ConfigPlan {
            npu_power_mode: Some(PowerMode::Turbo),
            gpu_performance_level: Some("high".into()),
            cpu_energy_preference: Some("performance".into()),
        }
    }

    fn values(root: &SysRoot) -> Vec<String> {
        [
            "/sys/class/drm/card1/device/power_dpm_force_performance_level",
            "/sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference",
            "/sys/devices/system/cpu/cpufreq/policy1/energy_performance_preference",
        ]
        .iter()
        .map(|p| root.read(p).unwrap())
        .collect()
    }

    #[test]
    fn discovery_lists_only_what_exists() {
        let (_d, root) = fake_tree();
        let c = Configurable::discover(&root);
        assert_eq!(c.npus.len(), 1);
        assert_eq!(c.gpus.len(), 1, "connector dirs like card1-eDP-1 are not cards");
        assert_eq!(c.cpus.len(), 2);
        assert_eq!(c.cpus[0].available.len(), 5);
        let lines = c.describe();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|(k, _)| !k.contains("bandwidth")));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(Configurable::discover(&SysRoot::new(empty.path())), Configurable::default());
    }

    #[test]
    fn dry_run_returns_exact_actions_and_changes_nothing() {
        let (_d, root) = fake_tree();
        let npu = FakeNpu { mode: Mutex::new(PowerMode::Default), refuse: false };
        let actions = apply_with(&root, &full_plan(), true, &npu).unwrap();
        let text: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            text,
            [
                "write 'high' to /sys/class/drm/card1/device/power_dpm_force_performance_level (was 'auto')",
                "write 'performance' to /sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference (was 'balance_performance')",
                "write 'performance' to /sys/devices/system/cpu/cpufreq/policy1/energy_performance_preference (was 'balance_performance')",
                "ioctl DRM_IOCTL_AMDXDNA_SET_STATE(DRM_AMDXDNA_SET_POWER_MODE, turbo=4) on /dev/accel/accel0 (was default)",
            ]
        );
        assert_eq!(values(&root), ["auto", "balance_performance", "balance_performance"]);
        assert_eq!(*npu.mode.lock(), PowerMode::Default);
    }

    /// On a fake tree the NPU node is no device: a dry run still lists the whole plan (it
    /// used to fail whole with "Inappropriate ioctl"); a real run still refuses.
    #[test]
    fn a_dry_run_lists_an_npu_change_whose_current_mode_cannot_be_read() {
        struct Unreadable;
        impl NpuPowerControl for Unreadable {
            fn get(&self, node: &Path) -> Result<PowerMode> {
                Err(Error::Io(format!(
                    "ioctl on {}: Inappropriate ioctl for device (os error 25)",
                    node.display()
                )))
            }
            fn set(&self, _: &Path, _: PowerMode) -> Result<()> {
                unreachable!("a dry run sets nothing")
            }
        }
        let (_d, root) = fake_tree();
        let actions = apply_with(&root, &full_plan(), true, &Unreadable).unwrap();
        assert_eq!(actions.len(), 4);
        assert_eq!(
            actions[3].to_string(),
            "ioctl DRM_IOCTL_AMDXDNA_SET_STATE(DRM_AMDXDNA_SET_POWER_MODE, turbo=4) on /dev/accel/accel0 \
             (was unknown: the current mode could not be read)"
        );
        let err = apply_with(&root, &full_plan(), false, &Unreadable).unwrap_err();
        assert!(err.to_string().contains("Inappropriate ioctl"), "{err}");
        assert_eq!(values(&root), ["auto", "balance_performance", "balance_performance"]);
    }

    #[test]
    fn apply_changes_everything_and_skips_settings_in_place() {
        let (_d, root) = fake_tree();
        let npu = FakeNpu { mode: Mutex::new(PowerMode::Default), refuse: false };
        let done = apply_with(&root, &full_plan(), false, &npu).unwrap();
        assert_eq!(done.len(), 4);
        assert_eq!(values(&root), ["high", "performance", "performance"]);
        assert_eq!(*npu.mode.lock(), PowerMode::Turbo);
        assert!(apply_with(&root, &full_plan(), true, &npu).unwrap().is_empty());
    }

    #[test]
    fn refused_ioctl_rolls_back_every_sysfs_write() {
        let (_d, root) = fake_tree();
        let npu = FakeNpu { mode: Mutex::new(PowerMode::Default), refuse: true };
        let err = apply_with(&root, &full_plan(), false, &npu).unwrap_err();
        let Error::Permission(msg) = err else { panic!("expected a permission error, got {err:?}") };
        assert!(msg.contains("DRM_IOCTL_AMDXDNA_SET_STATE on"), "{msg}");
        assert!(msg.ends_with("rolled back 3 earlier change(s)"), "{msg}");
        assert_eq!(values(&root), ["auto", "balance_performance", "balance_performance"]);
    }

    /// Makes the policy1 attribute a file the kernel refuses to open for writing. As root,
    /// mode bits do not stop a write to a plain file, so then it links to a read-only sysfs
    /// file, which kernfs refuses even to root.
    fn make_read_only(root: &SysRoot, abs: &str) {
        let p = root.path(abs);
        if unsafe { libc::geteuid() } == 0 {
            fs::remove_file(&p).unwrap();
            std::os::unix::fs::symlink("/sys/devices/system/cpu/possible", &p).unwrap();
        } else {
            let mut perm = fs::metadata(&p).unwrap().permissions();
            perm.set_readonly(true);
            fs::set_permissions(&p, perm).unwrap();
        }
    }

    #[test]
    fn read_only_file_rolls_back_and_names_the_path() {
        let (_d, root) = fake_tree();
        let refused = "/sys/devices/system/cpu/cpufreq/policy1/energy_performance_preference";
        make_read_only(&root, refused);
        let npu = FakeNpu { mode: Mutex::new(PowerMode::Default), refuse: false };
        // The refused attribute reads back what the link points at; plan only the GPU and CPU.
        let plan = ConfigPlan {
            npu_power_mode: Some(PowerMode::Performance),
            gpu_performance_level: Some("low".into()),
            cpu_energy_preference: Some("power".into()),
        };
        let err = apply_with(&root, &plan, false, &npu).unwrap_err();
        let Error::Permission(msg) = err else { panic!("expected a permission error, got {err:?}") };
        assert!(msg.contains(&root.path(refused).display().to_string()), "{msg}");
        assert!(msg.ends_with("rolled back 2 earlier change(s)"), "{msg}");
        assert_eq!(
            root.read("/sys/class/drm/card1/device/power_dpm_force_performance_level").unwrap(),
            "auto"
        );
        assert_eq!(
            root.read("/sys/devices/system/cpu/cpufreq/policy0/energy_performance_preference").unwrap(),
            "balance_performance"
        );
        assert_eq!(*npu.mode.lock(), PowerMode::Default, "the NPU was never touched");
    }

    #[test]
    fn unknown_values_and_missing_hardware_are_refused_before_any_change() {
        let (_d, root) = fake_tree();
        let npu = FakeNpu { mode: Mutex::new(PowerMode::Default), refuse: false };
        let bad = ConfigPlan { gpu_performance_level: Some("ludicrous".into()), ..Default::default() };
        assert!(matches!(apply_with(&root, &bad, false, &npu), Err(Error::InvalidArgument(_))));
        let bad = ConfigPlan { cpu_energy_preference: Some("turbo".into()), ..Default::default() };
        assert!(matches!(apply_with(&root, &bad, false, &npu), Err(Error::InvalidArgument(_))));
        let empty = tempfile::tempdir().unwrap();
        let err = apply_with(&SysRoot::new(empty.path()), &full_plan(), true, &npu).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn the_real_ioctl_path_reports_a_fake_node_cleanly() {
        let (_d, root) = fake_tree();
        let plan = ConfigPlan { npu_power_mode: Some(PowerMode::Balanced), ..Default::default() };
        // A dry run lists the change (the current mode is unknown); a real run names the call.
        let actions = apply(&root, &plan, true).unwrap();
        assert!(matches!(actions[..], [Action::NpuPowerMode { previous: None, .. }]), "{actions:?}");
        let err = apply(&root, &plan, false).unwrap_err();
        assert!(err.to_string().contains("DRM_IOCTL_AMDXDNA_GET_INFO(GET_POWER_MODE)"), "{err}");
    }
}
