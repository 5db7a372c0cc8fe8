//! Vulkan instance, physical-device selection and the logical device with one compute queue.
//! The loader is opened at run time (`ash` feature `loaded`), so a machine without Vulkan
//! only gets an error that names the reason.

use crate::error::{Error, Result};
use ash::vk;
use std::ffi::{c_char, CStr};
use std::sync::Arc;

/// Maps a Vulkan error to the library's: lost devices and exhausted memory are device faults
/// the scheduler falls back on.
pub fn vk_err(what: &str, r: vk::Result) -> Error {
    match r {
        vk::Result::ERROR_DEVICE_LOST => Error::DeviceLost(format!("{what}: {r}")),
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY => {
            Error::OutOfMemory(format!("{what}: {r}"))
        }
        _ => Error::DeviceFailed(format!("{what}: {r}")),
    }
}

/// The loader and instance, shared by every device opened from them and destroyed last.
pub struct Instance {
    /// Keeps the loader library loaded while the instance lives.
    #[allow(dead_code)]
    pub entry: ash::Entry,
    pub instance: ash::Instance,
}

impl Instance {
    /// Opens the loader (`NPUHYBRID_VULKAN_LOADER` names another library file, for tests and
    /// unusual installs) and creates a Vulkan 1.2 instance.
    pub fn new() -> Result<Arc<Instance>> {
        let entry = unsafe {
            match std::env::var_os("NPUHYBRID_VULKAN_LOADER") {
                Some(path) => ash::Entry::load_from(path),
                None => ash::Entry::load(),
            }
        }
        .map_err(|e| Error::DeviceUnavailable(format!("Vulkan loader not found: {e}")))?;
        let version = unsafe { entry.try_enumerate_instance_version() }
            .map_err(|e| vk_err("vkEnumerateInstanceVersion", e))?
            .unwrap_or(vk::API_VERSION_1_0);
        if version < vk::API_VERSION_1_2 {
            return Err(Error::DeviceUnavailable(format!(
                "the Vulkan loader supports API {}, 1.2 is needed",
                version_string(version)
            )));
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"npuhybrid")
            .engine_name(c"npuhybrid")
            .api_version(vk::API_VERSION_1_2);
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        let instance = unsafe { entry.create_instance(&info, None) }
            .map_err(|e| Error::DeviceUnavailable(format!("vkCreateInstance failed: {e}")))?;
        Ok(Arc::new(Instance { entry, instance }))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        unsafe { self.instance.destroy_instance(None) };
    }
}

pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", vk::api_version_major(v), vk::api_version_minor(v), vk::api_version_patch(v))
}

/// What a physical device offers, read once before opening it.
#[derive(Clone, Debug)]
pub struct Capabilities {
    pub name: String,
    pub device_type: vk::PhysicalDeviceType,
    pub api_version: u32,
    pub driver_version: u32,
    pub driver_name: String,
    pub driver_info: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub pipeline_cache_uuid: [u8; 16],
    pub subgroup_size: u32,
    pub subgroup_arithmetic: bool,
    pub subgroup_shuffle: bool,
    pub shared_memory: u32,
    pub shader_f16: bool,
    pub shader_int8: bool,
    pub storage_16bit: bool,
    pub timeline_semaphore: bool,
    pub coopmat_khr: bool,
    pub coopmat_nv: bool,
    /// Fragment shapes (M, N, K) the NV extension offers for f16 x f16 + f32 in a subgroup.
    pub coopmat_shapes: Vec<[u32; 3]>,
    pub queue_family: u32,
    pub timestamp_bits: u32,
    pub timestamp_period: f32,
    pub max_storage_range: u64,
    pub min_storage_align: u64,
    pub max_push_constants: u32,
    pub memory: vk::PhysicalDeviceMemoryProperties,
    /// minImportedHostPointerAlignment of VK_EXT_external_memory_host; 0 without it.
    pub host_import_align: u64,
}

impl Capabilities {
    /// Size of the largest device-local heap.
    pub fn device_local_bytes(&self) -> u64 {
        heaps(&self.memory)
            .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .max()
            .unwrap_or(0)
    }

