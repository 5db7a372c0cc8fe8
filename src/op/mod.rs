//! Operations: element types, tensor views, op descriptors and their validation.

mod desc;
mod dtype;
mod kind;
mod tensor;
pub mod validate;

pub use desc::{Activation, OpDesc, OpDims, OpParams, Tags, MAX_INPUTS};
pub use dtype::DType;
pub use kind::OpKind;
pub use tensor::{dense_strides, TensorView, MAX_RANK};
