//! `brisk serve`: load a model, start the engine thread, serve the OpenAI API.
//!
//! Flags (each also an environment variable) are validated here into the engine's and the
//! scheduler's configs, with messages that name the flag.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use brisk_backend::{KvCacheDtype, KvTransferDtype};
use brisk_engine::EngineConfig;
use brisk_scheduler::{
    defaults, FairShareConfig, LatencyModel, LengthPrediction, PolicyChoice, SchedulerConfig,
    SloDefaults, SpeculativeConfig,
};
use brisk_server::{
    router, serve, AuthSettings, Drain, KvEventsEndpoints, Readiness, ReplicaInfo, ServerState,
    SloSettings, WaitingQueue, DEFAULT_MAX_REQUEST_BYTES,
};
use brisk_sim::PolicyName;
use brisk_types::Backend;

use crate::{loaded_model, ModelArgs};

/// Arguments of `brisk serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, env = "BRISK_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "BRISK_PORT", default_value_t = 8000)]
    port: u16,
    /// Name clients use in `model` (default: the model file or directory name).
    #[arg(long, env = "BRISK_SERVED_MODEL_NAME")]
    served_model_name: Option<String>,
    /// Most sequences computed in one step.
    #[arg(long, env = "BRISK_MAX_NUM_SEQS", default_value_t = 64)]
    max_num_seqs: usize,
    /// Token budget of one step (decodes first, then prompt chunks). Default: 2048 with
    /// `--scheduling-policy slo`, which cuts each step that carries decodes down to what
    /// keeps them within their TPOT (so a fast machine prefills in large chunks and a slow
    /// one in small ones); 512 with `fcfs`, which takes the whole budget every step.
    #[arg(long, env = "BRISK_MAX_NUM_BATCHED_TOKENS")]
    max_num_batched_tokens: Option<usize>,
    /// Longest sequence (prompt + output); default and maximum: the model's context.
    #[arg(long, env = "BRISK_MAX_MODEL_LEN")]
    max_model_len: Option<usize>,
    /// Memory for the KV cache, in bytes (suffixes K, M, G, KiB, MiB, GiB accepted).
    #[arg(long, env = "BRISK_KV_CACHE_MEMORY", default_value = "1GiB", value_parser = parse_bytes)]
    kv_cache_memory: u64,
    /// Size the KV cache by tokens instead of bytes.
    #[arg(
        long,
        env = "BRISK_KV_CACHE_TOKENS",
        conflicts_with = "kv_cache_memory"
    )]
    kv_cache_tokens: Option<usize>,
    /// Tokens per KV block.
    #[arg(long, env = "BRISK_BLOCK_SIZE", default_value_t = 16)]
    block_size: usize,
    /// Element type of the KV cache: `auto`/`f32` (exact), `f16` or `bf16` (half the memory,
    /// so twice the tokens for the same --kv-cache-memory), `int8` (about a quarter, with one
    /// scale per cached vector).
    #[arg(long, env = "BRISK_KV_CACHE_DTYPE", default_value = "auto")]
    kv_cache_dtype: KvCacheDtype,
    /// How K/V travel when a request moves to another replica (a prefill hand-over, a
    /// migration): `auto` (the cache's own bytes, lossless), `int8` or `int4` (quantized per
    /// group of a key channel or a value vector with its own minimum and step: about 3.5×
    /// or 6× fewer bytes than f32, with the accuracy cost BENCHMARKS.md measures). What this
    /// replica sends; it takes in any of them.
    #[arg(long, env = "BRISK_KV_TRANSFER_DTYPE", default_value = "auto")]
    kv_transfer_dtype: KvTransferDtype,
    /// Disable automatic prefix caching.
    #[arg(long, env = "BRISK_NO_PREFIX_CACHING")]
    no_prefix_caching: bool,
    /// Serve prompt work in the policy's order whoever sent it. By default the server is
    /// shared fairly between clients (OpenAI's `user` field; requests without one are one
    /// client): the least-served client's prompts go first.
    #[arg(long, env = "BRISK_NO_FAIR_SHARE")]
    no_fair_share: bool,
    /// How far ahead of the least-served client a client may run before yielding, in
    /// weighted tokens (prompt tokens 1, output tokens 2); larger keeps a client's
    /// same-prefix requests together, smaller switches clients sooner. Default: the step
    /// budget (--max-num-batched-tokens).
    #[arg(long, env = "BRISK_FAIR_SHARE_QUANTUM")]
    fair_share_quantum: Option<usize>,
    /// Do not predict output lengths. By default the server learns each request's likely
    /// output length from the requests it has finished (prompt tokens, length, max_tokens,
    /// client) and, under the slo policy, serves shorter predicted jobs first among requests
    /// of equal slack, preempts the longest predicted first and counts decodes' predicted
    /// ends in its admission forecasts.
    #[arg(long, env = "BRISK_NO_OUTPUT_LENGTH_PREDICTION")]
    no_output_length_prediction: bool,
    /// Speculative decoding, as vLLM's JSON: `{"method": "ngram", "num_speculative_tokens":
    /// 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}` (prompt lookup: drafts copied from
    /// where the latest n-gram recurs). Each step, decodes verify drafts only where the latency
    /// model predicts more tokens per second (so it switches itself off on a busy batch);
    /// outputs are exactly plain decoding's. Requests opt out with `"speculative": false`.
    #[arg(long, env = "BRISK_SPECULATIVE_CONFIG", value_parser = SpeculativeConfig::from_vllm_json)]
    speculative_config: Option<SpeculativeConfig>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BRISK_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Seed for requests that bring none.
    #[arg(long, env = "BRISK_SEED", default_value_t = 0)]
    seed: u64,
    /// `slo` (default): schedule every request against its TTFT/TPOT objective with the
    /// machine's latency model; or `fcfs`: first come, first served with a fixed step budget.
    #[arg(long, value_enum, env = "BRISK_SCHEDULING_POLICY", default_value_t = PolicyName::Slo)]
    scheduling_policy: PolicyName,
    /// Latency model JSON from `brisk profile`. Without it `--scheduling-policy slo` uses the
    /// one it profiled on an earlier start with the same model, threads and settings (kept
    /// under ~/.cache/brisk/latency), or profiles quickly at start-up and keeps the result.
    #[arg(long, env = "BRISK_LATENCY_MODEL")]
    latency_model: Option<PathBuf>,
    /// Write every engine step's shape and wall time to this file (JSON lines), to fit a
    /// latency model on the live server with `brisk profile --from-steps`.
    #[arg(long, env = "BRISK_RECORD_STEPS")]
    record_steps: Option<PathBuf>,
    /// Publish the prefix cache's changes in vLLM's KV event format (ZMQ PUB, msgpack), for
    /// cache-aware routers: vLLM's JSON, e.g. `{"enable_kv_cache_events": true,
    /// "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558"}`. A `*` host binds
    /// where `--host` does.
    #[arg(long, env = "BRISK_KV_EVENTS_CONFIG", value_parser = parse_kv_events)]
    kv_events_config: Option<KvEventsChoice>,
    /// Default time-to-first-token objective, milliseconds (requests may override it with
    /// `"slo": {"ttft_ms": …}`).
    #[arg(long, env = "BRISK_TTFT_SLO", value_parser = defaults::parse_ms)]
    ttft_slo: Option<f64>,
    /// Default time-per-output-token objective, milliseconds (`"slo": {"tpot_ms": …}`).
    /// Default with `--scheduling-policy slo`: 150 (no step carrying a stream's decode is
    /// planned past it); `none` for no default objective.
    #[arg(long, env = "BRISK_TPOT_SLO", value_parser = defaults::parse_ms)]
    tpot_slo: Option<f64>,
    /// With `--scheduling-policy slo`: answer 429 at once to requests that cannot meet their
    /// TTFT, instead of serving them as best effort.
    #[arg(long, env = "BRISK_REJECT_UNATTAINABLE")]
    reject_unattainable: bool,
    /// Most requests waiting for their first token (queued or in prefill); beyond it new
    /// requests get 429 with `Retry-After` at once. Unbounded by default.
    #[arg(long, env = "BRISK_MAX_WAITING")]
    max_waiting: Option<usize>,
    /// Longest a request may run, from arrival to its last token, in seconds; past it the
    /// request is aborted (504, or an error event on a stream). Unbounded by default.
    #[arg(long, env = "BRISK_REQUEST_TIMEOUT", allow_negative_numbers = true, value_parser = parse_timeout)]
    request_timeout: Option<f64>,
    /// Lower a `max_tokens` that does not fit in the context (with the prompt) to what fits,
    /// instead of answering 400.
    #[arg(long, env = "BRISK_CLAMP_MAX_TOKENS")]
    clamp_max_tokens: bool,
    /// Require `Authorization: Bearer KEY` on the API (every route but /health and /metrics).
    /// Repeatable (or comma-separated in BRISK_API_KEY): any key opens the API, and with
    /// several each key is a client for fair share (`key-1`, `key-2`, … in this order) for
    /// requests that name no `user`. The first is the one presented to other replicas.
    #[arg(
        long,
        env = "BRISK_API_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_key: Vec<String>,
    /// With --api-key: require the key on /health, /ready and /metrics too.
    #[arg(long, env = "BRISK_AUTH_HEALTH_AND_METRICS", requires = "api_key")]
    auth_health_and_metrics: bool,
    /// The URL routers and other replicas use to reach this one (default: `http://` and the
    /// address it listens on).
    #[arg(long, env = "BRISK_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Register in etcd (comma-separated endpoints, e.g. `http://127.0.0.1:2379`) under a
    /// lease, so `brisk route --etcd` finds this replica, and forgets it when it dies.
    #[arg(long, env = "BRISK_ETCD", value_name = "ENDPOINTS", value_parser = parse_etcd)]
    etcd: Option<EtcdEndpoints>,
    /// The part of serving this replica takes on in a fleet, advertised to routers: `both`
    /// (colocated), `prefill` (computes prompts and first tokens, then hands each request's
    /// K/V to a decode replica the router names) or `decode` (routers send it no prompts,
    /// only requests handed over). Every role still serves whatever reaches it directly.
    #[arg(long, env = "BRISK_ROLE", default_value = "both")]
    role: brisk_types::Role,
    /// The key prefix to register under.
    #[arg(long, env = "BRISK_ETCD_PREFIX", default_value = brisk_gateway::DEFAULT_ETCD_PREFIX)]
    etcd_prefix: String,
    /// Seconds the etcd lease outlives this process if it dies without leaving.
    #[arg(long, env = "BRISK_ETCD_TTL", default_value_t = 10.0, value_parser = parse_seconds)]
    etcd_ttl: f64,
    /// On SIGTERM or SIGINT, seconds to let requests in flight finish before aborting them.
    #[arg(long, env = "BRISK_SHUTDOWN_TIMEOUT", default_value_t = 30.0, value_parser = parse_seconds)]
    shutdown_timeout: f64,
}