    /// Host and device share memory: an integrated GPU or a CPU device whose device-local
    /// memory the host can map, so buffers need no staging copies.
    pub fn unified_memory(&self) -> bool {
        let shared_type = types(&self.memory).any(|t| {
            t.property_flags.contains(
                vk::MemoryPropertyFlags::DEVICE_LOCAL
                    | vk::MemoryPropertyFlags::HOST_VISIBLE
                    | vk::MemoryPropertyFlags::HOST_COHERENT,
            )
        });
        shared_type
            && matches!(
                self.device_type,
                vk::PhysicalDeviceType::INTEGRATED_GPU | vk::PhysicalDeviceType::CPU
            )
    }

    /// Missing features that make the device unusable for this backend.
    pub fn unusable_reason(&self) -> Option<String> {
        if self.api_version < vk::API_VERSION_1_2 {
            return Some(format!("Vulkan {} (1.2 needed)", version_string(self.api_version)));
        }
        if !self.timeline_semaphore {
            return Some("no timeline semaphores".into());
        }
        if self.max_push_constants < 128 {
            return Some("fewer than 128 bytes of push constants".into());
        }
        None
    }
}

pub fn heaps(m: &vk::PhysicalDeviceMemoryProperties) -> impl Iterator<Item = &vk::MemoryHeap> {
    m.memory_heaps[..m.memory_heap_count as usize].iter()
}

pub fn types(m: &vk::PhysicalDeviceMemoryProperties) -> impl Iterator<Item = &vk::MemoryType> {
    m.memory_types[..m.memory_type_count as usize].iter()
}

fn c_string(raw: &[c_char]) -> String {
    // Vulkan fills fixed arrays with NUL-terminated strings.
    unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned()
}

/// Reads the capabilities of a physical device; None when it has no compute queue.
pub fn capabilities(inst: &Instance, pdev: vk::PhysicalDevice) -> Option<Capabilities> {
    let i = &inst.instance;
    let families = unsafe { i.get_physical_device_queue_family_properties(pdev) };
    // Prefer a compute queue without graphics (async compute), else any compute queue.
    let compute = |f: &vk::QueueFamilyProperties| f.queue_flags.contains(vk::QueueFlags::COMPUTE);
    let family = families
        .iter()
        .position(|f| compute(f) && !f.queue_flags.contains(vk::QueueFlags::GRAPHICS))
        .or_else(|| families.iter().position(compute))?;
    let exts = unsafe { i.enumerate_device_extension_properties(pdev) }.unwrap_or_default();
    let has_ext =
        |name: &CStr| exts.iter().any(|e| e.extension_name_as_c_str().map(|n| n == name).unwrap_or(false));
    let props10 = unsafe { i.get_physical_device_properties(pdev) };
    let mut driver = vk::PhysicalDeviceDriverProperties::default();
    let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
    let mut host_import = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let has_host_import = has_ext(ash::ext::external_memory_host::NAME);
    let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver).push_next(&mut subgroup);
    if has_host_import {
        props2 = props2.push_next(&mut host_import);
    }
    unsafe { i.get_physical_device_properties2(pdev, &mut props2) };
    let props = props2.properties;
    let host_import_align = if has_host_import { host_import.min_imported_host_pointer_alignment } else { 0 };
    let mut f11 = vk::PhysicalDeviceVulkan11Features::default();
    let mut f12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut feats2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut f11).push_next(&mut f12);
    if props10.api_version >= vk::API_VERSION_1_2 {
        unsafe { i.get_physical_device_features2(pdev, &mut feats2) };
    }
    let memory = unsafe { i.get_physical_device_memory_properties(pdev) };
    let coopmat_nv = has_ext(ash::nv::cooperative_matrix::NAME);
    let coopmat_shapes = if coopmat_nv { coopmat_nv_shapes(inst, pdev) } else { Vec::new() };
    Some(Capabilities {
        name: c_string(&props.device_name),
        device_type: props.device_type,
        api_version: props.api_version,
        driver_version: props.driver_version,
        driver_name: c_string(&driver.driver_name),
        driver_info: c_string(&driver.driver_info),
        vendor_id: props.vendor_id,
        device_id: props.device_id,
        pipeline_cache_uuid: props.pipeline_cache_uuid,
        subgroup_size: subgroup.subgroup_size,
        subgroup_arithmetic: subgroup.supported_operations.contains(vk::SubgroupFeatureFlags::ARITHMETIC)
            && subgroup.supported_stages.contains(vk::ShaderStageFlags::COMPUTE),
        subgroup_shuffle: subgroup.supported_operations.contains(vk::SubgroupFeatureFlags::SHUFFLE)
            && subgroup.supported_stages.contains(vk::ShaderStageFlags::COMPUTE),
        shared_memory: props.limits.max_compute_shared_memory_size,
        shader_f16: f12.shader_float16 == vk::TRUE,
        shader_int8: f12.shader_int8 == vk::TRUE,
        storage_16bit: f11.storage_buffer16_bit_access == vk::TRUE,
        timeline_semaphore: f12.timeline_semaphore == vk::TRUE,
        coopmat_khr: has_ext(ash::khr::cooperative_matrix::NAME),
        coopmat_nv,
        coopmat_shapes,
        queue_family: family as u32,
        timestamp_bits: families[family].timestamp_valid_bits,
        timestamp_period: props.limits.timestamp_period,
        max_storage_range: props.limits.max_storage_buffer_range as u64,
        min_storage_align: props.limits.min_storage_buffer_offset_alignment,
        max_push_constants: props.limits.max_push_constants_size,
        memory,
        host_import_align,
    })
}

