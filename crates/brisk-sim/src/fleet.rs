//! `brisk sim --replicas N`: the fleet's flags, settings and report section.
//!
//! With several replicas, each request is routed on arrival by the same
//! [`RouterCore`](brisk_router::RouterCore) that `brisk route` runs, fed as the gateway
//! feeds it: every replica publishes its KV events (delivered to the router a fixed delay
//! after the step that made them ends), a request's first token and its end are reported as
//! they happen, and the router's refusals are the 429s a client would get. A replica's own
//! 429 is final here (the gateway would try another replica). The report's `fleet` section
//! gives the prefix-cache hit rate the replicas' schedulers saw (cached prompt tokens over
//! prompt tokens of completed requests) and how requests spread over the replicas.

use brisk_bench::report::{percentile, FleetReport, Spread};
use brisk_router::{Policy, RouterConfig, TransferCost};
use brisk_types::Role;

use crate::migration::MigrationSettings;
use crate::{SimOutcome, SimRunError};

/// How many replicas there are and how requests reach them.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetSettings {
    /// Identical replicas (at least 1; with 1, requests go straight to it).
    pub replicas: usize,
    /// How the router chooses a replica.
    pub policy: Policy,
    /// Batch-class prompts avoid replicas serving interactive requests
    /// ([`brisk_router::RouterConfig::priority_placement`]).
    pub priority_placement: bool,
    /// The router refuses (429) requests no replica is predicted to serve within their TTFT.
    pub reject_unattainable: bool,
    /// Seconds from the end of a replica's step to the router reading its KV events.
    pub event_delay: f64,
    /// Predicted TTFT a request without an objective may give up to follow its cached
    /// blocks, seconds ([`brisk_router::RouterConfig::affinity_slack`]).
    pub affinity_slack: f64,
    /// Multiple of the fastest predicted TTFT a request may also accept to follow its
    /// cached blocks ([`brisk_router::RouterConfig::affinity_ratio`]).
    pub affinity_ratio: f64,
    /// Of the replicas, how many are prefill replicas (the first ones).
    pub prefill_replicas: usize,
    /// How many are decode replicas (the next ones); the rest serve both phases.
    pub decode_replicas: usize,
    /// The router prices interference and hand-overs
    /// ([`brisk_router::RouterConfig::price_interference`]).
    pub price_interference: bool,
    /// How K/V travel from a prefill replica to a decode replica (and a migrated
    /// request's from its source to its destination).
    pub transfer: TransferSettings,
    /// When the router migrates running requests.
    pub migration: MigrationSettings,
}

impl Default for FleetSettings {
    /// One replica, no router.
    fn default() -> Self {
        Self {
            replicas: 1,
            policy: Policy::PredictedTtft,
            priority_placement: false,
            reject_unattainable: false,
            event_delay: 0.0,
            affinity_slack: RouterConfig::default().affinity_slack,
            affinity_ratio: RouterConfig::default().affinity_ratio,
            prefill_replicas: 0,
            decode_replicas: 0,
            price_interference: true,
            transfer: TransferSettings::default(),
            migration: MigrationSettings::default(),
        }
    }
}

impl FleetSettings {
    /// Replica `i`'s role.
    pub fn role(&self, i: usize) -> Role {
        if i < self.prefill_replicas {
            Role::Prefill
        } else if i < self.prefill_replicas + self.decode_replicas {
            Role::Decode
        } else {
            Role::Both
        }
    }
}

/// K/V moving between replicas: `n` tokens' K/V take what the link ([`TransferCost`], the
/// router's pricing of it too) needs for `n × bytes_per_token`. A hand-over's prompt streams
/// while it is computed, so the request waits after its first token for what its last
/// chunk filled (or for the link to catch up); a migration's pause is its final copy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransferSettings {
    /// Bandwidth and fixed cost per hand-over (connection, export, import).
    pub link: TransferCost,
    /// K/V bytes per token of context.
    pub bytes_per_token: f64,
}

impl Default for TransferSettings {
    /// 10 Gbit/s, 1 ms, SmolLM2-135M's f32 K/V (30 layers × 2 × 3 heads × 64 × 4 bytes).
    fn default() -> Self {
        Self {
            link: TransferCost::default(),
            bytes_per_token: 46_080.0,
        }
    }
}

