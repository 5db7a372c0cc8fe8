//! Buffers: host-visible memory every device can read, from the pool, an imported host
//! pointer (zero copy) or a read-only file mapping (weights). Devices with their own memory
//! keep replicas keyed by `version`, which changes on every write, so data moves only when
//! it changed.

use super::pool::Block;
use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Runtime-wide identity of a buffer (its handle value).
pub type BufferId = u64;

enum Storage {
    Pooled(Block),
    /// Caller-owned memory; the caller keeps it alive until the buffer is destroyed.
    Imported {
        ptr: *mut u8,
    },
    /// The file stays open so a truncation can be noticed (`check_mapping`).
    Mapped(memmap2::Mmap, std::fs::File),
}

pub struct Buffer {
    id: BufferId,
    storage: Storage,
    len: usize,
    version: AtomicU64,
    /// Ops holding the buffer (`OpMemory`), from validation until they are dropped.
    users: Users,
}

/// Counts the ops that hold a buffer, so destroying it can wait for all of them: also for
/// ops another thread is still submitting, which no event or hazard list knows about yet.
#[derive(Default)]
struct Users {
    count: AtomicUsize,
    lock: Mutex<()>,
    none_left: Condvar,
}

// Concurrent access to the bytes is ordered by the runtime's hazard tracking.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn fresh_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

impl Buffer {
    pub fn pooled(id: BufferId, block: Block, len: usize) -> Buffer {
        Buffer {
            id,
            storage: Storage::Pooled(block),
            len,
            version: AtomicU64::new(fresh_version()),
            users: Users::default(),
        }
    }

    /// # Safety
    /// `ptr` must be valid for reads and writes of `len` bytes until the buffer is dropped.
    pub unsafe fn imported(id: BufferId, ptr: *mut u8, len: usize) -> Buffer {
        Buffer {
            id,
            storage: Storage::Imported { ptr },
            len,
            version: AtomicU64::new(fresh_version()),
            users: Users::default(),
        }
    }

    /// Maps a file read-only, ready for `Buffer::mapped`.
    pub fn map_file(file: &std::fs::File) -> Result<memmap2::Mmap> {
        // SAFETY: the mapping is read-only; a file truncated underneath would fault, which
        // is the documented contract of weight files (same as every mmap-based loader).
        let map = unsafe { memmap2::MmapOptions::new().map(file) }.map_err(Error::from)?;
        if map.is_empty() {
            return Err(Error::invalid("cannot map an empty file"));
        }
        Ok(map)
    }

    pub fn mapped(id: BufferId, map: memmap2::Mmap, file: std::fs::File) -> Buffer {
        let len = map.len();
        Buffer {
            id,
            storage: Storage::Mapped(map, file),
            len,
            version: AtomicU64::new(fresh_version()),
            users: Users::default(),
        }
    }

    pub fn id(&self) -> BufferId {
        self.id
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn read_only(&self) -> bool {
        matches!(self.storage, Storage::Mapped(..))
    }

    pub fn is_imported(&self) -> bool {
        matches!(self.storage, Storage::Imported { .. })
    }

    pub fn kind_name(&self) -> &'static str {
        match self.storage {
            Storage::Pooled(_) => "pooled",
            Storage::Imported { .. } => "imported",
            Storage::Mapped(..) => "mapped",
        }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        match &self.storage {
            Storage::Pooled(b) => b.as_ptr(),
            Storage::Imported { ptr } => *ptr,
            Storage::Mapped(m, _) => m.as_ptr() as *mut u8,
        }
    }

    /// The whole pages behind the buffer, for a device that maps host memory in place
    /// (`VK_EXT_external_memory_host`): a pool block, or a file mapping rounded up to its last
    /// page. None for caller-owned memory, whose neighbouring bytes are not ours to map.
    pub fn host_pages(&self) -> Option<(*mut u8, usize)> {
        const PAGE: usize = 4096;
        match &self.storage {
            Storage::Pooled(b) => Some((b.as_ptr(), b.capacity())),
            Storage::Mapped(m, _) => Some((m.as_ptr() as *mut u8, m.len().next_multiple_of(PAGE))),
            Storage::Imported { .. } => None,
        }
    }

    /// An op takes the buffer (`OpMemory::new`); `release_op` gives it back.
    pub fn hold_op(&self) {
        self.users.count.fetch_add(1, Ordering::AcqRel);
    }

    pub fn release_op(&self) {
        if self.users.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock, so a waiter between its check and its wait cannot miss it.
            let _g = self.users.lock.lock();
            self.users.none_left.notify_all();
        }
    }

    /// Blocks until no op holds the buffer. Call it once no new op can take the buffer
    /// (its handle is gone), or it may wait for ops submitted later.
    pub fn wait_unused(&self) {
        let mut g = self.users.lock.lock();
        while self.users.count.load(Ordering::Acquire) > 0 {
            self.users.none_left.wait(&mut g);
        }
    }

    /// Ops holding the buffer now.
    pub fn op_users(&self) -> usize {
        self.users.count.load(Ordering::Acquire)
    }

    /// For a file mapping: an error if the file is now shorter than the mapping. Reading the
    /// part past its end would kill the process with SIGBUS; this check (a `fstat`) catches a
    /// truncation that happened before it, not one racing the read (see the header).
    pub fn check_mapping(&self) -> Result<()> {
        let Storage::Mapped(map, file) = &self.storage else { return Ok(()) };
        let now = file.metadata().map_err(|e| Error::Io(format!("mapped file: {e}")))?.len();
        if now < map.len() as u64 {
            return Err(Error::Io(format!(
                "the mapped file was truncated to {now} bytes after it was mapped ({} bytes): \
                 a file must not change while it is mapped",
                map.len()
            )));
        }
        Ok(())
    }

    /// Version of the contents; replicas with this version are current.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Records that the contents changed (a host write or an op's output).
    pub fn touch(&self) {
        self.version.store(fresh_version(), Ordering::Release);
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::invalid(format!(
                "range [{offset}, {offset}+{len}) lies outside the buffer of {} bytes",
                self.len
            ))),
        }
    }

    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        if self.read_only() {
            return Err(Error::invalid("buffer is a read-only file mapping"));
        }
        self.check_range(offset, data.len())?;
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len()) };
        self.touch();
        Ok(())
    }

    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.check_range(offset, out.len())?;
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Bytes of the buffer as a slice. The caller guarantees no concurrent writer.
    ///
    /// # Safety
    /// No op may be writing this buffer while the slice lives.
    pub unsafe fn bytes(&self) -> &[u8] {
        std::slice::from_raw_parts(self.as_ptr(), self.len)
    }
}
