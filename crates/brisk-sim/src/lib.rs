//! `brisk sim`: capacity planning with the scheduler that serves, on a virtual clock.
//!
//! The simulator runs the server's own engine core ([`brisk_engine::EngineCore`]: scheduler,
//! block manager, sampling, aborts) over a backend whose steps take the time a profiled
//! [`LatencyModel`] predicts instead of running the model ([`sim`], [`backend`]), as
//! DistServe's placement search, Vidur and Dynamo's mocker do. It replays
//! exactly the workloads `brisk bench` sends (the same flags, parsed by the same code:
//! synthetic lengths, traces, length samples, arrivals, SLO classes) and writes the same report
//! JSON, so simulated and measured runs compare key by key. A one-hour trace takes seconds.
//!
//! With `--replicas N` (N > 1) it simulates a fleet: N identical replicas, each its own
//! engine core, behind the router core that `brisk route` runs ([`fleet`]), all on one
//! virtual clock. Requests are routed on arrival (`--router ttft` by predicted time to first
//! token over each replica's cached prefix and queue, or `round-robin`), the replicas' KV
//! events feed the router's index as the gateway's subscriptions do, and the report adds a
//! `fleet` section: the prefix-cache hit rate over the fleet and how requests spread. So
//! routing policies can be compared at sizes no test bench reaches. The cost grows with the
//! steps run and, with `ttft`, with replicas × prompt tokens: the router core prices every
//! replica for every request.
//!
//! With `--prefill-replicas P` the first P replicas are prefill replicas and the rest decode
//! replicas (`brisk serve --role`): the router sends prompts to the former, naming a decode
//! replica for each; a request pauses after its first token, its K/V travel for the time
//! the transfer model gives (`--kv-transfer-gbit`, `--kv-transfer-latency-ms`,
//! `--kv-bytes-per-token`), and the decode replica's engine core takes it in as the real
//! one does ([`brisk_engine::EngineCore::import`]), or it decodes where it was when there
//! is no room. DistServe's placement question (how many of each for a trace and an SLO) is
//! then a sweep over P.
//!
//! [`profile`] measures the latency model on a real backend (`brisk profile`).
#![deny(missing_docs)]

pub mod backend;
pub mod fleet;
mod front;
mod migration;
pub mod profile;
mod replica;
pub mod sim;

use std::path::PathBuf;

use brisk_bench::prompts::{Prompt, PromptBuilder};
use brisk_bench::report::{self, Report, RunMeta};
use brisk_bench::slo::SloPolicy as BenchSlo;
use brisk_bench::sweep::{self, RateSearch, SweepSummary};
use brisk_bench::workload::Workload;
use brisk_bench::{BenchArgs, BenchConfig, BenchError, PromptFormat, Slo};
use brisk_scheduler::{
    defaults, FairShareConfig, LatencyError, LatencyModel, LengthPrediction, PolicyChoice,
    Priority, RequestSlo, SchedulerConfig, SloDefaults, SpeculativeConfig,
};

pub use fleet::{fleet_report, FleetArgs, FleetSettings, RouterName};
pub use migration::MigrationSettings;
pub use replica::ReplicaOutcome;
pub use sim::{simulate, SimError, SimOutcome, SimRequest, SimSettings};

/// Which scheduling policy to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyName {
    /// First come, first served.
    Fcfs,
    /// SLO-aware: deadline slack, TPOT-sized budget, admission control, priority preemption.
    Slo,
}

