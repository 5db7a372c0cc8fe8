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

/// Classes from this size on are mapped straight from the kernel (anonymous `mmap`): their
/// pages are zero and take no memory until touched, so rounding up to a power of two costs
/// address space only. The allocator's page-aligned path (`posix_memalign`, then a memset of
/// the whole class) made every byte of the class resident: a 295 KiB KV-cache buffer took
/// 512 KiB, a 10 MB activation 16 MB (24.5 MiB, 11% of a q4_0 model's file, in a 0.5B
/// model's 512-token prefill).
const MAPPED_CLASS: usize = 64 << 10;

/// A zeroed block of `class` bytes, aligned to `BLOCK_ALIGN`.
fn system_alloc(class: usize) -> Option<NonNull<u8>> {
    if class >= MAPPED_CLASS {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                class,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        return if p == libc::MAP_FAILED { None } else { NonNull::new(p as *mut u8) };
    }
    let layout = Layout::from_size_align(class, BLOCK_ALIGN).ok()?;
    // SAFETY: the layout has a non-zero size (classes are at least a page).
    NonNull::new(unsafe { alloc_zeroed(layout) })
}

/// Clears a reused block so no data leaks between buffers: the first `used` bytes (the new
/// buffer's) are written with zeros; a mapped block's remaining pages are dropped instead
/// (`MADV_DONTNEED`: they read as zero and take no memory until touched again).
///
/// # Safety
/// `ptr` is a block of `class` bytes from `system_alloc(class)` that nobody else uses.
unsafe fn clear(ptr: NonNull<u8>, used: usize, class: usize) {
    if class < MAPPED_CLASS {
        std::ptr::write_bytes(ptr.as_ptr(), 0, class);
        return;
    }
    let written = used.next_multiple_of(BLOCK_ALIGN).min(class);
    std::ptr::write_bytes(ptr.as_ptr(), 0, written);
    if written < class {
        let rest = ptr.as_ptr().add(written) as *mut libc::c_void;
        if libc::madvise(rest, class - written, libc::MADV_DONTNEED) != 0 {
            std::ptr::write_bytes(ptr.as_ptr().add(written), 0, class - written);
        }
    }
}

/// Gives back a block `system_alloc(class)` returned.
///
/// # Safety
/// `ptr` came from `system_alloc(class)` with this `class` and is not used afterwards.
unsafe fn system_free(ptr: NonNull<u8>, class: usize) {
    if class >= MAPPED_CLASS {
        libc::munmap(ptr.as_ptr() as *mut libc::c_void, class);
    } else {
        dealloc(ptr.as_ptr(), Layout::from_size_align_unchecked(class, BLOCK_ALIGN));
    }
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
                // SAFETY: a cached block of `class` bytes that nobody else holds.
                unsafe { clear(p, bytes, class) };
                p
            }
            None => system_alloc(class)
                .ok_or_else(|| Error::OutOfMemory(format!("host allocation of {class} bytes failed")))?,
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
            // SAFETY: the block came from `system_alloc(class)` and its owner is gone.
            unsafe { system_free(ptr, class) };
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
                // SAFETY: cached blocks came from `system_alloc(class)` and have no owner.
                unsafe { system_free(p, class) };
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

    /// Pages of `len` bytes at `p` that are in memory (`mincore`).
    fn resident_pages(p: *mut u8, len: usize) -> usize {
        let mut v = vec![0u8; len.div_ceil(4096)];
        assert_eq!(unsafe { libc::mincore(p as *mut libc::c_void, len, v.as_mut_ptr()) }, 0);
        v.iter().filter(|&&x| x & 1 != 0).count()
    }

    /// A large block costs memory for the pages its buffer touches, not for its whole
    /// power-of-two class: fresh, and when reused for a shorter buffer (whose clearing drops
    /// the pages past it). Reuse still clears every byte of the block.
    #[test]
    fn large_blocks_take_memory_only_where_touched() {
        const MIB: usize = 1 << 20;
        let pool = HostPool::new(64 << 20);
        let (len, class) = (5 * MIB, 8 * MIB);
        let b = pool.alloc(len).unwrap();
        assert_eq!(b.capacity(), class);
        assert_eq!(b.as_ptr() as usize % BLOCK_ALIGN, 0);
        assert_eq!(resident_pages(b.as_ptr(), class), 0, "fresh block");
        unsafe { std::ptr::write_bytes(b.as_ptr(), 7, len) };
        assert!(resident_pages(b.as_ptr(), class) >= len / 4096);
        let p = b.as_ptr();
        drop(b);
        // The same class, shorter: what the first buffer wrote past 4.5 MiB is dropped, and
        // the last 2 MiB (never touched; a transparent huge page at most reaches 6 MiB)
        // stay out of memory.
        let short = 9 * MIB / 2;
        let c = pool.alloc(short).unwrap();
        assert_eq!(c.as_ptr(), p);
        assert_eq!(resident_pages(c.as_ptr().wrapping_add(short), class - short), 0, "past the buffer");
        assert!(resident_pages(c.as_ptr(), class) <= short / 4096);
        let all = unsafe { std::slice::from_raw_parts(c.as_ptr(), class) };
        assert!(all.iter().all(|&x| x == 0), "reused block cleared");
        drop(c);
        pool.trim();
    }

    #[test]
    fn cache_limit_is_respected() {
        let pool = HostPool::new(4096);
        drop(pool.alloc(8192).unwrap());
        assert_eq!(pool.stats().bytes_cached, 0);
        assert!(pool.alloc(usize::MAX).is_err());
    }
}
