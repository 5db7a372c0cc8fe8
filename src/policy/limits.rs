//! Limits that keep an untrusted policy file from costing unbounded time or memory, or from
//! reading files outside its directory.

use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyLimits {
    /// Largest policy text accepted, per file.
    pub max_file_bytes: usize,
    /// Most placement rules after includes are merged.
    pub max_rules: usize,
    /// Most thermal rules after includes are merged.
    pub max_thermal_rules: usize,
    /// How deep `include` may nest (a file including a built-in is depth 1).
    pub max_include_depth: usize,
    /// Directory that file includes must stay inside; `None`: the top policy file's directory.
    pub include_root: Option<PathBuf>,
    /// Lets file includes leave `include_root` (for trusted, hand-managed policy trees).
    pub allow_include_escape: bool,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            max_file_bytes: 256 * 1024,
            max_rules: 512,
            max_thermal_rules: 64,
            max_include_depth: 8,
            include_root: None,
            allow_include_escape: false,
        }
    }
}
