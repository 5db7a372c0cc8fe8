//! Host memory pool: aligned blocks in power-of-two size classes, freed blocks are kept for reuse.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;

/// Alignment of every pooled block: a page, so blocks can also be imported by GPU drivers.
pub const BLOCK_ALIGN: usize = 4096;

/// Counters a caller can read through `nh_runtime_pool_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub bytes_in_use: u64,
    pub bytes_cached: u64,
    pub allocations: u64,
    pub reuses: u64,
    pub peak_bytes: u64,
    pub cache_limit: u64,
}

/// One aligned allocation. Returned to its pool when dropped.
pub struct Block {
    ptr: NonNull<u8>,
    class: usize,
    pool: Arc<HostPool>,
}

// The block owns its memory exclusively; access is synchronised by the runtime's hazards.
unsafe impl Send for Block {}
unsafe impl Sync for Block {}

impl Block {
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn capacity(&self) -> usize {
        self.class
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.give_back(self.ptr, self.class);
    }
}

pub struct HostPool {
    inner: Mutex<PoolInner>,
}

struct PoolInner {
    free: HashMap<usize, Vec<NonNull<u8>>>,
    stats: PoolStats,
}

// Raw pointers in the free lists are owned by the pool alone.
unsafe impl Send for PoolInner {}

fn size_class(bytes: usize) -> Option<usize> {
    bytes.max(BLOCK_ALIGN).checked_next_power_of_two()
}

impl HostPool {
    /// `cache_limit`: bytes of freed blocks kept for reuse before they go back to the system.
    pub fn new(cache_limit: u64) -> Arc<HostPool> {
        Arc::new(HostPool {
            inner: Mutex::new(PoolInner {
                free: HashMap::new(),
                stats: PoolStats { cache_limit, ..Default::default() },
            }),
        })
    }

    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<Block> {
        let class = size_class(bytes)
            .filter(|c| *c <= isize::MAX as usize / 2)
            .ok_or_else(|| Error::OutOfMemory(format!("{bytes} bytes is too large")))?;
        let mut inner = self.inner.lock();
        let reused = inner.free.get_mut(&class).and_then(|v| v.pop());
        let ptr = match reused {
            Some(p) => {
                inner.stats.reuses += 1;
                inner.stats.bytes_cached -= class as u64;
                // Reused memory is cleared so no data leaks between buffers.
                unsafe { std::ptr::write_bytes(p.as_ptr(), 0, class) };
                p
            }
            None => {
                let layout = Layout::from_size_align(class, BLOCK_ALIGN)
                    .map_err(|e| Error::OutOfMemory(e.to_string()))?;
                let raw = unsafe { alloc_zeroed(layout) };
                NonNull::new(raw)
                    .ok_or_else(|| Error::OutOfMemory(format!("host allocation of {class} bytes failed")))?
            }
        };
        inner.stats.allocations += 1;
        inner.stats.bytes_in_use += class as u64;
        inner.stats.peak_bytes = inner.stats.peak_bytes.max(inner.stats.bytes_in_use);
        Ok(Block { ptr, class, pool: Arc::clone(self) })
    }

    fn give_back(&self, ptr: NonNull<u8>, class: usize) {
        let mut inner = self.inner.lock();
        inner.stats.bytes_in_use -= class as u64;
        if inner.stats.bytes_cached + class as u64 <= inner.stats.cache_limit {
            inner.stats.bytes_cached += class as u64;
            inner.free.entry(class).or_default().push(ptr);
        } else {
            unsafe { dealloc(ptr.as_ptr(), Layout::from_size_align_unchecked(class, BLOCK_ALIGN)) };
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.inner.lock().stats
    }

    /// Returns every cached block to the system.
    pub fn trim(&self) {
        let mut inner = self.inner.lock();
        for (class, list) in inner.free.drain() {
            for p in list {
                unsafe { dealloc(p.as_ptr(), Layout::from_size_align_unchecked(class, BLOCK_ALIGN)) };
            }
        }
        inner.stats.bytes_cached = 0;
    }
}

impl Drop for HostPool {
    fn drop(&mut self) {
        self.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_are_reused_and_zeroed() {
        let pool = HostPool::new(1 << 20);
        let b = pool.alloc(5000).unwrap();
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.as_ptr() as usize % BLOCK_ALIGN, 0);
        unsafe { *b.as_ptr() = 42 };
        let p = b.as_ptr();
        drop(b);
        assert_eq!(pool.stats().bytes_cached, 8192);
        let c = pool.alloc(6000).unwrap();
        assert_eq!(c.as_ptr(), p);
        assert_eq!(unsafe { *c.as_ptr() }, 0);
        let s = pool.stats();
        assert_eq!((s.allocations, s.reuses, s.bytes_in_use, s.bytes_cached), (2, 1, 8192, 0));
    }

    #[test]
    fn cache_limit_is_respected() {
        let pool = HostPool::new(4096);
        drop(pool.alloc(8192).unwrap());
        assert_eq!(pool.stats().bytes_cached, 0);
        assert!(pool.alloc(usize::MAX).is_err());
    }
}
