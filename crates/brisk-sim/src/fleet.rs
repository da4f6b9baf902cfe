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

use brisk_bench::report::{FleetReport, Spread};
use brisk_router::Policy;

use crate::{SimOutcome, SimRunError};

/// How many replicas there are and how requests reach them.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetSettings {
    /// Identical replicas (at least 1; with 1, requests go straight to it).
    pub replicas: usize,
    /// How the router chooses a replica.
    pub policy: Policy,
    /// The router refuses (429) requests no replica is predicted to serve within their TTFT.
    pub reject_unattainable: bool,
    /// Seconds from the end of a replica's step to the router reading its KV events.
    pub event_delay: f64,
}

impl Default for FleetSettings {
    /// One replica, no router.
    fn default() -> Self {
        Self {
            replicas: 1,
            policy: Policy::PredictedTtft,
            reject_unattainable: false,
            event_delay: 0.0,
        }
    }
}

/// The name of a router policy, as `--router` spells it and the report shows it.
pub fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::PredictedTtft => "ttft",
        Policy::RoundRobin => "round-robin",
    }
}

/// How the router chooses a replica (`--router`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterName {
    /// The lowest predicted time to first token (cached prefix, queue, latency model).
    Ttft,
    /// Each replica in turn, blind to caches and load: the baseline.
    RoundRobin,
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
        let routed = self.router_reject_unattainable || self.router_event_delay > 0.0;
        if self.replicas == 1 && routed {
            return Err(bad(
                if self.router_reject_unattainable {
                    "router-reject-unattainable"
                } else {
                    "router-event-delay"
                },
                "there is no router with one replica; give --replicas 2 or more",
            ));
        }
        Ok(FleetSettings {
            replicas: self.replicas,
            policy: match self.router {
                RouterName::Ttft => Policy::PredictedTtft,
                RouterName::RoundRobin => Policy::RoundRobin,
            },
            reject_unattainable: self.router_reject_unattainable,
            event_delay: self.router_event_delay,
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
    })
}

/// One line about the fleet, for the terminal.
pub(crate) fn fleet_line(f: &FleetReport) -> String {
    let s = &f.requests_per_replica;
    format!(
        "fleet: {} replicas, router {}, prefix-cache hit rate {:.1}%, requests per replica {}/{:.1}/{} (min/mean/max), {} refused by the router",
        f.replicas,
        f.router,
        f.prefix_cache_hit_rate * 100.0,
        s.min,
        s.mean,
        s.max,
        f.refused
    )
}
