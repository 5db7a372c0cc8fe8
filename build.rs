//! Build steps: check and compile the built-in policies, compile the GLSL compute shaders.

#[path = "buildsrc/policies.rs"]
mod policies;
#[path = "buildsrc/shaders.rs"]
mod shaders;

fn main() {
    // The shared library's soname carries the ABI major (bump with nh_abi_version).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnpuhybrid.so.1");
    }
    policies::run();
    shaders::run();
}
