//! `explain`: for one op, every rule tried and why it did or did not match, the devices
//! considered and why each is or is not a candidate, and the decision.

use super::compile::can_run;
use super::compiled::*;
use super::decide::{features, first_failure};
use super::dump::{conditions_text, fallback_text, settings_text, split_text, strategy_text};
use super::program::Feature;
use super::types::DeviceClass;
use super::OpQuery;
use std::fmt::Write;

impl CompiledPolicy {
    /// Which rules were tried, why each did (not) match, the devices considered and the
    /// decision. Agrees with `decide` (tests check that on many ops).
    pub fn explain(&self, q: &OpQuery) -> String {
        let mut out = String::new();
        let f = features(&q.dims);
        let sizes: Vec<String> =
            Feature::ALL.iter().map(|ft| format!("{}={}", ft.name(), f[*ft as usize])).collect();
        let tags: Vec<String> = q.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "policy {}", self.name);
        let _ = writeln!(
            out,
            "op: {} {}, {}, tags: {}",
            q.kind,
            q.dtype,
            sizes.join(" "),
            if tags.is_empty() { "(none)".to_string() } else { tags.join(" ") }
        );
        let _ = writeln!(out, "rules, in order:");
        let chosen = self.decide_index(q);
        for (i, r) in self.rules.iter().enumerate() {
            let head = format!("  #{i} {} [{}]", r.label, r.def.place);
            if i == self.implicit_index() {
                let _ = writeln!(out, "{head}: matches (applies when no rule does)");
                break;
            }
            match first_failure(&r.def, q) {
                Some(why) => {
                    let _ = writeln!(out, "{head}: no, {why}");
                }
                None => {
                    let _ = writeln!(out, "{head}: MATCHES ({})", conditions_text(&r.def));
                    let later = self.rules.len() - 1 - i - 1;
                    if later > 0 {
                        let _ = writeln!(out, "  ({later} later rule(s) not tried)");
                    }
                    break;
                }
            }
        }
        let rule = &self.rules[chosen];
        let _ = writeln!(out, "decision: rule #{chosen} {}", rule.label);
        let _ = writeln!(out, "  strategy: {}", strategy_text(rule.strategy));
        match &rule.split {
            Some(s) => {
                let _ = writeln!(out, "  split: {}", split_text(s));
            }
            None => {
                let _ = writeln!(out, "  split: none");
            }
        }
        let _ = writeln!(out, "  fallback: {}", fallback_text(&rule.fallback));
        let _ = writeln!(out, "devices:");
        // Candidates in preference order first, then the devices left out.
        let mut order: Vec<DeviceClass> = rule.candidates.clone();
        order.extend(DeviceClass::ALL.iter().filter(|c| !rule.candidates.contains(c)));
        for class in order {
            let _ = writeln!(out, "  {}: {}", class.name(), self.device_verdict(rule, class, q));
        }
        let _ = writeln!(
            out,
            "the runtime then skips candidates that are unavailable, degraded or excluded by a thermal rule"
        );
        out
    }

    fn device_verdict(&self, rule: &CompiledRule, class: DeviceClass, q: &OpQuery) -> String {
        let settings = self.settings(class);
        let listed = rule.def.devices.iter().position(|d| *d == class);
        match listed {
            None => "not considered: the rule does not list it".to_string(),
            Some(_) if !settings.enabled => "not considered: disabled by this policy".to_string(),
            Some(_) if !can_run(class, q.kind, q.dtype) => {
                format!("listed, but it cannot run {} in {}: the runtime skips it", q.kind, q.dtype)
            }
            Some(_) => {
                let rank = rule.candidates.iter().position(|d| *d == class).unwrap_or(0) + 1;
                format!("candidate {rank} ({})", settings_text(settings))
            }
        }
    }
}
