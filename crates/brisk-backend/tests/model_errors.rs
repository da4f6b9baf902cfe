//! Every way a model path can be wrong gets a named error that says which file and tensor,
//! and what was expected versus found — never a panic.

use std::path::Path;

use brisk_backend::{CpuBackend, ModelError};
use brisk_gguf::{GgmlDType, GgufError, GgufWriter, MetaValue};
use brisk_testkit::{Arch, TinyModel};

fn load_err(path: &Path) -> ModelError {
    match CpuBackend::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

fn tiny() -> TinyModel {
    TinyModel::generate(Arch::Llama, 64, 1)
}

#[test]
fn a_missing_path_is_not_found() {
    let err = load_err(Path::new("/no/such/model.gguf"));
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/no/such/model.gguf"));
}

#[test]
fn a_truncated_file_names_the_tensor_it_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let bytes = tiny().gguf_writer(GgmlDType::Q8_0, &[]).to_bytes();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(&path);
    assert!(
        matches!(err, ModelError::Gguf(GgufError::Truncated { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("t.gguf") && err.to_string().contains("tensor"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_gguf_has_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, b"<html>404 Not Found</html>").unwrap();
    assert!(matches!(
        load_err(&path),
        ModelError::Gguf(GgufError::BadMagic { .. })
    ));
}

#[test]
fn an_unsupported_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v9.gguf");
    let mut bytes = tiny().gguf_writer(GgmlDType::F32, &[]).to_bytes();
    bytes[4..8].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(
        load_err(&path),
        ModelError::Gguf(GgufError::UnsupportedVersion { found: 9, .. })
    ));
}

#[test]
fn an_unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt2.gguf");
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String("gpt2".into()));
    w.write(&path).unwrap();
    let err = load_err(&path);
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { ref architecture, .. } if architecture == "gpt2"),
        "{err}"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny();
    model.weights.remove("model.layers.1.mlp.up_proj.weight");
    let path = dir.path().join("m.gguf");
    model.write_gguf(&path, GgmlDType::F32, &[]).unwrap();
    let err = load_err(&path);
    assert!(
        matches!(err, ModelError::MissingTensor { ref tensor, .. } if tensor == "blk.1.ffn_up.weight"),
        "{err}"
    );
    model.write_hf_dir(&dir.path().join("hf")).unwrap();
    let err = load_err(&dir.path().join("hf"));
    assert!(
        matches!(err, ModelError::MissingTensor { ref tensor, .. } if tensor == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn a_shape_mismatch_says_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny();
    model.ffn = 768; // the metadata now disagrees with every FFN matrix
    let path = dir.path().join("s.gguf");
    model.write_gguf(&path, GgmlDType::F32, &[]).unwrap();
    let err = load_err(&path);
    match err {
        ModelError::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "blk.0.ffn_gate.weight");
            assert_eq!(expected, vec![768, 256]);
            assert_eq!(found, vec![512, 256]);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn missing_metadata_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nometa.gguf");
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::String("llama".into()));
    w.write(&path).unwrap();
    let err = load_err(&path);
    assert!(matches!(err, ModelError::MissingMetadata { .. }), "{err}");
}

#[test]
fn a_corrupt_safetensors_file_is_a_format_error() {
    let dir = tempfile::tempdir().unwrap();
    tiny().write_hf_dir(dir.path()).unwrap();
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::Format { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn a_directory_without_config_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, ModelError::NotFound { ref path } if path.ends_with("config.json")),
        "{err}"
    );
}

#[test]
fn a_kernel_path_brisk_does_not_have_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, tiny().gguf_writer(GgmlDType::Q8_0, &[]).to_bytes()).unwrap();
    // nextest runs each test in a process of its own: the variable reaches no other test.
    std::env::set_var("BRISK_KERNELS", "avx9");
    let err = load_err(&path);
    std::env::remove_var("BRISK_KERNELS");
    assert!(matches!(err, ModelError::Kernels(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("avx9") && message.contains("avx512-vnni") && message.contains("amx"),
        "{message}"
    );
}
