//! `brisk bench`: goodput and SLO attainment of any OpenAI-compatible server.
//!
//! The harness follows vLLM's `benchmark_serving` (gamma/Poisson arrivals with a
//! burstiness factor, closed-loop `--max-concurrency`, streamed completions with
//! `ignore_eos`, and its result-JSON keys) and DistServe's goodput definitions: a
//! request is good when TTFT ≤ ttft_slo and TPOT ≤ tpot_slo, goodput is the rate of
//! good requests, and capacity is the highest rate keeping attainment ≥ 90 %. Several
//! SLO classes may be given, each assigned to requests by a rule ([`slo`]).
//!
//! The pipeline: a workload (synthetic, a length sample, or a trace with arrivals;
//! [`workload`], [`traces`]) is shaped by the flags, prompts of exact lengths are
//! built ([`prompts`]), the runner sends each request at its scheduled instant on its
//! own connection ([`runner`], [`client`]), and the records become a report
//! ([`report`]). `--sweep-rates` and `--find-capacity` repeat the run per rate ([`sweep`]);
//! `--soak` mixes in cancelled and malformed requests and checks the server's health
//! ([`soak`]).
#![deny(missing_docs)]

pub mod args;
pub mod client;
pub mod error;
pub mod plot;
pub mod prompts;
pub mod remote_tokenizer;
pub mod report;
pub mod runner;
pub mod servegen;
pub mod slo;
pub mod soak;
pub mod sweep;
pub mod traces;
pub mod workload;

use std::path::Path;

pub use args::{BenchArgs, BenchCommand, BenchConfig, Endpoint, PromptFormat, Slo};
pub use error::BenchError;
pub use report::Report;

use prompts::PromptBuilder;
use remote_tokenizer::RemoteTokenizer;
use workload::{Shaping, Workload};

/// Default number of requests drawn for synthetic and length-sample workloads.
pub const DEFAULT_NUM_REQUESTS: usize = 100;

/// Runs `brisk bench` with parsed flags: writes the report(s) and prints the summary.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    if let Some(args::BenchCommand::Plot(p)) = &args.command {
        return plot::plot(p);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    rt.block_on(run_async(args))
}

/// Loads the workload the flags name (before shaping).
pub fn load_workload(args: &BenchArgs) -> Result<Workload, BenchError> {
    let (_, synthetic) = args.validate()?;
    let n = args.num_requests.unwrap_or(DEFAULT_NUM_REQUESTS);
    if let Some(spec) = synthetic {
        Ok(workload::synthetic(&spec, n, args.seed))
    } else if let Some(path) = args.trace.as_deref().filter(|p| servegen::is_servegen(p)) {
        if args.num_requests.is_none() && args.duration.is_none() {
            return Err(BenchError::config(
                "num-requests",
                "ServeGen statistics describe a whole day (~1.4 million requests): \
                 give --num-requests or --duration",
            ));
        }
        let stats = servegen::load(path)?;
        Ok(stats.workload(
            args.seed,
            args.num_requests,
            format!("servegen:{}", path.display()),
        ))
    } else if let Some(path) = &args.trace {
        traces::load_trace(path, args.seed)
    } else if let Some(path) = &args.lengths {
        let rows = traces::length_samples(path)?;
        Ok(traces::lengths_workload(
            &rows,
            n,
            args.seed,
            format!("lengths:{}", path.display()),
        ))
    } else {
        Err(BenchError::config("synthetic", "no workload given"))
    }
}

/// Shaping settings from the flags, at `rate`.
pub fn shaping(args: &BenchArgs, rate: Option<f64>) -> Shaping {
    Shaping {
        rate,
        burstiness: args.burstiness,
        num_requests: args.num_requests,
        duration_s: args.duration,
        scale_lengths: args.scale_lengths,
        max_prompt_tokens: args.max_prompt_tokens,
        max_output_tokens: args.max_output_tokens,
        seed: args.seed,
    }
}

/// One run at one rate: shape, build prompts, send, aggregate.
pub async fn run_once(
    args: &BenchArgs,
    cfg: &BenchConfig,
    model: &str,
    base: &Workload,
    builder: &PromptBuilder,
    rate: Option<f64>,
) -> Result<Report, BenchError> {
    let workload = base.clone().shape(&shaping(args, rate));
    // A different salt per rate: a sweep's later runs must not hit the earlier runs'
    // prompts in the server's prefix cache.
    let salt = rate.map_or(0, f64::to_bits);
    let (prompts, exact) = builder.build(&workload, salt).await?;
    let label = rate.map_or("rate inf".to_string(), |r| format!("rate {r}"));
    let outcome = runner::execute(cfg, model, &workload, prompts, &label).await?;
    let meta = report::RunMeta {
        command_line: command_line(),
        url: cfg.url.clone(),
        model: model.to_string(),
        endpoint: cfg.endpoint,
        workload: workload.source.clone(),
        rate,
        burstiness: args.burstiness,
        max_concurrency: cfg.max_concurrency,
        slo: cfg.slo.clone(),
        prompt_lengths_exact: exact,
        seed: args.seed,
    };
    let mut report = report::build(&meta, outcome.records, outcome.duration_s);
    report.prompt_tokenizer = Some(builder.describe());
    Ok(report)
}

async fn run_async(args: &BenchArgs) -> Result<(), BenchError> {
    let (cfg, _) = args.validate()?;
    let base = load_workload(args)?;
    let texts = match &args.prompts {
        Some(p) => traces::sharegpt_prompts(p)?,
        None => Vec::new(),
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => runner::discover_model(&cfg.url).await,
    };
    let mut builder = PromptBuilder::new(
        cfg.prompt_format,
        args.seed,
        args.tokenizer_model.as_deref(),
        texts,
    )?;
    // Text prompts use the target's own tokenizer when it offers one (required with
    // --server-tokenizer, probed otherwise); a local --tokenizer-model takes precedence.
    if cfg.prompt_format == PromptFormat::Text && !builder.has_tokenizer() {
        let remote = RemoteTokenizer::new(&cfg.url, &model)?;
        if args.server_tokenizer || remote.probe().await {
            builder = builder.with_server_tokenizer(remote);
        } else {
            eprintln!(
                "note: {} has no /tokenize and no --tokenizer-model was given: \
                 text prompts are 1 word ≈ 1 token (prompt_lengths_exact: false)",
                cfg.url
            );
        }
    }
    let search = match (&args.sweep_rates, args.find_capacity) {
        (Some(rates), _) => Some(sweep::RateSearch::List(rates.clone())),
        (None, Some(max)) => Some(sweep::RateSearch::Bisect {
            max,
            steps: args.capacity_steps,
        }),
        (None, None) => None,
    };
    if args.soak {
        return soak::run(args, &cfg, &model, &base, &builder).await;
    }
    if let Some(search) = search {
        return sweep::sweep(args, &cfg, &model, &base, &builder, &search).await;
    }
    let report = run_once(args, &cfg, &model, &base, &builder, args.rate).await?;
    write_json(&cfg.output, &report)?;
    print!("{}", report::summary(&report));
    Ok(())
}

/// Writes a value as pretty JSON.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    std::fs::write(path, text + "\n").map_err(|source| BenchError::Output {
        path: path.to_path_buf(),
        source,
    })
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn now_iso8601() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), for days ≥ 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
