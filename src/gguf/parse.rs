//! The GGUF reader: a cursor over untrusted bytes that never reads past them, and the
//! checks a file must pass (versions 2 and 3, little-endian).

use super::value::{self, Value};
use super::{MAX_ARRAY_DEPTH, MAX_DIMS, MAX_NAME_BYTES, MAX_VALUES};
use crate::error::{Error, Result};
use crate::op::DType;
use std::collections::HashMap;

/// One tensor of the file: its type, shape (outermost first, as our views count) and where
/// its bytes lie in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Byte offset in the file (data section start + the tensor's own offset).
    pub offset: usize,
    pub bytes: usize,
}

/// A parsed file: metadata by key and tensors in file order.
#[derive(Clone, Debug, Default)]
pub struct Gguf {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Where the tensor data section starts.
    pub data_offset: usize,
}

impl Gguf {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// GGML type codes this runtime takes, as our dtypes. Others (k-quants, q5, ...) are refused.
fn dtype_of(code: u32) -> Option<DType> {
    match code {
        0 => Some(DType::F32),
        1 => Some(DType::F16),
        2 => Some(DType::Q4_0),
        3 => Some(DType::Q4_1),
        8 => Some(DType::Q8_0),
        24 => Some(DType::I8),
        26 => Some(DType::I32),
        30 => Some(DType::BF16),
        _ => None,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Metadata values read so far (MAX_VALUES).
    values: usize,
}

fn bad(at: usize, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("gguf: byte {at}: {what}"))
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            bad(self.at, format!("{what} needs {n} bytes, the file has {} left", self.bytes.len() - self.at))
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// A count that must fit what is left, at `min_each` bytes per item.
    fn count(&mut self, what: &str, min_each: usize) -> Result<usize> {
        let at = self.at;
        let n = self.u64(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| n.saturating_mul(min_each.max(1)) <= self.left());
        fits.ok_or_else(|| bad(at, format!("{what} {n} cannot fit in the {} bytes left", self.left())))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.at;
        let n = self.count(what, 1)?;
        if n > MAX_NAME_BYTES && what != "string value" {
            return Err(bad(at, format!("{what} of {n} bytes is longer than {MAX_NAME_BYTES}")));
        }
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| bad(at + 8, format!("{what} is not UTF-8")))
    }

