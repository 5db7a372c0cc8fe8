//! The kernel directory: `manifest.json` lists prebuilt NPU kernels (an xclbin plus the
//! instruction stream that mlir-aie / IRON emit for a design), what each computes and the shape
//! of one launch. Format documented in docs/XRT.md.

use crate::op::DType;
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const ENV_KERNEL_DIR: &str = "NPUHYBRID_XRT_KERNELS";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    kernels: Vec<RawKernel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTile {
    m: usize,
    k: usize,
    n: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    op: String,
    dtype_in: String,
    dtype_out: String,
    tile: RawTile,
    #[serde(default)]
    b_layout: Option<String>,
    xclbin: String,
    instructions: String,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    opcode: Option<u64>,
    #[serde(default)]
    args: Option<ArgLayout>,
    #[serde(default)]
    gflops: Option<f64>,
}

/// Positions of the kernel's arguments. The default is mlir-aie's host convention:
/// `(opcode, instr, ninstr, a, b, c, scratch, trace)`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArgLayout {
    pub opcode: i32,
    pub instr: i32,
    pub ninstr: i32,
    pub a: i32,
    pub b: i32,
    pub c: i32,
    /// Buffers the design declares but this op does not use (scratch, trace): each gets a
    /// small buffer of its own.
    #[serde(default)]
    pub scratch: Vec<i32>,
}

impl Default for ArgLayout {
    fn default() -> Self {
        ArgLayout { opcode: 0, instr: 1, ninstr: 2, a: 3, b: 4, c: 5, scratch: vec![6, 7] }
    }
}

/// How the kernel expects B: `k x n` row-major, or `n x k` (column-major B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BLayout {
    RowMajor,
    ColMajor,
}

/// One launch computes C[m x n] = A[m x k] * B[k x n] for these sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    pub dtype_in: DType,
    pub dtype_out: DType,
    pub tile: Tile,
    pub b_layout: BLayout,
    pub xclbin: PathBuf,
    pub instructions: PathBuf,
    pub kernel_name: String,
    pub opcode: u64,
    pub args: ArgLayout,
    /// Throughput the kernel's author measured, if given (seeds the performance model).
    pub gflops: Option<f64>,
}

impl KernelSpec {
    pub fn a_bytes(&self) -> usize {
        self.tile.m * self.tile.k * self.dtype_in.size()
    }
    pub fn b_bytes(&self) -> usize {
        self.tile.k * self.tile.n * self.dtype_in.size()
    }
    pub fn c_bytes(&self) -> usize {
        self.tile.m * self.tile.n * self.dtype_out.size()
    }
}

/// A file name from the manifest: relative, inside the directory.
fn inside(dir: &Path, name: &str, what: &str) -> Result<PathBuf, String> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("{what} '{name}' must be a relative path inside the kernel directory"));
    }
    let path = dir.join(rel);
    if !path.is_file() {
        return Err(format!("{what} {} does not exist", path.display()));
    }
    Ok(path)
}

fn dtype(name: &str, what: &str) -> Result<DType, String> {
    DType::from_name(name).ok_or_else(|| format!("{what} '{name}' is not a dtype"))
}

