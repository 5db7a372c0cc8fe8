//! Compute pipelines from the embedded SPIR-V, created on first use and kept. Every shader
//! shares one layout (five storage buffers, 128 bytes of push constants). A VkPipelineCache is
//! loaded from and saved to the cache directory so later runs skip driver compilation.
//! A variant name may carry specialisation constants after a `#`: `gemv_f16#4,8` is the
//! `gemv_f16` SPIR-V with constant_id 0 = 4 and 1 = 8 (tile shapes without file copies).

use super::context::{vk_err, Context};
use crate::error::{Error, Result};
use ash::vk;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/shaders.rs"));

/// Binding slots: inputs 0..=3, output 4.
pub const BINDINGS: u32 = 5;
pub const PUSH_BYTES: u32 = 128;

pub struct Pipelines {
    ctx: Arc<Context>,
    pub set_layout: vk::DescriptorSetLayout,
    pub layout: vk::PipelineLayout,
    cache: vk::PipelineCache,
    cache_file: Option<PathBuf>,
    /// Variants made in earlier runs (kept beside the cache file): their pipelines come out of
    /// the cache in moments, so ops that need them need not wait off the device.
    made_before: Vec<&'static str>,
    pipelines: HashMap<String, vk::Pipeline>,
    /// A pipeline was created since the last `take_created`.
    created: bool,
}

/// Splits `base#c0,c1,..` into the SPIR-V variant and its specialisation constants.
pub fn split_spec(name: &str) -> Result<(&str, Vec<u32>)> {
    let Some((base, list)) = name.split_once('#') else {
        return Ok((name, Vec::new()));
    };
    let values = list
        .split(',')
        .map(|v| v.parse::<u32>().map_err(|_| Error::Internal(format!("bad constants in {name}"))))
        .collect::<Result<Vec<u32>>>()?;
    Ok((base, values))
}

/// `$NPUHYBRID_CACHE_DIR`, else `$XDG_CACHE_HOME/npuhybrid`, else `~/.cache/npuhybrid`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("NPUHYBRID_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("npuhybrid"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("npuhybrid"))
}

