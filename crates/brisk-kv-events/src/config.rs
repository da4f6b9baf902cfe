//! `--kv-events-config`: vLLM's `KVEventsConfig` JSON, checked once.

use serde::Deserialize;

/// The ZMQ high-water mark of brisk's publisher, fixed by the ZMQ crate: a subscriber that
/// falls this many messages behind misses the next ones (and can ask for a replay). It is
/// vLLM's default `hwm`.
pub const HWM: usize = 100_000;

/// vLLM's `KVEventsConfig`, field for field; a field vLLM does not have is refused.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KvEventsConfig {
    /// Whether to publish at all.
    #[serde(default)]
    pub enable_kv_cache_events: bool,
    /// `"zmq"` or `"null"`; unset means `"zmq"` when enabled.
    #[serde(default)]
    pub publisher: Option<String>,
    /// Where the PUB socket binds (an address with `*`, e.g. `tcp://*:5557`) or connects
    /// (any other address), as vLLM decides.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Where the ROUTER socket for replays binds; none means no replay.
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    #[serde(default = "default_buffer_steps")]
    pub buffer_steps: usize,
    /// The PUB socket's high-water mark: only [`HWM`] is possible here.
    #[serde(default = "default_hwm")]
    pub hwm: usize,
    /// Batches waiting to be sent before the engine waits for the publisher.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// The first frame of every message.
    #[serde(default)]
    pub topic: String,
}

fn default_endpoint() -> String {
    "tcp://*:5557".into()
}

fn default_buffer_steps() -> usize {
    10_000
}

fn default_hwm() -> usize {
    HWM
}

fn default_max_queue_size() -> usize {
    100_000
}

/// What the publisher needs, from a config that asked for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublisherSettings {
    /// `tcp://host:port` to bind or to connect to; a `*` host is replaced by
    /// [`Self::on_host`] (else it means every interface).
    pub endpoint: String,
    /// Whether the PUB socket binds (else it connects).
    pub bind: bool,
    /// `tcp://host:port` the replay socket binds, if any (`*` as for `endpoint`).
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    pub buffer_steps: usize,
    /// Batches waiting to be sent before the engine waits.
    pub max_queue_size: usize,
    /// The first frame of every message.
    pub topic: String,
}

/// Why `--kv-events-config` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not JSON, or not vLLM's fields.
    #[error("--kv-events-config: {0}")]
    Json(String),
    /// A value brisk cannot honour.
    #[error("--kv-events-config: {0}")]
    Unsupported(String),
}

impl KvEventsConfig {
    /// Parses and checks `--kv-events-config`; `None` when it asks for no events.
    pub fn parse(json: &str) -> Result<Option<PublisherSettings>, ConfigError> {
        let cfg: Self = serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        cfg.settings()
    }

    /// The publisher this config asks for, if any.
    pub fn settings(&self) -> Result<Option<PublisherSettings>, ConfigError> {
        let unsupported = |m: String| Err(ConfigError::Unsupported(m));
        let publisher = self
            .publisher
            .as_deref()
            .unwrap_or(if self.enable_kv_cache_events {
                "zmq"
            } else {
                "null"
            });
        match publisher {
            "null" => return Ok(None),
            "zmq" if !self.enable_kv_cache_events => {
                return unsupported(
                    "publisher \"zmq\" needs \"enable_kv_cache_events\": true".into(),
                )
            }
            "zmq" => {}
            other => return unsupported(format!("unknown publisher {other:?} (zmq or null)")),
        }
        if self.hwm != HWM {
            return unsupported(format!(
                "hwm {} cannot be set: brisk's ZMQ publisher drops for a subscriber {HWM} \
                 messages behind (vLLM's default)",
                self.hwm
            ));
        }
        if self.max_queue_size == 0 {
            return unsupported("max_queue_size must be at least 1".into());
        }
        let bind = self.endpoint.contains('*') || self.endpoint.contains("::");
        let endpoint = tcp_endpoint("endpoint", &self.endpoint)?;
        let replay_endpoint = match &self.replay_endpoint {
            Some(e) => Some(tcp_endpoint("replay_endpoint", e)?),
            None => None,
        };
        Ok(Some(PublisherSettings {
            endpoint,
            bind,
            replay_endpoint,
            buffer_steps: self.buffer_steps,
            max_queue_size: self.max_queue_size,
            topic: self.topic.clone(),
        }))
    }
}