/// `--kv-events-config`, checked: the publisher it asks for, or none.
#[derive(Clone, Debug)]
struct KvEventsChoice(Option<brisk_kv_events::PublisherSettings>);

fn parse_kv_events(json: &str) -> Result<KvEventsChoice, String> {
    brisk_kv_events::KvEventsConfig::parse(json)
        .map(KvEventsChoice)
        .map_err(|e| e.to_string())
}

/// `--etcd`, checked.
#[derive(Clone, Debug)]
struct EtcdEndpoints(Vec<String>);

fn parse_etcd(text: &str) -> Result<EtcdEndpoints, String> {
    brisk_discovery::parse_endpoints(text)
        .map(EtcdEndpoints)
        .map_err(|e| e.to_string())
}

/// Parses a non-negative number of seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// The server's default objectives from `--ttft-slo`/`--tpot-slo` and the policy.
fn slo_defaults(args: &ServeArgs) -> SloDefaults {
    SloDefaults::from_flags(
        args.ttft_slo,
        args.tpot_slo,
        args.scheduling_policy == PolicyName::Slo,
    )
}

/// The scheduling policy the flags ask for, loading or measuring its latency model (which
/// speculative decoding needs too). Also returns the latency model when there is one (its
/// coefficients go into the replica's self-description, for routers).
fn policy<B: Backend>(
    args: &ServeArgs,
    backend: &B,
    model_path: &Path,
    content_salt: u64,
) -> Result<(PolicyChoice, Option<LatencyModel>)> {
    let latency = match &args.latency_model {
        Some(p) => Some(LatencyModel::load(p)?),
        None if args.scheduling_policy == PolicyName::Slo || args.speculative_config.is_some() => {
            Some(crate::latency_cache::load_or_profile(
                backend,
                model_path,
                &crate::latency_cache::key(
                    content_salt,
                    args.kv_cache_dtype.name(),
                    args.block_size,
                ),
                args.block_size,
            )?)
        }
        None => None,
    };
    let choice = match (args.scheduling_policy, latency.clone()) {
        (PolicyName::Slo, Some(model)) => {
            if !slo_defaults(args).is_bounded() {
                eprintln!(
                    "brisk: --scheduling-policy slo without --ttft-slo/--tpot-slo: only requests that bring an \"slo\" are scheduled against one; the rest are best effort"
                );
            }
            PolicyChoice::Slo {
                model,
                reject_unattainable: args.reject_unattainable,
            }
        }
        _ => PolicyChoice::Fcfs,
    };
    Ok((choice, latency))
}

