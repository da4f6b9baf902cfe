//! `brisk route`: the OpenAI API in front of brisk replicas (see `brisk_gateway`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use brisk_gateway::{Discovery, Gateway, GatewayConfig, Membership};
use brisk_router::{Policy, RouterConfig, TransferCost};
use brisk_scheduler::{LatencyCoefficients, LatencyModel};
use brisk_server::{AuthSettings, Drain, DEFAULT_MAX_REQUEST_BYTES};

/// Arguments of `brisk route`.
#[derive(clap::Args, Clone, Debug)]
pub struct RouteArgs {
    /// Address to listen on.
    #[arg(long, env = "BRISK_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "BRISK_ROUTE_PORT", default_value_t = 8080)]
    port: u16,
    /// A replica's URL (repeat for each), e.g. `http://127.0.0.1:8001`.
    #[arg(long = "replica", value_name = "URL", conflicts_with = "etcd")]
    replicas: Vec<String>,
    /// Find replicas in etcd (comma-separated endpoints, e.g. `http://127.0.0.1:2379`):
    /// those started with `brisk serve --etcd`.
    #[arg(long, env = "BRISK_ETCD", value_name = "ENDPOINTS")]
    etcd: Option<String>,
    /// The key prefix replicas register under.
    #[arg(long, env = "BRISK_ETCD_PREFIX", default_value = brisk_gateway::DEFAULT_ETCD_PREFIX)]
    etcd_prefix: String,
    /// `ttft`: the replica with the lowest predicted time to first token (its cached prefix,
    /// queue and latency model); `round-robin`: each in turn (a baseline).
    #[arg(long, env = "BRISK_ROUTER_POLICY", value_enum, default_value_t = RoutePolicy::Ttft)]
    policy: RoutePolicy,
    /// Latency model JSON (`brisk profile`) for replicas that advertise none. Without it a
    /// nominal model ranks replicas by queued and uncached prompt tokens.
    #[arg(long, env = "BRISK_LATENCY_MODEL")]
    latency_model: Option<PathBuf>,
    /// Default time-to-first-token objective, milliseconds (requests may bring
    /// `"slo": {"ttft_ms": …}`).
    #[arg(long, env = "BRISK_TTFT_SLO", value_parser = parse_positive)]
    ttft_slo: Option<f64>,
    /// Default time-per-output-token objective, milliseconds (requests may bring
    /// `"slo": {"tpot_ms": …}`): a prompt goes to a replica whose decodes it would push
    /// past it only when that is cheaper than the alternatives (see
    /// --no-interference-pricing).
    #[arg(long, env = "BRISK_TPOT_SLO", value_parser = parse_positive)]
    tpot_slo: Option<f64>,
    /// Choose by predicted time to first token alone. By default the router also prices
    /// what a placement costs others: the stall a prompt's chunks put on the decodes
    /// running on a replica (when the step with its first chunk is predicted past the
    /// request's TPOT objective, or always without one), and, on a `--role prefill`
    /// replica, the hand-over of its K/V to a decode replica (--kv-transfer-gbit, the bytes
    /// per token the replica advertises); the cheapest of the replicas that hold as much of
    /// the prompt and are within its TTFT allowance wins.
    #[arg(long, env = "BRISK_NO_INTERFERENCE_PRICING")]
    no_interference_pricing: bool,
    /// Bandwidth between replicas that hand-overs are priced at, Gbit/s.
    #[arg(long, env = "BRISK_KV_TRANSFER_GBIT", default_value_t = 10.0, value_parser = parse_positive)]
    kv_transfer_gbit: f64,
    /// Answer 429 at once when no replica is predicted to meet a request's TTFT.
    #[arg(long, env = "BRISK_REJECT_UNATTAINABLE", requires = "ttft_slo")]
    reject_unattainable: bool,
    /// Replicas tried for one request before its error is returned.
    #[arg(long, env = "BRISK_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: usize,
    /// First wait between attempts, milliseconds (doubling).
    #[arg(long, env = "BRISK_RETRY_BACKOFF", default_value_t = 50.0, value_parser = parse_positive)]
    retry_backoff_ms: f64,
    /// Seconds a replica may take to start answering (a stream's first event, a whole
    /// answer otherwise) before the request is retried elsewhere and the replica counted as
    /// failing.
    #[arg(long, env = "BRISK_REPLICA_TIMEOUT", default_value_t = 300.0, value_parser = parse_positive)]
    replica_timeout: f64,
    /// Seconds between health checks of each replica.
    #[arg(long, env = "BRISK_HEALTH_INTERVAL", default_value_t = 1.0, value_parser = parse_positive)]
    health_interval: f64,
    /// Milliseconds of predicted time to first token a request without an objective may
    /// give up to go where more of its prompt is cached (with an objective: up to half of
    /// it; either way at least what `--affinity-ratio` allows).
    #[arg(long, env = "BRISK_AFFINITY_SLACK", default_value_t = RouterConfig::default().affinity_slack * 1000.0, value_parser = parse_non_negative)]
    affinity_slack: f64,
    /// A request may also give up predicted time to first token up to this multiple of the
    /// fastest prediction to follow its cached blocks (the allowance grows with the queues,
    /// so the fleet keeps its hit rate under load).
    #[arg(long, env = "BRISK_AFFINITY_RATIO", default_value_t = RouterConfig::default().affinity_ratio, value_parser = parse_ratio)]
    affinity_ratio: f64,
    /// Requests a replica may have beyond the least loaded one's before it gets no more
    /// (guards against one shared prefix sending everything to one replica).
    #[arg(long, env = "BRISK_HOT_SPOT_SLACK", default_value_t = 4)]
    hot_spot_slack: usize,
    /// Live migration for load balance: when the replica decoding the most requests decodes
    /// more than N beyond the one decoding the fewest, have it move one there (pre-copy; the
    /// client's stream goes on). Off unless given.
    #[arg(long, env = "BRISK_REBALANCE_SLACK", value_name = "N")]
    rebalance_slack: Option<usize>,
    /// Live migration for priority: a replica serving an interactive request (`"priority"`
    /// absent or `"interactive"`) moves its `"batch"` decodes, one by one, to the replica
    /// decoding fewest among those serving no interactive request.
    /// Implies --priority-placement.
    #[arg(long, env = "BRISK_PRIORITY_MIGRATION")]
    priority_migration: bool,
    /// Send `"batch"` prompts to replicas serving no interactive request, while there are
    /// any.
    #[arg(long, env = "BRISK_PRIORITY_PLACEMENT")]
    priority_placement: bool,
    /// Seconds between two looks at the balance (with --rebalance-slack or
    /// --priority-migration).
    #[arg(long, env = "BRISK_REBALANCE_INTERVAL", default_value_t = 0.5, value_parser = parse_positive)]
    rebalance_interval: f64,
    /// Require `Authorization: Bearer KEY` (passed on to the replicas).
    #[arg(long, env = "BRISK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The key to present to replicas started with `--api-key` (health checks, and in place
    /// of the caller's on forwarded requests). Default: the router's own `--api-key`.
    #[arg(long, env = "BRISK_REPLICA_API_KEY", hide_env_values = true)]
    replica_api_key: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BRISK_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// On SIGTERM or SIGINT, seconds to let requests in flight finish.
    #[arg(long, env = "BRISK_SHUTDOWN_TIMEOUT", default_value_t = 30.0, value_parser = parse_positive)]
    shutdown_timeout: f64,
}