/// vkGetPhysicalDeviceCooperativeMatrixPropertiesNV, kept to the f16 x f16 + f32 -> f32
/// subgroup shapes the matmul shader can use.
fn coopmat_nv_shapes(inst: &Instance, pdev: vk::PhysicalDevice) -> Vec<[u32; 3]> {
    let ext = ash::nv::cooperative_matrix::Instance::new(&inst.entry, &inst.instance);
    let get = ext.fp().get_physical_device_cooperative_matrix_properties_nv;
    let mut count = 0u32;
    if unsafe { get(pdev, &mut count, std::ptr::null_mut()) } != vk::Result::SUCCESS {
        return Vec::new();
    }
    let mut props = vec![vk::CooperativeMatrixPropertiesNV::default(); count as usize];
    let r = unsafe { get(pdev, &mut count, props.as_mut_ptr()) };
    if r != vk::Result::SUCCESS && r != vk::Result::INCOMPLETE {
        return Vec::new();
    }
    props.truncate(count as usize);
    props
        .iter()
        .filter(|p| {
            p.a_type == vk::ComponentTypeNV::FLOAT16
                && p.b_type == vk::ComponentTypeNV::FLOAT16
                && p.c_type == vk::ComponentTypeNV::FLOAT32
                && p.d_type == vk::ComponentTypeNV::FLOAT32
                && p.scope == vk::ScopeNV::SUBGROUP
        })
        .map(|p| [p.m_size, p.n_size, p.k_size])
        .collect()
}

/// The fragment shape shaders/matmul_coopmat.comp uses: one that tiles its 64 x 64
/// subgroup quadrant and its K step of 32, the largest such (fewest fragment loads per
/// multiply-add). None: the device offers no shape the shader can use.
pub fn pick_coopmat_shape(shapes: &[[u32; 3]]) -> Option<[u32; 3]> {
    shapes
        .iter()
        .filter(|[m, n, k]| *m > 0 && *n > 0 && *k > 0 && 64 % m == 0 && 64 % n == 0 && 32 % k == 0)
        .max_by_key(|[m, n, k]| (m * n * k, *n))
        .copied()
}

/// An open logical device with its compute queue.
pub struct Context {
    /// Keeps the instance alive until the device is destroyed.
    #[allow(dead_code)]
    inst: Arc<Instance>,
    pub device: ash::Device,
    pub queue: vk::Queue,
    pub caps: Capabilities,
    /// f16 shaders can run (16-bit storage and f16 arithmetic).
    pub f16: bool,
    /// The NV cooperative-matrix feature was enabled and the subgroup size suits the shader.
    pub coopmat: bool,
    /// Fragment shape (M, N, K) of the cooperative-matrix shader, when `coopmat`.
    pub coopmat_shape: [u32; 3],
    /// VK_EXT_external_memory_host, enabled where offered (unless
    /// `NPUHYBRID_VULKAN_NO_HOST_IMPORT` is set): host buffers are read in place on unified
    /// memory, and are the source of uploads on a discrete GPU.
    pub host_import: Option<ash::ext::external_memory_host::Device>,
}

