//! The policy language: scheduling, fallback and thermal rules, parsed (pest), checked and
//! compiled into dispatch tables that the scheduler consults for every op.
//!
//! The pipeline: `syntax` (text -> `ast`), `check` (types, names, includes -> `program`),
//! `compile` (reachability, coverage, thermal order -> `compiled` tables), then `decide` on
//! the hot path and `explain`/`dump` for people. The language is described in docs/POLICY.md.
//!
//! The front end (everything but `decide`, `explain` and `builtin`) is also compiled into the
//! build script, which checks the built-in policies; so those files name crate types only
//! through `super::` (this module re-exports what they need).

mod ast;
mod builtin;
mod check;
mod check_thermal;
mod check_values;
mod compile;
mod compiled;
mod decide;
mod diag;
mod dump;
mod explain;
mod limits;
mod load;
mod program;
mod syntax;
mod types;
mod units;

use crate::device::PowerMode;
use crate::op::{DType, OpDims, OpKind, Tags};

pub use builtin::{builtin, builtin_names, builtin_source, compile_file, compile_str};
pub use compile::can_run;
pub use compiled::{CompiledPolicy, CompiledRule, IMPLICIT_RULE};
pub use diag::{Diagnostic, PolicyError, Severity};
pub use limits::PolicyLimits;
pub use types::*;

/// What the compiled tables say for one op.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    /// Index of the matched rule in source order and its label (name or `file:line`).
    pub rule_index: usize,
    pub rule_label: &'a str,
    /// Candidate device classes in preference order.
    pub candidates: &'a [DeviceClass],
    pub strategy: Strategy,
    pub split: Option<&'a SplitSpec>,
    pub fallback: &'a FallbackSpec,
}

/// The features of an op a rule can test.
#[derive(Clone, Copy, Debug)]
pub struct OpQuery<'a> {
    pub kind: OpKind,
    pub dtype: DType,
    /// The weight's type: a matmul's b (quantized or not); other ops' own dtype.
    pub wtype: DType,
    pub dims: OpDims,
    pub tags: &'a Tags,
}

impl<'a> OpQuery<'a> {
    /// The features of a validated op descriptor.
    pub fn of(op: &'a crate::op::OpDesc) -> OpQuery<'a> {
        let wtype = match op.kind {
            crate::op::OpKind::Matmul => op.input(1).map_or(op.dtype(), |b| b.dtype),
            _ => op.dtype(),
        };
        OpQuery { kind: op.kind, dtype: op.dtype(), wtype, dims: op.dims(), tags: &op.tags }
    }
}

#[cfg(test)]
mod tests;
