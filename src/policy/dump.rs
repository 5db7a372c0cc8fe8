//! A readable rendering of a compiled policy: settings, rules, thermal rules and the
//! dispatch tables themselves.

use super::compiled::*;
use super::program::*;
use super::types::*;
use super::{DType, OpKind};
use std::fmt::Write;

/// `op in [matmul, add]`, `m >= 256`, `tag phase = prefill`.
pub fn condition_text(c: &Condition) -> String {
    match c {
        Condition::Ops(mask) => {
            let names: Vec<&str> =
                OpKind::ALL.iter().filter(|k| mask & op_bit(**k) != 0).map(|k| k.name()).collect();
            set_text("op", &names)
        }
        Condition::DTypes(mask) => {
            let names: Vec<&str> =
                DType::ALL.iter().filter(|d| mask & dtype_bit(**d) != 0).map(|d| d.name()).collect();
            set_text("dtype", &names)
        }
        Condition::WTypes(mask) => {
            let names: Vec<&str> =
                DType::ALL.iter().filter(|d| mask & dtype_bit(**d) != 0).map(|d| d.name()).collect();
            set_text("wtype", &names)
        }
        Condition::Size { feature, cmp, text, .. } => format!("{} {} {text}", feature.name(), cmp.symbol()),
        Condition::Tag { key, values } => {
            let v: Vec<&str> = values.iter().map(|s| s.as_str()).collect();
            set_text(&format!("tag {key}"), &v)
        }
    }
}

fn set_text(field: &str, names: &[&str]) -> String {
    match names {
        [one] => format!("{field} = {one}"),
        _ => format!("{field} in [{}]", names.join(", ")),
    }
}

pub fn conditions_text(rule: &RuleDef) -> String {
    if rule.conditions.is_empty() {
        return "always".to_string();
    }
    let parts: Vec<String> = rule.conditions.iter().map(condition_text).collect();
    parts.join(" and ")
}

fn interval_text(f: Feature, r: Interval) -> String {
    let name = f.name();
    match (r.lo, r.hi) {
        (0, u64::MAX) => "any".to_string(),
        (lo, hi) if lo == hi => format!("{name} = {lo}"),
        (0, hi) => format!("{name} <= {hi}"),
        (lo, u64::MAX) => format!("{name} >= {lo}"),
        (lo, hi) => format!("{lo} <= {name} <= {hi}"),
    }
}

pub fn devices_text(list: &[DeviceClass]) -> String {
    if list.is_empty() {
        return "(none)".to_string();
    }
    let names: Vec<&str> = list.iter().map(|d| d.name()).collect();
    names.join(", ")
}

pub fn strategy_text(s: Strategy) -> &'static str {
    match s {
        Strategy::FirstAvailable => "first_available",
        Strategy::LeastLoaded => "least_loaded",
        Strategy::EarliestCompletion => "earliest_completion",
    }
}

pub fn split_text(s: &SplitSpec) -> String {
    let axis = match s.axis {
        SplitAxis::Rows => "rows",
        SplitAxis::Cols => "cols",
    };
    match &s.ratios {
        None => format!("{axis} dynamic {}", devices_text(&s.devices)),
        Some(r) => {
            let shares: Vec<String> =
                s.devices.iter().zip(r).map(|(d, r)| format!("{} {r}", d.name())).collect();
            format!("{axis} {}", shares.join(", "))
        }
    }
}

pub fn fallback_text(f: &FallbackSpec) -> String {
    format!(
        "retries {}, degrade after {} failures for {}",
        f.retries,
        f.degrade_after,
        duration_text(f.degrade_for)
    )
}

pub fn settings_text(s: &DeviceSettings) -> String {
    let mut out = String::from(if s.enabled { "enabled" } else { "disabled" });
    if let Some(p) = s.power_mode {
        let _ = write!(out, ", power {p}");
    }
    if let Some(p) = s.precision {
        let _ = write!(out, ", precision {p}");
    }
    if let Some(n) = s.max_in_flight {
        let _ = write!(out, ", max_in_flight {n}");
    }
    if let Some(n) = s.batch_rows {
        let _ = write!(out, ", batch_rows {n}");
    }
    if let Some(n) = s.pool_bytes {
        let _ = write!(out, ", pool {}", bytes_text(n));
    }
    if let Some(d) = s.keep_warm {
        let _ = write!(out, ", keep_warm {} us", d.as_micros());
    }
    out
}

/// `256 MiB` where exact, else bytes.
pub fn bytes_text(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n % size == 0 {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} B")
}

/// `10 s`, `250 ms`.
pub fn duration_text(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_secs_f64() * 1e3)
    }
}

