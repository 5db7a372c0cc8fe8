//! From a checked program to dispatch tables, with the checks that need the merged policy:
//! unreachable rules, op kinds/dtypes no enabled device can run, thermal threshold order.

use super::compiled::*;
use super::diag::{Reporter, SourceMap, Span};
use super::load::Loader;
use super::program::*;
use super::types::*;
use super::{DType, OpKind};
use std::collections::BTreeMap;

/// Parses, checks and compiles the text `text` named `origin`.
pub fn compile_source(
    origin: &str,
    text: &str,
    loader: &dyn Loader,
    limits: &super::limits::PolicyLimits,
) -> Result<CompiledPolicy, super::PolicyError> {
    let mut map = SourceMap::default();
    let mut report = Reporter::default();
    if text.len() > limits.max_file_bytes {
        report.error_at(
            origin,
            format!(
                "the policy is {} bytes, larger than the limit of {} bytes",
                text.len(),
                limits.max_file_bytes
            ),
        );
        return Err(report.into_error());
    }
    let file = map.add(origin, text);
    let program = super::check::check_file(&mut map, file, loader, 0, &mut report);
    let compiled = program.and_then(|p| compile_program(&map, p, limits, &mut report));
    match compiled {
        Some(c) if !report.has_errors() => Ok(c),
        _ => Err(report.into_error()),
    }
}

/// The devices the check assumes can run an op (see docs/POLICY.md): the CPU and the GPU run
/// every op in f32, f16 and bf16; the NPU runs only matmul, in f32, f16, bf16 and i8.
pub fn can_run(class: DeviceClass, kind: OpKind, dtype: DType) -> bool {
    match class {
        DeviceClass::Cpu | DeviceClass::Gpu => dtype.is_float(),
        DeviceClass::Npu => kind == OpKind::Matmul && dtype != DType::I32,
    }
}

/// The (op kind, dtype) pairs every policy must keep runnable.
fn must_run(dtype: DType) -> bool {
    dtype.is_float()
}

fn what_runs(class: DeviceClass) -> &'static str {
    match class {
        DeviceClass::Cpu | DeviceClass::Gpu => "f32, f16 and bf16 ops only",
        DeviceClass::Npu => "matmul only",
    }
}

pub fn compile_program(
    map: &SourceMap,
    mut program: Program,
    limits: &super::limits::PolicyLimits,
    report: &mut Reporter,
) -> Option<CompiledPolicy> {
    if program.rules.len() > limits.max_rules {
        let span = program.rules[limits.max_rules].span;
        report.error(map, span, format!("too many rules: the limit is {}", limits.max_rules));
        return None;
    }
    if program.thermal.len() > limits.max_thermal_rules {
        let span = program.thermal[limits.max_thermal_rules].span;
        report.error(map, span, format!("too many thermal rules: the limit is {}", limits.max_thermal_rules));
        return None;
    }
    let overridden = drop_unreachable(map, &mut program, report);
    check_devices(map, &program, report);
    check_thermal(map, &program, report);
    if report.has_errors() {
        return None;
    }
    let tag_keys = tag_keys(map, &program, report)?;
    let fallback = program.fallback.apply(&FallbackSpec::default());
    let mut rules: Vec<CompiledRule> = program
        .rules
        .iter()
        .map(|def| CompiledRule {
            label: def.name.clone(),
            candidates: def.devices.iter().copied().filter(|d| program.enabled(*d)).collect(),
            strategy: def.strategy,
            split: def.split.clone(),
            fallback: def.fallback.apply(&fallback),
            def: def.clone(),
        })
        .collect();
    rules.push(implicit_rule(&program, &fallback));
    let cells = (0..CELLS).map(|i| build_cell(&program.rules, &tag_keys, i)).collect();
    Some(CompiledPolicy {
        name: program.name,
        rules,
        cells,
        tag_keys,
        settings: program.settings,
        thermal: program.thermal.into_iter().map(|t| t.rule).collect(),
        warnings: report
            .warnings
            .iter()
            .map(|w| w.to_string())
            .chain((report.warnings_not_shown() > 0).then(|| {
                format!(
                    "... and {} more warnings (only the first ones are shown)",
                    report.warnings_not_shown()
                )
            }))
            .collect(),
        overridden,
    })
}