impl PublisherSettings {
    /// The same settings with the `*` host of both endpoints replaced by `host`: brisk binds
    /// its event sockets where it serves HTTP (`--host`, 127.0.0.1 unless told otherwise),
    /// so `tcp://*:5557` exposes events exactly as far as the API.
    pub fn on_host(mut self, host: &str) -> Self {
        self.endpoint = with_host(&self.endpoint, host);
        self.replay_endpoint = self.replay_endpoint.map(|e| with_host(&e, host));
        self
    }
}

/// `endpoint` with a `*` host replaced by `host` (bracketed when it is IPv6).
fn with_host(endpoint: &str, host: &str) -> String {
    match endpoint.strip_prefix("tcp://*:") {
        Some(port) if host.contains(':') => format!("tcp://[{host}]:{port}"),
        Some(port) => format!("tcp://{host}:{port}"),
        None => endpoint.to_string(),
    }
}

/// Checks a `tcp://host:port` endpoint (a `*` host stays, see [`PublisherSettings::on_host`]).
fn tcp_endpoint(field: &str, endpoint: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        Err(ConfigError::Unsupported(format!(
            "{field} {endpoint:?}: {why}"
        )))
    };
    let Some(address) = endpoint.strip_prefix("tcp://") else {
        return bad("brisk publishes over tcp:// only (no ipc:// or inproc://)");
    };
    let Some((host, port)) = address.rsplit_once(':') else {
        return bad("expected tcp://HOST:PORT");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return bad("expected tcp://HOST:PORT with a port number");
    }
    Ok(format!("tcp://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_configs_parse_and_what_brisk_cannot_honour_is_refused() {
        // vLLM's documented example.
        let s = KvEventsConfig::parse(
            r#"{"enable_kv_cache_events": true, "publisher": "zmq",
                "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558",
                "topic": "kv-events", "buffer_steps": 100}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "tcp://*:5557");
        assert!(s.bind);
        assert_eq!(s.replay_endpoint.as_deref(), Some("tcp://*:5558"));
        let local = s.clone().on_host("127.0.0.1");
        assert_eq!(local.endpoint, "tcp://127.0.0.1:5557");
        assert_eq!(
            local.replay_endpoint.as_deref(),
            Some("tcp://127.0.0.1:5558")
        );
        assert_eq!(s.clone().on_host("::").endpoint, "tcp://[::]:5557");
        assert_eq!((s.buffer_steps, s.max_queue_size), (100, 100_000));
        assert_eq!(s.topic, "kv-events");
        // Enabled without a publisher means zmq; an address without `*` is connected to.
        let s = KvEventsConfig::parse(
            r#"{"enable_kv_cache_events": true, "endpoint": "tcp://127.0.0.1:7000"}"#,
        )
        .unwrap()
        .unwrap();
        assert!(!s.bind && s.replay_endpoint.is_none());
        // Off.
        assert_eq!(KvEventsConfig::parse("{}").unwrap(), None);
        assert_eq!(
            KvEventsConfig::parse(r#"{"enable_kv_cache_events": true, "publisher": "null"}"#)
                .unwrap(),
            None
        );
        // Refused, each with its reason.
        for (json, says) in [
            (r#"{"enable_kv_cache_events": true, "hwm": 10}"#, "hwm"),
            (
                r#"{"enable_kv_cache_events": true, "publisher": "nats"}"#,
                "unknown publisher",
            ),
            (r#"{"publisher": "zmq"}"#, "enable_kv_cache_events"),
            (
                r#"{"enable_kv_cache_events": true, "endpoint": "ipc:///tmp/x"}"#,
                "tcp:// only",
            ),
            (
                r#"{"enable_kv_cache_events": true, "endpoint": "tcp://*"}"#,
                "HOST:PORT",
            ),
            (
                r#"{"enable_kv_cache_events": true, "max_queue_size": 0}"#,
                "max_queue_size",
            ),
            (
                r#"{"enable_kv_cache_events": true, "colour": "red"}"#,
                "unknown field",
            ),
            ("not json", "expected"),
        ] {
            let e = KvEventsConfig::parse(json).unwrap_err().to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }
}
