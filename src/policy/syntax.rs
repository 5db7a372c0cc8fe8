//! Parses policy text (pest grammar in `grammar.pest`) into the syntax tree of `ast`.

use super::ast::*;
use super::diag::{Reporter, SourceMap, Span};
use pest::error::InputLocation;
use pest::iterators::Pair;
use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "src/policy/grammar.pest"]
struct PolicyParser;

/// Parses the text of `file` in `map`. A syntax error is reported and gives `None`.
pub fn parse(map: &SourceMap, file: u32, report: &mut Reporter) -> Option<PolicyFile> {
    let text = &map.get(file).text;
    // Lets pest record the literal tokens it expected, for the error message.
    pest::set_error_detail(true);
    match PolicyParser::parse(Rule::file, text) {
        Ok(mut pairs) => {
            let root = pairs.next()?;
            let lower = Lower { file };
            let items =
                root.into_inner().filter(|p| p.as_rule() != Rule::EOI).map(|p| lower.item(p)).collect();
            Some(PolicyFile { items })
        }
        Err(err) => {
            let rule_pos = match err.location {
                InputLocation::Pos(p) => p,
                InputLocation::Span((s, _)) => s,
            };
            // The furthest point the parser reached, past blanks: where the text goes wrong.
            let furthest = err.parse_attempts().map_or(rule_pos, |a| a.max_position);
            let pos = furthest.max(rule_pos);
            let pos = pos + text[pos..].len() - text[pos..].trim_start_matches([' ', '\t']).len();
            let found = found_at(text, pos);
            let span =
                Span { file, start: pos as u32, end: (pos + found.len().max(1)).min(text.len()) as u32 };
            let expected = expected_list(&err, rule_pos >= furthest);
            let found = match found {
                "" => "the end of the file".to_string(),
                "\n" | "\r\n" => "the end of the line".to_string(),
                s => format!("'{s}'"),
            };
            let message = if expected.is_empty() {
                format!("syntax error at {found}")
            } else {
                format!("syntax error: expected {expected}, found {found}")
            };
            report.error(map, span, message);
            None
        }
    }
}

/// The token that starts at `pos`: a word or number, a line break, or one character.
fn found_at(text: &str, pos: usize) -> &str {
    let rest = &text[pos.min(text.len())..];
    if rest.starts_with("\r\n") {
        return &rest[..2];
    }
    let word = rest
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == '.'))
        .map_or(rest.len(), |(i, _)| i);
    if word > 0 {
        return &rest[..word];
    }
    rest.chars().next().map_or("", |c| &rest[..c.len_utf8()])
}

/// What the parser would have accepted, in words a policy author knows. The rules pest
/// names apply only where it stopped trying rules, so they are used only when that is the
/// furthest point.
fn expected_list(err: &pest::error::Error<Rule>, with_rules: bool) -> String {
    let mut items: Vec<String> = Vec::new();
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for r in positives.iter().filter(|_| with_rules) {
            if let Some(name) = rule_name(*r) {
                items.push(name.to_string());
            }
        }
    }
    if let Some(attempts) = err.parse_attempts() {
        for token in attempts.expected_tokens() {
            // Literal tokens of the grammar; not character ranges, built-in rules or blanks.
            let token = token.to_string();
            match token.as_str() {
                "\n" => items.push("a line break".to_string()),
                "BUILTIN_RULE" | " " | "\t" | "\r" | "\r\n" | "-" | "." | "#" | "\"" | "_" | "[" => {}
                t if t.contains("..") => {}
                t => items.push(format!("'{t}'")),
            }
        }
    }
    items.sort();
    items.dedup();
    match items.len() {
        0 => String::new(),
        1 => items.remove(0),
        n => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

fn rule_name(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::word => "a name",
        Rule::quantity | Rule::number => "a number",
        Rule::string => "a quoted string",
        Rule::list => "a list",
        Rule::cmp => "a comparison (=, <, <=, >, >=, in)",
        Rule::EOI => "the end of the file",
        Rule::unit => "a unit",
        _ => return None,
    })
}

/// Turns pest pairs into the syntax tree. The grammar guarantees each pair's shape, so a
/// missing child here is a bug in this file, not in the input.
struct Lower {
    file: u32,
}

impl Lower {
    fn span(&self, p: &Pair<Rule>) -> Span {
        Span { file: self.file, start: p.as_span().start() as u32, end: p.as_span().end() as u32 }
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident { name: p.as_str().to_string(), span: self.span(&p) }
    }

    /// A quoted string as an identifier whose span covers the quotes.
    fn string(&self, p: Pair<Rule>) -> Ident {
        let span = self.span(&p);
        let text = p.into_inner().next().map_or("", |t| t.as_str());
        Ident { name: text.to_string(), span }
    }