/// Reads and checks `dir/manifest.json`.
pub fn load(dir: &Path) -> Result<Vec<KernelSpec>, String> {
    let path = dir.join(MANIFEST);
    let text =
        crate::files::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(dir, &text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(dir: &Path, text: &str) -> Result<Vec<KernelSpec>, String> {
    let raw: RawManifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if raw.format != 1 {
        return Err(format!("format {} is not supported (1)", raw.format));
    }
    if raw.kernels.is_empty() {
        return Err("no kernels listed".into());
    }
    raw.kernels
        .into_iter()
        .enumerate()
        .map(|(i, k)| kernel(dir, k).map_err(|e| format!("kernels[{i}]: {e}")))
        .collect()
}

fn kernel(dir: &Path, k: RawKernel) -> Result<KernelSpec, String> {
    if k.op != "matmul" {
        return Err(format!("op '{}': only matmul kernels are supported", k.op));
    }
    let dtype_in = dtype(&k.dtype_in, "dtype_in")?;
    let dtype_out = dtype(&k.dtype_out, "dtype_out")?;
    if !dtype_in.is_float() {
        return Err(format!("dtype_in {dtype_in}: the runtime's matmul takes f32, f16 or bf16"));
    }
    if !dtype_out.is_float() {
        return Err(format!("dtype_out {dtype_out}: must be f32, f16 or bf16"));
    }
    let RawTile { m, k: kk, n } = k.tile;
    if m == 0 || kk == 0 || n == 0 || m.max(kk).max(n) > 1 << 16 {
        return Err(format!("tile {m}x{kk}x{n} must have sizes in 1..=65536"));
    }
    let b_layout = match k.b_layout.as_deref() {
        None | Some("row_major") => BLayout::RowMajor,
        Some("col_major") => BLayout::ColMajor,
        Some(other) => return Err(format!("b_layout '{other}' is not row_major or col_major")),
    };
    if let Some(g) = k.gflops {
        if !(g.is_finite() && g > 0.0) {
            return Err(format!("gflops {g} must be positive"));
        }
    }
    Ok(KernelSpec {
        dtype_in,
        dtype_out,
        tile: Tile { m, k: kk, n },
        b_layout,
        xclbin: inside(dir, &k.xclbin, "xclbin")?,
        instructions: inside(dir, &k.instructions, "instructions")?,
        kernel_name: k.kernel.unwrap_or_else(|| "MLIR_AIE".into()),
        opcode: k.opcode.unwrap_or(3),
        args: k.args.unwrap_or_default(),
        gflops: k.gflops,
    })
}

/// Reads an instruction stream: mlir-aie's text form (one 32-bit hex word per line) or its
/// binary form (little-endian 32-bit words).
pub fn read_instructions(path: &Path) -> Result<Vec<u32>, String> {
    let bytes = crate::files::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let words = if path.extension().is_some_and(|e| e == "txt") {
        let text = String::from_utf8(bytes).map_err(|_| format!("{}: not text", path.display()))?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, l)| {
                u32::from_str_radix(l.trim_start_matches("0x"), 16)
                    .map_err(|_| format!("{} line {}: '{l}' is not a hex word", path.display(), i + 1))
            })
            .collect::<Result<Vec<u32>, String>>()?
    } else {
        if bytes.len() % 4 != 0 {
            return Err(format!(
                "{}: {} bytes is not a whole number of 32-bit words",
                path.display(),
                bytes.len()
            ));
        }
        bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    };
    if words.is_empty() {
        return Err(format!("{}: empty instruction stream", path.display()));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        d
    }

    const ONE: &str = r#"{ "format": 1, "kernels": [ {
        "op": "matmul", "dtype_in": "bf16", "dtype_out": "f32",
        "tile": { "m": 64, "k": 128, "n": 32 },
        "xclbin": "mm.xclbin", "instructions": "mm.insts.txt" } ] }"#;

    #[test]
    fn parses_with_mlir_aie_defaults() {
        let d = dir_with(&["mm.xclbin", "mm.insts.txt"]);
        let k = &parse(d.path(), ONE).unwrap()[0];
        assert_eq!((k.dtype_in, k.dtype_out), (DType::BF16, DType::F32));
        assert_eq!(k.tile, Tile { m: 64, k: 128, n: 32 });
        assert_eq!(k.kernel_name, "MLIR_AIE");
        assert_eq!(k.opcode, 3);
        assert_eq!(k.args, ArgLayout::default());
        assert_eq!(k.b_layout, BLayout::RowMajor);
        assert_eq!((k.a_bytes(), k.b_bytes(), k.c_bytes()), (64 * 128 * 2, 128 * 32 * 2, 64 * 32 * 4));
        assert_eq!(k.xclbin, d.path().join("mm.xclbin"));
    }

    #[test]
    fn rejects_bad_manifests_with_a_reason() {
        let d = dir_with(&["mm.xclbin", "mm.insts.txt"]);
        let cases = [
            (ONE.replace("matmul", "softmax"), "only matmul"),
            (ONE.replace("\"bf16\"", "\"i8\""), "dtype_in i8"),
            (ONE.replace("\"m\": 64", "\"m\": 0"), "tile 0x128x32"),
            (ONE.replace("mm.xclbin", "../mm.xclbin"), "relative path inside"),
            (ONE.replace("mm.insts.txt", "gone.txt"), "does not exist"),
            (ONE.replace("\"op\"", "\"opp\""), "unknown field"),
            (ONE.replace("\"format\": 1", "\"format\": 2"), "format 2"),
        ];
        for (text, want) in cases {
            let err = parse(d.path(), &text).unwrap_err();
            assert!(err.contains(want), "expected '{want}' in: {err}");
        }
    }

    #[test]
    fn reads_both_instruction_forms() {
        let d = tempfile::tempdir().unwrap();
        let txt = d.path().join("i.txt");
        std::fs::write(&txt, "06030100\n00000105\n\n0x00000001\n").unwrap();
        assert_eq!(read_instructions(&txt).unwrap(), [0x0603_0100, 0x105, 1]);
        let bin = d.path().join("i.bin");
        std::fs::write(&bin, [0u8, 1, 3, 6, 5, 1, 0, 0]).unwrap();
        assert_eq!(read_instructions(&bin).unwrap(), [0x0603_0100, 0x105]);
        std::fs::write(&bin, [0u8, 1, 3]).unwrap();
        assert!(read_instructions(&bin).unwrap_err().contains("32-bit words"));
        std::fs::write(&txt, "zz\n").unwrap();
        assert!(read_instructions(&txt).unwrap_err().contains("line 1"));
    }
}
