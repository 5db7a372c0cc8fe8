//! The kernel directory: `manifest.json` lists prebuilt NPU kernels: an xclbin (the compiled
//! array design, one hardware context) with one or more instruction streams that mlir-aie /
//! IRON emit for it (one per launch shape), what each computes, the device they were built for
//! and a sha256 per file. Format documented in docs/XRT.md; `tools/npu_kernels.sh` builds one.

use crate::op::DType;
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const ENV_KERNEL_DIR: &str = "NPUHYBRID_XRT_KERNELS";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    device: String,
    kernels: Vec<RawKernel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    tile: RawTile,
    file: String,
    sha256: String,
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
    #[serde(default)]
    b_layout: Option<String>,
    xclbin: String,
    xclbin_sha256: String,
    instructions: Vec<RawStream>,
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

/// A PCI vendor:device id, as `lspci -n` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciId {
    pub vendor: u16,
    pub device: u16,
}

impl PciId {
    pub fn parse(text: &str) -> Option<PciId> {
        let (v, d) = text.trim().split_once(':')?;
        let hex = |s: &str| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        Some(PciId { vendor: hex(v)?, device: hex(d)? })
    }

    /// The NPU generation and mlir-aie target, for messages.
    pub fn describe(self) -> String {
        let what = match (self.vendor, self.device) {
            (0x1022, 0x1502) => " (XDNA1: Phoenix / Hawk Point, mlir-aie target npu, 4 columns)",
            (0x1022, 0x17f0) => " (XDNA2: Strix / Krackan, mlir-aie target npu2, 8 columns)",
            _ => "",
        };
        format!("{self}{what}")
    }

    /// Hardware contexts the device allows at once, where known (Phoenix: 6).
    pub fn max_contexts(self) -> Option<usize> {
        (self == PciId { vendor: 0x1022, device: 0x1502 }).then_some(6)
    }
}

impl std::fmt::Display for PciId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.device)
    }
}

/// A checked manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The device the kernels were built for.
    pub device: PciId,
    /// One per instruction stream; streams of one xclbin share its hardware context.
    pub kernels: Vec<KernelSpec>,
}

impl Manifest {
    /// Refuses kernels built for another device, or more xclbins than it has contexts.
    pub fn check_device(&self, actual: PciId) -> Result<(), String> {
        if actual != self.device {
            return Err(format!(
                "the kernels were built for {} but this NPU is {}: use kernels built for it (tools/npu_kernels.sh)",
                self.device.describe(),
                actual.describe()
            ));
        }
        let mut xclbins: Vec<&Path> = self.kernels.iter().map(|k| k.xclbin.as_path()).collect();
        xclbins.sort();
        xclbins.dedup();
        match actual.max_contexts() {
            Some(max) if xclbins.len() > max => Err(format!(
                "{} xclbins need {} hardware contexts, {} allows {max}",
                xclbins.len(),
                xclbins.len(),
                actual.describe()
            )),
            _ => Ok(()),
        }
    }
}

/// Reads and checks `dir/manifest.json`.
pub fn load(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text =
        crate::files::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(dir, &text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse(dir: &Path, text: &str) -> Result<Manifest, String> {
    let raw: RawManifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if raw.format != FORMAT {
        return Err(format!("format {} is not supported ({FORMAT}: see docs/XRT.md)", raw.format));
    }
    let device = PciId::parse(&raw.device)
        .ok_or_else(|| format!("device '{}' is not a PCI id like 1022:1502", raw.device))?;
    if raw.kernels.is_empty() {
        return Err("no kernels listed".into());
    }
    let mut kernels = Vec::new();
    for (i, k) in raw.kernels.into_iter().enumerate() {
        kernels.extend(kernel(dir, k).map_err(|e| format!("kernels[{i}]: {e}"))?);
    }
    Ok(Manifest { device, kernels })
}

pub const FORMAT: u32 = 2;

/// The sha256 of a file as the manifest writes it (64 lowercase hex digits).
pub fn file_sha256(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(super::sha256::hex_digest(&bytes))
}

/// Checks a file against the digest the manifest gives for it.
fn verify(path: &Path, want: &str) -> Result<(), String> {
    if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("sha256 '{want}' of {} is not 64 hex digits", path.display()));
    }
    let got = file_sha256(path)?;
    if !got.eq_ignore_ascii_case(want) {
        return Err(format!("{} has sha256 {got}, the manifest says {want}", path.display()));
    }
    Ok(())
}