/// Ops no rule matches may run on any enabled device, earliest completion first.
fn implicit_rule(program: &Program, fallback: &FallbackSpec) -> CompiledRule {
    let candidates: Vec<DeviceClass> = [DeviceClass::Npu, DeviceClass::Gpu, DeviceClass::Cpu]
        .into_iter()
        .filter(|d| program.enabled(*d))
        .collect();
    CompiledRule {
        def: RuleDef {
            name: IMPLICIT_RULE.to_string(),
            span: Span::default(),
            place: "implicit".to_string(),
            inherited: false,
            conditions: Vec::new(),
            ops: ALL_OPS,
            dtypes: ALL_DTYPES,
            wtypes: ALL_DTYPES,
            ranges: [Interval::ALL; 6],
            tags: Vec::new(),
            devices: candidates.clone(),
            use_span: Span::default(),
            strategy: Strategy::EarliestCompletion,
            split: None,
            fallback: FallbackPatch::default(),
        },
        label: IMPLICIT_RULE.to_string(),
        candidates,
        strategy: Strategy::EarliestCompletion,
        split: None,
        fallback: fallback.clone(),
    }
}

fn cell_pairs() -> impl Iterator<Item = (OpKind, DType)> {
    OpKind::ALL.into_iter().flat_map(|k| DType::ALL.into_iter().map(move |d| (k, d)))
}

fn admits(rule: &RuleDef, kind: OpKind, dtype: DType) -> bool {
    rule.ops & op_bit(kind) != 0 && rule.dtypes & dtype_bit(dtype) != 0
}

