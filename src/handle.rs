//! Generation-checked handle tables. A handle packs (table tag, generation, slot index), so a
//! stale, double-freed, forged or foreign handle is detected instead of touching freed memory.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU16, Ordering};

static NEXT_TAG: AtomicU16 = AtomicU16::new(1);

/// A fresh tag for a new table; handles carry it so a handle from another table is rejected.
pub fn new_table_tag() -> u16 {
    loop {
        let t = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        if t != 0 {
            return t;
        }
    }
}

struct Slot<T> {
    generation: u16,
    value: Option<T>,
}

pub struct HandleTable<T> {
    what: &'static str,
    tag: u16,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    live: usize,
}

impl<T: Clone> HandleTable<T> {
    pub fn new(what: &'static str) -> Self {
        HandleTable { what, tag: new_table_tag(), slots: Vec::new(), free: Vec::new(), live: 0 }
    }

    pub fn insert(&mut self, value: T) -> u64 {
        self.insert_with(|_| value)
    }

    /// Inserts a value built from its own handle (values that carry their identity).
    pub fn insert_with(&mut self, make: impl FnOnce(u64) -> T) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot { generation: 1, value: None });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let handle = pack(self.tag, slot.generation, index);
        slot.value = Some(make(handle));
        self.live += 1;
        handle
    }

    pub fn get(&self, handle: u64) -> Result<T> {
        self.slot(handle).cloned()
    }

    fn slot(&self, handle: u64) -> Result<&T> {
        let (tag, generation, index) = unpack(handle);
        if handle == 0 {
            return Err(Error::InvalidHandle(format!("null {} handle", self.what)));
        }
        if tag != self.tag {
            return Err(Error::InvalidHandle(format!(
                "{} handle {handle:#x} belongs to another runtime or is not {} {} handle",
                self.what,
                article(self.what),
                self.what
            )));
        }
        match self.slots.get(index as usize) {
            Some(Slot { generation: g, value: Some(v) }) if *g == generation => Ok(v),
            _ => Err(Error::InvalidHandle(format!(
                "{} handle {handle:#x} was already released or never existed",
                self.what
            ))),
        }
    }

    pub fn remove(&mut self, handle: u64) -> Result<T> {
        self.slot(handle)?;
        let (_, _, index) = unpack(handle);
        let slot = &mut self.slots[index as usize];
        let value = slot.value.take().expect("checked above");
        // A slot is issued generations 1..=u16::MAX once each, then retired: reusing it with a
        // wrapped generation would make a handle freed 65,535 frees ago valid again (naming
        // whatever lives there now). Retiring costs one slot per 65,535 frees of that slot.
        // A retired slot keeps generation u16::MAX and no value: every handle to it is stale.
        if let Some(next) = slot.generation.checked_add(1) {
            slot.generation = next;
            self.free.push(index);
        }
        self.live -= 1;
        Ok(value)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.value.as_ref())
    }

    pub fn drain(&mut self) -> Vec<T> {
        let out: Vec<T> = self.slots.iter_mut().filter_map(|s| s.value.take()).collect();
        self.slots.clear();
        self.free.clear();
        self.live = 0;
        out
    }
}

fn pack(tag: u16, generation: u16, index: u32) -> u64 {
    ((tag as u64) << 48) | ((generation as u64) << 32) | index as u64
}

fn unpack(handle: u64) -> (u16, u16, u32) {
    ((handle >> 48) as u16, (handle >> 32) as u16, handle as u32)
}

/// "an event", "a buffer".
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_kind_of_handle_in_plain_english() {
        let events: HandleTable<u32> = HandleTable::new("event");
        let mut buffers: HandleTable<u32> = HandleTable::new("buffer");
        let h = buffers.insert(1);
        let msg = events.get(h).unwrap_err().to_string();
        assert!(msg.contains("is not an event handle"), "{msg}");
        let msg = buffers.get(events_like(h)).unwrap_err().to_string();
        assert!(msg.contains("is not a buffer handle"), "{msg}");
    }

    /// The same slot under another table's tag.
    fn events_like(h: u64) -> u64 {
        h ^ (1 << 63)
    }

    #[test]
    fn stale_foreign_and_null_handles_are_rejected() {
        let mut a: HandleTable<u32> = HandleTable::new("buffer");
        let mut b: HandleTable<u32> = HandleTable::new("buffer");
        let h = a.insert(7);
        assert_eq!(a.get(h).unwrap(), 7);
        assert!(b.get(h).is_err(), "foreign handle accepted");
        assert!(a.get(0).is_err());
        assert_eq!(a.remove(h).unwrap(), 7);
        assert!(a.get(h).is_err(), "stale handle accepted");
        assert!(a.remove(h).is_err(), "double free accepted");
        let h2 = a.insert(8);
        assert_ne!(h, h2, "reused slot must get a new generation");
        assert!(a.get(h).is_err());
        let _ = b.insert(1);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "140,000 table operations take many minutes under Miri; safe Rust, run natively and under ASan"
    )]
    fn a_slot_is_retired_before_its_generation_wraps() {
        let mut t: HandleTable<u32> = HandleTable::new("buffer");
        let first = t.insert(0);
        t.remove(first).unwrap();
        // Free and reuse the same slot past 65,535 generations: no handle is issued twice
        // and the first one never becomes valid again.
        let mut seen = std::collections::HashSet::from([first]);
        for i in 1..140_000 {
            let h = t.insert(i);
            assert!(seen.insert(h), "handle {h:#x} issued twice (round {i})");
            assert!(t.get(first).is_err(), "a handle freed long ago is valid again (round {i})");
            assert_eq!(t.remove(h).unwrap(), i);
        }
        assert_eq!(t.len(), 0);
        assert!(t.slots.len() >= 2, "the first slot was retired and a new one used");
    }
}
