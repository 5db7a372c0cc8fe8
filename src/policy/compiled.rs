//! TEMPORARY placeholder until the policy compiler lands: every op may run anywhere,
//! earliest expected completion first. Keeps the public API the real compiler provides.

use super::*;
use std::sync::Arc;

#[derive(Debug)]
pub struct CompiledPolicy {
    name: String,
    candidates: Vec<DeviceClass>,
    fallback: FallbackSpec,
    settings: [DeviceSettings; 3],
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CompiledPolicy {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn decide(&self, _q: &OpQuery) -> Decision<'_> {
        Decision {
            rule_index: 0,
            rule_label: "default",
            candidates: &self.candidates,
            strategy: Strategy::EarliestCompletion,
            split: None,
            fallback: &self.fallback,
        }
    }

    pub fn settings(&self, class: DeviceClass) -> &DeviceSettings {
        &self.settings[class as usize]
    }

    pub fn thermal_rules(&self) -> &[ThermalRule] {
        &[]
    }

    pub fn dump(&self) -> String {
        format!("policy {}", self.name)
    }

    pub fn explain(&self, q: &OpQuery) -> String {
        format!("{} {}: rule default", q.kind, q.dtype)
    }
}

pub fn builtin(name: &str) -> Option<Arc<CompiledPolicy>> {
    (name == "default").then(|| {
        let s = DeviceSettings { enabled: true, ..Default::default() };
        Arc::new(CompiledPolicy {
            name: name.to_string(),
            candidates: vec![DeviceClass::Npu, DeviceClass::Gpu, DeviceClass::Cpu],
            fallback: FallbackSpec::default(),
            settings: [s.clone(), s.clone(), s],
        })
    })
}

pub fn builtin_names() -> &'static [&'static str] {
    &["default"]
}

#[derive(Debug, Clone, Default)]
pub struct PolicyLimits;

pub fn compile_file(_path: &std::path::Path, _limits: &PolicyLimits) -> Result<CompiledPolicy, PolicyError> {
    Err(PolicyError { message: "policy compiler not built yet".into() })
}

pub fn compile_str(_origin: &str, _src: &str) -> Result<CompiledPolicy, PolicyError> {
    Err(PolicyError { message: "policy compiler not built yet".into() })
}
