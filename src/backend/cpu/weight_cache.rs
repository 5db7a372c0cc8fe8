//! Constant matmul operands kept in the packed GEMM's layout. A GEMM packs B on every call;
//! for a weight used by every forward pass that is wasted work, and at a dozen rows of A it
//! costs more than the multiply (ONNX Runtime prepacks weights when a session is created).
//! The library is not told which tensors are weights, so it recognises them: a B operand
//! seen twice with the same buffer version (the version changes on every write: host writes,
//! unmaps with `written`, op outputs) is packed, and later matmuls reuse the packed copy until
//! the buffer changes or is destroyed. Imported buffers are never cached: the caller may write
//! that memory without telling the library. The cache is bounded; the least recently used
//! entries go first.
//!
//! Only f32 weights are cached. The packed panels are f32, so an f16 / bf16 weight's packed
//! copy would be twice its size: a memory-mapped f16 model (831 MB) peaked at 1.94 GB
//! resident with those copies, for no prefill speed (the packed GEMM widens half weights
//! while packing, which a prefill of many rows amortises). Quantized weights never come here.

use super::host::HostView;
use super::kernels::matmul::{self, MatmulParams};
use crate::backend::OpMemory;
use crate::memory::{Buffer, BufferId};
use crate::op::{DType, TensorView};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

pub use matmul::PackedB;

/// Most bytes of packed weights kept (f32: a 1B-parameter model's matrices would not fit,
/// and then the least recently used are repacked as without the cache).
pub const BUDGET_BYTES: usize = 1 << 30;
/// Candidates remembered before the oldest are forgotten.
const MAX_SEEN: usize = 4096;

/// A B operand as the GEMM reads it: where it is, its type and op(B)'s k x n layout.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    buffer: BufferId,
    offset: usize,
    dtype: DType,
    shape: [usize; 2],
    strides: [usize; 2],
    trans_b: bool,
}

struct Entry {
    version: u64,
    packed: Arc<PackedB>,
    owner: Weak<Buffer>,
    last_use: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Operands seen once, with the version they had.
    seen: HashMap<Key, u64>,
    tick: u64,
}

impl Inner {
    fn bytes(&self) -> usize {
        self.entries.values().map(|e| e.packed.bytes()).sum()
    }
}

#[derive(Default)]
pub struct WeightCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl WeightCache {
    pub fn new(budget: usize) -> WeightCache {
        WeightCache { inner: Mutex::default(), budget }
    }

    /// The packed form of B for this matmul, when B is a constant this cache holds or now
    /// packs; None sends the matmul down the usual paths.
    pub fn packed_b(
        &self,
        view: &TensorView,
        mem: &OpMemory,
        out: &HostView,
        a: &HostView,
        b: &HostView,
        p: &MatmulParams,
    ) -> Option<Arc<PackedB>> {
        if b.dtype != DType::F32 || !matmul::prepacked_usable(out, a, b, p) {
            return None;
        }
        let buffer = mem.buffer(view.buffer).ok()?;
        if buffer.is_imported() {
            return None;
        }
        let r = view.rank;
        let key = Key {
            buffer: view.buffer,
            offset: view.offset,
            dtype: view.dtype,
            shape: [view.shape[r - 2], view.shape[r - 1]],
            strides: [view.strides[r - 2], view.strides[r - 1]],
            trans_b: p.trans_b,
        };
        let version = buffer.version();
        {
            let mut inner = self.inner.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(e) = inner.entries.get_mut(&key) {
                if e.version == version {
                    e.last_use = tick;
                    return Some(Arc::clone(&e.packed));
                }
                inner.entries.remove(&key);
            }
            if inner.seen.get(&key) != Some(&version) {
                if inner.seen.len() >= MAX_SEEN {
                    inner.seen.clear();
                }
                inner.seen.insert(key, version);
                return None;
            }
        }
        // Second sighting: pack outside the lock (other devices' ops go on meanwhile).
        let packed = Arc::new(matmul::pack_b(a, b, p));
        if packed.bytes() > self.budget {
            return Some(packed);
        }
        let mut inner = self.inner.lock();
        inner.seen.remove(&key);
        inner.entries.retain(|_, e| e.owner.strong_count() > 0);
        // Another thread may have packed the same key meanwhile: this copy replaces it.
        inner.entries.remove(&key);
        let mut bytes = inner.bytes();
        while bytes + packed.bytes() > self.budget {
            let Some(oldest) = inner.entries.iter().min_by_key(|(_, e)| e.last_use).map(|(k, _)| *k) else {
                break;
            };
            let e = inner.entries.remove(&oldest).expect("present");
            bytes -= e.packed.bytes();
            // Still a known weight: packed again at its next use, not two uses later.
            inner.seen.insert(oldest, e.version);
        }
        let tick = inner.tick;
        let entry =
            Entry { version, packed: Arc::clone(&packed), owner: Arc::downgrade(buffer), last_use: tick };
        inner.entries.insert(key, entry);
        Some(packed)
    }

    /// Bytes of packed weights held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes()
    }
}
