//! Device memory in large blocks, sub-allocated, so running an op never calls
//! vkAllocateMemory once the blocks exist. Each block is bound to one VkBuffer covering it;
//! an allocation is a (block, offset, size) range bound through descriptor offsets.

use super::context::{types, vk_err, Context};
use crate::error::{Error, Result};
use ash::vk;
use std::sync::Arc;

/// First-fit allocator over [0, capacity) with coalescing of freed neighbours. Every size and
/// offset is a multiple of `align`, which keeps every allocation aligned.
#[derive(Debug)]
pub struct RangeAllocator {
    capacity: u64,
    align: u64,
    /// Free ranges (offset, size), sorted by offset, never adjacent.
    free: Vec<(u64, u64)>,
}

impl RangeAllocator {
    pub fn new(capacity: u64, align: u64) -> RangeAllocator {
        assert!(align.is_power_of_two());
        let capacity = capacity & !(align - 1);
        RangeAllocator { capacity, align, free: vec![(0, capacity)] }
    }

    pub fn round(&self, size: u64) -> u64 {
        size.max(1).div_ceil(self.align) * self.align
    }

    pub fn allocate(&mut self, size: u64) -> Option<u64> {
        let size = self.round(size);
        let i = self.free.iter().position(|&(_, s)| s >= size)?;
        let (off, s) = self.free[i];
        if s == size {
            self.free.remove(i);
        } else {
            self.free[i] = (off + size, s - size);
        }
        Some(off)
    }

    pub fn free(&mut self, offset: u64, size: u64) {
        let size = self.round(size);
        let i = self.free.partition_point(|&(o, _)| o < offset);
        debug_assert!(i == self.free.len() || offset + size <= self.free[i].0);
        self.free.insert(i, (offset, size));
        // Merge with the next range, then with the previous one.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.free.len() == 1 && self.free[0] == (0, self.capacity)
    }

    #[cfg(test)]
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|&(_, s)| s).sum()
    }
}

/// A sub-allocation: where it lives and how to bind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub heap: HeapKind,
    pub block: usize,
    pub buffer: vk::Buffer,
    pub offset: u64,
    pub size: u64,
    /// Host address of the first byte when the memory is mapped.
    pub mapped: Option<*mut u8>,
}

// The mapped pointer is only dereferenced under the backend's lock.
unsafe impl Send for Allocation {}
unsafe impl Sync for Allocation {}