impl TransferSettings {
    /// Seconds to hand over `tokens` tokens' K/V.
    pub fn seconds(&self, tokens: usize) -> f64 {
        self.link.seconds(tokens as f64 * self.bytes_per_token)
    }
}

/// The name of a router policy, as `--router` spells it and the report shows it.
pub fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::PredictedTtft => "ttft",
        Policy::RoundRobin => "round-robin",
        Policy::OverlapLoad => "overlap-load",
    }
}

/// How the router chooses a replica (`--router`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterName {
    /// The lowest predicted time to first token (cached prefix, queue, latency model).
    Ttft,
    /// Each replica in turn, blind to caches and load: the baseline.
    RoundRobin,
    /// (Uncached prompt tokens + those queued there) × (requests there + 1), as
    /// vllm-router's `kv_aware`: caches and load, no latency model.
    OverlapLoad,
}

/// `brisk sim`'s fleet flags: how many replicas, and the router in front of them.
#[derive(clap::Args, Clone, Debug)]
pub struct FleetArgs {
    /// Identical replicas to simulate, all with the same settings; with more than one, a
    /// router (`brisk route`'s core) sends each request to one of them and the report gains
    /// a `fleet` section.
    #[arg(long, default_value_t = 1, env = "BRISK_SIM_REPLICAS")]
    pub replicas: usize,
    /// How the router chooses a replica (with `--replicas` above 1).
    #[arg(long, value_enum, default_value_t = RouterName::Ttft, env = "BRISK_SIM_ROUTER")]
    pub router: RouterName,
    /// The router refuses (429) requests that no replica is predicted to serve within their
    /// TTFT objective, as `brisk route --reject-unattainable` (with `--replicas` above 1).
    #[arg(long, env = "BRISK_SIM_ROUTER_REJECT_UNATTAINABLE")]
    pub router_reject_unattainable: bool,
    /// Seconds from the end of a replica's step to the router reading its KV events (with
    /// `--replicas` above 1; the router's own speculative entries bridge the gap).
    #[arg(long, default_value_t = 0.0, env = "BRISK_SIM_ROUTER_EVENT_DELAY")]
    pub router_event_delay: f64,
    /// Milliseconds of predicted TTFT a request without an objective may give up to go
    /// where more of its prompt is cached, as `brisk route --affinity-slack`.
    #[arg(
        long,
        default_value_t = RouterConfig::default().affinity_slack * 1000.0,
        value_name = "MS",
        env = "BRISK_SIM_ROUTER_AFFINITY_SLACK"
    )]
    pub router_affinity_slack: f64,
    /// Multiple of the fastest predicted TTFT a request may also accept to go where more of
    /// its prompt is cached (at least 1), as `brisk route --affinity-ratio`.
    #[arg(
        long,
        default_value_t = RouterConfig::default().affinity_ratio,
        value_name = "X",
        env = "BRISK_SIM_ROUTER_AFFINITY_RATIO"
    )]
    pub router_affinity_ratio: f64,
    /// Prefill/decode disaggregation: this many of the replicas are prefill replicas
    /// (`brisk serve --role prefill`), the rest decode replicas (or as --decode-replicas
    /// says); a request prefilled on one is handed with its K/V to another after its first
    /// token. 0: colocated.
    #[arg(long, default_value_t = 0, env = "BRISK_SIM_PREFILL_REPLICAS")]
    pub prefill_replicas: usize,
    /// With --prefill-replicas: how many of the others are decode replicas (default: all);
    /// the rest serve both phases, so the router chooses per request between
    /// disaggregated and colocated serving.
    #[arg(long, env = "BRISK_SIM_DECODE_REPLICAS", requires = "prefill_replicas")]
    pub decode_replicas: Option<usize>,
    /// The router chooses by predicted TTFT alone, without pricing the stall a prompt puts
    /// on the decodes beside it or a hand-over's transfer (`brisk route
    /// --no-interference-pricing`).
    #[arg(long, env = "BRISK_SIM_NO_INTERFERENCE_PRICING")]
    pub no_interference_pricing: bool,
    /// Bandwidth between replicas for hand-overs, Gbit/s.
    #[arg(long, default_value_t = 10.0, env = "BRISK_SIM_KV_TRANSFER_GBIT")]
    pub kv_transfer_gbit: f64,
    /// Fixed cost of a hand-over beyond its bytes (connection, export, import), ms.
    #[arg(long, default_value_t = 1.0, env = "BRISK_SIM_KV_TRANSFER_LATENCY_MS")]
    pub kv_transfer_latency_ms: f64,
    /// K/V bytes per token a hand-over carries (default: SmolLM2-135M in f32).
    #[arg(long, default_value_t = 46_080.0, env = "BRISK_SIM_KV_BYTES_PER_TOKEN")]
    pub kv_bytes_per_token: f64,
    /// Live migration for load balance, as `brisk route --rebalance-slack N`: the replica
    /// decoding the most requests moves one (with pre-copy over the hand-over link) to the
    /// one decoding the fewest when it leads by more than N.
    #[arg(long, value_name = "N", env = "BRISK_SIM_REBALANCE_SLACK")]
    pub rebalance_slack: Option<usize>,
    /// Live migration for priority, as `brisk route --priority-migration`: batch-class
    /// decodes leave a replica serving interactive requests.
    #[arg(long, env = "BRISK_SIM_PRIORITY_MIGRATION")]
    pub priority_migration: bool,
    /// Batch-class prompts go to replicas serving no interactive request while there are
    /// any, as `brisk route --priority-placement` (implied by --priority-migration).
    #[arg(long, env = "BRISK_SIM_PRIORITY_PLACEMENT")]
    pub priority_placement: bool,
    /// Seconds between the router's looks for migrations.
    #[arg(long, default_value_t = 0.5, env = "BRISK_SIM_REBALANCE_INTERVAL")]
    pub rebalance_interval: f64,
}

