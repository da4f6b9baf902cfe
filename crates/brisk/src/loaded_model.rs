//! A model ready to serve: its backend and its tokenizer, loaded from one path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use brisk_backend::{detect_format, CpuBackend, ModelFormat};
use brisk_gguf::GgufFile;
use brisk_tokenizer::Tokenizer;

use crate::model_fetch;

/// A loaded model.
pub struct LoadedModel {
    /// The backend that runs it.
    pub backend: CpuBackend,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// Names the model's content (weights, tokenizer, configuration), whatever its path:
    /// the salt of the prefix cache's block hashes, so that replicas of one model agree on
    /// them and two models never do.
    pub content_salt: u64,
}

/// Resolves `--model`: the given path, or the default model (fetched on first use).
pub fn resolve_path(model: Option<&Path>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p.to_path_buf()),
        None => model_fetch::ensure(&model_fetch::DEFAULT_MODEL, false),
    }
}

/// Loads the backend and tokenizer of `path`.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let (backend, tokenizer) = match detect_format(path)? {
        ModelFormat::Gguf => {
            let file = GgufFile::open(path)?;
            let tokenizer = Tokenizer::from_gguf(&file)
                .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
            (CpuBackend::from_gguf(&file)?, tokenizer)
        }
        ModelFormat::HfDirectory => {
            let tokenizer = Tokenizer::from_hf_dir(path)
                .with_context(|| format!("{}: cannot build the tokenizer", path.display()))?;
            (CpuBackend::from_hf_dir(path)?, tokenizer)
        }
    };
    let content_salt = content_salt(path)?;
    Ok(LoadedModel {
        backend,
        tokenizer,
        content_salt,
    })
}

/// The first 8 bytes of a SHA-256 over the model's files: a GGUF file's bytes, or, for a
/// directory, each regular file's name, length and bytes in name order (weights, tokenizer
/// and configuration alike). Copies under other paths get the same salt; a changed weight,
/// token or setting a different one. Reads the files once more (from the page cache, just
/// loaded): SHA-256 runs at about 2 GB/s with the SHA extensions x86 servers have.
pub fn content_salt(path: &Path) -> Result<u64> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let hash_file = |file: &Path, hasher: &mut Sha256| -> Result<()> {
        let mut f = std::fs::File::open(file)
            .with_context(|| format!("{}: cannot read the model to hash it", file.display()))?;
        std::io::copy(&mut f, hasher)
            .with_context(|| format!("{}: cannot read the model to hash it", file.display()))?;
        Ok(())
    };
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot list the model directory", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            hasher.update(name.unwrap_or_default().as_bytes());
            hasher.update([0]);
            hasher.update(std::fs::metadata(&file)?.len().to_le_bytes());
            hash_file(&file, &mut hasher)?;
        }
    } else {
        hash_file(path, &mut hasher)?;
    }
    let digest = hasher.finalize();
    Ok(u64::from_le_bytes(
        digest[..8].try_into().expect("32-byte digest"),
    ))
}

#[cfg(test)]
mod tests {
    use super::content_salt;

    /// Copies of one model under other paths share a salt; one changed byte changes it; a
    /// directory's salt covers its files' names as well as their bytes.
    #[test]
    fn the_salt_follows_content_not_path() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = (dir.path().join("a.gguf"), dir.path().join("copy/b.gguf"));
        std::fs::create_dir(dir.path().join("copy")).unwrap();
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        assert_eq!(content_salt(&a).unwrap(), content_salt(&b).unwrap());
        let mut changed = bytes.clone();
        changed[77_777] ^= 1;
        std::fs::write(&b, &changed).unwrap();
        assert_ne!(content_salt(&a).unwrap(), content_salt(&b).unwrap());

        let (d1, d2) = (dir.path().join("d1"), dir.path().join("d2"));
        for (d, name) in [(&d1, "model.safetensors"), (&d2, "other.safetensors")] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join(name), &bytes).unwrap();
            std::fs::write(d.join("tokenizer.json"), b"{}").unwrap();
        }
        assert_ne!(content_salt(&d1).unwrap(), content_salt(&d2).unwrap());
        assert!(content_salt(&dir.path().join("missing")).is_err());
    }
}
