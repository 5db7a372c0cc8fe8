//! The checker: gives the syntax tree types, reports unknown names, type mismatches and
//! malformed rules, and merges a policy onto the one it includes.

use super::ast::*;
use super::check_values::{describe, DURATION_RANGE};
use super::diag::{Reporter, SourceMap, Span};
use super::load::Loader;
use super::program::*;
use super::types::*;
use super::units::UnitKind;
use super::{DType, OpKind, PowerMode};
use std::collections::HashMap;

/// Checks the text `file` of `map` and everything it includes, merged into one program.
/// `depth` counts the includes above this file. Returns `None` after reporting errors.
pub fn check_file(
    map: &mut SourceMap,
    file: u32,
    loader: &dyn Loader,
    depth: usize,
    report: &mut Reporter,
) -> Option<Program> {
    let ast = super::syntax::parse(map, file, report)?;
    let mut checker = Checker { map, report, file };
    let base = checker.resolve_include(&ast, loader, depth)?;
    let errors_before = checker.report.error_count();
    let program = checker.merge(base, &ast);
    (checker.report.error_count() == errors_before).then_some(program)
}

pub(super) struct Checker<'a> {
    pub(super) map: &'a mut SourceMap,
    pub(super) report: &'a mut Reporter,
    pub(super) file: u32,
}

const DEVICE_FIELDS: &str = "enabled, power, precision, max_in_flight, batch_rows, pool or keep_warm";
/// Longest `keep_warm`: beyond this, threads would spin through gaps that are not gaps.
const KEEP_WARM_RANGE: (f64, f64, &str) = (0.0, 0.1, "from 0 s to 100 ms");
const FALLBACK_FIELDS: &str = "retries, degrade_after or degrade_for";
const COND_FIELDS: &str = "op, dtype, wtype, m, n, k, batch, elements, bytes or tag <key>";

