//! Element types a tensor can hold: plain scalars, and block-quantized weight formats whose
//! elements are stored in fixed-size blocks (GGUF's q8_0 / q4_0 / q4_1, AWQ-style q4_g128).

use std::fmt;

/// Element type of a tensor. The discriminants are the C ABI values.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
    I8 = 3,
    I32 = 4,
    /// 32 weights: f16 scale d, 32 x i8 q; w = d * q (GGUF block_q8_0, 34 bytes).
    Q8_0 = 5,
    /// 32 weights: f16 d, 16 bytes of nibbles; w = d * (q - 8) (GGUF block_q4_0, 18 bytes).
    Q4_0 = 6,
    /// 32 weights: f16 d, f16 m, 16 bytes of nibbles; w = d * q + m (GGUF block_q4_1, 20 bytes).
    Q4_1 = 7,
    /// 128 weights: f16 d, u8 zero z, u8 0, 64 bytes of nibbles; w = d * (q - z) (68 bytes).
    Q4G128 = 8,
}

impl DType {
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::I32,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4G128,
    ];

    /// Bytes of one storage unit: an element, or a whole block for quantized types.
    pub fn size(self) -> usize {
        self.block().1
    }

    /// (elements, bytes) of one storage unit; plain types are blocks of one element.
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 | DType::I32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::I8 => (1, 1),
            DType::Q8_0 => (32, 34),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q4G128 => (128, 68),
        }
    }

    /// Elements per storage unit (1 for plain types).
    pub fn block_elems(self) -> usize {
        self.block().0
    }

    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Bytes spanned by `elems` consecutive elements starting on a block boundary (for
    /// quantized types `elems` is a whole number of blocks, which validation guarantees).
    pub fn bytes_of(self, elems: usize) -> usize {
        let (be, bb) = self.block();
        elems / be * bb
    }

    /// `bytes_of` with overflow checks, for unvalidated shapes.
    pub fn checked_bytes_of(self, elems: usize) -> Option<usize> {
        let (be, bb) = self.block();
        (elems / be).checked_mul(bb)
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I32 => "i32",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q4G128 => "q4_g128",
        }
    }

    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn from_raw(raw: u32) -> Option<DType> {
        DType::ALL.get(raw as usize).copied()
    }

    /// Bit for this dtype in a `u32` set (used by device info).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