/// `--policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoutePolicy {
    /// Lowest predicted time to first token.
    Ttft,
    /// Each replica in turn.
    RoundRobin,
    /// The lowest (uncached prompt tokens + those queued there) × (requests there + 1):
    /// vllm-router's `kv_aware` cost, without a latency model.
    OverlapLoad,
}

fn parse_non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a non-negative number")),
    }
}

/// A multiple of at least 1 (1: no allowance beyond the fixed one).
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number ≥ 1")),
    }
}

fn parse_positive(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

/// A nominal step-latency model for replicas that advertise none: SmolLM2-135M's order of
/// magnitude on one core. It ranks replicas by queued and uncached prompt work; absolute
/// predictions (and so SLO refusals) need the replicas' own models.
fn nominal_latency() -> LatencyModel {
    let mut m = LatencyModel::from_coefficients(LatencyCoefficients {
        base_s: 0.005,
        per_prefill_token_s: 0.0005,
        per_decode_seq_s: 0.001,
        per_decode_context_token_s: 1e-6,
        per_prefill_attention_pair_s: 1e-8,
    });
    m.source = "nominal (brisk route without --latency-model)".into();
    m
}

fn discovery(args: &RouteArgs) -> Result<Discovery> {
    if let Some(etcd) = &args.etcd {
        let endpoints = brisk_discovery::parse_endpoints(etcd)?;
        return Ok(Discovery::Etcd {
            endpoints,
            prefix: args.etcd_prefix.clone(),
        });
    }
    if args.replicas.is_empty() {
        bail!("brisk route needs replicas: --replica URL (repeat it) or --etcd ENDPOINTS");
    }
    let mut urls = Vec::new();
    for url in &args.replicas {
        let url = url.trim().trim_end_matches('/');
        crate::startup::check_http_url("--replica", url)?;
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_owned());
        }
    }
    Ok(Discovery::Static(urls))
}

