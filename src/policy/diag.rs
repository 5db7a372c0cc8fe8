//! Source texts, spans into them, and diagnostics rendered as
//! `file:line:col: error: message` followed by the source line and a caret.

use std::fmt;

/// One loaded policy text: a file, a built-in policy or a string given through the API.
#[derive(Debug)]
pub struct Source {
    pub origin: String,
    pub text: String,
    /// The text that includes this one.
    pub parent: Option<u32>,
}

/// Every text loaded while compiling one policy (the file and its includes).
#[derive(Debug, Default)]
pub struct SourceMap {
    sources: Vec<Source>,
}

/// A byte range in one of the texts of a `SourceMap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One rendered diagnostic.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `file:line:col` (or just the origin when there is no position).
    pub location: String,
    pub message: String,
    /// The source line and a caret under the offending text (empty without a position).
    pub excerpt: String,
}

impl Diagnostic {
    /// `file:line:col: error: message`, the first line of the rendering.
    pub fn headline(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{}: {sev}: {}", self.location, self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if !self.excerpt.is_empty() {
            write!(f, "\n{}", self.excerpt)?;
        }
        Ok(())
    }
}

/// Why a policy was rejected: every error found, in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyError {
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    /// The headline of the first error (`file:line:col: error: message`).
    pub fn headline(&self) -> String {
        self.diagnostics.first().map(Diagnostic::headline).unwrap_or_default()
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl SourceMap {
    pub fn add(&mut self, origin: &str, text: &str) -> u32 {
        self.sources.push(Source { origin: origin.to_string(), text: text.to_string(), parent: None });
        (self.sources.len() - 1) as u32
    }

    pub fn get(&self, file: u32) -> &Source {
        &self.sources[file as usize]
    }

    pub fn set_parent(&mut self, file: u32, parent: u32) {
        self.sources[file as usize].parent = Some(parent);
    }

    pub fn parent(&self, file: u32) -> Option<u32> {
        self.get(file).parent
    }

    pub fn origin(&self, file: u32) -> &str {
        &self.get(file).origin
    }

    /// Text covered by a span.
    pub fn text(&self, span: Span) -> &str {
        &self.get(span.file).text[span.start as usize..span.end as usize]
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: u32, offset: u32) -> (usize, usize) {
        let text = &self.get(file).text;
        let offset = (offset as usize).min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, text[line_start..offset].chars().count() + 1)
    }

    /// `origin:line`, used to label rules and thermal rules.
    pub fn place(&self, span: Span) -> String {
        let (line, _) = self.line_col(span.file, span.start);
        format!("{}:{line}", self.origin(span.file))
    }

    pub fn diagnostic(&self, severity: Severity, span: Span, message: String) -> Diagnostic {
        let src = self.get(span.file);
        let (line, col) = self.line_col(span.file, span.start);
        let start = span.start as usize;
        let line_start = src.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src.text[start..].find('\n').map_or(src.text.len(), |i| start + i);
        let line_text = src.text[line_start..line_end].trim_end_matches('\r');
        // Keep tabs in the caret's indent so it lines up under the offending text.
        let indent: String =
            src.text[line_start..start].chars().map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        let end = (span.end as usize).clamp(start, line_end);
        let width = src.text[start..end].chars().count().max(1);
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        Diagnostic {
            severity,
            location: format!("{}:{line}:{col}", src.origin),
            message,
            excerpt: format!("{gutter} | {line_text}\n{pad} | {indent}{}", "^".repeat(width)),
        }
    }
}

/// Collects diagnostics while a policy is checked; errors do not stop the check, so a user
/// sees every problem at once.
#[derive(Debug, Default)]
pub struct Reporter {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Reporter {
    pub fn error(&mut self, map: &SourceMap, span: Span, message: impl Into<String>) {
        self.errors.push(map.diagnostic(Severity::Error, span, message.into()));
    }

    pub fn warn(&mut self, map: &SourceMap, span: Span, message: impl Into<String>) {
        self.warnings.push(map.diagnostic(Severity::Warning, span, message.into()));
    }

    /// An error that has no position in a text (a file that cannot be read, for instance).
    pub fn error_at(&mut self, origin: &str, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            severity: Severity::Error,
            location: origin.to_string(),
            message: message.into(),
            excerpt: String::new(),
        });
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub fn into_error(self) -> PolicyError {
        PolicyError { diagnostics: self.errors }
    }
}
