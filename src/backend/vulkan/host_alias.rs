//! Zero-copy reads on unified-memory devices (an APU's iGPU, lavapipe): the pages of a host
//! buffer are imported once (`VK_EXT_external_memory_host`) and a dense view of them is bound
//! where it lies, instead of being copied into a replica. Weights then exist once in memory,
//! and an input changed by the host needs no upload.
//!
//! Only reads go through an alias: outputs still land in device memory and are written back,
//! so the submission's ordering rules (submit.rs) are unchanged. An import lives while its
//! buffer does; it is released at the next submission after the buffer is gone (the GPU is
//! idle between submissions of this backend, so nothing can still read the pages).

use super::alloc::{Allocation, HeapKind};
use super::context::{types, vk_err, Context};
use crate::error::{Error, Result};
use crate::memory::{Buffer, BufferId};
use crate::op::TensorView;
use ash::vk;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

const HANDLE: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;

/// Bound beyond a view's last byte, as device allocations are: shaders may load whole
/// vectors past a row's end.
const TAIL: u64 = 256;

/// One imported buffer.
struct Import {
    owner: Weak<Buffer>,
    /// First byte of the imported pages (the buffer's own first byte).
    base: usize,
    len: u64,
    memory: vk::DeviceMemory,
    buffer: vk::Buffer,
}

pub struct HostAliases {
    ctx: Arc<Context>,
    imports: HashMap<BufferId, Import>,
    /// Buffers whose pages the driver would not import: copied as before while they live.
    refused: HashMap<BufferId, Weak<Buffer>>,
}

// Vulkan handles are used only under the backend's mutex; the base address is never
// dereferenced here.
unsafe impl Send for HostAliases {}

/// Whether `v` of `buf` can be read in place on a device whose imports need `align` and
/// whose storage-buffer offsets need `offset_align`: a dense view, at an allowed offset, of
/// a buffer whose pages are whole import units.
pub fn eligible(align: u64, offset_align: u64, buf: &Buffer, v: &TensorView) -> bool {
    let Some((base, len)) = buf.host_pages() else { return false };
    align > 0
        && v.is_contiguous()
        && (base as u64) % align == 0
        && (len as u64) % align == 0
        && (v.offset as u64) % offset_align.max(4) == 0
}

impl HostAliases {
    /// None when the context did not enable host imports.
    pub fn new(ctx: Arc<Context>) -> Option<HostAliases> {
        ctx.host_import.as_ref()?;
        Some(HostAliases { ctx, imports: HashMap::new(), refused: HashMap::new() })
    }

    /// Device memory that is `v` itself, or None (not eligible, or the driver refused).
    pub fn view(&mut self, buf: &Arc<Buffer>, v: &TensorView) -> Option<Allocation> {
        let caps = &self.ctx.caps;
        if !eligible(caps.host_import_align, caps.min_storage_align, buf, v)
            || self.refused.contains_key(&buf.id())
        {
            return None;
        }
        let import = match self.imports.get(&buf.id()) {
            // The same id over other pages cannot happen while the owner lives (ids are
            // handles); a dead owner's import is replaced.
            Some(i) if i.owner.upgrade().is_some_and(|b| Arc::ptr_eq(&b, buf)) => i,
            _ => {
                if let Some(old) = self.imports.remove(&buf.id()) {
                    self.release(old);
                }
                match self.import(buf) {
                    Ok(i) => self.imports.entry(buf.id()).or_insert(i),
                    Err(e) => {
                        log::debug!("buffer {:#x} is copied to the GPU: {e}", buf.id());
                        self.refused.insert(buf.id(), Arc::downgrade(buf));
                        return None;
                    }
                }
            }
        };
        let offset = v.offset as u64;
        let size = (v.bytes() as u64 + TAIL).min(import.len - offset);
        Some(Allocation {
            heap: HeapKind::HostAlias,
            block: 0,
            buffer: import.buffer,
            offset,
            size,
            mapped: Some((import.base + v.offset) as *mut u8),
        })
    }

    /// Releases the imports of buffers that no longer exist.
    pub fn evict_dead(&mut self) {
        let dead: Vec<BufferId> =
            self.imports.iter().filter(|(_, i)| i.owner.strong_count() == 0).map(|(id, _)| *id).collect();
        for id in dead {
            if let Some(i) = self.imports.remove(&id) {
                self.release(i);
            }
        }
        self.refused.retain(|_, owner| owner.strong_count() > 0);
    }

    /// Imports and binds a buffer's pages.
    fn import(&self, buf: &Arc<Buffer>) -> Result<Import> {
        let (base, len) = buf.host_pages().ok_or_else(|| Error::Internal("no host pages".into()))?;
        let d = &self.ctx.device;
        let ext = self.ctx.host_import.as_ref().expect("imports are enabled");
        let mut props = vk::MemoryHostPointerPropertiesEXT::default();
        let r = unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                d.handle(),
                HANDLE,
                base as *const _,
                &mut props,
            )
        };
        if r != vk::Result::SUCCESS {
            return Err(vk_err("vkGetMemoryHostPointerPropertiesEXT", r));
        }
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(HANDLE);
        let info = vk::BufferCreateInfo::default()
            .size(len as u64)
            .usage(vk::BufferUsageFlags::STORAGE_BUFFER | vk::BufferUsageFlags::TRANSFER_SRC)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut external);
        let buffer = unsafe { d.create_buffer(&info, None) }.map_err(|e| vk_err("vkCreateBuffer", e))?;
        let req = unsafe { d.get_buffer_memory_requirements(buffer) };
        // Host writes between submissions must be seen without flushes: coherent types only.
        let memory_type = types(&self.ctx.caps.memory).enumerate().position(|(i, t)| {
            (req.memory_type_bits & props.memory_type_bits) & (1 << i) != 0
                && t.property_flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT)
        });
        let Some(memory_type) = memory_type.filter(|_| req.size <= len as u64) else {
            unsafe { d.destroy_buffer(buffer, None) };
            return Err(Error::DeviceFailed("no coherent memory type can hold the imported pages".into()));
        };
        let mut from_host =
            vk::ImportMemoryHostPointerInfoEXT::default().handle_type(HANDLE).host_pointer(base as *mut _);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(len as u64)
            .memory_type_index(memory_type as u32)
            .push_next(&mut from_host);
        let memory = match unsafe { d.allocate_memory(&alloc, None) } {
            Ok(m) => m,
            Err(e) => {
                unsafe { d.destroy_buffer(buffer, None) };
                return Err(vk_err("importing host memory", e));
            }
        };
        if let Err(e) = unsafe { d.bind_buffer_memory(buffer, memory, 0) } {
            unsafe {
                d.destroy_buffer(buffer, None);
                d.free_memory(memory, None);
            }
            return Err(vk_err("binding imported memory", e));
        }
        Ok(Import { owner: Arc::downgrade(buf), base: base as usize, len: len as u64, memory, buffer })
    }

    fn release(&self, i: Import) {
        unsafe {
            self.ctx.device.destroy_buffer(i.buffer, None);
            self.ctx.device.free_memory(i.memory, None);
        }
    }
}

impl Drop for HostAliases {
    fn drop(&mut self) {
        for (_, i) in std::mem::take(&mut self.imports) {
            self.release(i);
        }
    }
}
