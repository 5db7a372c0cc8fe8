//! The hot path: one table lookup, one binary search over a handful of size bounds, and a few
//! comparisons per guard. Allocates nothing.

use super::compiled::*;
use super::program::{Condition, RuleDef};
use super::{Decision, OpQuery};
use crate::op::{OpDims, Tags};

/// The size features of an op in `Feature` order.
pub(super) fn features(d: &OpDims) -> [u64; 6] {
    [d.m, d.n, d.k, d.batch, d.elements, d.bytes].map(|v| v as u64)
}

impl Guard {
    fn sizes_match(&self, f: &[u64; 6]) -> bool {
        let mut bits = self.check;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            if !self.ranges[i].contains(f[i]) {
                return false;
            }
            bits &= bits - 1;
        }
        true
    }
}

impl CompiledPolicy {
    /// The rule that applies to `q` and what it says. Never allocates.
    pub fn decide(&self, q: &super::OpQuery) -> Decision<'_> {
        self.decision(self.decide_index(q))
    }

    pub(super) fn decide_index(&self, q: &OpQuery) -> usize {
        let cell = &self.cells[cell_index(q.kind, q.dtype)];
        let f = features(&q.dims);
        let mut tags = None;
        for g in cell.class_of(f[cell.key as usize]) {
            if !g.sizes_match(&f) || g.wtypes & super::program::dtype_bit(q.wtype) == 0 {
                continue;
            }
            if !g.tag_groups.is_empty() {
                let mask = *tags.get_or_insert_with(|| self.tag_mask(q.tags));
                if !g.tag_groups.iter().all(|m| m & mask != 0) {
                    continue;
                }
            }
            return g.rule as usize;
        }
        self.implicit_index()
    }

    pub(super) fn decision(&self, index: usize) -> Decision<'_> {
        let r = &self.rules[index];
        Decision {
            rule_index: index,
            rule_label: &r.label,
            candidates: &r.candidates,
            strategy: r.strategy,
            split: r.split.as_ref(),
            fallback: &r.fallback,
        }
    }

    /// The atoms (tested tag values) the op's tags hold.
    fn tag_mask(&self, tags: &Tags) -> u64 {
        let mut mask = 0;
        for key in &self.tag_keys {
            if let Some(v) = tags.get(&key.key) {
                if let Some((_, bit)) = key.values.iter().find(|(val, _)| val == v) {
                    mask |= bit;
                }
            }
        }
        mask
    }

    /// The same decision as `decide`, by testing each rule's conditions in order, without
    /// the tables. Kept as the reference that tests compare the tables against.
    pub fn decide_by_rules(&self, q: &OpQuery) -> usize {
        self.rules
            .iter()
            .position(|r| failing_condition(&r.def, q).is_none())
            .unwrap_or(self.implicit_index())
    }
}

/// Why a rule does not match `q`: the first condition that fails, as a sentence; `None` when
/// it matches.
pub(super) fn first_failure(rule: &RuleDef, q: &OpQuery) -> Option<String> {
    failing_condition(rule, q).map(|c| failure_text(c, q))
}

/// The first condition of `rule` that `q` fails. Allocates nothing.
fn failing_condition<'r>(rule: &'r RuleDef, q: &OpQuery) -> Option<&'r Condition> {
    let f = features(&q.dims);
    rule.conditions.iter().find(|c| match c {
        Condition::Ops(mask) => mask & super::program::op_bit(q.kind) == 0,
        Condition::DTypes(mask) => mask & super::program::dtype_bit(q.dtype) == 0,
        Condition::WTypes(mask) => mask & super::program::dtype_bit(q.wtype) == 0,
        Condition::Size { feature, cmp, value, .. } => {
            let v = f[*feature as usize];
            !match cmp {
                super::ast::Cmp::Eq => v == *value,
                super::ast::Cmp::Lt => v < *value,
                super::ast::Cmp::Le => v <= *value,
                super::ast::Cmp::Gt => v > *value,
                super::ast::Cmp::Ge | super::ast::Cmp::In => v >= *value,
            }
        }
        Condition::Tag { key, values } => !q.tags.get(key).is_some_and(|v| values.iter().any(|x| x == v)),
    })
}

fn failure_text(c: &Condition, q: &OpQuery) -> String {
    let f = features(&q.dims);
    let cond = super::dump::condition_text(c);
    match c {
        Condition::Ops(_) => format!("op is {}, not {cond}", q.kind),
        Condition::DTypes(_) => format!("dtype is {}, not {cond}", q.dtype),
        Condition::WTypes(_) => format!("wtype is {}, not {cond}", q.wtype),
        Condition::Size { feature, .. } => {
            format!("{} is {}, not {cond}", feature.name(), f[*feature as usize])
        }
        Condition::Tag { key, .. } => match q.tags.get(key) {
            Some(v) => format!("tag {key} is {v}, not {cond}"),
            None => format!("the op has no tag {key}, needed by {cond}"),
        },
    }
}
