//! The GGUF reader on a file written by the `gguf` package (tools/make_tiny_gguf.py), our
//! quantizers and dequantisers against that package's, and damaged files.

use npuhybrid::gguf::{parse, Value};
use npuhybrid::op::DType;

fn file() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gguf/layouts.gguf")).expect("test file")
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn reads_metadata_and_tensors() {
    let bytes = file();
    let g = parse(&bytes).expect("valid file");
    assert_eq!(g.version, 3);
    assert_eq!(g.get("general.architecture").and_then(Value::as_str), Some("llama"));
    assert_eq!(g.get("llama.block_count").and_then(Value::as_u64), Some(1));
    assert_eq!(g.get("llama.attention.head_count_kv").and_then(Value::as_u64), Some(2));
    assert_eq!(g.get("llama.rope.freq_base").and_then(Value::as_f64), Some(10000.0));
    let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).expect("tokens");
    assert_eq!(tokens[3].as_str(), Some("\u{2581}hello"));
    let scores = g.get("tokenizer.ggml.scores").and_then(Value::as_array).expect("scores");
    assert_eq!(scores[4].as_f64(), Some(-2.25));
    for (name, dt) in
        [("src", DType::F32), ("src.f16", DType::F16), ("q8_0", DType::Q8_0), ("q4_1", DType::Q4_1)]
    {
        let t = g.tensor(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!((t.dtype, t.shape.as_slice()), (dt, &[6, 64][..]), "{name}");
        assert_eq!(t.bytes, dt.bytes_of(6 * 64));
        assert_eq!(t.offset % 32, 0);
    }
}

#[test]
fn our_quantizers_and_dequantisers_match_the_gguf_package() {
    let bytes = file();
    let g = parse(&bytes).expect("valid file");
    let at = |name: &str| {
        let t = g.tensor(name).unwrap_or_else(|| panic!("{name}"));
        &bytes[t.offset..t.offset + t.bytes]
    };
    let src = f32s(at("src"));
    for (name, dt) in [("q8_0", DType::Q8_0), ("q4_0", DType::Q4_0), ("q4_1", DType::Q4_1)] {
        let mut ours = vec![0u8; dt.bytes_of(src.len())];
        npuhybrid::quant::quantize_row(dt, &src, &mut ours);
        assert_eq!(ours, at(name), "{name}: quantized bytes differ from gguf's");
        let mut deq = vec![0f32; src.len()];
        npuhybrid::quant::dequantize_row(dt, at(name), &mut deq);
        assert_eq!(deq, f32s(at(&format!("deq.{name}"))), "{name}: dequantised values differ");
    }
}

#[test]
fn every_truncation_is_refused_with_a_byte_offset() {
    let bytes = file();
    let g = parse(&bytes).expect("valid file");
    let last_end = g.tensors.iter().map(|t| t.offset + t.bytes).max().unwrap();
    for len in (0..last_end).step_by(7) {
        let e = parse(&bytes[..len]).expect_err("truncated file accepted").to_string();
        assert!(e.contains("gguf: byte "), "{len}: {e}");
    }
}

/// Offset of the first occurrence of `what` in `bytes`.
fn find(bytes: &[u8], what: &[u8]) -> usize {
    bytes.windows(what.len()).position(|w| w == what).expect("present")
}

#[test]
fn damaged_headers_name_what_and_where() {
    let good = file();
    let err = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        parse(&b).expect_err("damaged file accepted").to_string()
    };
    assert!(err(&|b| b[0] = b'X').contains("byte 0: not a GGUF file"));
    assert!(err(&|b| b[4] = 1).contains("byte 4: version 1 is not supported"));
    // Tensor count (bytes 8..16) far beyond what the file could hold.
    let e = err(&|b| b[15] = 0x40);
    assert!(e.contains("byte 8: tensor count") && e.contains("cannot fit"), "{e}");
    // The q4_0 tensor's type code (after its name, dims) set to q4_K (12): refused, offset named.
    let name = find(&good, b"q4_0\x02\x00\x00\x00");
    let type_at = name + 4 + 4 + 16;
    let e = err(&|b| b[type_at] = 12);
    assert!(e.contains(&format!("byte {type_at}: tensor 'q4_0' has type 12")), "{e}");
    // Its offset pushed past the end of the file.
    let e = err(&|b| b[type_at + 4 + 6] = 0x10);
    assert!(e.contains("tensor 'q4_0'") && e.contains("past the file"), "{e}");
    // An unknown metadata value type.
    let key = find(&good, b"llama.block_count");
    let e = err(&|b| b[key + 17] = 77);
    assert!(e.contains(&format!("byte {}: unknown value type 77", key + 17)), "{e}");
}