/// A rule is unreachable when, in every (op kind, dtype) it admits, one earlier rule admits
/// every op it does. The policy's own such rules are errors; inherited ones are overridden
/// and dropped. Returns the dropped rules' descriptions.
fn drop_unreachable(map: &SourceMap, program: &mut Program, report: &mut Reporter) -> Vec<String> {
    let mut dropped = Vec::new();
    let mut keep = vec![true; program.rules.len()];
    for (j, rule) in program.rules.iter().enumerate() {
        let mut shadowers: Vec<usize> = Vec::new();
        let reachable = cell_pairs().filter(|&(k, d)| admits(rule, k, d)).any(|(k, d)| {
            let by = (0..j)
                .find(|&i| keep[i] && admits(&program.rules[i], k, d) && rule.within(&program.rules[i]));
            if let Some(i) = by {
                if !shadowers.contains(&i) {
                    shadowers.push(i);
                }
            }
            by.is_none()
        });
        if reachable {
            continue;
        }
        keep[j] = false;
        if rule.inherited {
            dropped.push(format!("{} ({})", rule.name, rule.place));
            continue;
        }
        let names: Vec<String> = shadowers
            .iter()
            .map(|&i| {
                let r = &program.rules[i];
                let at = if r.span.file == rule.span.file {
                    format!("line {}", map.line_col(r.span.file, r.span.start).0)
                } else {
                    r.place.clone()
                };
                format!("'{}' ({at})", r.name)
            })
            .collect();
        let by = if names.len() == 1 {
            format!("rule {} matches", names[0])
        } else {
            format!(
                "rules {} match",
                super::check::one_of(&names.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            )
        };
        report.error(
            map,
            rule.span,
            format!("rule '{}' is unreachable: {by} every op it matches first", rule.name),
        );
    }
    let mut i = 0;
    program.rules.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    dropped
}

/// Every (op kind, dtype) must keep a device that can run it, whichever rule matches.
fn check_devices(map: &SourceMap, program: &Program, report: &mut Reporter) {
    for rule in &program.rules {
        let mut failing = cell_pairs().filter(|&(k, d)| {
            must_run(d)
                && admits(rule, k, d)
                && !rule.devices.iter().any(|c| program.enabled(*c) && can_run(*c, k, d))
        });
        if let Some((k, d)) = failing.next() {
            let more = failing.count();
            let why: Vec<String> = rule
                .devices
                .iter()
                .map(|c| {
                    if program.enabled(*c) {
                        format!("{} runs {}", c.name(), what_runs(*c))
                    } else {
                        format!("{} is disabled", c.name())
                    }
                })
                .collect();
            let more = if more > 0 { format!(" (and {more} more op/dtype pairs)") } else { String::new() };
            // Point at what made it fail: a disabled device, or the rule's device list.
            let span = rule
                .devices
                .iter()
                .filter(|c| !program.enabled(**c) && can_run(**c, k, d))
                .find_map(|c| program.enabled_span[*c as usize])
                .filter(|_| rule.inherited)
                .unwrap_or(rule.use_span);
            report.error(
                map,
                span,
                format!(
                    "no enabled device can run {k} in {d} under rule '{}': {}{more}",
                    rule.name,
                    why.join(", ")
                ),
            );
        } else if !rule.inherited {
            warn_devices(map, program, rule, report);
        }
    }
    // Ops that no rule matches go to every enabled device.
    let enabled: Vec<DeviceClass> = DeviceClass::ALL.into_iter().filter(|c| program.enabled(*c)).collect();
    if let Some((k, d)) = cell_pairs()
        .find(|&(k, d)| must_run(d) && !enabled.iter().any(|c| can_run(*c, k, d)) && !covered(program, k, d))
    {
        let span = program.enabled_span[DeviceClass::Cpu as usize]
            .or(program.enabled_span[DeviceClass::Gpu as usize])
            .unwrap_or_default();
        report.error(
            map,
            span,
            format!("no enabled device can run {k} in {d}: keep cpu enabled as the backstop for every op"),
        );
    }
}

/// True when some rule matches every op of this kind and dtype (no implicit rule needed).
fn covered(program: &Program, kind: OpKind, dtype: DType) -> bool {
    program
        .rules
        .iter()
        .any(|r| admits(r, kind, dtype) && r.ranges.iter().all(|i| i.is_all()) && r.tags.is_empty())
}

/// Suspicious but legal device lists.
fn warn_devices(map: &SourceMap, program: &Program, rule: &RuleDef, report: &mut Reporter) {
    for c in &rule.devices {
        if !program.enabled(*c) {
            report.warn(
                map,
                rule.use_span,
                format!("rule '{}' uses {}, which this policy disables", rule.name, c.name()),
            );
        } else if !cell_pairs().any(|(k, d)| admits(rule, k, d) && can_run(*c, k, d)) {
            report.warn(
                map,
                rule.use_span,
                format!(
                    "rule '{}' uses {}, which runs {}: it is never chosen for this rule's ops",
                    rule.name,
                    c.name(),
                    what_runs(*c)
                ),
            );
        }
    }
    let enabled: Vec<&DeviceClass> = rule.devices.iter().filter(|c| program.enabled(**c)).collect();
    if let [only] = enabled.as_slice() {
        if **only != DeviceClass::Cpu {
            report.warn(
                map,
                rule.use_span,
                format!(
                    "rule '{}' uses only {}: when {} is unavailable or fails, its ops run on the backstop \
                     (any device that can, the CPU first), not where this rule says (list cpu to say so)",
                    rule.name,
                    only.name(),
                    only.name()
                ),
            );
        }
    }
}

/// Emergency levels must trigger above every ordinary level of the same device and metric.
fn check_thermal(map: &SourceMap, program: &Program, report: &mut Reporter) {
    for e in program.thermal.iter().filter(|t| t.rule.emergency) {
        let higher = program.thermal.iter().find(|t| {
            !t.rule.emergency
                && t.rule.device == e.rule.device
                && t.rule.metric == e.rule.metric
                && t.rule.trigger >= e.rule.trigger
        });
        if let Some(h) = higher {
            let unit = metric_unit(e.rule.metric);
            report.error(
                map,
                e.span,
                format!(
                    "thermal thresholds out of order: emergency '{}' triggers at {} {unit}, not above '{}' at {} {unit}",
                    e.rule.label, e.rule.trigger, h.rule.label, h.rule.trigger
                ),
            );
        }
    }
    let mut devices: Vec<DeviceClass> = program.thermal.iter().map(|t| t.rule.device).collect();
    devices.dedup();
    for d in devices {
        let rules: Vec<&ThermalDef> = program.thermal.iter().filter(|t| t.rule.device == d).collect();
        if !rules.iter().any(|t| t.rule.emergency) {
            report.warn(
                map,
                rules[0].span,
                format!(
                    "{} has thermal rules but no emergency level (add 'emergency thermal ...')",
                    d.name()
                ),
            );
        }
        // File 0 is the policy being compiled; inherited rules are not its author's mistake.
        if !program.enabled(d) && rules[0].span.file == 0 {
            report.warn(
                map,
                rules[0].span,
                format!(
                    "thermal rule '{}' watches {}, which this policy disables",
                    rules[0].rule.label,
                    d.name()
                ),
            );
        }
    }
}

pub fn metric_unit(m: ThermalMetric) -> &'static str {
    match m {
        ThermalMetric::TemperatureC => "C",
        ThermalMetric::PowerW => "W",
    }
}