/// Most memory the draft model's KV pool takes.
const DRAFT_POOL_BYTES: u64 = 512 << 20;

/// Loads the draft model of `--speculative-config`'s `model`, checks that it speaks the
/// target's tokens, and gives it a KV pool (as many tokens as the target's, within
/// [`DRAFT_POOL_BYTES`]) and a latency model (kept or profiled like the target's).
fn draft_model(
    path: &Path,
    target: &loaded_model::LoadedModel,
    target_pool_tokens: usize,
) -> Result<Box<dyn brisk_scheduler::speculate::Drafter>> {
    let draft = loaded_model::load(path)
        .map_err(|e| anyhow::anyhow!("--speculative-config model {}: {e}", path.display()))?;
    let (dv, tv) = (
        draft.backend.geometry().vocab_size,
        target.backend.geometry().vocab_size,
    );
    if dv != tv || draft.tokenizer.vocab_size() != target.tokenizer.vocab_size() {
        bail!(
            "--speculative-config model {}: its vocabulary ({dv} tokens) is not the served model's ({tv}); a draft model must share the served model's tokenizer",
            path.display()
        );
    }
    let per_token = draft.backend.geometry().kv_bytes_per_token.max(1) as u64;
    let pool_tokens =
        target_pool_tokens.min(usize::try_from(DRAFT_POOL_BYTES / per_token).unwrap_or(usize::MAX));
    let latency = crate::latency_cache::load_or_profile(
        &draft.backend,
        path,
        &crate::latency_cache::key(draft.content_salt, "f32", 16),
        16,
    )?;
    let drafter = brisk_engine::drafter::ModelDrafter::new(draft.backend, pool_tokens, latency)
        .map_err(|e| anyhow::anyhow!("--speculative-config model {}: {e}", path.display()))?;
    Ok(Box::new(drafter))
}

