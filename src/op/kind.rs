//! The operations the runtime can run.

use std::fmt;

/// Kind of an operation. The discriminants are the C ABI values and index dispatch tables.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Matmul = 0,
    Add = 1,
    Mul = 2,
    Scale = 3,
    Silu = 4,
    Gelu = 5,
    Softmax = 6,
    RmsNorm = 7,
    LayerNorm = 8,
    Rope = 9,
    Attention = 10,
    Copy = 11,
}

impl OpKind {
    pub const COUNT: usize = 12;
    pub const ALL: [OpKind; OpKind::COUNT] = [
        OpKind::Matmul,
        OpKind::Add,
        OpKind::Mul,
        OpKind::Scale,
        OpKind::Silu,
        OpKind::Gelu,
        OpKind::Softmax,
        OpKind::RmsNorm,
        OpKind::LayerNorm,
        OpKind::Rope,
        OpKind::Attention,
        OpKind::Copy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Matmul => "matmul",
            OpKind::Add => "add",
            OpKind::Mul => "mul",
            OpKind::Scale => "scale",
            OpKind::Silu => "silu",
            OpKind::Gelu => "gelu",
            OpKind::Softmax => "softmax",
            OpKind::RmsNorm => "rmsnorm",
            OpKind::LayerNorm => "layernorm",
            OpKind::Rope => "rope",
            OpKind::Attention => "attention",
            OpKind::Copy => "copy",
        }
    }

    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn from_raw(raw: u32) -> Option<OpKind> {
        OpKind::ALL.get(raw as usize).copied()
    }

    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
