//! Endpoints and connections to etcd.
//!
//! `etcd_client::Client::connect` is lazy: it succeeds even when nothing listens, and a call
//! through its balanced channel can then wait indefinitely for an endpoint to become ready.
//! So every call here runs under a deadline of our own, and each reconnect builds a fresh
//! client instead of trusting the old channel to recover.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::DiscoveryError;

/// How long one TCP connect to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one unary call (or the opening of a stream) may take, connecting included.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings on open streams find a silently dead peer. etcd refuses pings more often
/// than every 5 s (`--grpc-keepalive-min-time`), so stay above that.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Splits a comma-separated `--etcd` value into endpoint URLs.
///
/// Entries are trimmed; `127.0.0.1:2379` becomes `http://127.0.0.1:2379`. Empty entries,
/// schemes other than `http` and entries without a port are refused.
pub fn parse_endpoints(s: &str) -> Result<Vec<String>, DiscoveryError> {
    s.split(',').map(|entry| normalize(entry.trim())).collect()
}

/// One endpoint as `http://host:port`.
fn normalize(raw: &str) -> Result<String, DiscoveryError> {
    let invalid = |reason| DiscoveryError::InvalidEndpoint {
        endpoint: raw.to_string(),
        reason,
    };
    if raw.is_empty() {
        return Err(invalid("empty entry (a stray comma?)"));
    }
    let authority = match raw.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(invalid("only http:// is supported (no TLS in this build)")),
        None => raw,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid("expected host:port, with no path"));
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Err(invalid("missing port (etcd's client port is usually 2379)"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(invalid("expected host:port with a numeric port"));
    }
    Ok(format!("http://{authority}"))
}

/// Validated endpoint URLs, and how to name them in errors and logs.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    urls: Vec<String>,
    label: Arc<str>,
}

impl Endpoints {
    pub(crate) fn new(endpoints: &[String]) -> Result<Self, DiscoveryError> {
        if endpoints.is_empty() {
            return Err(DiscoveryError::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no etcd endpoint given",
            });
        }
        let urls = endpoints
            .iter()
            .map(|e| normalize(e.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let label = urls.join(",").into();
        Ok(Self { urls, label })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// A fresh client. Connecting is lazy, so this only fails on a malformed URL; the first
    /// call made through it finds out whether etcd is there.
    pub(crate) async fn connect(&self) -> Result<Connection, DiscoveryError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, PING_TIMEOUT);
        let client = Client::connect(&self.urls, Some(options))
            .await
            .map_err(|source| self.error("connect", source))?;
        Ok(Connection {
            client,
            endpoints: self.clone(),
        })
    }

    pub(crate) fn error(&self, op: &'static str, source: etcd_client::Error) -> DiscoveryError {
        DiscoveryError::Etcd {
            endpoints: self.label.to_string(),
            op,
            source,
        }
    }

    pub(crate) fn unexpected(&self, op: &'static str, what: impl Into<String>) -> DiscoveryError {
        DiscoveryError::Unexpected {
            endpoints: self.label.to_string(),
            op,
            what: what.into(),
        }
    }
}

/// A client and the endpoints it talks to.
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) endpoints: Endpoints,
}

impl Connection {
    /// Runs one call to etcd under [`CALL_TIMEOUT`], naming `op` if it fails.
    pub(crate) async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, DiscoveryError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result.map_err(|source| self.endpoints.error(op, source)),
            Err(_) => Err(DiscoveryError::Timeout {
                endpoints: self.endpoints.label.to_string(),
                op,
                timeout: CALL_TIMEOUT,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> &'static str {
        match parse_endpoints(s) {
            Err(DiscoveryError::InvalidEndpoint { reason, .. }) => reason,
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn bare_and_http_endpoints_become_http_urls() {
        let parsed =
            parse_endpoints("127.0.0.1:2379, http://etcd-1:2379/,HTTP://[::1]:2380").unwrap();
        assert_eq!(
            parsed,
            [
                "http://127.0.0.1:2379",
                "http://etcd-1:2379",
                "http://[::1]:2380"
            ]
        );
    }

    #[test]
    fn empty_entries_are_refused() {
        assert!(reason("").contains("empty"));
        assert!(reason("a:1,,b:2").contains("empty"));
        assert!(reason("a:1, ").contains("empty"));
    }

    #[test]
    fn other_schemes_paths_and_missing_ports_are_refused() {
        assert!(reason("https://a:2379").contains("http://"));
        assert!(reason("unix:///run/etcd.sock").contains("http://"));
        assert!(reason("http://a:2379/v3").contains("path"));
        assert!(reason("etcd-1").contains("port"));
        assert!(reason("etcd-1:http").contains("numeric port"));
        assert!(reason(":2379").contains("host"));
    }

    #[test]
    fn the_error_names_the_entry() {
        let err = parse_endpoints("a:1,ftp://b:2").unwrap_err();
        assert!(err.to_string().contains("\"ftp://b:2\""), "{err}");
    }
}