/// Parses a byte count with an optional unit.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 536870912, 512MiB, 1G)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    let bytes = number * scale;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("{text:?} must be a positive size"));
    }
    Ok(bytes as u64)
}

/// Runs `brisk serve`.
pub fn run(args: &ServeArgs) -> Result<()> {
    if args.block_size == 0 || args.block_size > 1024 {
        bail!(
            "--block-size must be between 1 and 1024, got {}",
            args.block_size
        );
    }
    if args.max_num_seqs == 0 {
        bail!("--max-num-seqs must be at least 1");
    }
    if args.max_waiting == Some(0) {
        bail!("--max-waiting must be at least 1 (leave it out for no bound)");
    }
    if args.reject_unattainable && args.scheduling_policy != PolicyName::Slo {
        bail!("--reject-unattainable needs --scheduling-policy slo");
    }
    if let Some(url) = &args.advertise_url {
        crate::startup::check_http_url("--advertise-url", url)?;
    }
    for key in &args.api_key {
        crate::startup::check_api_key(Some(key))?;
    }
    let path = loaded_model::resolve_path(args.model.model.as_deref())?;
    brisk_server::count_panics();
    let runtime = crate::startup::runtime()?;
    runtime.block_on(async {
        // The port is bound before the model loads, so clients connecting meanwhile get 503
        // `loading` (with Retry-After) rather than a refused connection.
        let (listener, addr) = crate::startup::bind(&args.host, args.port).await?;
        let drain = Drain::default();
        let readiness = Readiness::default();
        // `serve` installs the SIGINT/SIGTERM handlers when called: before the port is
        // announced, so a signal sent as soon as the line appears is never met by the default
        // action (which kills the process with status 143).
        let mut server = tokio::spawn(serve(
            listener,
            readiness.router(),
            drain.clone(),
            Duration::from_secs_f64(args.shutdown_timeout),
        ));
        eprintln!(
            "brisk: listening at http://{addr} while loading {} (requests get 503 until it is ready)",
            path.display()
        );
        let loading = {
            let (args, drain) = (args.clone(), drain.clone());
            tokio::task::spawn_blocking(move || server_state(&args, &path, drain, addr))
        };
        let loaded = tokio::select! {
            loaded = loading => loaded,
            // SIGTERM/SIGINT while loading: stop without waiting for the model.
            served = &mut server => return served.context("server task failed")?.context("server failed"),
        };
        let (state, summary) = match loaded.context("model loading panicked")? {
            Ok(loaded) => loaded,
            Err(e) => {
                drain.start();
                let _ = server.await;
                return Err(e);
            }
        };
        let info = state.replica_info.clone();
        let state = std::sync::Arc::new(state);
        readiness.ready(router(std::sync::Arc::clone(&state), args.max_request_bytes));
        eprintln!("brisk: serving {summary}");
        let leave = match (&args.etcd, info) {
            (Some(endpoints), Some(info)) => match register(args, &endpoints.0, &info).await {
                Ok(registration) => {
                    migrate_on_drain(args, &endpoints.0, &info.url, state, drain.clone());
                    Some(leave_on_drain(registration, drain.clone()))
                }
                Err(e) => {
                    drain.start();
                    let _ = server.await;
                    return Err(e);
                }
            },
            _ => None,
        };
        let served = server.await;
        if let Some(leave) = leave {
            drain.start();
            let _ = tokio::time::timeout(Duration::from_secs(5), leave).await;
        }
        served.context("server task failed")?.context("server failed")
    })?;
    // Requests still running after the timeout end here: their tasks are dropped, which
    // aborts them in the engine. Blocking tokenizer tasks get a moment to finish.
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("brisk: shut down");
    Ok(())
}

