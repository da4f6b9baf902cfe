//! What `brisk serve` and `brisk route` both do before serving: check the flags they share
//! and open the runtime and the listening socket.

use anyhow::{bail, Context, Result};

/// Refuses an empty `--api-key` (an unset variable expanded to nothing, most often).
pub fn check_api_key(key: Option<&str>) -> Result<()> {
    if key.is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key (or BRISK_API_KEY) is empty; give a key or leave it out");
    }
    Ok(())
}

/// Refuses a `flag` value that is not an http:// or https:// URL.
pub fn check_http_url(flag: &str, url: &str) -> Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        bail!("{flag} must be an http:// or https:// URL, got {url:?}");
    }
    Ok(())
}

/// The server's async runtime: two workers (the compute runs on threads of its own).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Listens on `host:port` (port 0: a free one); returns the socket and its address.
pub async fn bind(
    host: &str,
    port: u16,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
