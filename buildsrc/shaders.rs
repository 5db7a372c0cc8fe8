//! GLSL compute shaders are compiled to SPIR-V at build time with `glslc` (Debian package
//! `glslc`), one SPIR-V file per variant (dtype defines), and embedded through a generated
//! `shaders.rs` in OUT_DIR. Cooperative-matrix shaders use GL_NV_cooperative_matrix, which this
//! glslc accepts (it rejects GL_KHR_cooperative_matrix), so no other toolchain is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (variant name, source file, defines).
const VARIANTS: &[(&str, &str, &[&str])] = &[
    ("binary_f32", "binary.comp", &[]),
    ("binary_f16", "binary.comp", &["F16"]),
    ("unary_f32", "unary.comp", &[]),
    ("unary_f16", "unary.comp", &["F16"]),
    ("softmax_f32", "softmax.comp", &[]),
    ("softmax_f16", "softmax.comp", &["F16"]),
    ("norm_f32", "norm.comp", &[]),
    ("norm_f16", "norm.comp", &["F16"]),
    ("rope_f32", "rope.comp", &[]),
    ("rope_f16", "rope.comp", &["F16"]),
    ("attention_f32", "attention.comp", &[]),
    ("attention_f16", "attention.comp", &["F16"]),
    ("attention_tiled32_f32", "attention_tiled.comp", &["TD=32u"]),
    ("attention_tiled32_f16", "attention_tiled.comp", &["F16", "TD=32u"]),
    ("attention_tiled64_f32", "attention_tiled.comp", &["TD=64u"]),
    ("attention_tiled64_f16", "attention_tiled.comp", &["F16", "TD=64u"]),
    ("attention_tiled128_f32", "attention_tiled.comp", &["TD=128u", "SPLIT2"]),
    ("attention_tiled128_f16", "attention_tiled.comp", &["F16", "TD=128u", "SPLIT2"]),
    ("patch_b32", "patch.comp", &[]),
    ("patch_b16", "patch.comp", &["B16"]),
    ("convert_f32_f16", "convert.comp", &["OUT_F16"]),
    ("convert_f16_f32", "convert.comp", &["F16"]),
    ("matmul_f32", "matmul.comp", &[]),
    ("matmul_f16", "matmul.comp", &["F16", "OUT_F16"]),
    ("matmul_f16_f32", "matmul.comp", &["F16"]),
    // Tile loaders fixed at compile time for row-major A and B ([K, N]: nn, [N, K]: nt).
    ("matmul_f32_nn", "matmul.comp", &["A_MODE=2u", "B_MODE=3u"]),
    ("matmul_f32_nt", "matmul.comp", &["A_MODE=2u", "B_MODE=2u"]),
    ("matmul_f16_nn", "matmul.comp", &["F16", "OUT_F16", "A_MODE=2u", "B_MODE=3u"]),
    ("matmul_f16_nt", "matmul.comp", &["F16", "OUT_F16", "A_MODE=2u", "B_MODE=2u"]),
    ("matmul_f16_f32_nn", "matmul.comp", &["F16", "A_MODE=2u", "B_MODE=3u"]),
    ("matmul_f16_f32_nt", "matmul.comp", &["F16", "A_MODE=2u", "B_MODE=2u"]),
    ("gemv_f32", "gemv.comp", &[]),
    ("gemv_f16", "gemv.comp", &["F16", "OUT_F16"]),
    ("gemv_f16_f32", "gemv.comp", &["F16"]),
    // Block-quantized B (quant.glsl): the GEMV for few rows of A, and the tiled matmul with
    // a dequantising B loader for the rest.
    ("gemvq_q8_0_f32", "gemv_quant.comp", &["Q8_0"]),
    ("gemvq_q8_0_f16", "gemv_quant.comp", &["F16", "OUT_F16", "Q8_0"]),
    ("gemvq_q8_0_f16_f32", "gemv_quant.comp", &["F16", "Q8_0"]),
    ("gemvq_q4_0_f32", "gemv_quant.comp", &["Q4_0"]),
    ("gemvq_q4_0_f16", "gemv_quant.comp", &["F16", "OUT_F16", "Q4_0"]),
    ("gemvq_q4_0_f16_f32", "gemv_quant.comp", &["F16", "Q4_0"]),
    ("gemvq_q4_1_f32", "gemv_quant.comp", &["Q4_1"]),
    ("gemvq_q4_1_f16", "gemv_quant.comp", &["F16", "OUT_F16", "Q4_1"]),
    ("gemvq_q4_1_f16_f32", "gemv_quant.comp", &["F16", "Q4_1"]),
    ("gemvq_q4_g128_f32", "gemv_quant.comp", &["Q4G128"]),
    ("gemvq_q4_g128_f16", "gemv_quant.comp", &["F16", "OUT_F16", "Q4G128"]),
    ("gemvq_q4_g128_f16_f32", "gemv_quant.comp", &["F16", "Q4G128"]),
    // Plain f16 weights through the quantized GEMV's structure (NPUHYBRID_VULKAN_GEMV=rows).
    ("gemvq_f16w_f16", "gemv_quant.comp", &["F16", "OUT_F16", "DENSE_F16"]),
    ("gemvq_f16w_f16_f32", "gemv_quant.comp", &["F16", "DENSE_F16"]),
    // f16 weights under f32 activations: the only shader that takes them.
    ("gemvq_f16w_f32", "gemv_quant.comp", &["DENSE_F16"]),
    ("matmul_q8_0_f32", "matmul.comp", &["QUANT_B", "B_MODE=2u", "Q8_0"]),
    ("matmul_q8_0_f16", "matmul.comp", &["F16", "OUT_F16", "QUANT_B", "B_MODE=2u", "Q8_0"]),
    ("matmul_q8_0_f16_f32", "matmul.comp", &["F16", "QUANT_B", "B_MODE=2u", "Q8_0"]),
    ("matmul_q4_0_f32", "matmul.comp", &["QUANT_B", "B_MODE=2u", "Q4_0"]),
    ("matmul_q4_0_f16", "matmul.comp", &["F16", "OUT_F16", "QUANT_B", "B_MODE=2u", "Q4_0"]),
    ("matmul_q4_0_f16_f32", "matmul.comp", &["F16", "QUANT_B", "B_MODE=2u", "Q4_0"]),
    ("matmul_q4_1_f32", "matmul.comp", &["QUANT_B", "B_MODE=2u", "Q4_1"]),
    ("matmul_q4_1_f16", "matmul.comp", &["F16", "OUT_F16", "QUANT_B", "B_MODE=2u", "Q4_1"]),
    ("matmul_q4_1_f16_f32", "matmul.comp", &["F16", "QUANT_B", "B_MODE=2u", "Q4_1"]),
    ("matmul_q4_g128_f32", "matmul.comp", &["QUANT_B", "B_MODE=2u", "Q4G128"]),
    ("matmul_q4_g128_f16", "matmul.comp", &["F16", "OUT_F16", "QUANT_B", "B_MODE=2u", "Q4G128"]),
    ("matmul_q4_g128_f16_f32", "matmul.comp", &["F16", "QUANT_B", "B_MODE=2u", "Q4G128"]),
    ("coopmat_f16_nn", "matmul_coopmat.comp", &["F16", "OUT_F16", "B_MODE=3u"]),
    ("coopmat_f16_nt", "matmul_coopmat.comp", &["F16", "OUT_F16", "B_MODE=2u"]),
    ("coopmat_f16_f32_nn", "matmul_coopmat.comp", &["F16", "B_MODE=3u"]),
    ("coopmat_f16_f32_nt", "matmul_coopmat.comp", &["F16", "B_MODE=2u"]),
    // The same with the fragments emulated in plain code, for lavapipe (tests only).
    ("coopmat_emu_f16_nn", "matmul_coopmat.comp", &["F16", "OUT_F16", "B_MODE=3u", "EMULATE_COOPMAT"]),
    ("coopmat_emu_f16_nt", "matmul_coopmat.comp", &["F16", "OUT_F16", "B_MODE=2u", "EMULATE_COOPMAT"]),
    ("coopmat_emu_f16_f32_nn", "matmul_coopmat.comp", &["F16", "B_MODE=3u", "EMULATE_COOPMAT"]),
    ("coopmat_emu_f16_f32_nt", "matmul_coopmat.comp", &["F16", "B_MODE=2u", "EMULATE_COOPMAT"]),
    // The first cooperative-matrix shader, kept for A/B runs on the GPU
    // (NPUHYBRID_VULKAN_COOPMAT=v1); to be removed once the new one is measured.
    ("coopmat_v1_f16_nn", "matmul_coopmat_v1.comp", &["F16", "OUT_F16", "B_MODE=3u"]),
    ("coopmat_v1_f16_nt", "matmul_coopmat_v1.comp", &["F16", "OUT_F16", "B_MODE=2u"]),
    ("coopmat_v1_f16_f32_nn", "matmul_coopmat_v1.comp", &["F16", "B_MODE=3u"]),
    ("coopmat_v1_f16_f32_nt", "matmul_coopmat_v1.comp", &["F16", "B_MODE=2u"]),
];