    fn item(&self, p: Pair<Rule>) -> Item {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::policy_name => Item::PolicyName(self.string(first(p))),
            Rule::include => Item::Include(self.string(first(p))),
            Rule::device => {
                let mut inner = p.into_inner();
                let name = self.ident(next(&mut inner));
                Item::Device { name, settings: inner.map(|s| self.setting(s)).collect(), span }
            }
            Rule::fallback => Item::Fallback(self.settings(p), span),
            Rule::rule => {
                let mut inner = p.into_inner();
                let name = self.ident(next(&mut inner));
                Item::Rule(RuleAst { name, stmts: inner.map(|s| self.rule_stmt(s)).collect(), span })
            }
            Rule::thermal => Item::Thermal(self.thermal(p)),
            other => unreachable!("grammar gave {other:?} as an item"),
        }
    }

    fn settings(&self, p: Pair<Rule>) -> Vec<Setting> {
        p.into_inner().map(|s| self.setting(s)).collect()
    }

    fn setting(&self, p: Pair<Rule>) -> Setting {
        let mut inner = p.into_inner();
        let key = self.ident(next(&mut inner));
        let value = self.value(next(&mut inner));
        Setting { key, value }
    }

    fn value(&self, p: Pair<Rule>) -> Value {
        if p.as_rule() == Rule::list {
            let span = self.span(&p);
            Value::List(p.into_inner().map(|s| self.scalar(s)).collect(), span)
        } else {
            Value::Scalar(self.scalar(p))
        }
    }

    fn scalar(&self, p: Pair<Rule>) -> Scalar {
        match p.as_rule() {
            Rule::quantity => Scalar::Quantity(self.quantity(p)),
            Rule::string => Scalar::Str(self.string(p)),
            Rule::word => Scalar::Word(self.ident(p)),
            other => unreachable!("grammar gave {other:?} as a scalar"),
        }
    }

    fn quantity(&self, p: Pair<Rule>) -> Quantity {
        let mut span = self.span(&p);
        let mut inner = p.into_inner();
        let number = next(&mut inner);
        // The pair may end in the blanks before an absent unit; the span ends at the text.
        span.end = number.as_span().end() as u32;
        let number = number.as_str().to_string();
        let unit = inner.next().map(|u| self.ident(u));
        if let Some(u) = &unit {
            span.end = u.span.end;
        }
        Quantity { number, unit, span }
    }

    fn idents(&self, pairs: pest::iterators::Pairs<Rule>) -> Vec<Ident> {
        pairs.map(|p| self.ident(p)).collect()
    }

    fn rule_stmt(&self, p: Pair<Rule>) -> RuleStmt {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::when => RuleStmt::When(p.into_inner().map(|c| self.cond(c)).collect(), span),
            Rule::use_devices => RuleStmt::Use(self.idents(p.into_inner()), span),
            Rule::strategy => RuleStmt::Strategy(self.ident(first(p)), span),
            Rule::split => {
                let mut inner = p.into_inner();
                let axis = self.ident(next(&mut inner));
                let shares = next(&mut inner);
                let shares = match shares.as_rule() {
                    Rule::split_dynamic => Shares::Dynamic(self.idents(shares.into_inner())),
                    _ => Shares::Fixed(
                        shares
                            .into_inner()
                            .map(|s| {
                                let mut parts = s.into_inner();
                                let device = self.ident(next(&mut parts));
                                (device, self.quantity(next(&mut parts)))
                            })
                            .collect(),
                    ),
                };
                RuleStmt::Split { axis, shares, span }
            }
            Rule::fallback => RuleStmt::Fallback(self.settings(p), span),
            other => unreachable!("grammar gave {other:?} as a rule statement"),
        }
    }

    fn cond(&self, p: Pair<Rule>) -> Cond {
        let span = self.span(&p);
        let mut inner = p.into_inner().peekable();
        let is_tag = inner.peek().map(|t| t.as_rule()) == Some(Rule::tag_marker);
        if is_tag {
            inner.next();
        }
        let field = self.ident(next(&mut inner));
        let cmp_pair = next(&mut inner);
        let cmp_span = self.span(&cmp_pair);
        let cmp = match cmp_pair.as_str() {
            "=" => Cmp::Eq,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            _ => Cmp::In,
        };
        let value = self.value(next(&mut inner));
        Cond { is_tag, field, cmp, cmp_span, value, span }
    }

    fn thermal(&self, p: Pair<Rule>) -> ThermalAst {
        let span = self.span(&p);
        let mut inner = p.into_inner().peekable();
        let emergency = inner.peek().map(|t| t.as_rule()) == Some(Rule::emergency);
        if emergency {
            inner.next();
        }
        let name = self.ident(next(&mut inner));
        let stmts = inner.map(|s| self.thermal_stmt(s)).collect();
        ThermalAst { name, emergency, stmts, span }
    }

    fn thermal_stmt(&self, p: Pair<Rule>) -> ThermalStmt {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::trigger => {
                let mut inner = p.into_inner();
                let device = self.ident(next(&mut inner));
                let metric = self.ident(next(&mut inner));
                let level = self.quantity(next(&mut inner));
                let hold = inner.next().map(|h| self.quantity(h));
                ThermalStmt::Trigger { device, metric, level, hold, span }
            }
            Rule::clear => ThermalStmt::Clear { level: self.quantity(first(p)), span },
            Rule::actions => ThermalStmt::Do(
                p.into_inner()
                    .map(|a| {
                        let span = self.span(&a);
                        let mut parts = a.into_inner();
                        let name = self.ident(next(&mut parts));
                        let arg = parts.next().map(|v| self.scalar(v));
                        Action { name, arg, span }
                    })
                    .collect(),
                span,
            ),
            other => unreachable!("grammar gave {other:?} as a thermal statement"),
        }
    }
}

fn first(p: Pair<Rule>) -> Pair<Rule> {
    let r = p.as_rule();
    p.into_inner().next().unwrap_or_else(|| unreachable!("grammar: {r:?} has a child"))
}

fn next<'i>(it: &mut impl Iterator<Item = Pair<'i, Rule>>) -> Pair<'i, Rule> {
    it.next().unwrap_or_else(|| unreachable!("grammar guarantees this child"))
}