#[test]
fn huge_metadata_arrays_are_refused_before_allocating() {
    // Header, no tensors, one key holding an array of 5M u8 (5 MB of file, 160 MB of values).
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(3u64.to_le_bytes());
    b.extend(b"big");
    b.extend(9u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(5_000_000u64.to_le_bytes());
    b.resize(b.len() + 5_000_000, 1);
    let e = parse(&b).expect_err("accepted").to_string();
    assert!(e.contains("more than 4194304 metadata values"), "{e}");
}

mod c_api {
    use npuhybrid::ffi::*;
    use std::ffi::{CStr, CString};
    use std::mem::zeroed;
    use std::ptr::null_mut;

    use nh_status::*;

    fn last_error() -> String {
        unsafe { CStr::from_ptr(nh_last_error_message()) }.to_string_lossy().into_owned()
    }

    fn runtime() -> nh_runtime {
        let mut d: nh_runtime_desc = unsafe { zeroed() };
        assert_eq!(nh_runtime_desc_init(&mut d), NH_OK);
        let dir = CString::new("").unwrap();
        d.perf_cache_dir = dir.as_ptr();
        let mut rt = nh_runtime::default();
        assert_eq!(nh_runtime_create(&d, &mut rt), NH_OK, "{}", last_error());
        rt
    }

    const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gguf/layouts.gguf");

    #[test]
    fn open_look_up_and_multiply_with_a_mapped_quantized_tensor() {
        let rt = runtime();
        let path = CString::new(PATH).unwrap();
        let (mut g, mut buf) = (nh_gguf::default(), nh_buffer::default());
        assert_eq!(nh_gguf_open(rt, path.as_ptr(), &mut g, &mut buf), NH_OK, "{}", last_error());
        let key = |s: &str| CString::new(s).unwrap();
        let mut v = 0.0f64;
        let k = key("llama.embedding_length");
        assert_eq!(nh_gguf_meta_number(rt, g, k.as_ptr(), NH_GGUF_SCALAR, &mut v), NH_OK);
        assert_eq!(v, 64.0);
        let k = key("tokenizer.ggml.scores");
        assert_eq!(nh_gguf_meta_number(rt, g, k.as_ptr(), 3, &mut v), NH_OK);
        assert_eq!(v, -1.5);
        assert_eq!(nh_gguf_meta_number(rt, g, k.as_ptr(), 5, &mut v), NH_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains("index 5 is past the 5 items"), "{}", last_error());
        let mut len = 0u64;
        let k = key("tokenizer.ggml.tokens");
        assert_eq!(nh_gguf_meta_length(rt, g, k.as_ptr(), &mut len), NH_OK);
        assert_eq!(len, 5);
        let mut s = [0 as std::ffi::c_char; 32];
        let mut needed = 0usize;
        assert_eq!(nh_gguf_meta_string(rt, g, k.as_ptr(), 4, s.as_mut_ptr(), s.len(), &mut needed), NH_OK);
        assert_eq!(unsafe { CStr::from_ptr(s.as_ptr()) }.to_str().unwrap(), "\u{2581}world");
        let k = key("general.architecture");
        assert_eq!(nh_gguf_meta_number(rt, g, k.as_ptr(), NH_GGUF_SCALAR, &mut v), NH_ERR_INVALID_ARGUMENT);

        // x [2, 64] times the q4_0 tensor [6, 64] transposed, against its dequantised copy.
        let (mut w, mut deq) = (nh_tensor::default(), nh_tensor::default());
        let n = key("q4_0");
        assert_eq!(nh_gguf_tensor(rt, g, n.as_ptr(), &mut w), NH_OK);
        assert_eq!((w.dtype, w.rank, &w.shape[..2]), (nh_dtype::NH_Q4_0 as u32, 2, &[6u64, 64][..]));
        let n = key("deq.q4_0");
        assert_eq!(nh_gguf_tensor(rt, g, n.as_ptr(), &mut deq), NH_OK);
        let n = key("no.such");
        assert_eq!(nh_gguf_tensor(rt, g, n.as_ptr(), &mut deq), NH_ERR_INVALID_ARGUMENT);
        let x: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut xb = nh_buffer::default();
        assert_eq!(nh_buffer_alloc(rt, 128 * 4 + 2 * 2 * 6 * 4, &mut xb), NH_OK);
        assert_eq!(nh_buffer_write(rt, xb, 0, x.as_ptr().cast(), 128 * 4), NH_OK);
        let mut y = [[0f32; 12]; 2];
        for (i, wv) in [w, deq].into_iter().enumerate() {
            let mut d: nh_op_desc = unsafe { zeroed() };
            assert_eq!(nh_op_desc_init(&mut d), NH_OK);
            d.kind = nh_op_kind::NH_OP_MATMUL as u32;
            d.flags = NH_FLAG_TRANS_B;
            d.inputs[0] =
                nh_tensor { buffer: xb, dtype: 0, rank: 2, shape: [2, 64, 0, 0], ..Default::default() };
            d.inputs[1] = wv;
            d.output = nh_tensor { buffer: xb, dtype: 0, rank: 2, shape: [2, 6, 0, 0], ..Default::default() };
            d.output.offset = 512 + 48 * i as u64;
            let mut ev = nh_event::default();
            assert_eq!(nh_submit(rt, &d, &mut ev), NH_OK, "{}", last_error());
            assert_eq!(nh_event_wait(rt, ev, u64::MAX), NH_OK);
            assert_eq!(nh_buffer_read(rt, xb, d.output.offset as usize, y[i].as_mut_ptr().cast(), 48), NH_OK);
        }
        for (a, b) in y[0].iter().zip(&y[1]) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{:?}", y);
        }
        assert_eq!(nh_gguf_close(rt, g), NH_OK);
        assert_eq!(nh_gguf_close(rt, g), NH_ERR_INVALID_HANDLE);
        assert_eq!(nh_gguf_meta_length(rt, g, k.as_ptr(), &mut len), NH_ERR_INVALID_HANDLE);
        assert_eq!(nh_buffer_destroy(rt, buf), NH_OK);
        assert_eq!(nh_runtime_destroy(rt), NH_OK);
    }

    #[test]
    fn damaged_files_are_refused_and_leave_nothing_mapped() {
        let rt = runtime();
        let mut bytes = std::fs::read(PATH).unwrap();
        bytes[4] = 9;
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.gguf");
        std::fs::write(&bad, &bytes).unwrap();
        let path = CString::new(bad.to_str().unwrap()).unwrap();
        let (mut g, mut buf) = (nh_gguf::default(), nh_buffer::default());
        assert_eq!(nh_gguf_open(rt, path.as_ptr(), &mut g, &mut buf), NH_ERR_INVALID_ARGUMENT);
        let e = last_error();
        assert!(e.contains("bad.gguf: gguf: byte 4: version 9"), "{e}");
        assert_eq!(nh_gguf_open(rt, path.as_ptr(), null_mut(), &mut buf), NH_ERR_NULL_POINTER);
        let mut stats: nh_runtime_stats = unsafe { zeroed() };
        stats.struct_size = std::mem::size_of::<nh_runtime_stats>() as u32;
        assert_eq!(nh_runtime_get_stats(rt, &mut stats), NH_OK);
        assert_eq!(stats.buffers_live, 0, "the refused file's mapping was released");
        assert_eq!(nh_runtime_destroy(rt), NH_OK);
    }
}
