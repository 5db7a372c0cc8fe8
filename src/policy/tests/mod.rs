//! Tests of the policy pipeline: checker messages, built-in policies' decisions, the tables
//! against a plain rule-by-rule evaluation, includes and limits.

mod builtins;
mod checker;
mod includes;
mod tables;
mod wtype;

use super::*;
use crate::op::{DType, OpDims, OpKind, Tags};

/// An op query with the given sizes; elements and bytes as a dense matmul would have them.
pub(super) fn query<'a>(
    kind: OpKind,
    dtype: DType,
    m: usize,
    n: usize,
    k: usize,
    tags: &'a Tags,
) -> OpQuery<'a> {
    let elements = m * n;
    OpQuery {
        kind,
        dtype,
        wtype: dtype,
        dims: OpDims { m, n, k, batch: 1, elements, bytes: (m * k + k * n + m * n) * dtype.size() },
        tags,
    }
}

pub(super) fn tags(text: &str) -> Tags {
    Tags::parse(text).expect("test tags are well formed")
}
