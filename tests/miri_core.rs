//! The pure-Rust core that holds raw memory and untrusted descriptors, in tests small enough
//! for Miri (`.ci/sanitizers miri`): handle tables, the host memory pool, buffers over pooled
//! and imported memory, and view/op validation. They also run in plain `cargo test`.
//!
//! Not here: anything that starts a runtime (worker threads, rayon, dlopen of Vulkan/XRT),
//! mmap of files, the C boundary; those run under AddressSanitizer and valgrind instead.

use npuhybrid::handle::HandleTable;
use npuhybrid::memory::{Buffer, HostPool};
use npuhybrid::op::{validate::validate, DType, OpDesc, OpKind, TensorView};
use std::sync::Arc;

#[test]
fn handle_tables_reject_stale_foreign_and_forged_handles() {
    let mut a: HandleTable<Arc<u32>> = HandleTable::new("buffer");
    let b: HandleTable<Arc<u32>> = HandleTable::new("buffer");
    let handles: Vec<u64> = (0..64).map(|i| a.insert(Arc::new(i))).collect();
    for (i, &h) in handles.iter().enumerate() {
        assert_eq!(*a.get(h).unwrap(), i as u32);
        assert!(b.get(h).is_err());
    }
    // Free every other one, reuse the slots: the freed handles stay invalid.
    for &h in handles.iter().step_by(2) {
        a.remove(h).unwrap();
    }
    let reused: Vec<u64> = (0..32).map(|i| a.insert(Arc::new(100 + i))).collect();
    for &h in handles.iter().step_by(2) {
        assert!(a.get(h).is_err());
        assert!(a.remove(h).is_err());
    }
    for &h in &reused {
        assert!(!handles.contains(&h));
        assert!(a.get(h).unwrap() >= Arc::new(100));
    }
    // Forged: right tag, wrong slot or generation; flipped bits of a live handle.
    for &h in &reused {
        for bit in [0, 5, 31, 32, 40, 47] {
            let forged = h ^ (1 << bit);
            if let Ok(v) = a.get(forged) {
                // Only another live handle may match, never a freed slot.
                assert!(reused.contains(&forged) || handles.contains(&forged), "{v}");
            }
        }
    }
    assert_eq!(a.len(), 64);
    let drained = a.drain();
    assert_eq!(drained.len(), 64);
    assert!(a.is_empty());
    assert!(a.get(reused[0]).is_err());
}

#[test]
fn pool_blocks_are_zeroed_reused_and_returned() {
    let pool = HostPool::new(1 << 16);
    let mut blocks = Vec::new();
    for size in [1, 4095, 4096, 4097, 10_000] {
        let b = pool.alloc(size).unwrap();
        assert!(b.capacity() >= size);
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        // Every byte of the capacity is owned and zeroed.
        let bytes = unsafe { std::slice::from_raw_parts_mut(b.as_ptr(), b.capacity()) };
        assert!(bytes.iter().all(|&x| x == 0));
        bytes.fill(0xAB);
        blocks.push(b);
    }
    drop(blocks);
    let s = pool.stats();
    assert_eq!(s.bytes_in_use, 0);
    // Reused blocks come back zeroed (no data leaks from one buffer to the next).
    for size in [4096, 8192] {
        let b = pool.alloc(size).unwrap();
        let bytes = unsafe { std::slice::from_raw_parts(b.as_ptr(), b.capacity()) };
        assert!(bytes.iter().all(|&x| x == 0));
    }
    assert!(pool.stats().reuses >= 1);
    assert!(pool.alloc(usize::MAX).is_err());
    assert!(pool.alloc(isize::MAX as usize).is_err());
    pool.trim();
    assert_eq!(pool.stats().bytes_cached, 0);
}

