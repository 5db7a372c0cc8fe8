//! The checker's part for values: booleans, names, counts and quantities with units, and
//! how a wrong value is described in a message.

use super::ast::*;
use super::check::{one_of, Checker};
use super::diag::{SourceMap, Span};
use super::units::{self, UnitKind};

pub(super) const DURATION_RANGE: (f64, f64, &str) = (0.0, 86400.0, "from 0 s to 1 day");

impl Checker<'_> {
    pub(super) fn boolean(&mut self, field: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Scalar(Scalar::Word(w)) if w.name == "true" => Some(true),
            Value::Scalar(Scalar::Word(w)) if w.name == "false" => Some(false),
            _ => {
                let found = describe_value(self.map, v);
                self.error(v.span(), format!("type mismatch: '{field}' takes true or false, found {found}"));
                None
            }
        }
    }

    pub(super) fn choice(&mut self, field: &str, v: &Value, names: &[&str]) -> Option<usize> {
        match v {
            Value::Scalar(Scalar::Word(w)) => {
                let found = names.iter().position(|n| *n == w.name);
                if found.is_none() {
                    self.error(w.span, format!("unknown {field} '{}' (expected {})", w.name, one_of(names)));
                }
                found
            }
            _ => {
                let found = describe_value(self.map, v);
                self.error(
                    v.span(),
                    format!("type mismatch: '{field}' takes one of {}, found {found}", one_of(names)),
                );
                None
            }
        }
    }

    /// A whole number without a unit, in `lo..=hi`.
    pub(super) fn count(&mut self, field: &str, v: &Value, lo: u64, hi: u64) -> Option<u64> {
        let n = self.quantity_of(field, v, UnitKind::Count)?;
        if n.fract() != 0.0 || n < lo as f64 || n > hi as f64 {
            self.error(
                v.span(),
                format!(
                    "'{field}' must be a whole number from {lo} to {hi}, found {}",
                    self.map.text(v.span())
                ),
            );
            return None;
        }
        Some(n as u64)
    }

    /// A number of the given kind, converted to its base unit (bytes, seconds, C, W).
    pub(super) fn quantity_of(&mut self, field: &str, v: &Value, kind: UnitKind) -> Option<f64> {
        match v {
            Value::Scalar(Scalar::Quantity(q)) => self.unit_value(field, q, kind),
            _ => {
                let found = describe_value(self.map, v);
                self.error(
                    v.span(),
                    format!("type mismatch: '{field}' takes {}, found {found}", kind.describe()),
                );
                None
            }
        }
    }

    pub(super) fn unit_value(&mut self, field: &str, q: &Quantity, kind: UnitKind) -> Option<f64> {
        let n: f64 = match q.number.parse() {
            Ok(n) if f64::is_finite(n) => n,
            _ => {
                self.error(q.span, format!("number {} is out of range", q.number));
                return None;
            }
        };
        match units::scale(kind, q.unit.as_ref().map(|u| u.name.as_str())) {
            Ok(factor) => Some(n * factor),
            Err(units::UnitError::Unknown) => {
                let u = q.unit.as_ref().map(|u| (u.name.clone(), u.span));
                let (name, span) = u.unwrap_or_default();
                self.error(span, format!("unknown unit '{name}' (expected {})", kind.unit_list()));
                None
            }
            Err(units::UnitError::Unexpected) => {
                let unit = q.unit.as_ref().map(|u| (u.name.clone(), u.span)).unwrap_or_default();
                self.error(
                    unit.1,
                    format!(
                        "type mismatch: '{field}' is a plain number and takes no unit, found '{}'",
                        unit.0
                    ),
                );
                None
            }
            Err(units::UnitError::Missing) => {
                self.error(
                    q.span,
                    format!("missing unit: '{field}' is {} ({})", kind.describe(), kind.unit_list()),
                );
                None
            }
            Err(units::UnitError::WrongKind(other)) => {
                let unit = q.unit.as_ref().map(|u| (u.name.clone(), u.span)).unwrap_or_default();
                self.error(
                    unit.1,
                    format!(
                        "type mismatch: '{field}' is {}, but '{}' is a unit of {}",
                        kind.describe(),
                        unit.0,
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// `n` when inside `(lo, hi, range in words)`, else an error at `span`.
    pub(super) fn in_range(
        &mut self,
        field: &str,
        span: Span,
        n: f64,
        range: (f64, f64, &str),
    ) -> Option<f64> {
        let (lo, hi, words) = range;
        if (lo..=hi).contains(&n) {
            return Some(n);
        }
        let found = self.map.text(span).to_string();
        self.error(span, format!("'{field}' must be {words}, found {found}"));
        None
    }

    pub(super) fn plain_number(&mut self, field: &str, q: &Quantity) -> Option<f64> {
        self.unit_value(field, q, UnitKind::Count)
    }
}

pub(super) fn describe(map: &SourceMap, s: &Scalar) -> String {
    match s {
        Scalar::Quantity(q) => format!("the number {}", map.text(q.span)),
        Scalar::Word(w) => format!("the name '{}'", w.name),
        Scalar::Str(w) => format!("the string \"{}\"", w.name),
    }
}

pub(super) fn describe_value(map: &SourceMap, v: &Value) -> String {
    match v {
        Value::Scalar(s) => describe(map, s),
        Value::List(..) => "a list".to_string(),
    }
}
