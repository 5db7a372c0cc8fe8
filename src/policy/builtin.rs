//! The built-in policies (every `policies/*.nhp`, embedded), and the entry points that
//! compile a policy from a string or a file.
//!
//! The build script has already parsed, checked and compiled each built-in (an invalid one
//! fails the build) and recorded its `dump()`; a built-in is compiled again from the embedded
//! text on first use, and a test checks that this gives the same tables.

use super::compile::compile_source;
use super::diag::Reporter;
use super::limits::PolicyLimits;
use super::load::{read_limited, BuiltinLoader, FileLoader};
use super::{CompiledPolicy, PolicyError};
use std::path::Path;
use std::sync::{Arc, OnceLock};

// BUILTIN_NAMES, BUILTIN_SOURCES (embedded texts) and BUILTIN_DUMPS (dumps made at build time).
include!(concat!(env!("OUT_DIR"), "/builtin_policies.rs"));

/// Names of the built-in policies, sorted.
pub fn builtin_names() -> &'static [&'static str] {
    BUILTIN_NAMES
}

/// The text of a built-in policy.
pub fn builtin_source(name: &str) -> Option<&'static str> {
    let i = BUILTIN_NAMES.iter().position(|n| *n == name)?;
    Some(BUILTIN_SOURCES[i])
}

/// The dump the build script recorded for a built-in policy.
#[cfg(test)]
pub(super) fn builtin_dump(name: &str) -> Option<&'static str> {
    let i = BUILTIN_NAMES.iter().position(|n| *n == name)?;
    Some(BUILTIN_DUMPS[i])
}

/// A built-in policy, compiled once per process.
pub fn builtin(name: &str) -> Option<Arc<CompiledPolicy>> {
    static CACHE: OnceLock<Vec<OnceLock<Arc<CompiledPolicy>>>> = OnceLock::new();
    let i = BUILTIN_NAMES.iter().position(|n| *n == name)?;
    let cache = CACHE.get_or_init(|| BUILTIN_NAMES.iter().map(|_| OnceLock::new()).collect());
    let policy = cache[i].get_or_init(|| {
        let origin = format!("policies/{name}.nhp");
        // The build script compiled this exact text, so failing here is a bug in this crate.
        let compiled = compile_source(&origin, BUILTIN_SOURCES[i], &loader(), &PolicyLimits::default())
            .unwrap_or_else(|e| panic!("built-in policy {name} no longer compiles:\n{e}"));
        Arc::new(compiled)
    });
    Some(policy.clone())
}

fn loader() -> BuiltinLoader<'static> {
    BuiltinLoader {
        builtins: &builtin_source,
        names: BUILTIN_NAMES,
        max_depth: PolicyLimits::default().max_include_depth,
    }
}

/// Compiles a policy given as text; `include` may name built-in policies only.
pub fn compile_str(origin: &str, src: &str) -> Result<CompiledPolicy, PolicyError> {
    compile_source(origin, src, &loader(), &PolicyLimits::default())
}

/// Compiles a policy file. It may include built-in policies and other policy files inside
/// the include root (the file's directory unless `limits` says otherwise).
pub fn compile_file(path: &Path, limits: &PolicyLimits) -> Result<CompiledPolicy, PolicyError> {
    let origin = path.display().to_string();
    let fail = |msg: String| {
        let mut report = Reporter::default();
        report.error_at(&origin, msg);
        report.into_error()
    };
    let text = read_limited(path, limits.max_file_bytes).map_err(fail)?;
    let root = match &limits.include_root {
        Some(root) => root.clone(),
        None => path.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let root = if root.as_os_str().is_empty() { Path::new(".").to_path_buf() } else { root };
    let root = root
        .canonicalize()
        .map_err(|e| fail(format!("cannot resolve the include root {}: {e}", root.display())))?;
    let builtins = BuiltinLoader {
        builtins: &builtin_source,
        names: BUILTIN_NAMES,
        max_depth: limits.max_include_depth,
    };
    let loader = FileLoader { builtins, root, limits };
    compile_source(&origin, &text, &loader, limits)
}
