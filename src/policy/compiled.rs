//! The compiled form of a policy: dispatch tables indexed by (op kind, dtype), then by a size
//! class of one size feature, each holding the guards of the rules that can match there, in
//! rule order. `decide` (in `decide.rs`) walks one such short list.

use super::program::{Feature, Interval, RuleDef};
use super::types::*;
use super::{DType, OpKind};

/// Number of (op kind, dtype) cells.
pub const CELLS: usize = OpKind::COUNT * DType::ALL.len();

pub fn cell_index(kind: OpKind, dtype: DType) -> usize {
    kind as usize * DType::ALL.len() + dtype as usize
}

/// A rule as the runtime sees it.
#[derive(Debug)]
pub struct CompiledRule {
    /// The checked rule (its conditions as written, for `explain` and `dump`).
    pub def: RuleDef,
    pub label: String,
    /// Enabled devices only, in preference order.
    pub candidates: Vec<DeviceClass>,
    pub strategy: Strategy,
    pub split: Option<SplitSpec>,
    pub fallback: FallbackSpec,
}

/// The part of a rule `decide` still has to test in one size class of one cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    pub rule: u32,
    /// Bit `f` set: test `ranges[f]` (features whose range is not everything).
    pub check: u8,
    pub ranges: [Interval; 6],
    /// Weight types the rule admits (`ALL_DTYPES` when it does not test `wtype`).
    pub wtypes: super::program::DTypeMask,
    /// One mask of tag atoms per tag key the rule tests: the op's tags must hit each.
    pub tag_groups: Vec<u64>,
}

/// One (op kind, dtype) cell: size classes on `key`, split at `bounds`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub key: Feature,
    /// Sorted; size class `i` holds values in `[bounds[i-1], bounds[i])`.
    pub bounds: Vec<u64>,
    pub classes: Vec<Vec<Guard>>,
}

impl Cell {
    pub fn class_of(&self, value: u64) -> &[Guard] {
        &self.classes[self.bounds.partition_point(|&b| b <= value)]
    }
}

/// A tag key the policy tests and, for each value it tests, the atom bit.
#[derive(Clone, Debug, PartialEq)]
pub struct TagKey {
    pub key: String,
    pub values: Vec<(String, u64)>,
}

/// A checked, compiled policy. Immutable; shared between threads behind an `Arc`.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(super) name: String,
    /// Live rules in order, then the implicit rule for ops no rule matches.
    pub(super) rules: Vec<CompiledRule>,
    pub(super) cells: Vec<Cell>,
    pub(super) tag_keys: Vec<TagKey>,
    pub(super) settings: [DeviceSettings; 3],
    pub(super) thermal: Vec<ThermalRule>,
    pub(super) warnings: Vec<String>,
    /// Inherited rules that the including policy overrides entirely (`name (place)`).
    pub(super) overridden: Vec<String>,
}

/// Label of the rule that applies when no written rule matches.
pub const IMPLICIT_RULE: &str = "(no rule matched)";

impl CompiledPolicy {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn settings(&self, class: DeviceClass) -> &DeviceSettings {
        &self.settings[class as usize]
    }

    pub fn thermal_rules(&self) -> &[ThermalRule] {
        &self.thermal
    }

    /// Warnings of the checker, each rendered as `file:line:col: warning: ...` plus excerpt.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Rules in decision order; the last one is the implicit rule.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    pub(super) fn implicit_index(&self) -> usize {
        self.rules.len() - 1
    }
}