pub fn thermal_text(t: &ThermalRule) -> String {
    let unit = super::compile::metric_unit(t.metric);
    let metric = match t.metric {
        ThermalMetric::TemperatureC => "temperature",
        ThermalMetric::PowerW => "power",
    };
    let actions: Vec<String> = t
        .actions
        .iter()
        .map(|a| match a {
            ThermalAction::SetPowerMode(m) => format!("power {m}"),
            ThermalAction::ShiftLoad(f) => format!("shift {f}"),
            ThermalAction::Exclude => "exclude".to_string(),
        })
        .collect();
    format!(
        "{}{}: {} {metric} above {} {unit} for {} -> {}; clears below {} {unit}",
        if t.emergency { "emergency " } else { "" },
        t.label,
        t.device.name(),
        t.trigger,
        duration_text(t.hold),
        actions.join(", "),
        t.clear
    )
}

/// One line describing what a rule does.
pub fn rule_line(index: usize, r: &CompiledRule) -> String {
    let mut line = format!(
        "#{index} {} [{}]{}: when {} -> use {}; {}",
        r.label,
        r.def.place,
        if r.def.inherited { " (inherited)" } else { "" },
        conditions_text(&r.def),
        devices_text(&r.candidates),
        strategy_text(r.strategy)
    );
    if let Some(s) = &r.split {
        let _ = write!(line, "; split {}", split_text(s));
    }
    let _ = write!(line, "; fallback {}", fallback_text(&r.fallback));
    line
}

impl CompiledPolicy {
    /// The compiled tables, readable.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "policy {}", self.name);
        let _ = writeln!(out, "devices:");
        for c in DeviceClass::ALL {
            let _ = writeln!(out, "  {}: {}", c.name(), settings_text(self.settings(c)));
        }
        let _ = writeln!(out, "rules (tried in this order):");
        for (i, r) in self.rules.iter().enumerate() {
            let _ = writeln!(out, "  {}", rule_line(i, r));
        }
        for o in &self.overridden {
            let _ = writeln!(out, "  overridden, never reached: {o}");
        }
        let _ = writeln!(out, "thermal rules:");
        if self.thermal.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for t in &self.thermal {
            let _ = writeln!(out, "  {}", thermal_text(t));
        }
        let _ = writeln!(
            out,
            "dispatch table: (op, dtype) -> size class -> guards tried in order (rule #: remaining tests)"
        );
        self.dump_cells(&mut out);
        out
    }

    /// Cells with the same contents are printed once, with all their (op, dtype) keys.
    fn dump_cells(&self, out: &mut String) {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for kind in OpKind::ALL {
            for dtype in DType::ALL {
                let body = self.cell_text(&self.cells[cell_index(kind, dtype)]);
                let key = format!("{kind}/{dtype}");
                match groups.iter_mut().find(|(b, _)| *b == body) {
                    Some((_, keys)) => keys.push(key),
                    None => groups.push((body, vec![key])),
                }
            }
        }
        for (body, keys) in groups {
            let _ = writeln!(out, "  {}:", keys.join(" "));
            out.push_str(&body);
        }
    }

    fn cell_text(&self, cell: &Cell) -> String {
        let mut out = String::new();
        for (c, guards) in cell.classes.iter().enumerate() {
            let lo = if c == 0 { 0 } else { cell.bounds[c - 1] };
            let hi = cell.bounds.get(c).map_or(u64::MAX, |b| b - 1);
            let class = interval_text(cell.key, Interval { lo, hi });
            let mut list: Vec<String> = guards.iter().map(|g| self.guard_text(g)).collect();
            if !matches!(guards.last(), Some(g) if g.check == 0 && g.tag_groups.is_empty() && g.wtypes == ALL_DTYPES)
            {
                list.push(format!("#{} {IMPLICIT_RULE}", self.implicit_index()));
            }
            let class = if class == "any" { "any size".to_string() } else { class };
            let _ = writeln!(out, "    {class}: {}", list.join(" | "));
        }
        out
    }

    fn guard_text(&self, g: &Guard) -> String {
        let mut tests: Vec<String> = Feature::ALL
            .iter()
            .filter(|f| g.check & (1 << **f as u8) != 0)
            .map(|f| interval_text(*f, g.ranges[*f as usize]))
            .collect();
        for t in &self.rules[g.rule as usize].def.tags {
            tests.push(set_text(
                &format!("tag {}", t.key),
                &t.values.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
            ));
        }
        let r = &self.rules[g.rule as usize];
        if tests.is_empty() {
            format!("#{} {}", g.rule, r.label)
        } else {
            format!("#{} {} if {}", g.rule, r.label, tests.join(" and "))
        }
    }
}
