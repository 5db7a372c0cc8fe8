//! Build steps: check and compile the built-in policies, compile the GLSL compute shaders.

#[path = "buildsrc/policies.rs"]
mod policies;
#[path = "buildsrc/shaders.rs"]
mod shaders;

fn main() {
    policies::run();
    shaders::run();
}