pub fn run() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = root.join("shaders");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-env-changed=GLSLC");
    let glslc = std::env::var("GLSLC").unwrap_or_else(|_| "glslc".to_string());
    if Command::new(&glslc).arg("--version").output().is_err() {
        panic!(
            "`{glslc}` was not found: the Vulkan shaders are compiled at build time with glslc. \
             Install the Debian/Ubuntu package `glslc` (apt-get install glslc) or set GLSLC to its path."
        );
    }
    // Compile all variants at once; glslc is single threaded.
    let children: Vec<_> = VARIANTS
        .iter()
        .map(|(name, file, defines)| {
            let spv = out.join(format!("{name}.spv"));
            let mut cmd = Command::new(&glslc);
            cmd.arg("--target-env=vulkan1.2").arg("-O").arg("-fshader-stage=compute").arg("-I").arg(&src);
            for d in defines.iter() {
                cmd.arg(format!("-D{d}"));
            }
            cmd.arg(src.join(file)).arg("-o").arg(&spv);
            let child = cmd.spawn().unwrap_or_else(|e| panic!("running {glslc}: {e}"));
            (name, child)
        })
        .collect();
    for (name, child) in children {
        let status = child.wait_with_output().expect("waiting for glslc").status;
        if !status.success() {
            panic!("glslc failed to compile shader variant {name} (see the messages above)");
        }
    }
    write_table(&out);
}

fn write_table(out: &Path) {
    let mut code = String::from("// Generated by buildsrc/shaders.rs.\n");
    code.push_str("pub const SHADERS: &[(&str, &[u8])] = &[\n");
    for (name, _, _) in VARIANTS {
        code.push_str(&format!(
            "    (\"{name}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.spv\"))),\n"
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("shaders.rs"), code).expect("writing shaders.rs");
}