impl FleetArgs {
    /// The fleet's settings.
    pub fn settings(&self) -> Result<FleetSettings, SimRunError> {
        let bad = |flag, message: &str| SimRunError::Config {
            flag,
            message: message.into(),
        };
        if self.replicas == 0 {
            return Err(bad("replicas", "must be at least 1"));
        }
        if !(self.router_event_delay.is_finite() && self.router_event_delay >= 0.0) {
            return Err(bad("router-event-delay", "must be a number of seconds ≥ 0"));
        }
        if !(self.router_affinity_slack.is_finite() && self.router_affinity_slack >= 0.0) {
            return Err(bad("router-affinity-slack", "must be a number of ms ≥ 0"));
        }
        if !(self.router_affinity_ratio.is_finite() && self.router_affinity_ratio >= 1.0) {
            return Err(bad("router-affinity-ratio", "must be a number ≥ 1"));
        }
        let routed = [
            (
                self.router_reject_unattainable,
                "router-reject-unattainable",
            ),
            (self.router_event_delay > 0.0, "router-event-delay"),
            (self.rebalance_slack.is_some(), "rebalance-slack"),
            (self.priority_migration, "priority-migration"),
            (self.priority_placement, "priority-placement"),
        ];
        if let Some((_, flag)) = routed.iter().find(|(on, _)| *on && self.replicas == 1) {
            return Err(bad(
                flag,
                "there is no router with one replica; give --replicas 2 or more",
            ));
        }
        if !(self.rebalance_interval.is_finite() && self.rebalance_interval > 0.0) {
            return Err(bad(
                "rebalance-interval",
                "must be a number of seconds above 0",
            ));
        }
        if self.prefill_replicas > 0 && self.prefill_replicas >= self.replicas {
            return Err(bad(
                "prefill-replicas",
                "must leave at least one of --replicas to decode",
            ));
        }
        let decode_replicas = self
            .decode_replicas
            .unwrap_or(self.replicas - self.prefill_replicas.min(self.replicas));
        if self.prefill_replicas + decode_replicas > self.replicas {
            return Err(bad(
                "decode-replicas",
                "prefill and decode replicas together exceed --replicas",
            ));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.kv_transfer_gbit) {
            return Err(bad("kv-transfer-gbit", "must be a bandwidth above 0"));
        }
        if !(self.kv_transfer_latency_ms.is_finite() && self.kv_transfer_latency_ms >= 0.0) {
            return Err(bad("kv-transfer-latency-ms", "must be a number of ms ≥ 0"));
        }
        if !positive(self.kv_bytes_per_token) {
            return Err(bad("kv-bytes-per-token", "must be above 0"));
        }
        Ok(FleetSettings {
            replicas: self.replicas,
            prefill_replicas: self.prefill_replicas,
            decode_replicas: if self.prefill_replicas == 0 {
                0
            } else {
                decode_replicas
            },
            price_interference: !self.no_interference_pricing,
            transfer: TransferSettings {
                link: TransferCost {
                    bytes_per_s: self.kv_transfer_gbit * 1e9 / 8.0,
                    latency_s: self.kv_transfer_latency_ms * 1e-3,
                },
                bytes_per_token: self.kv_bytes_per_token,
            },
            policy: match self.router {
                RouterName::Ttft => Policy::PredictedTtft,
                RouterName::RoundRobin => Policy::RoundRobin,
                RouterName::OverlapLoad => Policy::OverlapLoad,
            },
            priority_placement: self.priority_placement,
            reject_unattainable: self.router_reject_unattainable,
            event_delay: self.router_event_delay,
            affinity_slack: self.router_affinity_slack / 1000.0,
            affinity_ratio: self.router_affinity_ratio,
            migration: MigrationSettings {
                rebalance_slack: self.rebalance_slack,
                priority: self.priority_migration,
                interval: self.rebalance_interval,
            },
        })
    }
}

