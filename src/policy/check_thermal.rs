//! The checker's part for thermal rules: trigger, hysteresis and actions.

use super::ast::*;
use super::check::{one_of, Checker};
use super::check_values::{describe, DURATION_RANGE};
use super::program::ThermalDef;
use super::types::*;
use super::units::UnitKind;
use super::PowerMode;

impl Checker<'_> {
    pub(super) fn thermal(&mut self, t: &ThermalAst) -> Option<ThermalDef> {
        let errors_before = self.report.error_count();
        let mut trigger = None;
        let mut clear = None;
        let mut actions = Vec::new();
        let mut seen_do = false;
        for stmt in &t.stmts {
            match stmt {
                ThermalStmt::Trigger { device, metric, level, hold, span } => {
                    if trigger.is_some() {
                        self.error(*span, format!("thermal rule '{}' has two triggers", t.name.name));
                        continue;
                    }
                    let class = self.device(device);
                    let metric_kind = match metric.name.as_str() {
                        "temperature" => Some((ThermalMetric::TemperatureC, UnitKind::Celsius)),
                        "power" => Some((ThermalMetric::PowerW, UnitKind::Watts)),
                        other => {
                            self.error(
                                metric.span,
                                format!("unknown metric '{other}' (expected temperature or power)"),
                            );
                            None
                        }
                    };
                    let hold = match hold {
                        Some(h) => self
                            .unit_value("hold time", h, UnitKind::Duration)
                            .and_then(|n| self.in_range("hold time", h.span, n, DURATION_RANGE)),
                        None => Some(0.0),
                    };
                    if let (Some(class), Some((m, unit)), Some(hold)) = (class, metric_kind, hold) {
                        let level_v = self
                            .unit_value(&metric.name, level, unit)
                            .and_then(|n| self.in_range(&metric.name, level.span, n, level_range(m)));
                        if let Some(level_v) = level_v {
                            trigger = Some((class, m, unit, level_v, level.clone(), hold));
                        }
                    }
                }
                ThermalStmt::Clear { level, span } => {
                    if clear.is_some() {
                        self.error(*span, format!("thermal rule '{}' has two clear levels", t.name.name));
                        continue;
                    }
                    clear = Some(level.clone());
                }
                ThermalStmt::Do(list, span) => {
                    if seen_do {
                        self.error(*span, format!("thermal rule '{}' has two 'do' statements", t.name.name));
                    }
                    seen_do = true;
                    for a in list {
                        if let Some(action) = self.action(a) {
                            actions.push(action);
                        }
                    }
                }
            }
        }
        let Some((device, metric, unit, trigger_v, trigger_q, hold)) = trigger else {
            if self.report.error_count() == errors_before {
                self.error(
                    t.name.span,
                    format!(
                        "thermal rule '{}' has no trigger: add 'when <device> temperature above <level> C'",
                        t.name.name
                    ),
                );
            }
            return None;
        };
        let Some(clear_q) = clear else {
            self.error(
                t.name.span,
                format!(
                    "thermal rule '{}' has no hysteresis: add 'clear below <level>' under its trigger of {}",
                    t.name.name,
                    self.map.text(trigger_q.span)
                ),
            );
            return None;
        };
        let metric_name = unit_metric_name(metric);
        let clear_v = self
            .unit_value(metric_name, &clear_q, unit)
            .and_then(|n| self.in_range(metric_name, clear_q.span, n, level_range(metric)))?;
        if clear_v >= trigger_v {
            self.error(
                clear_q.span,
                format!(
                    "thermal rule '{}' has no hysteresis: it clears below {}, which is not under its trigger of {}",
                    t.name.name,
                    self.map.text(clear_q.span),
                    self.map.text(trigger_q.span)
                ),
            );
            return None;
        }
        if !seen_do {
            self.error(t.name.span, format!("thermal rule '{}' has no 'do' actions", t.name.name));
        }
        if self.report.error_count() > errors_before {
            return None;
        }
        Some(ThermalDef {
            rule: ThermalRule {
                label: t.name.name.clone(),
                device,
                metric,
                trigger: trigger_v as f32,
                clear: clear_v as f32,
                hold: std::time::Duration::from_secs_f64(hold),
                emergency: t.emergency,
                actions,
            },
            span: t.name.span,
        })
    }

    fn action(&mut self, a: &Action) -> Option<ThermalAction> {
        match (a.name.name.as_str(), &a.arg) {
            ("exclude", None) => Some(ThermalAction::Exclude),
            ("power", Some(Scalar::Word(w))) => match PowerMode::from_name(&w.name) {
                Some(m) => Some(ThermalAction::SetPowerMode(m)),
                None => {
                    let names: Vec<&str> = PowerMode::ALL.iter().map(|m| m.name()).collect();
                    self.error(
                        w.span,
                        format!("unknown power mode '{}' (expected {})", w.name, one_of(&names)),
                    );
                    None
                }
            },
            ("shift", Some(Scalar::Quantity(q))) => {
                let f = self.plain_number("shift fraction", q)?;
                if !(f > 0.0 && f <= 1.0) {
                    self.error(q.span, format!("shift fraction {} is not in (0, 1]", q.number));
                    return None;
                }
                Some(ThermalAction::ShiftLoad(f as f32))
            }
            ("exclude", Some(arg)) => {
                self.error(arg.span(), "type mismatch: 'exclude' takes no value");
                None
            }
            ("power", arg) => {
                let found = arg.as_ref().map_or("nothing".to_string(), |s| describe(self.map, s));
                self.error(a.span, format!("type mismatch: 'power' takes a power mode, found {found}"));
                None
            }
            ("shift", arg) => {
                let found = arg.as_ref().map_or("nothing".to_string(), |s| describe(self.map, s));
                self.error(a.span, format!("type mismatch: 'shift' takes a fraction, found {found}"));
                None
            }
            (other, _) => {
                self.error(
                    a.name.span,
                    format!("unknown action '{other}' (expected power, shift or exclude)"),
                );
                None
            }
        }
    }
}

fn level_range(m: ThermalMetric) -> (f64, f64, &'static str) {
    match m {
        ThermalMetric::TemperatureC => (-50.0, 200.0, "from -50 C to 200 C"),
        ThermalMetric::PowerW => (0.0, 10000.0, "from 0 W to 10000 W"),
    }
}

fn unit_metric_name(m: ThermalMetric) -> &'static str {
    match m {
        ThermalMetric::TemperatureC => "temperature",
        ThermalMetric::PowerW => "power",
    }
}