#[test]
fn pool_is_shared_between_threads() {
    let pool = HostPool::new(1 << 16);
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..8 {
                    let b = pool.alloc(4096 * (1 + (i + t) % 2)).unwrap();
                    unsafe { *b.as_ptr() = t as u8 };
                    assert_eq!(unsafe { *b.as_ptr() }, t as u8);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(pool.stats().bytes_in_use, 0);
    // Blocks still cached when the pool goes away are freed by its Drop (Miri checks leaks).
}

#[test]
fn buffers_check_every_range() {
    let pool = HostPool::new(1 << 16);
    let buf = Buffer::pooled(1, pool.alloc(64).unwrap(), 64);
    buf.write(0, &[1; 64]).unwrap();
    buf.write(60, &[2; 4]).unwrap();
    assert!(buf.write(61, &[2; 4]).is_err());
    assert!(buf.write(usize::MAX, &[2; 1]).is_err());
    assert!(buf.write(65, &[]).is_err());
    let mut out = [0u8; 8];
    buf.read(56, &mut out).unwrap();
    assert_eq!(out, [1, 1, 1, 1, 2, 2, 2, 2]);
    assert!(buf.read(57, &mut out).is_err());
    assert!(buf.read(usize::MAX - 3, &mut out).is_err());
    let v = buf.version();
    buf.touch();
    assert!(buf.version() > v);

    // Imported memory is used in place, never beyond its length.
    let mut host = vec![0u8; 32];
    let imported = unsafe { Buffer::imported(2, host.as_mut_ptr(), host.len()) };
    imported.write(16, &[7; 16]).unwrap();
    assert!(imported.write(17, &[7; 16]).is_err());
    assert!(imported.is_imported());
    drop(imported);
    assert_eq!(&host[16..], &[7; 16]);
}

fn view(buffer: u64, shape: &[usize], strides: &[usize], offset: usize) -> TensorView {
    let mut v = TensorView::contiguous(buffer, DType::F32, shape, offset);
    if !strides.is_empty() {
        v.strides[..strides.len()].copy_from_slice(strides);
    }
    v
}

#[test]
fn views_and_ops_are_validated_against_buffer_sizes() {
    let lens = |v: &TensorView| -> npuhybrid::Result<usize> {
        match v.buffer {
            1..=3 => Ok(64),
            _ => Err(npuhybrid::Error::InvalidHandle(format!("buffer {}", v.buffer))),
        }
    };
    let ok =
        OpDesc::new(OpKind::Add, &[view(1, &[16], &[], 0), view(2, &[16], &[], 0)], view(3, &[16], &[], 0));
    validate(&ok, &lens).unwrap();
    let (start, end) = ok.output.byte_range();
    assert_eq!((start, end), (0, 64));
    let bad = [
        // One element beyond the buffer, by shape, by offset, by stride.
        OpDesc::new(OpKind::Add, &[view(1, &[17], &[], 0), view(2, &[17], &[], 0)], view(3, &[17], &[], 0)),
        OpDesc::new(OpKind::Add, &[view(1, &[16], &[], 4), view(2, &[16], &[], 0)], view(3, &[16], &[], 0)),
        OpDesc::new(
            OpKind::Add,
            &[view(1, &[4, 4], &[5, 1], 0), view(2, &[4, 4], &[], 0)],
            view(3, &[4, 4], &[], 0),
        ),
        // Overflowing shapes and strides.
        OpDesc::new(
            OpKind::Add,
            &[view(1, &[1 << 32, 1 << 32], &[], 0), view(2, &[16], &[], 0)],
            view(3, &[16], &[], 0),
        ),
        OpDesc::new(
            OpKind::Add,
            &[view(1, &[2], &[usize::MAX / 2], 0), view(2, &[2], &[], 0)],
            view(3, &[2], &[], 0),
        ),
        // An output that writes one element many times, and one over its input.
        OpDesc::new(OpKind::Scale, &[view(1, &[1, 1 << 40], &[1, 0], 0)], view(3, &[1, 1 << 40], &[1, 0], 0)),
        OpDesc::new(OpKind::Add, &[view(1, &[8], &[], 0), view(2, &[8], &[], 0)], view(1, &[8], &[], 4)),
        // A buffer that does not exist.
        OpDesc::new(OpKind::Add, &[view(9, &[16], &[], 0), view(2, &[16], &[], 0)], view(3, &[16], &[], 0)),
    ];
    for op in &bad {
        assert!(validate(op, &lens).is_err(), "accepted {op:?}");
    }
}