impl Checker<'_> {
    pub(super) fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.report.error(self.map, span, msg);
    }

    pub(super) fn warn(&mut self, span: Span, msg: impl Into<String>) {
        self.report.warn(self.map, span, msg);
    }

    /// The program this file starts from: its include, or the empty base.
    fn resolve_include(&mut self, ast: &PolicyFile, loader: &dyn Loader, depth: usize) -> Option<Program> {
        let origin = self.map.origin(self.file).to_string();
        let includes: Vec<&Ident> = ast
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Include(name) => Some(name),
                _ => None,
            })
            .collect();
        let Some(first) = includes.first() else {
            return Some(Program::base(&default_name(&origin)));
        };
        if let Some(second) = includes.get(1) {
            self.error(
                second.span,
                format!("a policy includes at most one other policy (already including \"{}\")", first.name),
            );
            return None;
        }
        if depth + 1 > loader.max_depth() {
            self.error(first.span, format!("includes nest deeper than {}", loader.max_depth()));
            return None;
        }
        let (inc_origin, text) = match loader.load(&first.name, &origin) {
            Ok(found) => found,
            Err(msg) => {
                self.error(first.span, msg);
                return None;
            }
        };
        if self.chain_contains(&inc_origin) {
            self.error(first.span, format!("include cycle: \"{}\" includes itself", first.name));
            return None;
        }
        let inc_file = self.map.add(&inc_origin, &text);
        self.map.set_parent(inc_file, self.file);
        let errors_before = self.report.error_count();
        let base = check_file(self.map, inc_file, loader, depth + 1, self.report);
        if base.is_none() && self.report.error_count() > errors_before {
            // Point back at the include, so the user sees why the other file was read.
            self.error(first.span, format!("included policy \"{}\" has errors", first.name));
        }
        base.map(|mut p| {
            p.name = default_name(&origin);
            p
        })
    }

    /// True when `origin` is this file or one of the files that include it.
    fn chain_contains(&self, origin: &str) -> bool {
        let mut file = Some(self.file);
        while let Some(f) = file {
            if self.map.origin(f) == origin {
                return true;
            }
            file = self.map.parent(f);
        }
        false
    }

    /// Applies this file's statements on top of `base`.
    fn merge(&mut self, mut p: Program, ast: &PolicyFile) -> Program {
        let mut seen_devices: HashMap<DeviceClass, Span> = HashMap::new();
        let mut seen_rules: HashMap<String, Span> = HashMap::new();
        let mut seen_thermal: HashMap<String, Span> = HashMap::new();
        let mut own_rules = Vec::new();
        let mut seen_fallback = None;
        for item in &ast.items {
            match item {
                Item::PolicyName(name) => p.name = name.name.clone(),
                Item::Include(_) => {}
                Item::Device { name, settings, span } => {
                    let Some(class) = self.device(name) else {
                        continue;
                    };
                    if let Some(first) = seen_devices.insert(class, *span) {
                        let line = self.map.line_col(first.file, first.start).0;
                        self.error(
                            name.span,
                            format!("device {} is configured twice (first at line {line})", name.name),
                        );
                    }
                    self.device_settings(&mut p, class, settings);
                }
                Item::Fallback(settings, span) => {
                    if seen_fallback.replace(*span).is_some() {
                        self.error(*span, "the policy has two 'fallback' blocks");
                    }
                    let patch = self.fallback(settings);
                    p.fallback.overlay(&patch);
                }
                Item::Rule(rule) => {
                    if let Some(first) = seen_rules.insert(rule.name.name.clone(), rule.name.span) {
                        let line = self.map.line_col(first.file, first.start).0;
                        self.error(
                            rule.name.span,
                            format!("rule '{}' is defined twice (first at line {line})", rule.name.name),
                        );
                    }
                    if let Some(def) = self.rule(rule) {
                        own_rules.push(def);
                    }
                }
                Item::Thermal(t) => {
                    if let Some(first) = seen_thermal.insert(t.name.name.clone(), t.name.span) {
                        let line = self.map.line_col(first.file, first.start).0;
                        self.error(
                            t.name.span,
                            format!("thermal rule '{}' is defined twice (first at line {line})", t.name.name),
                        );
                    }
                    if let Some(def) = self.thermal(t) {
                        // A thermal rule of the same name replaces the included one in place.
                        match p.thermal.iter_mut().find(|d| d.rule.label == def.rule.label) {
                            Some(slot) => *slot = def,
                            None => p.thermal.push(def),
                        }
                    }
                }
            }
        }
        // Own rules come first, so they take precedence; a rule of the same name replaces
        // the included one.
        let inherited: Vec<RuleDef> = std::mem::take(&mut p.rules)
            .into_iter()
            .filter(|r| !seen_rules.contains_key(&r.name))
            .map(|mut r| {
                r.inherited = true;
                r
            })
            .collect();
        p.rules = own_rules;
        p.rules.extend(inherited);
        p
    }

    pub(super) fn device(&mut self, name: &Ident) -> Option<DeviceClass> {
        let class = DeviceClass::from_name(&name.name);
        if class.is_none() {
            self.error(name.span, format!("unknown device '{}' (expected cpu, gpu or npu)", name.name));
        }
        class
    }

    fn device_settings(&mut self, p: &mut Program, class: DeviceClass, settings: &[Setting]) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for s in settings {
            if seen.insert(&s.key.name, s.key.span).is_some() {
                self.error(s.key.span, format!("field '{}' is set twice", s.key.name));
            }
            let slot = &mut p.settings[class as usize];
            match s.key.name.as_str() {
                "enabled" => {
                    if let Some(on) = self.boolean(&s.key.name, &s.value) {
                        slot.enabled = on;
                        p.enabled_span[class as usize] = Some(s.value.span());
                    }
                }
                "power" => {
                    let names: Vec<&str> = PowerMode::ALL.iter().map(|m| m.name()).collect();
                    if let Some(i) = self.choice(&s.key.name, &s.value, &names) {
                        p.settings[class as usize].power_mode = Some(PowerMode::ALL[i]);
                        if class != DeviceClass::Npu {
                            self.warn(
                                s.key.span,
                                format!(
                                    "{} has no power modes: 'power' only configures the npu",
                                    class.name()
                                ),
                            );
                        }
                    }
                }
                "precision" => {
                    let names = ["f32", "f16", "bf16", "fp32", "fp16"];
                    if let Some(i) = self.choice(&s.key.name, &s.value, &names) {
                        let dt = [DType::F32, DType::F16, DType::BF16, DType::F32, DType::F16][i];
                        p.settings[class as usize].precision = Some(dt);
                    }
                }
                "max_in_flight" => {
                    if let Some(n) = self.count(&s.key.name, &s.value, 1, 1024) {
                        p.settings[class as usize].max_in_flight = Some(n as u32);
                    }
                }
                "batch_rows" => {
                    if let Some(n) = self.count(&s.key.name, &s.value, 1, 1 << 20) {
                        p.settings[class as usize].batch_rows = Some(n as u32);
                    }
                }
                "pool" => {
                    let n = self.quantity_of(&s.key.name, &s.value, UnitKind::Bytes);
                    let range = (0.0, (1u64 << 40) as f64, "from 0 B to 1 TiB");
                    if let Some(n) = n.and_then(|n| self.in_range(&s.key.name, s.value.span(), n, range)) {
                        p.settings[class as usize].pool_bytes = Some(n.round() as u64);
                    }
                }
                "keep_warm" => {
                    let secs = self.quantity_of(&s.key.name, &s.value, UnitKind::Duration);
                    if let Some(n) =
                        secs.and_then(|n| self.in_range(&s.key.name, s.value.span(), n, KEEP_WARM_RANGE))
                    {
                        p.settings[class as usize].keep_warm = Some(std::time::Duration::from_secs_f64(n));
                        if class != DeviceClass::Cpu {
                            self.warn(
                                s.key.span,
                                format!("'keep_warm' only configures the cpu, not the {}", class.name()),
                            );
                        }
                    }
                }
                other => self.error(
                    s.key.span,
                    format!("unknown field '{other}' in a device block (expected {DEVICE_FIELDS})"),
                ),
            }
        }
    }

    fn fallback(&mut self, settings: &[Setting]) -> FallbackPatch {
        let mut patch = FallbackPatch::default();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for s in settings {
            if seen.insert(&s.key.name, s.key.span).is_some() {
                self.error(s.key.span, format!("field '{}' is set twice", s.key.name));
            }
            match s.key.name.as_str() {
                "retries" => patch.retries = self.count(&s.key.name, &s.value, 0, 16).map(|n| n as u32),
                "degrade_after" => {
                    patch.degrade_after = self.count(&s.key.name, &s.value, 1, 1000).map(|n| n as u32)
                }
                "degrade_for" => {
                    let secs = self.quantity_of(&s.key.name, &s.value, UnitKind::Duration);
                    patch.degrade_for = secs
                        .and_then(|n| self.in_range(&s.key.name, s.value.span(), n, DURATION_RANGE))
                        .map(std::time::Duration::from_secs_f64)
                }
                other => self.error(
                    s.key.span,
                    format!("unknown field '{other}' in a fallback block (expected {FALLBACK_FIELDS})"),
                ),
            }
        }
        patch
    }

    fn rule(&mut self, ast: &RuleAst) -> Option<RuleDef> {
        let errors_before = self.report.error_count();
        let mut def = RuleDef {
            name: ast.name.name.clone(),
            span: ast.name.span,
            place: self.map.place(ast.name.span),
            inherited: false,
            conditions: Vec::new(),
            ops: ALL_OPS,
            dtypes: ALL_DTYPES,
            wtypes: ALL_DTYPES,
            ranges: [Interval::ALL; 6],
            tags: Vec::new(),
            devices: Vec::new(),
            use_span: ast.name.span,
            strategy: Strategy::FirstAvailable,
            split: None,
            fallback: FallbackPatch::default(),
        };
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let mut split_stmt = None;
        for stmt in &ast.stmts {
            let (key, span) = match stmt {
                RuleStmt::When(_, s) => ("when", *s),
                RuleStmt::Use(_, s) => ("use", *s),
                RuleStmt::Strategy(_, s) => ("strategy", *s),
                RuleStmt::Split { span, .. } => ("split", *span),
                RuleStmt::Fallback(_, s) => ("fallback", *s),
            };
            // Several `when` lines add up; anything else said twice is a mistake.
            if key != "when" && seen.insert(key, span).is_some() {
                self.error(span, format!("rule '{}' has two '{key}' statements", def.name));
            }
            match stmt {
                RuleStmt::When(conds, _) => {
                    for c in conds {
                        self.condition(&mut def, c);
                    }
                }
                RuleStmt::Use(devices, span) => {
                    def.use_span = *span;
                    def.devices = self.device_list(devices);
                }
                RuleStmt::Strategy(name, _) => {
                    let names = ["first_available", "least_loaded", "earliest_completion"];
                    match names.iter().position(|n| *n == name.name) {
                        Some(i) => {
                            def.strategy = [
                                Strategy::FirstAvailable,
                                Strategy::LeastLoaded,
                                Strategy::EarliestCompletion,
                            ][i]
                        }
                        None => self.error(
                            name.span,
                            format!(
                                "unknown strategy '{}' (expected first_available, least_loaded or earliest_completion)",
                                name.name
                            ),
                        ),
                    }
                }
                RuleStmt::Split { axis, shares, span } => {
                    split_stmt = Some(*span);
                    def.split = self.split(axis, shares);
                }
                RuleStmt::Fallback(settings, _) => def.fallback = self.fallback(settings),
            }
        }
        if !seen.contains_key("use") {
            self.error(
                ast.name.span,
                format!("rule '{}' has no 'use' list: say which devices run its ops", def.name),
            );
        }
        if let (Some(split), Some(span)) = (&def.split, split_stmt) {
            self.check_split(&def, split, span);
        }
        if self.report.error_count() > errors_before {
            return None;
        }
        if !def.satisfiable() {
            let what = self.contradiction(&def);
            self.error(
                ast.name.span,
                format!("rule '{}' can never match: its conditions on {what} exclude each other", def.name),
            );
            return None;
        }
        Some(def)
    }

    fn contradiction(&self, def: &RuleDef) -> &'static str {
        if def.ops == 0 {
            return "op";
        }
        if def.dtypes == 0 {
            return "dtype";
        }
        for (f, r) in Feature::ALL.iter().zip(&def.ranges) {
            if r.is_empty() {
                return f.name();
            }
        }
        "tags"
    }

    fn check_split(&mut self, def: &RuleDef, split: &SplitSpec, span: Span) {
        let others: Vec<&str> = OpKind::ALL
            .iter()
            .filter(|k| **k != OpKind::Matmul && def.ops & op_bit(**k) != 0)
            .map(|k| k.name())
            .collect();
        if !others.is_empty() {
            self.error(
                span,
                format!(
                    "split applies to matmul only, but rule '{}' also matches {}: add 'when op = matmul'",
                    def.name,
                    others.join(", ")
                ),
            );
        }
        for d in &split.devices {
            if !def.devices.contains(d) {
                self.warn(
                    span,
                    format!("rule '{}' splits onto {}, which is not in its 'use' list", def.name, d.name()),
                );
            }
        }
    }

    fn device_list(&mut self, devices: &[Ident]) -> Vec<DeviceClass> {
        let mut out = Vec::new();
        for d in devices {
            if let Some(class) = self.device(d) {
                if out.contains(&class) {
                    self.error(d.span, format!("device {} is listed twice", d.name));
                } else {
                    out.push(class);
                }
            }
        }
        out
    }

    fn split(&mut self, axis: &Ident, shares: &Shares) -> Option<SplitSpec> {
        let axis = match axis.name.as_str() {
            "rows" => SplitAxis::Rows,
            "cols" => SplitAxis::Cols,
            other => {
                self.error(axis.span, format!("unknown split axis '{other}' (expected rows or cols)"));
                return None;
            }
        };
        let (devices, ratios) = match shares {
            Shares::Dynamic(devices) => (self.device_list(devices), None),
            Shares::Fixed(list) => {
                let names: Vec<Ident> = list.iter().map(|(d, _)| d.clone()).collect();
                let devices = self.device_list(&names);
                let mut ratios = Vec::new();
                for (_, q) in list {
                    let r = self.plain_number("split ratio", q)?;
                    if !(r > 0.0 && r <= 1.0) {
                        self.error(q.span, format!("split ratio {} is not in (0, 1]", q.number));
                        return None;
                    }
                    ratios.push(r as f32);
                }
                let sum: f64 = ratios.iter().map(|r| *r as f64).sum();
                if (sum - 1.0).abs() > 1e-3 {
                    let span = Span {
                        end: list.last().map_or(list[0].1.span.end, |(_, q)| q.span.end),
                        ..list[0].0.span
                    };
                    self.error(span, format!("split ratios sum to {}, not 1", round3(sum)));
                    return None;
                }
                (devices, Some(ratios))
            }
        };
        if devices.len() < 2 {
            let span = match shares {
                Shares::Dynamic(d) => d[0].span,
                Shares::Fixed(d) => d[0].0.span,
            };
            self.error(span, "a split needs at least two devices");
            return None;
        }
        Some(SplitSpec { axis, devices, ratios })
    }

    fn condition(&mut self, def: &mut RuleDef, c: &Cond) {
        if c.is_tag {
            self.tag_condition(def, c);
            return;
        }
        match c.field.name.as_str() {
            "op" => {
                let names: Vec<&str> = OpKind::ALL.iter().map(|k| k.name()).collect();
                if let Some(set) = self.name_set(c, "op", &names) {
                    let mask = set.iter().fold(0, |m, &i| m | op_bit(OpKind::ALL[i]));
                    def.ops &= mask;
                    def.conditions.push(Condition::Ops(mask));
                }
            }
            "dtype" => {
                // An op computes in a plain type; quantized types describe weights only.
                let plain: Vec<DType> = DType::ALL.into_iter().filter(|d| !d.is_quantized()).collect();
                let names: Vec<&str> = plain.iter().map(|d| d.name()).collect();
                if let Some(set) = self.name_set(c, "dtype", &names) {
                    let mask = set.iter().fold(0, |m, &i| m | dtype_bit(plain[i]));
                    def.dtypes &= mask;
                    def.conditions.push(Condition::DTypes(mask));
                }
            }
            "wtype" => {
                let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
                if let Some(set) = self.name_set(c, "wtype", &names) {
                    let mask = set.iter().fold(0, |m, &i| m | dtype_bit(DType::ALL[i]));
                    def.wtypes &= mask;
                    def.conditions.push(Condition::WTypes(mask));
                }
            }
            name => {
                let Some(feature) = Feature::from_name(name) else {
                    self.error(
                        c.field.span,
                        format!("unknown field '{name}' in a condition (expected {COND_FIELDS})"),
                    );
                    return;
                };
                if c.cmp == Cmp::In {
                    self.error(
                        c.cmp_span,
                        format!("type mismatch: {name} is a number and takes =, <, <=, > or >=, not 'in'"),
                    );
                    return;
                }
                let kind = if feature == Feature::Bytes { UnitKind::Bytes } else { UnitKind::Count };
                let Some(v) = self.quantity_of(name, &c.value, kind) else {
                    return;
                };
                if v.fract() != 0.0 || v < 0.0 || v > u64::MAX as f64 {
                    self.error(c.value.span(), format!("type mismatch: {name} is a whole number >= 0"));
                    return;
                }
                let v = v as u64;
                let range = match c.cmp {
                    Cmp::Eq => Interval { lo: v, hi: v },
                    Cmp::Lt if v == 0 => Interval { lo: 1, hi: 0 },
                    Cmp::Lt => Interval { lo: 0, hi: v - 1 },
                    Cmp::Le => Interval { lo: 0, hi: v },
                    Cmp::Gt if v == u64::MAX => Interval { lo: 1, hi: 0 },
                    Cmp::Gt => Interval { lo: v + 1, hi: u64::MAX },
                    Cmp::Ge | Cmp::In => Interval { lo: v, hi: u64::MAX },
                };
                let slot = &mut def.ranges[feature as usize];
                *slot = slot.intersect(range);
                def.conditions.push(Condition::Size {
                    feature,
                    cmp: c.cmp,
                    value: v,
                    text: self.map.text(c.value.span()).to_string(),
                });
            }
        }
    }

    /// `tag key = value` or `tag key in [values]`.
    fn tag_condition(&mut self, def: &mut RuleDef, c: &Cond) {
        let values: Vec<&Scalar> = match (&c.value, c.cmp) {
            (Value::Scalar(s), Cmp::Eq) => vec![s],
            (Value::List(items, _), Cmp::In) => items.iter().collect(),
            _ => {
                self.error(
                    c.cmp_span,
                    format!("type mismatch: tag {} takes '= value' or 'in [values]'", c.field.name),
                );
                return;
            }
        };
        // Tag values are words; a plain number (`tag layer = 3`) is its text.
        let words: Vec<String> = values
            .iter()
            .map(|v| match v {
                Scalar::Word(w) | Scalar::Str(w) => w.name.clone(),
                Scalar::Quantity(q) => self.map.text(q.span).to_string(),
            })
            .collect();
        def.conditions.push(Condition::Tag { key: c.field.name.clone(), values: words.clone() });
        match def.tags.iter_mut().find(|t| t.key == c.field.name) {
            Some(t) => t.values.retain(|v| words.contains(v)),
            None => def.tags.push(TagTest { key: c.field.name.clone(), values: words }),
        }
    }

    /// `field = name` or `field in [names]`: the indices of the names in `known`.
    fn name_set(&mut self, c: &Cond, field: &str, known: &[&str]) -> Option<Vec<usize>> {
        let items: Vec<&Scalar> = match (&c.value, c.cmp) {
            (Value::Scalar(s), Cmp::Eq) => vec![s],
            (Value::List(items, _), Cmp::In) => items.iter().collect(),
            _ => {
                self.error(c.cmp_span, format!("type mismatch: {field} takes '= name' or 'in [names]'"));
                return None;
            }
        };
        let mut out = Vec::new();
        for s in items {
            let Scalar::Word(w) = s else {
                self.error(
                    s.span(),
                    format!("type mismatch: {field} takes a name, found {}", describe(self.map, s)),
                );
                return None;
            };
            match known.iter().position(|k| *k == w.name) {
                Some(i) => out.push(i),
                None => {
                    self.error(w.span, format!("unknown {field} '{}' (expected {})", w.name, one_of(known)));
                    return None;
                }
            }
        }
        Some(out)
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The policy's name when it does not say one: the file name without directory and extension.
fn default_name(origin: &str) -> String {
    let file = origin.rsplit(['/', '\\']).next().unwrap_or(origin);
    file.strip_suffix(".nhp").unwrap_or(file).to_string()
}

/// `a, b or c`.
pub fn one_of(names: &[&str]) -> String {
    match names.len() {
        0 => String::new(),
        1 => names[0].to_string(),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}