/// The report's `fleet` section: only for a fleet of several replicas.
pub fn fleet_report(fleet: &FleetSettings, outcome: &SimOutcome) -> Option<FleetReport> {
    /// Fleets up to this size list every replica's request count.
    const LISTED: usize = 64;
    if fleet.replicas <= 1 {
        return None;
    }
    let counts: Vec<usize> = outcome.replicas.iter().map(|r| r.requests).collect();
    let prompt_tokens: u64 = outcome.replicas.iter().map(|r| r.prompt_tokens).sum();
    let cached_prompt_tokens: u64 = outcome.replicas.iter().map(|r| r.cached_tokens).sum();
    Some(FleetReport {
        replicas: fleet.replicas,
        router: policy_name(fleet.policy).into(),
        refused: outcome.refused,
        prompt_tokens,
        cached_prompt_tokens,
        prefix_cache_hit_rate: if prompt_tokens == 0 {
            0.0
        } else {
            cached_prompt_tokens as f64 / prompt_tokens as f64
        },
        requests_per_replica: Spread::of(&counts),
        requests_by_replica: (counts.len() <= LISTED).then_some(counts),
        prefill_replicas: fleet.prefill_replicas,
        decode_replicas: fleet.decode_replicas,
        price_interference: fleet.price_interference,
        handovers: outcome.handovers,
        migrations: outcome.migrations,
        migration_pause_ms: (!outcome.migration_pauses.is_empty()).then(|| {
            let mut ms: Vec<f64> = outcome.migration_pauses.iter().map(|s| s * 1e3).collect();
            ms.sort_by(f64::total_cmp);
            (percentile(&ms, 50.0), percentile(&ms, 99.0))
        }),
    })
}

/// One line about the fleet, for the terminal.
pub(crate) fn fleet_line(f: &FleetReport) -> String {
    let s = &f.requests_per_replica;
    let layout = match f.prefill_replicas {
        0 => String::new(),
        p => format!(
            " ({p} prefill, {} decode, {} both; {} hand-overs)",
            f.decode_replicas,
            f.replicas - p - f.decode_replicas,
            f.handovers
        ),
    };
    let pricing = if f.price_interference {
        ""
    } else {
        " without interference pricing"
    };
    let migrations = match f.migration_pause_ms {
        Some((p50, p99)) => format!(
            ", {} migrations (pause p50 {p50:.1} ms, p99 {p99:.1} ms)",
            f.migrations
        ),
        None => String::new(),
    };
    format!(
        "fleet: {} replicas{layout}, router {}{pricing}, prefix-cache hit rate {:.1}%, requests per replica {}/{:.1}/{} (min/mean/max), {} refused by the router{migrations}",
        f.replicas,
        f.router,
        f.prefix_cache_hit_rate * 100.0,
        s.min,
        s.mean,
        s.max,
        f.refused
    )
}