/// Registers the replica's description in etcd under `--etcd-prefix` and its address.
async fn register(
    args: &ServeArgs,
    endpoints: &[String],
    info: &ReplicaInfo,
) -> Result<brisk_discovery::Registration> {
    let name = info
        .url
        .split_once("://")
        .map_or(info.url.as_str(), |(_, rest)| rest);
    let key = format!("{}{}", args.etcd_prefix, name.trim_end_matches('/'));
    let value = serde_json::to_string(info)?;
    let ttl = Duration::from_secs_f64(args.etcd_ttl.max(1.0));
    let registration = brisk_discovery::Registration::start(endpoints, key.clone(), value, ttl)
        .await
        .context("cannot register in etcd (--etcd)")?;
    eprintln!("brisk: registered in etcd as {key}");
    Ok(registration)
}

/// Leaves etcd as soon as shutdown starts, so routers stop sending requests while the ones
/// in flight finish.
fn leave_on_drain(
    registration: brisk_discovery::Registration,
    drain: Drain,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        drain.started().await;
        registration.stop().await;
    })
}

/// Once draining starts, moves the requests running here to the other replicas registered in
/// etcd that decode (their snapshot at that moment), within the shutdown timeout; what no
/// peer takes finishes here.
fn migrate_on_drain(
    args: &ServeArgs,
    endpoints: &[String],
    own_url: &str,
    state: std::sync::Arc<brisk_server::ServerState>,
    drain: Drain,
) {
    let prefix = args.etcd_prefix.clone();
    let (endpoints, own_url) = (endpoints.to_vec(), own_url.to_string());
    let limit = Duration::from_secs_f64(args.shutdown_timeout);
    tokio::spawn(async move {
        drain.started().await;
        let peers = fleet_peers(&endpoints, prefix, &own_url).await;
        if peers.is_empty() {
            return;
        }
        let moved = brisk_server::migrate_running(state, peers, limit).await;
        if moved > 0 {
            eprintln!("brisk: draining moved {moved} running requests to other replicas");
        }
    });
}