    fn value(&mut self, code: u32, depth: usize) -> Result<Value> {
        let at = self.at;
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(bad(at, format!("more than {MAX_VALUES} metadata values")));
        }
        let fixed = |c: &mut Cursor<'a>, n: usize| c.take(n, "value");
        Ok(match code {
            0 => Value::U8(fixed(self, 1)?[0]),
            1 => Value::I8(fixed(self, 1)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(fixed(self, 2)?.try_into().expect("2"))),
            3 => Value::I16(i16::from_le_bytes(fixed(self, 2)?.try_into().expect("2"))),
            4 => Value::U32(u32::from_le_bytes(fixed(self, 4)?.try_into().expect("4"))),
            5 => Value::I32(i32::from_le_bytes(fixed(self, 4)?.try_into().expect("4"))),
            6 => Value::F32(f32::from_le_bytes(fixed(self, 4)?.try_into().expect("4"))),
            7 => match fixed(self, 1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(bad(at, format!("bool value {b} is neither 0 nor 1"))),
            },
            value::STRING => Value::Str(self.string("string value")?),
            value::ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(bad(at, format!("arrays nest deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.u32("array element type")?;
                // Strings and arrays take at least their 8-byte length each.
                let min = value::fixed_size(elem).unwrap_or(8);
                if value::fixed_size(elem).is_none() && elem != value::STRING && elem != value::ARRAY {
                    return Err(bad(at, format!("unknown array element type {elem}")));
                }
                let n = self.count("array length", min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(fixed(self, 8)?.try_into().expect("8"))),
            11 => Value::I64(i64::from_le_bytes(fixed(self, 8)?.try_into().expect("8"))),
            12 => Value::F64(f64::from_le_bytes(fixed(self, 8)?.try_into().expect("8"))),
            other => return Err(bad(at, format!("unknown value type {other}"))),
        })
    }
}

/// Reads and checks the header, metadata and tensor directory of a GGUF file held in
/// `bytes` (the whole file: tensor extents are checked against its length).
pub fn parse(bytes: &[u8]) -> Result<Gguf> {
    let mut c = Cursor { bytes, at: 0, values: 0 };
    if c.take(4, "magic")? != b"GGUF" {
        return Err(bad(0, "not a GGUF file (magic is not 'GGUF')"));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(bad(4, format!("version {version} is not supported (2 or 3)")));
    }
    // A tensor entry is at least 8 (name) + 4 (dims) + 4 (type) + 8 (offset) bytes; a
    // metadata entry at least 8 (key) + 4 (type) + 1.
    let n_tensors = c.count("tensor count", 24)?;
    let n_kv = c.count("metadata count", 13)?;
    let mut g = Gguf { version, ..Gguf::default() };
    for _ in 0..n_kv {
        let at = c.at;
        let key = c.string("metadata key")?;
        let type_at = c.at;
        let code = c.u32("value type")?;
        if value::fixed_size(code).is_none() && code != value::STRING && code != value::ARRAY {
            return Err(bad(type_at, format!("unknown value type {code} for metadata key '{key}'")));
        }
        let v = c.value(code, 0)?;
        if g.metadata.insert(key.clone(), v).is_some() {
            return Err(bad(at, format!("metadata key '{key}' appears twice")));
        }
    }
    let align = match g.get("general.alignment") {
        None => 32,
        Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(v) => return Err(bad(c.at, format!("general.alignment {v:?} is not a power of two (u32)"))),
    };
    let mut raw = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let at = c.at;
        let name = c.string("tensor name")?;
        let n_dims = c.u32("dimension count")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(at, format!("tensor '{name}' has {n_dims} dimensions (1..={MAX_DIMS})")));
        }
        let mut ne = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            let d = c.u64("dimension")?;
            let d = usize::try_from(d).ok().filter(|&d| d > 0);
            ne.push(d.ok_or_else(|| bad(at, format!("tensor '{name}' has a zero or huge dimension")))?);
        }
        let type_at = c.at;
        let code = c.u32("tensor type")?;
        let dtype = dtype_of(code).ok_or_else(|| {
            bad(type_at, format!("tensor '{name}' has type {code}, which is not supported"))
        })?;
        let offset = c.u64("tensor offset")?;
        raw.push((at, name, ne, dtype, offset));
    }
    g.data_offset = c.at.next_multiple_of(align);
    if g.data_offset > bytes.len() {
        return Err(bad(c.at, "the tensor data section starts past the end of the file"));
    }
    for (at, name, ne, dtype, offset) in raw {
        let numel = ne.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        // GGUF lists the innermost dimension first; blocks run along it.
        if ne[0] % dtype.block_elems() != 0 {
            return Err(bad(
                at,
                format!("tensor '{name}': {} elements per row is not whole {dtype} blocks", ne[0]),
            ));
        }
        let size = numel.and_then(|n| dtype.checked_bytes_of(n));
        let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(g.data_offset));
        let end = start.zip(size).and_then(|(s, n)| s.checked_add(n));
        let (Some(start), Some(size), Some(end)) = (start, size, end) else {
            return Err(bad(at, format!("tensor '{name}' has an extent that overflows")));
        };
        if offset % align as u64 != 0 {
            return Err(bad(at, format!("tensor '{name}' offset {offset} is not aligned to {align}")));
        }
        if end > bytes.len() {
            return Err(bad(
                at,
                format!("tensor '{name}' ends at byte {end}, past the file's {} bytes", bytes.len()),
            ));
        }
        if g.tensors.iter().any(|t| t.name == name) {
            return Err(bad(at, format!("tensor '{name}' appears twice")));
        }
        let shape = ne.iter().rev().copied().collect();
        g.tensors.push(TensorInfo { name, dtype, shape, offset: start, bytes: size });
    }
    Ok(g)
}
