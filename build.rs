//! Build steps: check and compile the built-in policies, compile the GLSL compute shaders.

// The policy loader reads files through it (regular files only, never blocking).
#[allow(dead_code)]
#[path = "src/files.rs"]
mod files;
#[path = "buildsrc/policies.rs"]
mod policies;
#[path = "buildsrc/shaders.rs"]
mod shaders;

fn main() {
    // The shared library's soname carries the ABI major (bump with nh_abi_version).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnpuhybrid.so.1");
    }
    avx512_cfg();
    policies::run();
    shaders::run();
}

/// `nh_avx512`: the compiler has stable AVX-512 intrinsics and target features (Rust 1.89),
/// so the CPU backend builds its AVX-512 kernels (still chosen at run time). Older compilers
/// (the minimum is 1.82) build the AVX2 and portable ones only.
fn avx512_cfg() {
    println!("cargo:rustc-check-cfg=cfg(nh_avx512)");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc).arg("--version").output();
    let minor = version.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let v = text.split_whitespace().nth(1)?.to_string();
        let mut parts = v.split('.');
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.parse().ok()?;
        Some(if major > 1 { u32::MAX } else { minor })
    });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=nh_avx512");
    }
}