impl Context {
    /// Dense views of host buffers can be read where they lie (imports on unified memory).
    pub fn reads_host_in_place(&self) -> bool {
        self.host_import.is_some() && self.caps.unified_memory()
    }

    /// The GPU can copy uploads straight from imported host memory (a discrete GPU).
    pub fn uploads_from_host_imports(&self) -> bool {
        self.host_import.is_some() && !self.caps.unified_memory()
    }

    pub fn open(inst: Arc<Instance>, pdev: vk::PhysicalDevice, caps: Capabilities) -> Result<Self> {
        let f16 = caps.shader_f16 && caps.storage_16bit;
        let mut coopmat_feat = vk::PhysicalDeviceCooperativeMatrixFeaturesNV::default();
        let mut coopmat = false;
        let shape = pick_coopmat_shape(&caps.coopmat_shapes);
        if caps.coopmat_nv && f16 && caps.subgroup_size == 32 && shape.is_some() {
            let mut probe = vk::PhysicalDeviceFeatures2::default().push_next(&mut coopmat_feat);
            unsafe { inst.instance.get_physical_device_features2(pdev, &mut probe) };
            coopmat = coopmat_feat.cooperative_matrix == vk::TRUE;
        }
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(caps.queue_family)
            .queue_priorities(&priorities)];
        let mut f11 =
            vk::PhysicalDeviceVulkan11Features::default().storage_buffer16_bit_access(caps.storage_16bit);
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default()
            .timeline_semaphore(true)
            .shader_float16(caps.shader_f16);
        let mut coopmat_on =
            vk::PhysicalDeviceCooperativeMatrixFeaturesNV::default().cooperative_matrix(true);
        let mut exts: Vec<*const c_char> = Vec::new();
        let mut info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .push_next(&mut f11)
            .push_next(&mut f12);
        if coopmat {
            exts.push(ash::nv::cooperative_matrix::NAME.as_ptr());
            info = info.push_next(&mut coopmat_on);
        }
        // Imported host memory is read in place on unified memory, and is the source of
        // uploads on a discrete GPU (the GPU copies it; no staging copy on the host).
        let host_import =
            caps.host_import_align > 0 && std::env::var_os("NPUHYBRID_VULKAN_NO_HOST_IMPORT").is_none();
        if host_import {
            exts.push(ash::ext::external_memory_host::NAME.as_ptr());
        }
        info = info.enabled_extension_names(&exts);
        let device = unsafe { inst.instance.create_device(pdev, &info, None) }
            .map_err(|e| vk_err("vkCreateDevice", e))?;
        let queue = unsafe { device.get_device_queue(caps.queue_family, 0) };
        let coopmat_shape = shape.unwrap_or([16, 16, 16]);
        let host_import =
            host_import.then(|| ash::ext::external_memory_host::Device::new(&inst.instance, &device));
        Ok(Context { inst, device, queue, caps, f16, coopmat, coopmat_shape, host_import })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe {
            let _ = self.device.device_wait_idle();
            self.device.destroy_device(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pick_coopmat_shape;

    #[test]
    fn coopmat_shape_is_the_largest_that_tiles_the_shader() {
        assert_eq!(pick_coopmat_shape(&[[16, 8, 16], [16, 16, 16], [16, 8, 8]]), Some([16, 16, 16]));
        assert_eq!(pick_coopmat_shape(&[[16, 8, 8], [16, 8, 16]]), Some([16, 8, 16]));
        // 48 rows do not tile 64; K 64 is more than one step.
        assert_eq!(pick_coopmat_shape(&[[48, 16, 16], [16, 16, 64]]), None);
        assert_eq!(pick_coopmat_shape(&[]), None);
    }
}