/// The base URLs of the replicas registered under `prefix` that decode, but `own_url`
/// (none if etcd does not answer within 3 s).
async fn fleet_peers(endpoints: &[String], prefix: String, own_url: &str) -> Vec<String> {
    let Ok((mut events, _watch)) = brisk_discovery::watch(endpoints, prefix) else {
        return Vec::new();
    };
    let first = tokio::time::timeout(Duration::from_secs(3), events.recv()).await;
    let Ok(Some(brisk_discovery::MembershipEvent::Snapshot(members))) = first else {
        return Vec::new();
    };
    members
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_str::<ReplicaInfo>(&value).ok())
        .filter(|info| info.url != own_url)
        .filter(|info| {
            info.role
                .parse::<brisk_types::Role>()
                .is_ok_and(|r| r.decodes())
        })
        .map(|info| info.url)
        .collect()
}

/// Loads the model, starts the engine and builds the API's state; also returns the line that
/// tells the user what is served on `addr`.
fn server_state(
    args: &ServeArgs,
    path: &Path,
    drain: Drain,
    addr: std::net::SocketAddr,
) -> Result<(ServerState, String)> {
    let mut model = loaded_model::load(path)?;
    model.backend.set_kv_cache_dtype(args.kv_cache_dtype);
    let kv_transfer_bytes_per_token = model
        .backend
        .kv_transfer_bytes_per_token(args.kv_transfer_dtype, args.block_size);
    let geometry = model.backend.geometry().clone();
    let max_model_len = match args.max_model_len {
        None => geometry.max_context,
        Some(n) if n == 0 || n > geometry.max_context => bail!(
            "--max-model-len must be between 1 and the model's context ({}), got {n}",
            geometry.max_context
        ),
        Some(n) => n,
    };
    let pool_tokens = match args.kv_cache_tokens {
        Some(t) => t,
        None => usize::try_from(args.kv_cache_memory / geometry.kv_bytes_per_token as u64)
            .unwrap_or(usize::MAX),
    };
    let num_blocks = pool_tokens / args.block_size;
    if num_blocks == 0 {
        bail!(
            "the KV cache holds no block of {} tokens ({} bytes per token); raise --kv-cache-memory",
            args.block_size,
            geometry.kv_bytes_per_token
        );
    }
    let asked_budget = args
        .max_num_batched_tokens
        .unwrap_or(defaults::batched_tokens(
            args.scheduling_policy == PolicyName::Slo,
        ));
    let max_num_batched_tokens = asked_budget.max(args.max_num_seqs);
    if asked_budget < args.max_num_seqs {
        eprintln!(
            "brisk: --max-num-batched-tokens raised to {max_num_batched_tokens} so every running sequence can decode in a step"
        );
    }
    // A request must fit in the pool on its own, so the context a client may use is bounded by
    // the pool as well as by the model.
    let usable_context = max_model_len.min(num_blocks * args.block_size);
    let mut scheduler = SchedulerConfig {
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens,
        max_model_len,
        block_size: args.block_size,
        num_blocks,
        enable_prefix_caching: !args.no_prefix_caching,
        chunked_prefill: true,
        eos_token_ids: model.backend.stop_tokens().to_vec(),
        cache_salt: model.content_salt,
        fair_share: FairShareConfig::from_flags(
            args.no_fair_share,
            args.fair_share_quantum,
            max_num_batched_tokens,
        ),
        length_prediction: (!args.no_output_length_prediction).then(LengthPrediction::default),
        speculative: None,
    };
    scheduler
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
    let vocab_size = geometry.vocab_size;
    let (policy, latency_model) = policy(args, &model.backend, path, model.content_salt)?;
    scheduler.speculative = args.speculative_config.clone().map(|c| SpeculativeConfig {
        latency: latency_model.clone(),
        ..c
    });
    let latency = latency_model.map(|m| m.coefficients);
    let policy_name = policy.name();
    let step_records = match &args.record_steps {
        Some(p) => Some(crate::step_log::start_writer(p)?),
        None => None,
    };
    let (kv_events, kv_publisher, kv_topic) =
        match args.kv_events_config.as_ref().and_then(|c| c.0.as_ref()) {
            Some(settings) => {
                let settings = settings.clone().on_host(&args.host);
                let (tx, publisher) = brisk_kv_events::start(&settings, args.block_size)?;
                (Some(tx), Some(publisher), settings.topic)
            }
            None => (None, None, String::new()),
        };
    let drafter = match scheduler
        .speculative
        .as_ref()
        .and_then(|s| s.draft_model.as_ref())
    {
        Some(draft_path) => Some(draft_model(draft_path, &model, pool_tokens)?),
        None => None,
    };
    let engine = brisk_engine::spawn_with_drafter(
        model.backend,
        EngineConfig {
            scheduler,
            seed: args.seed,
            policy,
            step_records,
            kv_events,
        },
        drafter,
    )?;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| default_name(path));
    let aliases = vec![path.display().to_string()];
    let mut state = ServerState::new(
        engine,
        model.tokenizer,
        name.clone(),
        aliases,
        usable_context,
        vocab_size,
    );
    state.slo = SloSettings {
        defaults: slo_defaults(args),
        may_reject: args.reject_unattainable,
    };
    state.auth = AuthSettings {
        api_keys: args.api_key.clone(),
        protect_health_and_metrics: args.auth_health_and_metrics,
    };
    state.waiting = std::sync::Arc::new(WaitingQueue::new(args.max_waiting));
    state.request_timeout = args.request_timeout.map(Duration::from_secs_f64);
    state.clamp_max_tokens = args.clamp_max_tokens;
    state.cache_config = brisk_server::CacheConfig {
        block_size: args.block_size,
        num_blocks,
        dtype: args.kv_cache_dtype.name().to_string(),
        prefix_caching: !args.no_prefix_caching,
    };
    state.kv_wire = Some(std::sync::Arc::new(CpuKvWire {
        send: args.kv_transfer_dtype,
        cache: args.kv_cache_dtype,
    }));
    state.replica_info = Some(ReplicaInfo {
        url: advertised_url(args, addr),
        model: name.clone(),
        role: args.role.as_str().into(),
        block_size: args.block_size,
        hash_salt: model.content_salt,
        kv_blocks: num_blocks,
        max_batched_tokens: max_num_batched_tokens,
        kv_events: kv_publisher.as_ref().map(|p| KvEventsEndpoints {
            endpoint: connectable(&p.endpoint, &advertised_url(args, addr)),
            replay_endpoint: p
                .replay_endpoint
                .as_deref()
                .map(|r| connectable(r, &advertised_url(args, addr))),
            topic: kv_topic.clone(),
        }),
        latency,
        kv_transfer_bytes_per_token: Some(kv_transfer_bytes_per_token),
    });
    state.drain = drain;
    let kernels = match brisk_backend::KernelChoice::from_env() {
        Ok(brisk_backend::KernelChoice::Candle) => "candle".to_string(),
        _ => brisk_backend::KernelPath::selected().to_string(),
    };
    let events = kv_publisher.map_or_else(String::new, |p| {
        let replay = p
            .replay_endpoint
            .as_deref()
            .map_or_else(String::new, |r| format!(", replay {r}"));
        format!(", KV events on {}{replay}", p.endpoint)
    });
    let lengths = if args.no_output_length_prediction || policy_name != "slo" {
        ""
    } else {
        " with output-length prediction"
    };
    let summary = format!(
        "{name} on http://{addr} ({num_blocks} KV blocks of {} tokens in {}, context {usable_context}, scheduling {policy_name}{lengths}, kernels {kernels}{events}{})",
        args.block_size,
        args.kv_cache_dtype.name(),
        match args.api_key.len() {
            0 => String::new(),
            1 => ", API key required".into(),
            n => format!(", {n} API keys, one client each"),
        }
    );
    Ok((state, summary))
}

