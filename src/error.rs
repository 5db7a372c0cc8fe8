//! The one error type of the library. Every variant maps to one C status code.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("null pointer: {0}")]
    NullPointer(&'static str),
    #[error("invalid handle: {0}")]
    InvalidHandle(String),
    #[error("struct size: {0}")]
    StructSize(String),
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("device unavailable: {0}")]
    DeviceUnavailable(String),
    #[error("device failed: {0}")]
    DeviceFailed(String),
    #[error("device lost: {0}")]
    DeviceLost(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Policy(String),
    #[error("i/o error: {0}")]
    Io(String),
    #[error("permission denied: {0}")]
    Permission(String),
    #[error("buffer too small: {0}")]
    BufferTooSmall(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::InvalidArgument(msg.into())
    }

    /// True for failures that another device may not have (the scheduler falls back on these).
    pub fn is_device_fault(&self) -> bool {
        matches!(
            self,
            Error::DeviceFailed(_)
                | Error::DeviceLost(_)
                | Error::DeviceUnavailable(_)
                | Error::OutOfMemory(_)
                | Error::Unsupported(_)
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::Permission(e.to_string())
        } else {
            Error::Io(e.to_string())
        }
    }
}