fn kernel(dir: &Path, k: RawKernel) -> Result<Vec<KernelSpec>, String> {
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
    let xclbin = inside(dir, &k.xclbin, "xclbin")?;
    verify(&xclbin, &k.xclbin_sha256)?;
    if k.instructions.is_empty() {
        return Err("no instruction streams listed".into());
    }
    let mut out = Vec::new();
    for (j, s) in k.instructions.into_iter().enumerate() {
        let RawTile { m, k: kk, n } = s.tile;
        if m == 0 || kk == 0 || n == 0 || m.max(kk).max(n) > 1 << 16 {
            return Err(format!("instructions[{j}]: tile {m}x{kk}x{n} must have sizes in 1..=65536"));
        }
        let tile = Tile { m, k: kk, n };
        if out.iter().any(|o: &KernelSpec| o.tile == tile) {
            return Err(format!("instructions[{j}]: a second stream for tile {m}x{kk}x{n}"));
        }
        let instructions = inside(dir, &s.file, "instructions")?;
        verify(&instructions, &s.sha256).map_err(|e| format!("instructions[{j}]: {e}"))?;
        out.push(KernelSpec {
            dtype_in,
            dtype_out,
            tile,
            b_layout,
            xclbin: xclbin.clone(),
            instructions,
            kernel_name: k.kernel.clone().unwrap_or_else(|| "MLIR_AIE".into()),
            opcode: k.opcode.unwrap_or(3),
            args: k.args.clone().unwrap_or_default(),
            gflops: k.gflops,
        });
    }
    Ok(out)
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

    /// sha256 of "x", the content of every file above.
    const X: &str = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";

    fn one() -> String {
        r#"{ "format": 2, "device": "1022:1502", "kernels": [ {
        "op": "matmul", "dtype_in": "bf16", "dtype_out": "f32",
        "xclbin": "mm.xclbin", "xclbin_sha256": "X",
        "instructions": [ { "tile": { "m": 64, "k": 128, "n": 32 }, "file": "mm.insts.txt", "sha256": "X" } ] } ] }"#
            .replace("\"X\"", &format!("\"{X}\""))
    }

    #[test]
    fn parses_with_mlir_aie_defaults() {
        let d = dir_with(&["mm.xclbin", "mm.insts.txt"]);
        let m = parse(d.path(), &one()).unwrap();
        assert_eq!(m.device, PciId { vendor: 0x1022, device: 0x1502 });
        let k = &m.kernels[0];
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
    fn several_streams_share_one_xclbin() {
        let d = dir_with(&["mm.xclbin", "a.bin", "b.bin"]);
        let text = one().replace(
            &format!(
                r#"{{ "tile": {{ "m": 64, "k": 128, "n": 32 }}, "file": "mm.insts.txt", "sha256": "{X}" }}"#
            ),
            &format!(
                r#"{{ "tile": {{ "m": 64, "k": 64, "n": 64 }}, "file": "a.bin", "sha256": "{X}" }},
                   {{ "tile": {{ "m": 256, "k": 64, "n": 64 }}, "file": "b.bin", "sha256": "{X}" }}"#
            ),
        );
        let m = parse(d.path(), &text).unwrap();
        assert_eq!(m.kernels.len(), 2);
        assert_eq!(m.kernels[0].xclbin, m.kernels[1].xclbin);
        assert_eq!((m.kernels[0].tile.m, m.kernels[1].tile.m), (64, 256));
        let dup = text.replace("\"m\": 256", "\"m\": 64");
        assert!(parse(d.path(), &dup).unwrap_err().contains("a second stream for tile 64x64x64"));
    }

    #[test]
    fn rejects_bad_manifests_with_a_reason() {
        let d = dir_with(&["mm.xclbin", "mm.insts.txt"]);
        let bad_sum = "0".repeat(64);
        let cases = [
            (one().replace("matmul", "softmax"), "only matmul".to_string()),
            (one().replace("\"bf16\"", "\"i8\""), "dtype_in i8".into()),
            (one().replace("\"m\": 64", "\"m\": 0"), "tile 0x128x32".into()),
            (one().replace("mm.xclbin", "../mm.xclbin"), "relative path inside".into()),
            (one().replace("mm.insts.txt", "gone.txt"), "does not exist".into()),
            (one().replace("\"op\"", "\"opp\""), "unknown field".into()),
            (one().replace("\"format\": 2", "\"format\": 1"), "format 1 is not supported (2".into()),
            (one().replace("1022:1502", "phoenix"), "not a PCI id".into()),
            (
                one().replacen(X, &bad_sum, 1),
                format!("mm.xclbin has sha256 {X}, the manifest says {bad_sum}"),
            ),
            (
                one().replace(&format!("\"sha256\": \"{X}\""), "\"sha256\": \"abc\""),
                "is not 64 hex digits".into(),
            ),
        ];
        for (text, want) in cases {
            let err = parse(d.path(), &text).unwrap_err();
            assert!(err.contains(&want), "expected '{want}' in: {err}");
        }
    }

    #[test]
    fn kernels_for_another_device_are_refused() {
        let d = dir_with(&["mm.xclbin", "mm.insts.txt"]);
        let m = parse(d.path(), &one()).unwrap();
        assert_eq!(m.check_device(PciId { vendor: 0x1022, device: 0x1502 }), Ok(()));
        let err = m.check_device(PciId { vendor: 0x1022, device: 0x17f0 }).unwrap_err();
        assert!(
            err.contains("built for 1022:1502 (XDNA1") && err.contains("this NPU is 1022:17f0 (XDNA2"),
            "{err}"
        );
        let many = Manifest {
            device: m.device,
            kernels: (0..7)
                .map(|i| KernelSpec { xclbin: format!("x{i}.xclbin").into(), ..m.kernels[0].clone() })
                .collect(),
        };
        let err = many.check_device(m.device).unwrap_err();
        assert!(err.contains("7 xclbins need 7 hardware contexts") && err.contains("allows 6"), "{err}");
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
