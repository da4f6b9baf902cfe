//! Every way a GGUF file can be broken gets its own named error, never a panic.

use brisk_gguf::{GgmlDType, GgufError, GgufFile, GgufWriter, MetaValue};

fn sample() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String("llama".into()))
        .meta(
            "tokenizer.ggml.tokens",
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("b".into()),
            ]),
        )
        .tensor_f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    w.to_bytes()
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::parse("test.gguf".into(), bytes)
}

#[test]
fn a_written_file_reads_back() {
    let f = parse(sample()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.get_str("general.architecture"), Some("llama"));
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        vec!["a", "b"]
    );
    let t = f.tensor("w").unwrap();
    assert_eq!(t.shape(), vec![2, 3]);
    assert_eq!(t.dtype, GgmlDType::F32);
    let bytes = f.tensor_bytes(t);
    assert_eq!(f32::from_le_bytes(bytes[20..24].try_into().unwrap()), 6.0);
}

#[test]
fn missing_file_is_an_open_error() {
    let err = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Open { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
}

#[test]
fn bad_magic_is_reported() {
    let mut b = sample();
    b[..4].copy_from_slice(b"GGML");
    assert!(matches!(parse(b), Err(GgufError::BadMagic { found, .. }) if &found == b"GGML"));
}

#[test]
fn version_one_is_refused() {
    let mut b = sample();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        parse(b),
        Err(GgufError::UnsupportedVersion { found: 1, .. })
    ));
}

#[test]
fn every_truncation_is_a_truncated_error() {
    let b = sample();
    for len in 0..b.len() - 1 {
        match parse(b[..len].to_vec()) {
            Err(GgufError::Truncated { .. }) => {}
            other => panic!("truncated to {len} bytes: {other:?}"),
        }
    }
}

#[test]
fn truncated_tensor_data_names_the_tensor() {
    let b = sample();
    let err = parse(b[..b.len() - 4].to_vec()).unwrap_err();
    assert!(err.to_string().contains("tensor \"w\""), "{err}");
}

#[test]
fn unknown_tensor_type_is_named() {
    let mut w = GgufWriter::new();
    w.tensor_f32("w", &[1], &[1.0]);
    let mut b = w.to_bytes();
    // The type id is the u32 before the final u64 offset of the only tensor entry.
    let dir_end = 4 + 4 + 8 + 8 + (8 + 1) + 4 + 8 + 4 + 8;
    b[dir_end - 12..dir_end - 8].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        parse(b),
        Err(GgufError::UnsupportedTensorType { type_id: 99, ref tensor, .. }) if tensor == "w"
    ));
}

#[test]
fn huge_lengths_do_not_allocate() {
    let mut b = sample();
    // The first metadata key's length field follows the 24-byte header.
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(parse(b), Err(GgufError::Truncated { .. })));
}