fn config(args: &RouteArgs) -> Result<GatewayConfig> {
    if args.max_attempts == 0 {
        bail!("--max-attempts must be at least 1");
    }
    crate::startup::check_api_key(args.api_key.as_deref())?;
    let default_latency = match &args.latency_model {
        Some(p) => LatencyModel::load(p)?,
        None => nominal_latency(),
    };
    Ok(GatewayConfig {
        router: RouterConfig {
            policy: match args.policy {
                RoutePolicy::Ttft => Policy::PredictedTtft,
                RoutePolicy::RoundRobin => Policy::RoundRobin,
                RoutePolicy::OverlapLoad => Policy::OverlapLoad,
            },
            hot_spot_slack: args.hot_spot_slack,
            affinity_slack: args.affinity_slack / 1000.0,
            affinity_ratio: args.affinity_ratio,
            rebalance_slack: args.rebalance_slack,
            priority_migration: args.priority_migration,
            priority_placement: args.priority_placement,
            price_interference: !args.no_interference_pricing,
            kv_transfer: TransferCost {
                bytes_per_s: args.kv_transfer_gbit * 1e9 / 8.0,
                ..TransferCost::default()
            },
            ..RouterConfig::default()
        },
        default_latency,
        ttft_slo: args.ttft_slo.map(|ms| ms / 1000.0),
        tpot_slo: args.tpot_slo.map(|ms| ms / 1000.0),
        reject_unattainable: args.reject_unattainable,
        max_attempts: args.max_attempts,
        retry_backoff: Duration::from_secs_f64(args.retry_backoff_ms / 1000.0),
        connect_timeout: Duration::from_secs(2),
        answer_timeout: Duration::from_secs_f64(args.replica_timeout),
        health_interval: Duration::from_secs_f64(args.health_interval),
        rebalance_interval: Duration::from_secs_f64(args.rebalance_interval),
        auth: AuthSettings {
            api_keys: args.api_key.clone().into_iter().collect(),
            protect_health_and_metrics: false,
        },
        replica_api_key: args
            .replica_api_key
            .clone()
            .or_else(|| args.api_key.clone()),
        max_request_bytes: args.max_request_bytes,
    })
}

/// Runs `brisk route`.
pub fn run(args: &RouteArgs) -> Result<()> {
    let discovery = discovery(args)?;
    let cfg = config(args)?;
    let runtime = crate::startup::runtime()?;
    runtime.block_on(async {
        let (listener, addr) = crate::startup::bind(&args.host, args.port).await?;
        let gateway = Gateway::new(cfg)?;
        let _membership = Membership::start(&gateway, discovery.clone());
        let app = brisk_gateway::app(Arc::clone(&gateway));
        let serving = brisk_server::serve(
            listener,
            app,
            Drain::default(),
            Duration::from_secs_f64(args.shutdown_timeout),
        );
        let source = match &discovery {
            Discovery::Static(urls) => format!("replicas {}", urls.join(", ")),
            Discovery::Etcd { endpoints, prefix } => {
                format!(
                    "replicas registered in etcd {} under {prefix}",
                    endpoints.join(",")
                )
            }
        };
        eprintln!("brisk: routing on http://{addr} ({source})");
        serving.await.context("router failed")
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("brisk: router shut down");
    Ok(())
}
