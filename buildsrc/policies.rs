//! Built-in policies are checked at build time (filled in by the policy pipeline).
pub fn run() {}
