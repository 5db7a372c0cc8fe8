//! Thermal control: evaluates the policy's thermal rules against device readings, with a
//! hold time before a rule fires and hysteresis before it clears, and applies the combined
//! effect of the active rules (power mode, load shift, exclusion) to each device.
//!
//! Time is passed in (`now`), so tests can drive it with a simulated device's virtual clock.

use super::Device;
use crate::backend::DeviceReadings;
use crate::device::PowerMode;
use crate::policy::{CompiledPolicy, ThermalAction, ThermalMetric, ThermalRule};
use crate::trace::Trace;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum RuleState {
    Idle,
    /// Above the trigger since this time, not yet for the hold period.
    Pending(Duration),
    Active,
}

/// What the active rules ask of one device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThermalEffect {
    pub power_mode: Option<PowerMode>,
    pub shift_permille: u32,
    pub excluded: bool,
    pub active_rules: Vec<String>,
}

#[derive(Default)]
pub struct ThermalController {
    states: HashMap<(usize, usize), RuleState>,
    applied: HashMap<usize, ThermalEffect>,
    /// Transitions (a rule becoming active or clearing) since start.
    pub transitions: u64,
}

fn metric(r: &DeviceReadings, m: ThermalMetric) -> Option<f32> {
    match m {
        ThermalMetric::TemperatureC => r.temperature_c,
        ThermalMetric::PowerW => r.power_w,
    }
}

impl ThermalController {
    /// One evaluation at time `now`. `read` gives each device's readings.
    pub fn tick(
        &mut self,
        now: Duration,
        policy: &CompiledPolicy,
        devices: &[Device],
        read: &dyn Fn(&Device) -> DeviceReadings,
        trace: &Trace,
    ) {
        let rules = policy.thermal_rules();
        for device in devices.iter().filter(|d| d.info.available) {
            let readings = read(device);
            let mut effect = ThermalEffect::default();
            let mut strongest_mode: Option<(f32, PowerMode)> = None;
            for (ri, rule) in rules.iter().enumerate().filter(|(_, r)| r.device == device.class) {
                let value = metric(&readings, rule.metric);
                let state = self.states.entry((ri, device.index)).or_insert(RuleState::Idle);
                let next = step(*state, value, rule, now);
                if next != *state {
                    let became_active = next == RuleState::Active;
                    let cleared = *state == RuleState::Active && next == RuleState::Idle;
                    if became_active || cleared {
                        self.transitions += 1;
                        let what = if became_active { "thermal rule active" } else { "thermal rule cleared" };
                        log::warn!(
                            "{}: {what}: {} ({})",
                            device.info.name,
                            rule.label,
                            describe_reading(value)
                        );
                        trace.instant(
                            Some(device.index),
                            what,
                            || json!({"rule": rule.label, "value": value, "emergency": rule.emergency}),
                        );
                    }
                    *state = next;
                }
                if *state == RuleState::Active {
                    effect.active_rules.push(rule.label.clone());
                    for action in &rule.actions {
                        match action {
                            ThermalAction::SetPowerMode(m) => {
                                if strongest_mode.is_none_or(|(t, _)| rule.trigger > t) {
                                    strongest_mode = Some((rule.trigger, *m));
                                }
                            }
                            ThermalAction::ShiftLoad(f) => {
                                effect.shift_permille =
                                    effect.shift_permille.max((f.clamp(0.0, 1.0) * 1000.0) as u32)
                            }
                            ThermalAction::Exclude => effect.excluded = true,
                        }
                    }
                }
            }
            effect.power_mode = strongest_mode.map(|(_, m)| m);
            self.apply(device, effect, policy);
        }
    }

    fn apply(&mut self, device: &Device, effect: ThermalEffect, policy: &CompiledPolicy) {
        if self.applied.get(&device.index) == Some(&effect) {
            return;
        }
        let previous = self.applied.insert(device.index, effect.clone()).unwrap_or_default();
        device.load.shift_permille.store(effect.shift_permille, Ordering::Relaxed);
        device.load.thermally_excluded.store(effect.excluded, Ordering::Relaxed);
        if effect.power_mode != previous.power_mode {
            // Back to the policy's own mode (or the default) once no rule asks for one.
            let mode =
                effect.power_mode.or(policy.settings(device.class).power_mode).unwrap_or(PowerMode::Default);
            if let Err(e) = device.backend.set_power_mode(mode) {
                log::warn!("{}: thermal power mode {mode} not applied: {e}", device.info.name);
            }
        }
    }

    /// The effect currently applied to a device.
    pub fn effect(&self, device: usize) -> ThermalEffect {
        self.applied.get(&device).cloned().unwrap_or_default()
    }
}

fn step(state: RuleState, value: Option<f32>, rule: &ThermalRule, now: Duration) -> RuleState {
    let Some(v) = value else { return state };
    match state {
        RuleState::Idle if v >= rule.trigger => {
            if rule.hold.is_zero() {
                RuleState::Active
            } else {
                RuleState::Pending(now)
            }
        }
        RuleState::Pending(_) if v < rule.trigger => RuleState::Idle,
        RuleState::Pending(since) if now.saturating_sub(since) >= rule.hold => RuleState::Active,
        RuleState::Active if v < rule.clear => RuleState::Idle,
        s => s,
    }
}

/// "reading 41.7", or "no reading" (log text for people, not Rust's Debug form).
fn describe_reading(value: Option<f32>) -> String {
    match value {
        Some(v) => format!("reading {v:.1}"),
        None => "no reading".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DeviceClass;

    #[test]
    fn readings_are_logged_as_numbers() {
        assert_eq!(describe_reading(Some(41.698605)), "reading 41.7");
        assert_eq!(describe_reading(None), "no reading");
    }

    fn rule(trigger: f32, clear: f32, hold_ms: u64) -> ThermalRule {
        ThermalRule {
            label: "t".into(),
            device: DeviceClass::Npu,
            metric: ThermalMetric::TemperatureC,
            trigger,
            clear,
            hold: Duration::from_millis(hold_ms),
            emergency: false,
            actions: vec![ThermalAction::Exclude],
        }
    }

    #[test]
    fn fires_after_hold_and_clears_below_hysteresis() {
        let r = rule(80.0, 70.0, 100);
        let ms = Duration::from_millis;
        let s = step(RuleState::Idle, Some(85.0), &r, ms(0));
        assert_eq!(s, RuleState::Pending(ms(0)));
        assert_eq!(step(s, Some(85.0), &r, ms(50)), s, "must hold for 100 ms");
        let s = step(s, Some(85.0), &r, ms(100));
        assert_eq!(s, RuleState::Active);
        assert_eq!(step(s, Some(75.0), &r, ms(200)), RuleState::Active, "75 is inside the hysteresis band");
        assert_eq!(step(s, Some(69.0), &r, ms(300)), RuleState::Idle);
        assert_eq!(
            step(RuleState::Pending(ms(0)), Some(79.0), &r, ms(10)),
            RuleState::Idle,
            "a dip resets the hold"
        );
        assert_eq!(
            step(RuleState::Active, None, &r, ms(10)),
            RuleState::Active,
            "no reading keeps the state"
        );
    }
}
