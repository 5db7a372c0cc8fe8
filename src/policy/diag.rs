//! Source texts, spans into them, and diagnostics rendered as
//! `file:line:col: error: message` followed by the source line and a caret.
//!
//! Policy texts are untrusted (up to 256 KiB, possibly one line with an error every few bytes),
//! so everything here is bounded: positions come from a line index instead of rescanning the
//! text, an excerpt shows a window around the column, and only the first `MAX_SHOWN` errors
//! (and warnings) are rendered, each message cut to `MAX_MESSAGE` bytes (issue 17, item 4).

use std::fmt;

/// Diagnostics of each severity rendered in full; the rest are only counted.
pub const MAX_SHOWN: usize = 50;
/// Characters of the source line shown on each side of the offending text.
pub const EXCERPT_SIDE: usize = 60;
/// Bytes of one message (they may quote the policy's own text).
pub const MAX_MESSAGE: usize = 300;
/// Bytes between checkpoints of the character index (columns are counted in characters).
const CHAR_STEP: usize = 4096;

/// One loaded policy text: a file, a built-in policy or a string given through the API.
#[derive(Debug)]
pub struct Source {
    pub origin: String,
    pub text: String,
    /// The text that includes this one.
    pub parent: Option<u32>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    /// Characters before byte `k * CHAR_STEP`, for every k.
    chars_before: Vec<usize>,
}

impl Source {
    fn new(origin: &str, text: &str) -> Source {
        let bytes = text.as_bytes();
        let line_starts = std::iter::once(0)
            .chain(bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1));
        let mut chars_before = vec![0];
        for chunk in bytes.chunks(CHAR_STEP) {
            chars_before.push(chars_before.last().copied().unwrap_or(0) + count_chars(chunk));
        }
        Source {
            origin: origin.to_string(),
            text: text.to_string(),
            parent: None,
            line_starts: line_starts.collect(),
            chars_before,
        }
    }

    /// Characters in `text[..offset]`, reading at most `CHAR_STEP` bytes.
    fn chars_to(&self, offset: usize) -> usize {
        let k = offset / CHAR_STEP;
        self.chars_before[k] + count_chars(&self.text.as_bytes()[k * CHAR_STEP..offset])
    }

    /// Index of the line holding byte `offset`.
    fn line_index(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset) - 1
    }

    fn line_end(&self, line: usize) -> usize {
        self.line_starts.get(line + 1).map_or(self.text.len(), |&next| next - 1)
    }
}

/// UTF-8 characters in a byte range (any range: continuation bytes are simply not counted).
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count()
}

/// The largest char boundary of `text` at or below `i`.
fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `text` cut to at most `max` bytes at a char boundary, marked with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    format!("{}…", &text[..floor_boundary(text, max)])
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

/// Why a policy was rejected: the errors found, in source order (the first `MAX_SHOWN`).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyError {
    pub diagnostics: Vec<Diagnostic>,
    /// Errors found beyond those in `diagnostics`.
    pub not_shown: usize,
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
        if self.not_shown > 0 {
            write!(f, "\n... and {} more errors (only the first {MAX_SHOWN} are shown)", self.not_shown)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl SourceMap {
    pub fn add(&mut self, origin: &str, text: &str) -> u32 {
        self.sources.push(Source::new(origin, text));
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
        let src = self.get(file);
        let offset = floor_boundary(&src.text, (offset as usize).min(src.text.len()));
        let line = src.line_index(offset);
        (line + 1, src.chars_to(offset) - src.chars_to(src.line_starts[line]) + 1)
    }

    /// `origin:line`, used to label rules and thermal rules.
    pub fn place(&self, span: Span) -> String {
        let (line, _) = self.line_col(span.file, span.start);
        format!("{}:{line}", self.origin(span.file))
    }

    pub fn diagnostic(&self, severity: Severity, span: Span, message: String) -> Diagnostic {
        let src = self.get(span.file);
        let (line, col) = self.line_col(span.file, span.start);
        let text = src.text.as_str();
        let start = floor_boundary(text, (span.start as usize).min(text.len()));
        let line_start = src.line_starts[line - 1];
        let line_end = src.line_end(line - 1);
        // A window of the line around the offending text, never the whole of a long line.
        let from = back_chars(text, start, EXCERPT_SIDE).max(line_start);
        let to = forward_chars(text, start, EXCERPT_SIDE).min(line_end);
        let end = floor_boundary(text, (span.end as usize).clamp(start, to));
        let shown = text[from..to].trim_end_matches('\r');
        let (lead, tail) = (if from > line_start { "…" } else { "" }, if to < line_end { "…" } else { "" });
        // Keep tabs in the caret's indent so it lines up under the offending text.
        let indent: String = lead
            .chars()
            .map(|_| ' ')
            .chain(text[from..start].chars().map(|c| if c == '\t' { '\t' } else { ' ' }))
            .collect();
        let width = text[start..end].chars().count().max(1);
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        Diagnostic {
            severity,
            location: format!("{}:{line}:{col}", src.origin),
            message: clip(&message, MAX_MESSAGE),
            excerpt: format!("{gutter} | {lead}{shown}{tail}\n{pad} | {indent}{}", "^".repeat(width)),
        }
    }
}

/// The byte offset `n` characters before `i` (or 0).
fn back_chars(text: &str, i: usize, n: usize) -> usize {
    text[..i].char_indices().rev().nth(n.saturating_sub(1)).map_or(0, |(j, _)| j)
}

/// The byte offset `n` characters after `i` (or the end).
fn forward_chars(text: &str, i: usize, n: usize) -> usize {
    text[i..].char_indices().nth(n).map_or(text.len(), |(j, _)| i + j)
}

/// Collects diagnostics while a policy is checked; errors do not stop the check, so a user
/// sees every problem at once.
#[derive(Debug, Default)]
pub struct Reporter {
    /// The first `MAX_SHOWN` errors and warnings, rendered.
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    errors_found: usize,
    warnings_found: usize,
}

impl Reporter {
    pub fn error(&mut self, map: &SourceMap, span: Span, message: impl Into<String>) {
        self.errors_found += 1;
        if self.errors.len() < MAX_SHOWN {
            self.errors.push(map.diagnostic(Severity::Error, span, message.into()));
        }
    }

    pub fn warn(&mut self, map: &SourceMap, span: Span, message: impl Into<String>) {
        self.warnings_found += 1;
        if self.warnings.len() < MAX_SHOWN {
            self.warnings.push(map.diagnostic(Severity::Warning, span, message.into()));
        }
    }

    /// An error that has no position in a text (a file that cannot be read, for instance).
    pub fn error_at(&mut self, origin: &str, message: impl Into<String>) {
        self.errors_found += 1;
        if self.errors.len() < MAX_SHOWN {
            self.errors.push(Diagnostic {
                severity: Severity::Error,
                location: clip(origin, MAX_MESSAGE),
                message: clip(&message.into(), MAX_MESSAGE),
                excerpt: String::new(),
            });
        }
    }

    /// Errors found so far, shown or not.
    pub fn error_count(&self) -> usize {
        self.errors_found
    }

    pub fn has_errors(&self) -> bool {
        self.errors_found > 0
    }

    /// Warnings found beyond those rendered.
    pub fn warnings_not_shown(&self) -> usize {
        self.warnings_found - self.warnings.len()
    }

    pub fn into_error(self) -> PolicyError {
        let not_shown = self.errors_found - self.errors.len();
        PolicyError { diagnostics: self.errors, not_shown }
    }
}