/// `brisk sim` flags: `brisk bench`'s workload flags plus the simulated server's settings.
#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// The workload, objectives, rates and output, exactly as for `brisk bench` (`--url` is
    /// not needed; `--max-concurrency` is not simulated).
    #[command(flatten)]
    pub bench: BenchArgs,
    /// Latency model JSON written by `brisk profile`.
    #[arg(long, env = "BRISK_SIM_LATENCY_MODEL")]
    pub latency_model: PathBuf,
    /// Scheduling policy of the simulated server (as `brisk serve`'s, whose default it shares).
    #[arg(long, value_enum, default_value_t = PolicyName::Slo, env = "BRISK_SIM_SCHEDULING_POLICY")]
    pub scheduling_policy: PolicyName,
    /// The simulated server's default time-to-first-token objective, milliseconds (as
    /// `brisk serve --ttft-slo`): requests get it unless `--send-slo` sends their class's.
    #[arg(long, env = "BRISK_SIM_TTFT_SLO", value_parser = defaults::parse_ms)]
    pub ttft_slo: Option<f64>,
    /// The simulated server's default time-per-output-token objective, milliseconds (as
    /// `brisk serve --tpot-slo`; 150 under `slo`, `none` for none).
    #[arg(long, env = "BRISK_SIM_TPOT_SLO", value_parser = defaults::parse_ms)]
    pub tpot_slo: Option<f64>,
    /// With `slo`: reject (429) requests that cannot meet their TTFT instead of demoting them.
    #[arg(long, env = "BRISK_SIM_REJECT_UNATTAINABLE")]
    pub reject_unattainable: bool,
    /// Most sequences computed in one step (as `brisk serve`).
    #[arg(long, default_value_t = 64, env = "BRISK_SIM_MAX_NUM_SEQS")]
    pub max_num_seqs: usize,
    /// Token budget of one step (as `brisk serve`: 2048 under `slo`, 512 under `fcfs`).
    #[arg(long, env = "BRISK_SIM_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: Option<usize>,
    /// Longest sequence (prompt + output).
    #[arg(long, default_value_t = 8192, env = "BRISK_SIM_MAX_MODEL_LEN")]
    pub max_model_len: usize,
    /// KV cache size in tokens (`brisk serve` prints its pool; SmolLM2 in 1 GiB holds 23,296).
    #[arg(long, default_value_t = 23_296, env = "BRISK_SIM_KV_CACHE_TOKENS")]
    pub kv_cache_tokens: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16, env = "BRISK_SIM_BLOCK_SIZE")]
    pub block_size: usize,
    /// Disable automatic prefix caching.
    #[arg(long, env = "BRISK_SIM_NO_PREFIX_CACHING")]
    pub no_prefix_caching: bool,
    /// Serve prompt work in the policy's order whoever sent it (as `brisk serve
    /// --no-fair-share`).
    #[arg(long, env = "BRISK_SIM_NO_FAIR_SHARE")]
    pub no_fair_share: bool,
    /// How far ahead of the least-served client a client may run, in weighted tokens
    /// (default: the step budget; as `brisk serve`).
    #[arg(long, env = "BRISK_SIM_FAIR_SHARE_QUANTUM")]
    pub fair_share_quantum: Option<usize>,
    /// Do not predict output lengths (as `brisk serve --no-output-length-prediction`).
    #[arg(long, env = "BRISK_SIM_NO_OUTPUT_LENGTH_PREDICTION")]
    pub no_output_length_prediction: bool,
    /// Speculative decoding, as `brisk serve --speculative-config` (vLLM's JSON); decided
    /// per step by the latency model as the server decides.
    #[arg(long, env = "BRISK_SIM_SPECULATIVE_CONFIG", value_parser = SpeculativeConfig::from_vllm_json, requires = "draft_acceptance")]
    pub speculative_config: Option<SpeculativeConfig>,
    /// With --speculative-config: the probability that a verified draft token is accepted
    /// (the simulator has no model to judge drafts; measure it on the real server:
    /// brisk_spec_decode_num_accepted_tokens_total / brisk_spec_decode_num_draft_tokens_total).
    #[arg(long, env = "BRISK_SIM_DRAFT_ACCEPTANCE", requires = "speculative_config", value_parser = parse_probability)]
    pub draft_acceptance: Option<f64>,
    /// How many replicas, and the router in front of them.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Parses a probability in [0, 1].
fn parse_probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability between 0 and 1")),
    }
}