impl Pipelines {
    pub fn new(ctx: Arc<Context>) -> Result<Pipelines> {
        let d = &ctx.device;
        let bindings: Vec<vk::DescriptorSetLayoutBinding> = (0..BINDINGS)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let set_layout = unsafe {
            d.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                None,
            )
        }
        .map_err(|e| vk_err("vkCreateDescriptorSetLayout", e))?;
        let ranges =
            [vk::PushConstantRange::default().stage_flags(vk::ShaderStageFlags::COMPUTE).size(PUSH_BYTES)];
        let layouts = [set_layout];
        let layout = match unsafe {
            d.create_pipeline_layout(
                &vk::PipelineLayoutCreateInfo::default().set_layouts(&layouts).push_constant_ranges(&ranges),
                None,
            )
        } {
            Ok(l) => l,
            Err(e) => {
                unsafe { d.destroy_descriptor_set_layout(set_layout, None) };
                return Err(vk_err("vkCreatePipelineLayout", e));
            }
        };
        let caps = &ctx.caps;
        // The driver checks the header (vendor, device, cache UUID) and ignores a foreign file;
        // the name keeps caches of several devices apart.
        let uuid: String = caps.pipeline_cache_uuid.iter().map(|b| format!("{b:02x}")).collect();
        let cache_file = cache_dir()
            .map(|d| d.join(format!("vulkan-{:04x}-{:04x}-{uuid}.bin", caps.vendor_id, caps.device_id)));
        let initial = cache_file.as_ref().and_then(|f| crate::files::read(f).ok()).unwrap_or_default();
        let cache = unsafe {
            d.create_pipeline_cache(&vk::PipelineCacheCreateInfo::default().initial_data(&initial), None)
        }
        .or_else(|_| unsafe { d.create_pipeline_cache(&vk::PipelineCacheCreateInfo::default(), None) })
        .map_err(|e| vk_err("vkCreatePipelineCache", e))?;
        let made_before =
            cache_file.as_ref().map(|f| read_variant_list(&variant_list_file(f))).unwrap_or_default();
        Ok(Pipelines {
            ctx,
            set_layout,
            layout,
            cache,
            cache_file,
            made_before,
            pipelines: HashMap::new(),
            created: false,
        })
    }

    /// The pipeline of a shader variant, created on first use.
    pub fn get(&mut self, name: &str) -> Result<vk::Pipeline> {
        if let Some(p) = self.pipelines.get(name) {
            return Ok(*p);
        }
        let (base, constants) = split_spec(name)?;
        let (_, spv) = SHADERS
            .iter()
            .find(|(n, _)| *n == base)
            .ok_or_else(|| Error::Internal(format!("no shader variant {name}")))?;
        let d = &self.ctx.device;
        let words = ash::util::read_spv(&mut std::io::Cursor::new(spv))
            .map_err(|e| Error::Internal(format!("shader {name}: {e}")))?;
        let module =
            unsafe { d.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None) }
                .map_err(|e| vk_err("vkCreateShaderModule", e))?;
        let entries: Vec<vk::SpecializationMapEntry> = (0..constants.len() as u32)
            .map(|i| vk::SpecializationMapEntry::default().constant_id(i).offset(4 * i).size(4))
            .collect();
        let data: Vec<u8> = constants.iter().flat_map(|c| c.to_le_bytes()).collect();
        let spec = vk::SpecializationInfo::default().map_entries(&entries).data(&data);
        let mut stage = vk::PipelineShaderStageCreateInfo::default()
            .stage(vk::ShaderStageFlags::COMPUTE)
            .module(module)
            .name(c"main");
        if !constants.is_empty() {
            stage = stage.specialization_info(&spec);
        }
        let info = vk::ComputePipelineCreateInfo::default().stage(stage).layout(self.layout);
        let made = unsafe { d.create_compute_pipelines(self.cache, &[info], None) };
        unsafe { d.destroy_shader_module(module, None) };
        let pipeline = made.map_err(|(_, e)| vk_err(&format!("creating pipeline {name}"), e))?[0];
        self.pipelines.insert(name.to_string(), pipeline);
        self.created = true;
        Ok(pipeline)
    }

    /// Whether `get` created a pipeline since the last call (its time is set-up, not run).
    pub fn take_created(&mut self) -> bool {
        std::mem::take(&mut self.created)
    }

    /// Names of every shader variant (for warming the cache ahead of use).
    pub fn variants() -> impl Iterator<Item = &'static str> {
        SHADERS.iter().map(|(name, _)| *name)
    }

    /// Creates the pipeline of `name` now unless it exists; true when it was created.
    pub fn warm(&mut self, name: &str) -> Result<bool> {
        if self.pipelines.contains_key(name) {
            return Ok(false);
        }
        self.get(name)?;
        self.created = false;
        Ok(true)
    }

    /// Variants whose pipelines earlier runs made (and the cache holds), as read at start.
    pub fn made_before(&self) -> &[&'static str] {
        &self.made_before
    }

    /// Writes the pipeline cache to disk, and beside it the list of variants made in this run
    /// and earlier ones (best effort: a read-only home is not an error).
    pub fn save_cache(&self) {
        let Some(file) = &self.cache_file else { return };
        let Ok(data) = (unsafe { self.ctx.device.get_pipeline_cache_data(self.cache) }) else {
            return;
        };
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        write_then_rename(file, &data);
        let mut names: Vec<&str> =
            self.made_before.iter().copied().chain(self.pipelines.keys().map(String::as_str)).collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(MAX_LISTED_VARIANTS);
        write_then_rename(&variant_list_file(file), names.join("\n").as_bytes());
    }

    pub fn cache_file(&self) -> Option<&PathBuf> {
        self.cache_file.as_ref()
    }
}

/// Most variants the list beside the cache keeps (the planner uses a few dozen).
const MAX_LISTED_VARIANTS: usize = 512;

/// The list of variants made, beside the pipeline cache it belongs to: a cache of another
/// driver or device has another name, and so has its list.
fn variant_list_file(cache_file: &std::path::Path) -> PathBuf {
    cache_file.with_extension("variants")
}

/// The variant names in `file` that name a shader of this build with well-formed constants
/// (the file is read as untrusted: anything else in it is skipped).
fn read_variant_list(file: &std::path::Path) -> Vec<&'static str> {
    let Ok(bytes) = crate::files::read(file) else { return Vec::new() };
    String::from_utf8_lossy(&bytes)
        .lines()
        .take(MAX_LISTED_VARIANTS)
        .filter(|name| name.len() <= 128)
        .filter_map(super::ops::variant_name)
        .collect()
}

/// Write then rename, so a concurrent reader never sees half a file.
fn write_then_rename(file: &std::path::Path, data: &[u8]) {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    if std::fs::write(&tmp, data).is_ok() && std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        if !self.pipelines.is_empty() {
            self.save_cache();
        }
        let d = &self.ctx.device;
        unsafe {
            for (_, p) in self.pipelines.drain() {
                d.destroy_pipeline(p, None);
            }
            d.destroy_pipeline_cache(self.cache, None);
            d.destroy_pipeline_layout(self.layout, None);
            d.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}
