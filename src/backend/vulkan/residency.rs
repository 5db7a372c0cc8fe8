//! Which host views already have a current copy in device memory. A replica is keyed by the
//! view (buffer id, offset, shape, strides) and valid for one buffer version; unchanged inputs
//! such as weights are uploaded once. Replicas of dropped buffers are released, and the least
//! recently used ones go when device memory runs short or the budget is exceeded.

use crate::memory::{Buffer, BufferId};
use crate::op::TensorView;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaKey {
    buffer: BufferId,
    offset: usize,
    elem: usize,
    rank: usize,
    shape: [usize; 4],
    strides: [usize; 4],
}

impl ReplicaKey {
    pub fn of(v: &TensorView) -> ReplicaKey {
        let mut shape = [0; 4];
        let mut strides = [0; 4];
        shape[..v.rank].copy_from_slice(v.dims());
        strides[..v.rank].copy_from_slice(v.strides());
        ReplicaKey { buffer: v.buffer, offset: v.offset, elem: v.dtype.size(), rank: v.rank, shape, strides }
    }
}

struct Entry<A> {
    version: u64,
    alloc: A,
    bytes: u64,
    owner: Weak<Buffer>,
    last_use: u64,
}

pub struct ResidencyCache<A> {
    entries: HashMap<ReplicaKey, Entry<A>>,
    bytes: u64,
    /// Advanced once per submission; entries used by the current one are never evicted.
    tick: u64,
    /// The version of each replica, readable while a submission holds the cache.
    resident: ResidentSet,
}

/// Which replicas exist, shared with the scheduler's cost estimate: it reads this without
/// waiting for the submission that owns the cache.
#[derive(Clone, Default)]
pub struct ResidentSet(Arc<RwLock<HashMap<ReplicaKey, u64>>>);

impl ResidentSet {
    pub fn is_current(&self, key: &ReplicaKey, version: u64) -> bool {
        self.0.read().get(key) == Some(&version)
    }
}

impl<A: Copy> Default for ResidencyCache<A> {
    fn default() -> Self {
        ResidencyCache { entries: HashMap::new(), bytes: 0, tick: 1, resident: ResidentSet::default() }
    }
}

impl<A: Copy> ResidencyCache<A> {
    pub fn resident_set(&self) -> ResidentSet {
        self.resident.clone()
    }

    fn remove(&mut self, key: &ReplicaKey) -> Entry<A> {
        let e = self.entries.remove(key).expect("present");
        self.bytes -= e.bytes;
        self.resident.0.write().remove(key);
        e
    }

    /// Starts a new submission: what it uses from now on is protected from eviction.
    pub fn next_tick(&mut self) {
        self.tick += 1;
    }

    /// A current replica, marked as used. A stale one is removed and returned in `stale`.
    pub fn lookup(&mut self, key: &ReplicaKey, version: u64, stale: &mut Vec<A>) -> Option<A> {
        match self.entries.get_mut(key) {
            Some(e) if e.version == version => {
                e.last_use = self.tick;
                Some(e.alloc)
            }
            Some(_) => {
                stale.push(self.remove(key).alloc);
                None
            }
            None => None,
        }
    }

    /// Records a replica; a previous one for the same key is returned for freeing.
    pub fn insert(
        &mut self,
        key: ReplicaKey,
        version: u64,
        owner: Weak<Buffer>,
        alloc: A,
        bytes: u64,
    ) -> Option<A> {
        self.bytes += bytes;
        self.resident.0.write().insert(key, version);
        let old = self.entries.insert(key, Entry { version, alloc, bytes, owner, last_use: self.tick });
        old.map(|e| {
            self.bytes -= e.bytes;
            e.alloc
        })
    }

