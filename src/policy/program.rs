//! A checked policy with its includes merged: typed settings, rules and thermal rules, still
//! in source order. `compile` turns it into dispatch tables.

use super::diag::Span;
use super::types::*;
use super::{DType, OpKind};

/// The size features a rule can test, in the order of `Ranges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    M,
    N,
    K,
    Batch,
    Elements,
    Bytes,
}

impl Feature {
    pub const ALL: [Feature; 6] =
        [Feature::M, Feature::N, Feature::K, Feature::Batch, Feature::Elements, Feature::Bytes];

    pub fn name(self) -> &'static str {
        match self {
            Feature::M => "m",
            Feature::N => "n",
            Feature::K => "k",
            Feature::Batch => "batch",
            Feature::Elements => "elements",
            Feature::Bytes => "bytes",
        }
    }

    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// An inclusive range of values of one feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub lo: u64,
    pub hi: u64,
}

impl Interval {
    pub const ALL: Interval = Interval { lo: 0, hi: u64::MAX };

    pub fn contains(self, v: u64) -> bool {
        self.lo <= v && v <= self.hi
    }

    pub fn covers(self, other: Interval) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    pub fn is_empty(self) -> bool {
        self.lo > self.hi
    }

    pub fn intersect(self, other: Interval) -> Interval {
        Interval { lo: self.lo.max(other.lo), hi: self.hi.min(other.hi) }
    }

    pub fn is_all(self) -> bool {
        self == Interval::ALL
    }
}

/// Bit sets over op kinds and dtypes.
pub type OpMask = u16;
pub type DTypeMask = u16;
pub const ALL_OPS: OpMask = (1 << OpKind::COUNT) - 1;
pub const ALL_DTYPES: DTypeMask = (1 << DType::ALL.len()) - 1;

pub fn op_bit(k: OpKind) -> OpMask {
    1 << (k as u32)
}

pub fn dtype_bit(d: DType) -> DTypeMask {
    1 << (d as u32)
}

/// One condition as written, kept for `explain`.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Ops(OpMask),
    DTypes(DTypeMask),
    /// `wtype`: the weight's type (a matmul's b).
    WTypes(DTypeMask),
    Size {
        feature: Feature,
        cmp: super::ast::Cmp,
        value: u64,
        /// How it was written (`4 MiB`), for messages.
        text: String,
    },
    Tag {
        key: String,
        values: Vec<String>,
    },
}

/// A tag key and the values it may have (one of).
#[derive(Clone, Debug, PartialEq)]
pub struct TagTest {
    pub key: String,
    pub values: Vec<String>,
}

/// A placement rule after checking.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    pub name: String,
    /// Where the rule's name is written.
    pub span: Span,
    /// `origin:line`, for labels in explain and dump.
    pub place: String,
    /// The rule comes from an included policy.
    pub inherited: bool,
    pub conditions: Vec<Condition>,
    /// The conditions combined: the op kinds, dtypes and ranges the rule admits.
    pub ops: OpMask,
    pub dtypes: DTypeMask,
    pub wtypes: DTypeMask,
    pub ranges: [Interval; 6],
    pub tags: Vec<TagTest>,
    pub devices: Vec<DeviceClass>,
    pub use_span: Span,
    pub strategy: Strategy,
    pub split: Option<SplitSpec>,
    pub fallback: FallbackPatch,
}

impl RuleDef {
    /// False when the conditions contradict each other (the rule can never match).
    pub fn satisfiable(&self) -> bool {
        self.ops != 0
            && self.dtypes != 0
            && self.wtypes != 0
            && self.ranges.iter().all(|r| !r.is_empty())
            && self.tags.iter().all(|t| !t.values.is_empty())
    }

    /// True when every op this rule admits is admitted by `earlier` too (ignoring op kind
    /// and dtype, which the tables index by).
    pub fn within(&self, earlier: &RuleDef) -> bool {
        earlier.ranges.iter().zip(&self.ranges).all(|(e, s)| e.covers(*s))
            && self.wtypes & !earlier.wtypes == 0
            && earlier.tags.iter().all(|et| {
                self.tags.iter().any(|st| st.key == et.key && st.values.iter().all(|v| et.values.contains(v)))
            })
    }
}

/// Fallback fields a rule overrides; the rest come from the policy's `fallback` block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FallbackPatch {
    pub retries: Option<u32>,
    pub degrade_after: Option<u32>,
    pub degrade_for: Option<std::time::Duration>,
}

impl FallbackPatch {
    pub fn apply(&self, base: &FallbackSpec) -> FallbackSpec {
        FallbackSpec {
            retries: self.retries.unwrap_or(base.retries),
            degrade_after: self.degrade_after.unwrap_or(base.degrade_after),
            degrade_for: self.degrade_for.unwrap_or(base.degrade_for),
        }
    }

    /// `other`'s fields win where set.
    pub fn overlay(&mut self, other: &FallbackPatch) {
        self.retries = other.retries.or(self.retries);
        self.degrade_after = other.degrade_after.or(self.degrade_after);
        self.degrade_for = other.degrade_for.or(self.degrade_for);
    }
}

/// A thermal rule and where it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct ThermalDef {
    pub rule: ThermalRule,
    pub span: Span,
}

/// A checked policy, includes merged.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub name: String,
    pub settings: [DeviceSettings; 3],
    /// Where each device was last enabled or disabled (for coverage errors).
    pub enabled_span: [Option<Span>; 3],
    pub fallback: FallbackPatch,
    pub rules: Vec<RuleDef>,
    pub thermal: Vec<ThermalDef>,
}

impl Program {
    /// What a policy starts from without an include: every device enabled, nothing else set.
    pub fn base(name: &str) -> Program {
        let on = DeviceSettings { enabled: true, ..Default::default() };
        Program {
            name: name.to_string(),
            settings: [on.clone(), on.clone(), on],
            enabled_span: [None; 3],
            fallback: FallbackPatch::default(),
            rules: Vec::new(),
            thermal: Vec::new(),
        }
    }

    pub fn enabled(&self, class: DeviceClass) -> bool {
        self.settings[class as usize].enabled
    }
}