/// Gives every tested (tag key, value) an atom bit.
fn tag_keys(map: &SourceMap, program: &Program, report: &mut Reporter) -> Option<Vec<TagKey>> {
    let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for rule in &program.rules {
        for t in &rule.tags {
            let vals = keys.entry(&t.key).or_default();
            for v in &t.values {
                if !vals.contains(&v.as_str()) {
                    vals.push(v);
                }
            }
        }
    }
    let mut bit = 0u32;
    let mut out = Vec::new();
    for (key, vals) in keys {
        let mut values = Vec::new();
        for v in vals {
            if bit == 64 {
                let span =
                    program.rules.iter().find(|r| !r.tags.is_empty()).map_or(Span::default(), |r| r.span);
                report.error(map, span, "the policy tests more than 64 distinct tag values");
                return None;
            }
            values.push((v.to_string(), 1u64 << bit));
            bit += 1;
        }
        out.push(TagKey { key: key.to_string(), values });
    }
    Some(out)
}

fn tag_groups(rule: &RuleDef, keys: &[TagKey]) -> Vec<u64> {
    rule.tags
        .iter()
        .map(|t| {
            let key = keys.iter().find(|k| k.key == t.key);
            key.map_or(0, |k| {
                k.values.iter().filter(|(v, _)| t.values.contains(v)).fold(0, |m, (_, b)| m | b)
            })
        })
        .collect()
}

fn guard(index: usize, rule: &RuleDef, keys: &[TagKey]) -> Guard {
    let check =
        rule.ranges.iter().enumerate().filter(|(_, r)| !r.is_all()).fold(0u8, |m, (f, _)| m | (1 << f));
    Guard {
        rule: index as u32,
        check,
        ranges: rule.ranges,
        wtypes: rule.wtypes,
        tag_groups: tag_groups(rule, keys),
    }
}

/// The cell of one (op kind, dtype): the rules that admit it, cut into size classes on the
/// feature the rules test at the most distinct points. A class ends at the first guard that
/// always matches, since nothing after it can be reached.
fn build_cell(rules: &[RuleDef], keys: &[TagKey], index: usize) -> Cell {
    let (kind, dtype) = (OpKind::ALL[index / DType::ALL.len()], DType::ALL[index % DType::ALL.len()]);
    let guards: Vec<Guard> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| admits(r, kind, dtype))
        .map(|(i, r)| guard(i, r, keys))
        .collect();
    let points = |f: Feature| -> Vec<u64> {
        let mut p: Vec<u64> = guards
            .iter()
            .flat_map(|g| {
                let r = g.ranges[f as usize];
                [(r.lo > 0).then_some(r.lo), r.hi.checked_add(1)]
            })
            .flatten()
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let key = Feature::ALL
        .into_iter()
        .max_by_key(|f| (points(*f).len(), std::cmp::Reverse(*f as usize)))
        .unwrap_or(Feature::M);
    let bounds = points(key);
    let classes = (0..=bounds.len())
        .map(|c| {
            let lo = if c == 0 { 0 } else { bounds[c - 1] };
            let hi = bounds.get(c).map_or(u64::MAX, |b| b - 1);
            let class = Interval { lo, hi };
            let mut list = Vec::new();
            for g in &guards {
                if g.ranges[key as usize].intersect(class).is_empty() {
                    continue;
                }
                // Bounds come from the guards' own ends, so this range covers the class.
                let mut g = g.clone();
                g.check &= !(1 << key as u8);
                let always = g.check == 0 && g.tag_groups.is_empty() && g.wtypes == ALL_DTYPES;
                list.push(g);
                if always {
                    break;
                }
            }
            list
        })
        .collect();
    Cell { key, bounds, classes }
}