/// `--advertise-url`, or the address the server listens on.
fn advertised_url(args: &ServeArgs, addr: std::net::SocketAddr) -> String {
    args.advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
}

/// A bound ZMQ endpoint as others can connect to it: a wildcard host (`0.0.0.0`, `[::]`)
/// becomes the host of the advertised URL.
fn connectable(endpoint: &str, url: &str) -> String {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    for wildcard in ["tcp://0.0.0.0:", "tcp://[::]:"] {
        if let Some(port) = endpoint.strip_prefix(wildcard) {
            return format!("tcp://{host}:{port}");
        }
    }
    endpoint.to_owned()
}

/// Parses `--request-timeout`: a positive number of seconds, at most a million.
fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 1e6 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a positive number of seconds (at most 1000000)"
        )),
    }
}

fn default_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    name.strip_suffix(".gguf")
        .map_or(name.clone(), str::to_string)
}

/// The CPU backend's K/V wire formats, converted on the server's blocking pool: what this
/// replica sends (`--kv-transfer-dtype`), and whatever it receives into its cache's type.
struct CpuKvWire {
    send: KvTransferDtype,
    cache: KvCacheDtype,
}

impl brisk_server::KvWire for CpuKvWire {
    fn encode(&self, kv: Vec<u8>) -> Result<Vec<u8>, brisk_engine::MoveError> {
        Ok(brisk_backend::compress_kv(kv, self.send)?)
    }

    fn decode(&self, kv: Vec<u8>) -> Result<Vec<u8>, brisk_engine::MoveError> {
        Ok(brisk_backend::decompress_kv(kv, self.cache)?)
    }
}

#[cfg(test)]
mod tests {
    use super::{connectable, parse_bytes};

    #[test]
    fn wildcard_endpoints_take_the_advertised_host() {
        let url = "http://10.1.2.3:8000";
        assert_eq!(
            connectable("tcp://0.0.0.0:5557", url),
            "tcp://10.1.2.3:5557"
        );
        assert_eq!(connectable("tcp://[::]:5557", url), "tcp://10.1.2.3:5557");
        assert_eq!(
            connectable("tcp://127.0.0.1:5557", url),
            "tcp://127.0.0.1:5557"
        );
    }

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }
}
