//! Metrics of running requests moving between replicas with their K/V: prefill/decode
//! hand-overs (a prefill replica passes a request on after its first token) and migrations
//! (a running request moved on demand or while its replica drains).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Why a request moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    /// From a prefill replica to a decode replica after its first token.
    Handover,
    /// A running request moved elsewhere (asked for, or its replica drains).
    Migration,
}

impl MoveKind {
    /// The label and the import route's `kind` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handover => "handover",
            Self::Migration => "migration",
        }
    }

    /// The kind a `kind` parameter names (absent: a migration).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            None | Some("migration") => Some(Self::Migration),
            Some("handover") => Some(Self::Handover),
            Some(_) => None,
        }
    }
}

/// The metrics (see the module docs).
pub struct Transfers {
    bytes: IntCounterVec,
    seconds: HistogramVec,
    migrations: IntCounterVec,
    handovers: IntCounterVec,
    failed: IntCounterVec,
    pause: HistogramVec,
}

fn transfer_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

impl Transfers {
    /// Creates and registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(transfer_buckets()),
                labels,
            )
            .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        Self {
            bytes: counter(
                "brisk_kv_transfer_bytes_total",
                "K/V bytes of requests moved between replicas",
                &["direction"],
            ),
            seconds: histogram(
                "brisk_kv_transfer_seconds",
                "Time to move a request's K/V: sent, from export to the destination's acceptance; received, from the first byte to the request running here",
                &["direction"],
            ),
            migrations: counter(
                "brisk_migrations_total",
                "Running requests migrated to (out) or from (in) another replica",
                &["direction"],
            ),
            handovers: counter(
                "brisk_disagg_handovers_total",
                "Requests passed from a prefill replica (out) to a decode replica (in) after their first token",
                &["direction"],
            ),
            failed: counter(
                "brisk_move_failures_total",
                "Moves that did not happen (the destination refused or was unreachable): the request went on here",
                &["kind"],
            ),
            pause: histogram(
                "brisk_migration_pause_seconds",
                "How long a moved request produced no token at its source: from export to the hand-off of its stream",
                &["kind"],
            ),
        }
    }

    fn count(&self, kind: MoveKind, direction: &str) {
        let family = match kind {
            MoveKind::Handover => &self.handovers,
            MoveKind::Migration => &self.migrations,
        };
        family.with_label_values(&[direction]).inc();
    }

    /// A request left for another replica.
    pub fn sent(&self, kind: MoveKind, bytes: usize, transfer_s: f64, pause_s: f64) {
        self.count(kind, "out");
        self.kv_sent(bytes, transfer_s);
        self.pause
            .with_label_values(&[kind.as_str()])
            .observe(pause_s);
    }

    /// A request arrived from another replica.
    pub fn received(&self, kind: MoveKind, bytes: usize, transfer_s: f64) {
        self.count(kind, "in");
        self.kv_received(bytes, transfer_s);
    }

    /// K/V bytes went out (a move, or blocks sent ahead of one while the request kept
    /// decoding).
    pub fn kv_sent(&self, bytes: usize, transfer_s: f64) {
        self.transferred("sent", bytes, transfer_s);
    }

    /// K/V bytes came in (a move, or blocks sent ahead of one).
    pub fn kv_received(&self, bytes: usize, transfer_s: f64) {
        self.transferred("received", bytes, transfer_s);
    }

    fn transferred(&self, direction: &str, bytes: usize, transfer_s: f64) {
        self.bytes
            .with_label_values(&[direction])
            .inc_by(bytes as u64);
        self.seconds
            .with_label_values(&[direction])
            .observe(transfer_s);
    }

    /// A move did not happen.
    pub fn failed(&self, kind: MoveKind) {
        self.failed.with_label_values(&[kind.as_str()]).inc();
    }
}
