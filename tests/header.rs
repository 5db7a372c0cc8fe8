//! The committed C header must be exactly what cbindgen generates from src/ffi.
//! Regenerate after changing the C API: `NPUHYBRID_BLESS=1 cargo test --test header`.

use std::path::Path;

#[test]
fn committed_header_matches_cbindgen_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = root.join("include/npuhybrid.h");
    if std::env::var_os("NPUHYBRID_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/npuhybrid.h drifted from src/ffi: regenerate it with `NPUHYBRID_BLESS=1 cargo test --test header`"
    );
}