impl Allocation {
    /// The bytes of a mapped allocation.
    ///
    /// # Safety
    /// The GPU must not be using the range, and the caller must be the only accessor.
    // The bytes belong to the device memory block, not to this handle, hence `&self`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, len: usize) -> &mut [u8] {
        let p = self.mapped.expect("allocation is not host-visible");
        debug_assert!(len as u64 <= self.size);
        std::slice::from_raw_parts_mut(p, len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeapKind {
    /// Where tensors live (host-visible too on unified-memory devices).
    Device,
    /// Host-visible memory for uploads and downloads on devices that need staging.
    Staging,
    /// A host buffer's own pages, imported (host_alias.rs); never freed through a heap.
    HostAlias,
}

struct Block {
    memory: vk::DeviceMemory,
    /// Bytes of device memory behind the block.
    bytes: u64,
    buffer: vk::Buffer,
    mapped: Option<*mut u8>,
    ranges: RangeAllocator,
}

/// A set of blocks of one memory type.
pub struct Heap {
    ctx: Arc<Context>,
    kind: HeapKind,
    memory_type: u32,
    host_visible: bool,
    block_size: u64,
    align: u64,
    blocks: Vec<Option<Block>>,
    /// Bytes held in blocks (what vkAllocateMemory handed out).
    pub reserved: u64,
    /// Buffers of blocks created since the last `take_fresh_blocks`.
    fresh: Vec<vk::Buffer>,
}

unsafe impl Send for Heap {}

/// Size of a device memory block: 1/64 of device memory between 64 MiB and 1 GiB (64 MiB on
/// CPU implementations); `NPUHYBRID_VULKAN_BLOCK_MB` overrides it. On the H100, matmuls on
/// tensors in 1 GiB blocks ran up to 1.6x faster than in 64 MiB blocks (see
/// docs/PERFORMANCE-vulkan.md).
pub fn block_size(ctx: &Context) -> u64 {
    const MIN: u64 = 64 << 20;
    const MAX: u64 = 1 << 30;
    let default = if ctx.caps.device_type == vk::PhysicalDeviceType::CPU {
        MIN
    } else {
        (ctx.caps.device_local_bytes() / 64).clamp(MIN, MAX)
    };
    std::env::var("NPUHYBRID_VULKAN_BLOCK_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&mb| mb > 0)
        .map(|mb| mb << 20)
        .unwrap_or(default)
}

/// The memory type for a heap: it has all of `want`; then, best first, it has `prefer`, it
/// lives in the largest heap of its kind (on a discrete GPU the small 256 MiB BAR window is
/// DEVICE_LOCAL too) and it has no property beyond `want | prefer` (a host-visible type is
/// not what a device-only heap should take when a plain one exists).
pub fn pick_memory_type(
    mem: &vk::PhysicalDeviceMemoryProperties,
    want: vk::MemoryPropertyFlags,
    prefer: vk::MemoryPropertyFlags,
) -> Option<(u32, vk::MemoryPropertyFlags)> {
    let heap_size = |t: &vk::MemoryType| mem.memory_heaps[t.heap_index as usize].size;
    types(mem)
        .enumerate()
        .filter(|(_, t)| t.property_flags.contains(want))
        .max_by_key(|(i, t)| {
            let extra = t.property_flags & !(want | prefer);
            (t.property_flags.contains(prefer), heap_size(t), extra.is_empty(), std::cmp::Reverse(*i))
        })
        .map(|(i, t)| (i as u32, t.property_flags))
}

impl Heap {
    /// Picks a memory type with all of `want` (preferring one that also has `prefer`).
    pub fn new(
        ctx: Arc<Context>,
        kind: HeapKind,
        want: vk::MemoryPropertyFlags,
        prefer: vk::MemoryPropertyFlags,
    ) -> Result<Heap> {
        let (index, flags) = pick_memory_type(&ctx.caps.memory, want, prefer)
            .ok_or_else(|| Error::DeviceUnavailable(format!("no Vulkan memory type with {want:?}")))?;
        let align = ctx.caps.min_storage_align.max(256).next_power_of_two();
        Ok(Heap {
            kind,
            memory_type: index,
            host_visible: flags.contains(vk::MemoryPropertyFlags::HOST_VISIBLE),
            // Staging only carries transfers: small blocks suffice.
            block_size: if kind == HeapKind::Staging { 64 << 20 } else { block_size(&ctx) },
            align,
            blocks: Vec::new(),
            reserved: 0,
            fresh: Vec::new(),
            ctx,
        })
    }

    /// Whether the blocks are mapped into the host (unified memory, staging).
    pub fn mapped(&self) -> bool {
        self.host_visible
    }

    pub fn allocate(&mut self, size: u64) -> Result<Allocation> {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            if let Some(b) = b {
                if let Some(off) = b.ranges.allocate(size) {
                    return Ok(self.make(i, off, size));
                }
            }
        }
        let block_bytes = self.block_size.max(size.div_ceil(self.align) * self.align);
        let block = self.new_block(block_bytes)?;
        let slot = match self.blocks.iter().position(|b| b.is_none()) {
            Some(s) => s,
            None => {
                self.blocks.push(None);
                self.blocks.len() - 1
            }
        };
        self.fresh.push(block.buffer);
        self.blocks[slot] = Some(block);
        let off = self.blocks[slot]
            .as_mut()
            .and_then(|b| b.ranges.allocate(size))
            .ok_or_else(|| Error::Internal("fresh block cannot hold its request".into()))?;
        Ok(self.make(slot, off, size))
    }

    /// Device-only blocks created since the last call, for the submitter to clear once: on
    /// the H100, kernels on never-written device memory ran several times slower.
    pub fn take_fresh_blocks(&mut self) -> Vec<vk::Buffer> {
        let fresh = std::mem::take(&mut self.fresh);
        let live: Vec<vk::Buffer> = self.blocks.iter().flatten().map(|b| b.buffer).collect();
        fresh.into_iter().filter(|b| live.contains(b)).collect()
    }

    fn make(&self, block: usize, offset: u64, size: u64) -> Allocation {
        let b = self.blocks[block].as_ref().expect("live block");
        Allocation {
            heap: self.kind,
            block,
            buffer: b.buffer,
            offset,
            size: b.ranges.round(size),
            mapped: b.mapped.map(|p| unsafe { p.add(offset as usize) }),
        }
    }

    /// Returns the range; a block left empty is released unless it is the only one.
    pub fn free(&mut self, a: &Allocation) {
        let live = self.blocks.iter().filter(|b| b.is_some()).count();
        let Some(Some(b)) = self.blocks.get_mut(a.block) else {
            return;
        };
        b.ranges.free(a.offset, a.size);
        if b.ranges.is_empty() && live > 1 {
            let b = self.blocks[a.block].take().expect("live block");
            self.release(b);
        }
    }

    fn new_block(&mut self, bytes: u64) -> Result<Block> {
        let d = &self.ctx.device;
        let info = vk::BufferCreateInfo::default()
            .size(bytes)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        let buffer = unsafe { d.create_buffer(&info, None) }.map_err(|e| vk_err("vkCreateBuffer", e))?;
        let req = unsafe { d.get_buffer_memory_requirements(buffer) };
        if req.memory_type_bits & (1 << self.memory_type) == 0 {
            unsafe { d.destroy_buffer(buffer, None) };
            return Err(Error::DeviceFailed("buffer cannot live in the chosen memory type".into()));
        }
        let alloc =
            vk::MemoryAllocateInfo::default().allocation_size(req.size).memory_type_index(self.memory_type);
        let memory = match unsafe { d.allocate_memory(&alloc, None) } {
            Ok(m) => m,
            Err(e) => {
                unsafe { d.destroy_buffer(buffer, None) };
                return Err(vk_err("vkAllocateMemory", e));
            }
        };
        let cleanup = |e| {
            unsafe {
                d.destroy_buffer(buffer, None);
                d.free_memory(memory, None);
            }
            vk_err("binding block memory", e)
        };
        unsafe { d.bind_buffer_memory(buffer, memory, 0) }.map_err(cleanup)?;
        let mapped = if self.host_visible {
            let p = unsafe { d.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) }
                .map_err(cleanup)?;
            Some(p as *mut u8)
        } else {
            None
        };
        self.reserved += req.size;
        Ok(Block { memory, bytes: req.size, buffer, mapped, ranges: RangeAllocator::new(bytes, self.align) })
    }

    fn release(&mut self, b: Block) {
        let d = &self.ctx.device;
        unsafe {
            d.destroy_buffer(b.buffer, None);
            d.free_memory(b.memory, None);
        }
        self.reserved = self.reserved.saturating_sub(b.bytes);
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let blocks: Vec<Block> = self.blocks.drain(..).flatten().collect();
        for b in blocks {
            self.release(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pick_memory_type, RangeAllocator};
    use ash::vk;

    #[test]
    fn device_heap_takes_the_large_plain_device_type() {
        use vk::MemoryPropertyFlags as M;
        // NVIDIA-like: host heap, VRAM, and the 256 MiB BAR window listed first.
        let mut mem = vk::PhysicalDeviceMemoryProperties {
            memory_heap_count: 3,
            memory_type_count: 4,
            ..Default::default()
        };
        mem.memory_heaps[0].size = 64 << 30;
        mem.memory_heaps[1].size = 80 << 30;
        mem.memory_heaps[2].size = 256 << 20;
        let ty = |flags, heap| vk::MemoryType { property_flags: flags, heap_index: heap };
        mem.memory_types[0] = ty(M::DEVICE_LOCAL | M::HOST_VISIBLE | M::HOST_COHERENT, 2);
        mem.memory_types[1] = ty(M::HOST_VISIBLE | M::HOST_COHERENT, 0);
        mem.memory_types[2] = ty(M::DEVICE_LOCAL, 1);
        mem.memory_types[3] = ty(M::HOST_VISIBLE | M::HOST_COHERENT | M::HOST_CACHED, 0);
        assert_eq!(pick_memory_type(&mem, M::DEVICE_LOCAL, M::DEVICE_LOCAL).unwrap().0, 2);
        let staging = pick_memory_type(&mem, M::HOST_VISIBLE | M::HOST_COHERENT, M::HOST_CACHED);
        assert_eq!(staging.unwrap().0, 3);
        // Resizable BAR: the host-visible VRAM type is as large; the plain one still wins.
        mem.memory_heaps[2].size = 80 << 30;
        assert_eq!(pick_memory_type(&mem, M::DEVICE_LOCAL, M::DEVICE_LOCAL).unwrap().0, 2);
        assert!(pick_memory_type(&mem, M::LAZILY_ALLOCATED, M::empty()).is_none());
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_coalesce_back() {
        let mut r = RangeAllocator::new(4096, 256);
        let a = r.allocate(1).unwrap();
        let b = r.allocate(300).unwrap();
        let c = r.allocate(256).unwrap();
        assert_eq!((a, b, c), (0, 256, 768));
        assert!(r.allocate(4096).is_none());
        r.free(b, 300);
        // The hole of 512 bytes is reused first-fit.
        assert_eq!(r.allocate(512), Some(256));
        r.free(256, 512);
        r.free(a, 1);
        r.free(c, 256);
        assert!(r.is_empty());
        assert_eq!(r.allocate(4096), Some(0));
    }

    #[test]
    fn freeing_in_any_order_restores_one_range() {
        let mut r = RangeAllocator::new(1 << 20, 256);
        let offs: Vec<u64> = (0..64).map(|i| r.allocate(256 * (i % 5 + 1)).unwrap()).collect();
        for (n, i) in [7usize, 3, 63, 0, 31, 32, 30]
            .into_iter()
            .chain((0..64).filter(|i| ![7, 3, 63, 0, 31, 32, 30].contains(i)))
            .enumerate()
        {
            r.free(offs[i], 256 * (i as u64 % 5 + 1));
            assert_eq!(r.is_empty(), n == 63);
        }
        assert_eq!(r.free_bytes(), 1 << 20);
    }
}