    /// Marks a replica current at `version`: its bytes were brought up to date on the device.
    pub fn set_version(&mut self, key: &ReplicaKey, version: u64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.version = version;
            self.resident.0.write().insert(*key, version);
        }
    }

    /// Drops a replica; its memory is returned for freeing.
    pub fn forget(&mut self, key: &ReplicaKey) -> Option<A> {
        self.entries.contains_key(key).then(|| self.remove(key).alloc)
    }

    /// The memory of a replica, current or not.
    pub fn peek(&self, key: &ReplicaKey) -> Option<A> {
        self.entries.get(key).map(|e| e.alloc)
    }

    /// Removes replicas of buffers that no longer exist.
    pub fn evict_dead(&mut self, out: &mut Vec<A>) {
        let dead: Vec<ReplicaKey> =
            self.entries.iter().filter(|(_, e)| e.owner.strong_count() == 0).map(|(k, _)| *k).collect();
        for k in dead {
            out.push(self.remove(&k).alloc);
        }
    }

    /// Evicts least recently used replicas not used by the current submission until at most
    /// `budget` bytes remain. Returns whether anything was evicted.
    pub fn evict_to(&mut self, budget: u64, out: &mut Vec<A>) -> bool {
        let before = out.len();
        if self.bytes <= budget {
            return false;
        }
        let mut order: Vec<(u64, ReplicaKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.last_use < self.tick)
            .map(|(k, e)| (e.last_use, *k))
            .collect();
        order.sort_unstable_by_key(|(t, _)| *t);
        for (_, k) in order {
            if self.bytes <= budget {
                break;
            }
            out.push(self.remove(&k).alloc);
        }
        out.len() > before
    }

    /// Drops every replica (device lost, shutdown).
    pub fn clear(&mut self, out: &mut Vec<A>) {
        out.extend(self.entries.drain().map(|(_, e)| e.alloc));
        self.bytes = 0;
        self.resident.0.write().clear();
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HostPool;
    use crate::op::DType;
    use std::sync::Arc;

    fn buffer(pool: &Arc<HostPool>, id: BufferId) -> Arc<Buffer> {
        let block = pool.alloc(64).unwrap();
        Arc::new(Buffer::pooled(id, block, 64))
    }

    fn key(id: BufferId) -> ReplicaKey {
        ReplicaKey::of(&TensorView::contiguous(id, DType::F32, &[4, 4], 0))
    }

    #[test]
    fn a_replica_is_reused_until_the_version_changes() {
        let pool = HostPool::new(1 << 20);
        let b = buffer(&pool, 1);
        let mut c: ResidencyCache<u32> = ResidencyCache::default();
        let mut out = Vec::new();
        let resident = c.resident_set();
        assert_eq!(c.lookup(&key(1), b.version(), &mut out), None);
        c.insert(key(1), b.version(), Arc::downgrade(&b), 7, 64);
        assert!(resident.is_current(&key(1), b.version()));
        assert_eq!(c.lookup(&key(1), b.version(), &mut out), Some(7));
        b.touch();
        assert!(!resident.is_current(&key(1), b.version()));
        assert_eq!(c.lookup(&key(1), b.version(), &mut out), None);
        assert_eq!(out, vec![7]);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn dead_buffers_and_least_recently_used_replicas_are_evicted() {
        let pool = HostPool::new(1 << 20);
        let (b1, b2, b3) = (buffer(&pool, 1), buffer(&pool, 2), buffer(&pool, 3));
        let mut c: ResidencyCache<u32> = ResidencyCache::default();
        let mut out = Vec::new();
        c.insert(key(1), b1.version(), Arc::downgrade(&b1), 1, 100);
        c.next_tick();
        c.insert(key(2), b2.version(), Arc::downgrade(&b2), 2, 100);
        c.next_tick();
        c.insert(key(3), b3.version(), Arc::downgrade(&b3), 3, 100);
        let v2 = b2.version();
        drop(b2);
        c.evict_dead(&mut out);
        assert_eq!(out, vec![2]);
        out.clear();
        // Entry 3 belongs to the current submission and is protected.
        assert!(c.evict_to(0, &mut out));
        assert_eq!(out, vec![1]);
        assert_eq!(c.len(), 1);
        let resident = c.resident_set();
        assert!(!resident.is_current(&key(1), b1.version()) && !resident.is_current(&key(2), v2));
        assert!(resident.is_current(&key(3), b3.version()));
        assert_eq!(c.bytes(), 100);
    }
}
