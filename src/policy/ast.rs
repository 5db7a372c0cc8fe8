//! The syntax tree of one policy text, as written (untyped values, every node with its span).

use super::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A number as written, with its optional unit (`256 MiB`, `70 C`, `0.5`).
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    pub number: String,
    pub unit: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Quantity(Quantity),
    Word(Ident),
    Str(Ident),
}

impl Scalar {
    pub fn span(&self) -> Span {
        match self {
            Scalar::Quantity(q) => q.span,
            Scalar::Word(w) | Scalar::Str(w) => w.span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    List(Vec<Scalar>, Span),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Scalar(s) => s.span(),
            Value::List(_, span) => *span,
        }
    }
}

/// `key = value` inside a `device` or `fallback` block.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub key: Ident,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::In => "in",
        }
    }
}

/// One condition of a `when`: `m >= 256`, `dtype in [f16, bf16]`, `tag phase = prefill`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cond {
    pub is_tag: bool,
    pub field: Ident,
    pub cmp: Cmp,
    pub cmp_span: Span,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Shares {
    Dynamic(Vec<Ident>),
    Fixed(Vec<(Ident, Quantity)>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleStmt {
    When(Vec<Cond>, Span),
    Use(Vec<Ident>, Span),
    Strategy(Ident, Span),
    Split { axis: Ident, shares: Shares, span: Span },
    Fallback(Vec<Setting>, Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuleAst {
    pub name: Ident,
    pub stmts: Vec<RuleStmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub name: Ident,
    pub arg: Option<Scalar>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ThermalStmt {
    /// `when <device> <metric> above <level> [for <duration>]`
    Trigger { device: Ident, metric: Ident, level: Quantity, hold: Option<Quantity>, span: Span },
    /// `clear below <level>`
    Clear { level: Quantity, span: Span },
    /// `do <action>, ...`
    Do(Vec<Action>, Span),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ThermalAst {
    pub name: Ident,
    pub emergency: bool,
    pub stmts: Vec<ThermalStmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    PolicyName(Ident),
    Include(Ident),
    Device { name: Ident, settings: Vec<Setting>, span: Span },
    Fallback(Vec<Setting>, Span),
    Rule(RuleAst),
    Thermal(ThermalAst),
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct PolicyFile {
    pub items: Vec<Item>,
}
