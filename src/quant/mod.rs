//! Block-quantized weight formats: their byte layouts, and the reference (scalar) quantize
//! and dequantize that every kernel is checked against. Device kernels live with their
//! backends (`backend/cpu/quant/`); the GGUF reader names tensors in these types.

mod format;

pub use format::{dequantize_row, quantize_row};
