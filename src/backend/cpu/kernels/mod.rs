//! The CPU kernels, one module per op family. All compute in f32.

pub mod attention;
pub mod convert;
pub mod elementwise;
#[cfg(target_arch = "x86_64")]
mod gemm;
mod gemv;
pub mod iter;
pub mod math;
pub mod matmul;
pub mod norm;
pub mod rope;
mod rows;
pub mod softmax;
mod vmath;
