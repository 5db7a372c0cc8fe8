//! Where `include "..."` finds the policy it names.
//!
//! `include "default"` (no `.nhp`) names a built-in policy. `include "base.nhp"` names a
//! file relative to the including file; only policies loaded from a file may include files,
//! and those must stay inside the include root unless the limits allow otherwise.

use super::limits::PolicyLimits;
use std::path::{Path, PathBuf};

pub trait Loader {
    /// Finds `name` as included from the policy `from` (its origin): `(origin, text)`, or the
    /// message to report at the include.
    fn load(&self, name: &str, from: &str) -> Result<(String, String), String>;
    fn max_depth(&self) -> usize;
}

/// The built-in policies' texts by name.
pub type BuiltinTexts<'a> = &'a dyn Fn(&str) -> Option<&'a str>;

/// Built-ins are named after the file they are built from.
fn builtin_origin(name: &str) -> String {
    format!("policies/{name}.nhp")
}

/// Resolves includes against the built-in policies only (policies given as strings).
pub struct BuiltinLoader<'a> {
    pub builtins: BuiltinTexts<'a>,
    pub names: &'a [&'a str],
    pub max_depth: usize,
}

impl BuiltinLoader<'_> {
    fn builtin(&self, name: &str) -> Result<(String, String), String> {
        match (self.builtins)(name) {
            Some(text) => Ok((builtin_origin(name), text.to_string())),
            None => Err(format!(
                "unknown built-in policy \"{name}\" (expected {})",
                super::check::one_of(self.names)
            )),
        }
    }
}

impl Loader for BuiltinLoader<'_> {
    fn load(&self, name: &str, _from: &str) -> Result<(String, String), String> {
        if name.ends_with(".nhp") {
            return Err(format!(
                "cannot include the file \"{name}\" here: only a policy loaded from a file may include files"
            ));
        }
        self.builtin(name)
    }

    fn max_depth(&self) -> usize {
        self.max_depth
    }
}

/// Resolves file includes relative to the including file, inside `root`.
pub struct FileLoader<'a, 'b> {
    pub builtins: BuiltinLoader<'b>,
    pub root: PathBuf,
    pub limits: &'a PolicyLimits,
}

impl Loader for FileLoader<'_, '_> {
    fn load(&self, name: &str, from: &str) -> Result<(String, String), String> {
        if !name.ends_with(".nhp") {
            return self.builtins.builtin(name);
        }
        let dir = Path::new(from).parent().unwrap_or(Path::new("."));
        let path = dir.join(name);
        let real =
            path.canonicalize().map_err(|e| format!("cannot read \"{name}\" ({}): {e}", path.display()))?;
        if !self.limits.allow_include_escape && !real.starts_with(&self.root) {
            return Err(format!("include \"{name}\" leaves the policy directory {}", self.root.display()));
        }
        let text = read_limited(&real, self.limits.max_file_bytes)?;
        Ok((path.display().to_string(), text))
    }

    fn max_depth(&self) -> usize {
        self.builtins.max_depth
    }
}

/// Reads a policy file of at most `max` bytes as UTF-8.
pub fn read_limited(path: &Path, max: usize) -> Result<String, String> {
    // Regular files only (a FIFO would block for ever); one byte past the limit is read, so
    // a larger file is detected without reading all of it.
    let bytes = crate::files::read_limited(path, max as u64)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > max {
        return Err(format!("{} is larger than the limit of {max} bytes for a policy file", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}