/// Why `brisk sim` failed.
#[derive(Debug, thiserror::Error)]
pub enum SimRunError {
    /// A flag is wrong.
    #[error("--{flag}: {message}")]
    Config {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The workload or report failed (shared with `brisk bench`).
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// The latency model could not be read.
    #[error(transparent)]
    Latency(#[from] LatencyError),
    /// The simulation failed.
    #[error(transparent)]
    Sim(#[from] SimError),
}

impl SimArgs {
    /// The simulated server's settings.
    pub fn settings(&self, model: LatencyModel) -> Result<SimSettings, SimRunError> {
        let bad = |flag, message: String| SimRunError::Config { flag, message };
        let fleet = self.fleet.settings()?;
        if self
            .speculative_config
            .as_ref()
            .is_some_and(|s| s.draft_model.is_some())
        {
            return Err(bad(
                "speculative-config",
                "the simulator plays prompt lookup (\"ngram\") only; a draft model's own steps are not simulated".into(),
            ));
        }
        if self.block_size == 0 {
            return Err(bad("block-size", "must be at least 1".into()));
        }
        let budget = self
            .max_num_batched_tokens
            .unwrap_or(defaults::batched_tokens(self.slo_policy()));
        let scheduler = SchedulerConfig {
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: budget,
            max_model_len: self.max_model_len,
            block_size: self.block_size,
            num_blocks: self.kv_cache_tokens / self.block_size,
            enable_prefix_caching: !self.no_prefix_caching,
            chunked_prefill: true,
            eos_token_ids: Vec::new(),
            cache_salt: 0,
            fair_share: FairShareConfig::from_flags(
                self.no_fair_share,
                self.fair_share_quantum,
                budget,
            ),
            length_prediction: (!self.no_output_length_prediction).then(LengthPrediction::default),
            speculative: self.speculative_config.clone().map(|c| SpeculativeConfig {
                latency: Some(model.clone()),
                ..c
            }),
        };
        scheduler
            .validate()
            .map_err(|e| bad("max-num-batched-tokens", e.to_string()))?;
        let policy = match self.scheduling_policy {
            PolicyName::Fcfs => PolicyChoice::Fcfs,
            PolicyName::Slo => PolicyChoice::Slo {
                model: model.clone(),
                reject_unattainable: self.reject_unattainable,
            },
        };
        Ok(SimSettings {
            scheduler,
            policy,
            model,
            fleet,
            draft_acceptance: self.draft_acceptance.unwrap_or(0.0),
        })
    }

    fn slo_policy(&self) -> bool {
        self.scheduling_policy == PolicyName::Slo
    }

    /// The simulated server's default objectives (as `brisk serve`'s from the same flags).
    pub fn slo_defaults(&self) -> SloDefaults {
        SloDefaults::from_flags(self.ttft_slo, self.tpot_slo, self.slo_policy())
    }
}

/// What the simulated requests tell the server beyond their prompts, as `brisk bench` sends
/// it: with `send_slo` each its SLO class's objective (over the server's defaults, field by
/// field) and batch priority for a class named `batch`; with `send_user` its client.
#[derive(Clone, Copy, Debug, Default)]
pub struct SentFields {
    /// `brisk bench --send-slo`.
    pub send_slo: bool,
    /// `brisk bench --send-user`.
    pub send_user: bool,
    /// The server's objectives for requests that bring none (`--ttft-slo`/`--tpot-slo`).
    pub server_slo: SloDefaults,
}

impl SentFields {
    fn objective(&self, class: &Slo) -> Option<RequestSlo> {
        let sent = |ms: f64| (self.send_slo && ms.is_finite()).then_some(ms);
        self.server_slo
            .objective(sent(class.ttft_ms), sent(class.tpot_ms))
    }
}

/// The requests of a shaped workload with what `sent` says each tells the server. `salt`
/// varies prompt contents as `brisk bench` does per rate, so a simulated and a measured run
/// see the same prompts.
pub fn sim_requests(
    workload: &Workload,
    slo: &BenchSlo,
    seed: u64,
    salt: u64,
    sent: SentFields,
) -> Result<Vec<SimRequest>, SimRunError> {
    let builder = PromptBuilder::new(PromptFormat::Ids, seed, None, Vec::new())?;
    // The builder is async for remote tokenizers; id prompts never wait on anything.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let (prompts, _) = rt.block_on(builder.build(workload, salt))?;
    let lens: Vec<usize> = workload.requests.iter().map(|r| r.prompt_len).collect();
    let classes = slo.assign(&lens, seed);
    Ok(workload
        .requests
        .iter()
        .zip(prompts)
        .zip(classes)
        .map(|((r, prompt), c)| {
            let class = &slo.classes[c];
            SimRequest {
                arrival: r.arrival_s,
                prompt: match prompt {
                    Prompt::Ids(ids) => ids,
                    Prompt::Text(_) => unreachable!("id prompts were asked for"),
                },
                output_len: r.output_len.max(1),
                slo: sent.objective(&class.slo),
                priority: if sent.send_slo && class.name == "batch" {
                    Priority::Batch
                } else {
                    Priority::Interactive
                },
                client: sent.send_user.then(|| r.user(&class.name)),
            }
        })
        .collect())
}

/// One simulated run at one rate.
pub fn run_once(
    args: &SimArgs,
    cfg: &BenchConfig,
    settings: &SimSettings,
    base: &Workload,
    rate: Option<f64>,
) -> Result<Report, SimRunError> {
    let bench = &args.bench;
    let workload = base.clone().shape(&brisk_bench::shaping(bench, rate));
    // `brisk bench`'s salt rule, so that both see the same prompts at each rate.
    let salt = rate.map_or(0, f64::to_bits);
    let sent = SentFields {
        send_slo: bench.send_slo,
        send_user: bench.send_user,
        server_slo: args.slo_defaults(),
    };
    let requests = sim_requests(&workload, &cfg.slo, bench.seed, salt, sent)?;
    let outcome = simulate(settings, &requests)?;
    let meta = RunMeta {
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        url: format!("sim://{}", settings.policy.name()),
        model: settings.model.source.clone(),
        endpoint: cfg.endpoint,
        workload: workload.source.clone(),
        rate,
        burstiness: bench.burstiness,
        max_concurrency: None,
        slo: cfg.slo.clone(),
        prompt_lengths_exact: true,
        seed: bench.seed,
    };
    let fleet = fleet_report(&settings.fleet, &outcome);
    let mut report = report::build(&meta, outcome.records, outcome.duration_s);
    report.fleet = fleet;
    Ok(report)
}

/// Runs `brisk sim`: one report, or a sweep summary with per-rate reports beside it.
pub fn run(args: &SimArgs) -> Result<(), SimRunError> {
    let mut args = args.clone();
    let bad = |flag, message: &str| SimRunError::Config {
        flag,
        message: message.into(),
    };
    if args.bench.command.is_some() {
        return Err(bad("plot", "`plot` is a `brisk bench` subcommand"));
    }
    if args.bench.max_concurrency.is_some() {
        return Err(bad(
            "max-concurrency",
            "closed-loop runs are not simulated; give --rate instead",
        ));
    }
    if !args.bench.request_fields.is_empty() {
        return Err(bad(
            "request-field",
            "request fields are not simulated; --send-slo sends each request's SLO class's \
             objective (and batch priority for a class named `batch`), --send-user its client",
        ));
    }
    if args.bench.natural_output {
        return Err(bad(
            "natural-output",
            "the simulator has no model to end outputs; each request runs to its length",
        ));
    }
    args.bench.url.get_or_insert_with(|| "sim://".into());
    let (cfg, _) = args.bench.validate()?;
    let model = LatencyModel::load(&args.latency_model)?;
    let settings = args.settings(model)?;
    let base = brisk_bench::load_workload(&args.bench)?;
    let search = match (&args.bench.sweep_rates, args.bench.find_capacity) {
        (Some(rates), _) => RateSearch::List(rates.clone()),
        (None, Some(max)) => RateSearch::Bisect {
            max,
            steps: args.bench.capacity_steps,
        },
        (None, None) => {
            let r = run_once(&args, &cfg, &settings, &base, args.bench.rate)?;
            brisk_bench::write_json(&cfg.output, &r)?;
            print!("{}", report::summary(&r));
            if let Some(f) = &r.fleet {
                println!("{}", fleet::fleet_line(f));
            }
            return Ok(());
        }
    };
    let mut points = Vec::new();
    let mut slo = Default::default();
    loop {
        let done: Vec<(f64, f64)> = points
            .iter()
            .map(|p: &sweep::SweepPoint| (p.rate, p.slo_attainment))
            .collect();
        let Some(rate) = search.next(&done) else {
            break;
        };
        let r = run_once(&args, &cfg, &settings, &base, Some(rate))?;
        let path: PathBuf = sweep::per_rate_path(&cfg.output, rate);
        brisk_bench::write_json(&path, &r)?;
        println!(
            "rate {rate:>8}: goodput {:>8.3} req/s, attainment {:>5.1}%, median TTFT {:>9.1} ms, median TPOT {:>7.1} ms",
            r.request_goodput,
            r.slo_attainment * 100.0,
            r.latency.get("median_ttft_ms").copied().unwrap_or(0.0),
            r.latency.get("median_tpot_ms").copied().unwrap_or(0.0),
        );
        if let Some(f) = &r.fleet {
            println!("  {}", fleet::fleet_line(f));
        }
        slo = r.slo.clone();
        points.push(sweep::point(rate, &r, path));
    }
    let pairs: Vec<(f64, f64)> = points.iter().map(|p| (p.rate, p.slo_attainment)).collect();
    let summary = SweepSummary {
        date: brisk_bench::now_iso8601(),
        slo,
        capacity: sweep::capacity(&pairs),
        points,
    };
    brisk_bench::write_json(&cfg.output, &summary)?;
    match summary.capacity {
        Some(c) => println!("capacity (attainment ≥ 90%): {c} req/s"),
        None => println!("capacity: no rate kept attainment ≥ 90%"),
    }
    Ok(())
}
