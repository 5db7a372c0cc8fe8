//! Deterministic test inputs shared by the CPU kernels' unit tests.

/// `n` values in [-1, 1) from a xorshift sequence seeded with `seed`.
pub fn fill(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s >> 8) & 0xFFFF) as f32 / 32768.0 - 1.0
        })
        .collect()
}
