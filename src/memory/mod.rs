//! Memory every device can use: pooled host blocks, imported host pointers, file mappings.

mod buffer;
mod pool;

pub use buffer::{Buffer, BufferId};
pub use pool::{Block, HostPool, PoolStats, BLOCK_ALIGN};
