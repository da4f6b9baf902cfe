//! The command line (clap, every flag also an environment variable), and its validation
//! into a [`BenchConfig`] — the two-stage configuration of ripgrep's `lowargs`/`hiargs`.

use std::path::PathBuf;

use crate::error::BenchError;
use crate::slo::SloPolicy;
use crate::workload::{LengthDist, SyntheticSpec};

/// Which OpenAI endpoint to stream from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/v1/completions`: the prompt is sent as text or as token ids.
    Completions,
    /// `/v1/chat/completions`: the prompt is one user message (text only).
    Chat,
}

/// How prompts are sent.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptFormat {
    /// Token-id arrays (`"prompt": [ids]`): exact lengths without a tokenizer.
    Ids,
    /// Text; exact only with `--tokenizer-model`.
    Text,
}

/// `brisk bench`: measure TTFT, TPOT, ITL, goodput and SLO attainment of an
/// OpenAI-compatible server.
#[derive(clap::Args, Clone, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    /// `plot`: draw reports instead of running a benchmark.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Base URL of the server, e.g. http://127.0.0.1:8000 (`/v1/...` is appended).
    #[arg(long, required = true, env = "BRISK_BENCH_URL")]
    pub url: Option<String>,
    /// Model name to send; without it the first id of `/v1/models` is used.
    #[arg(long, env = "BRISK_BENCH_MODEL")]
    pub model: Option<String>,
    /// Synthetic lengths, e.g. `prompt=70,output=64` or `prompt=uniform:50:100,output=64`.
    #[arg(long, env = "BRISK_BENCH_SYNTHETIC", group = "workload")]
    pub synthetic: Option<String>,
    /// A trace with arrivals: Azure conversation CSV, Mooncake JSONL, or a ServeGen
    /// `.tar.xz` of per-client statistics (requests generated from them, seeded).
    #[arg(long, env = "BRISK_BENCH_TRACE", group = "workload")]
    pub trace: Option<PathBuf>,
    /// A length-sample CSV (ShareGPT / arXiv); arrivals are synthetic.
    #[arg(long, env = "BRISK_BENCH_LENGTHS", group = "workload")]
    pub lengths: Option<PathBuf>,
    /// ShareGPT first-turn JSON: real prompt text (implies `--prompt-format text`).
    #[arg(long, env = "BRISK_BENCH_PROMPTS")]
    pub prompts: Option<PathBuf>,
    /// Mean request rate (req/s); `inf` or absent sends everything at once. With a
    /// trace it rescales the trace's time axis to this mean rate.
    #[arg(long, env = "BRISK_BENCH_RATE")]
    pub rate: Option<f64>,
    /// Gamma shape of the inter-arrival gaps (1 = Poisson; lower is burstier), as vLLM.
    #[arg(long, default_value_t = 1.0, env = "BRISK_BENCH_BURSTINESS")]
    pub burstiness: f64,
    /// Closed-loop cap on requests in flight.
    #[arg(long, env = "BRISK_BENCH_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// Number of requests (default 100 for synthetic/lengths workloads, all of a trace).
    #[arg(long, env = "BRISK_BENCH_NUM_REQUESTS")]
    pub num_requests: Option<usize>,
    /// Keep only requests that arrive within this many seconds.
    #[arg(long, env = "BRISK_BENCH_DURATION")]
    pub duration: Option<f64>,
    /// Seed for lengths, arrivals and prompt contents: the same seed repeats a run.
    #[arg(long, default_value_t = 0, env = "BRISK_BENCH_SEED")]
    pub seed: u64,
    /// Latency objective, milliseconds: `ttft=1000,tpot=100` (with `--slo-class`: the
    /// objective of requests no class takes).
    #[arg(long, env = "BRISK_BENCH_SLO")]
    pub slo: Option<String>,
    /// An SLO class, repeatable: `NAME:ttft=MS,tpot=MS[,min-prompt=N][,max-prompt=N][,share=F]`.
    /// A request joins the first class whose rules hold; attainment and goodput are
    /// reported per class and overall. Several classes in one value are split by `;`.
    #[arg(long, value_delimiter = ';', env = "BRISK_BENCH_SLO_CLASS")]
    pub slo_class: Vec<String>,
    /// Multiply prompt and output lengths (and Mooncake's 512-token block) by this.
    #[arg(long, default_value_t = 1.0, env = "BRISK_BENCH_SCALE_LENGTHS")]
    pub scale_lengths: f64,
    /// Clamp prompt lengths to fit the model's context.
    #[arg(long, env = "BRISK_BENCH_MAX_PROMPT_TOKENS")]
    pub max_prompt_tokens: Option<usize>,
    /// Clamp output lengths.
    #[arg(long, env = "BRISK_BENCH_MAX_OUTPUT_TOKENS")]
    pub max_output_tokens: Option<usize>,
    /// Endpoint to stream from.
    #[arg(long, value_enum, default_value_t = Endpoint::Completions, env = "BRISK_BENCH_ENDPOINT")]
    pub endpoint: Endpoint,
    /// Prompt encoding (default: `ids` for completions, `text` for chat or `--prompts`).
    #[arg(long, value_enum, env = "BRISK_BENCH_PROMPT_FORMAT")]
    pub prompt_format: Option<PromptFormat>,
    /// A GGUF whose tokenizer makes text prompts exactly the requested length.
    #[arg(long, env = "BRISK_BENCH_TOKENIZER_MODEL")]
    pub tokenizer_model: Option<PathBuf>,
    /// Make text prompts exactly the requested length with the server's own tokenizer
    /// (`POST /tokenize` and `/detokenize`, as brisk, llama.cpp and vLLM offer); implies
    /// `--prompt-format text`.
    #[arg(
        long,
        conflicts_with = "tokenizer_model",
        env = "BRISK_BENCH_SERVER_TOKENIZER"
    )]
    pub server_tokenizer: bool,
    /// Seconds before a request counts as failed (timed out).
    #[arg(long, default_value_t = 600.0, env = "BRISK_BENCH_REQUEST_TIMEOUT")]
    pub request_timeout: f64,
    /// Run once per rate (comma-separated) and report capacity (attainment ≥ 90%).
    #[arg(long, value_delimiter = ',', env = "BRISK_BENCH_SWEEP_RATES")]
    pub sweep_rates: Option<Vec<f64>>,
    /// Bisect on (0, MAX] req/s for the highest rate keeping attainment ≥ 90%.
    #[arg(
        long,
        value_name = "MAX",
        conflicts_with = "sweep_rates",
        env = "BRISK_BENCH_FIND_CAPACITY"
    )]
    pub find_capacity: Option<f64>,
    /// Midpoints `--find-capacity` tries after MAX fails.
    #[arg(long, default_value_t = 5, env = "BRISK_BENCH_CAPACITY_STEPS")]
    pub capacity_steps: usize,
    /// Soak test: mix cancelled and malformed requests into the workload and check the
    /// server's health from its /metrics (no panic, every request answered, resident memory
    /// growth < 5 % after the warm-up, KV usage back to its start); exits non-zero when a
    /// check fails.
    #[arg(long, conflicts_with_all = ["sweep_rates", "find_capacity"], env = "BRISK_BENCH_SOAK")]
    pub soak: bool,
    /// With --soak: share of requests the client cancels after a random delay (0–4 s).
    #[arg(
        long,
        default_value_t = 0.2,
        requires = "soak",
        env = "BRISK_BENCH_CANCEL_FRACTION"
    )]
    pub cancel_fraction: f64,
    /// With --soak: share of requests replaced by malformed bodies.
    #[arg(
        long,
        default_value_t = 0.1,
        requires = "soak",
        env = "BRISK_BENCH_MALFORMED_FRACTION"
    )]
    pub malformed_fraction: f64,
    /// With --soak: seconds of warm-up before the resident-memory baseline is taken.
    #[arg(
        long,
        default_value_t = 60.0,
        requires = "soak",
        env = "BRISK_BENCH_SOAK_WARMUP"
    )]
    pub soak_warmup: f64,
    /// Send each request's objective with it, as the simulator plays it: `slo` from its
    /// SLO class (`--slo`/`--slo-class`), and `priority: "batch"` for a class named `batch`.
    /// Without it the server's defaults (`--ttft-slo`/`--tpot-slo`) apply.
    #[arg(long, env = "BRISK_BENCH_SEND_SLO")]
    pub send_slo: bool,
    /// Send each request's client as OpenAI's `user` (the server shares itself fairly between
    /// users), as the simulator plays it: `client-N` for ServeGen's client N, else the name
    /// of the request's SLO class, so that two classes are two clients.
    #[arg(long, env = "BRISK_BENCH_SEND_USER")]
    pub send_user: bool,
    /// Let outputs end where the model ends them (EOS or a stop token): a request's output
    /// length becomes its `max_tokens` cap, without `min_tokens` or `ignore_eos`. For
    /// scheduling that depends on output lengths; the default forces exact lengths, as
    /// vLLM's benchmark does with `--ignore-eos`.
    #[arg(long, env = "BRISK_BENCH_NATURAL_OUTPUT")]
    pub natural_output: bool,
    /// A field added to every request body, `KEY=JSON` (repeatable), e.g.
    /// `--request-field 'priority="batch"'` or
    /// `--request-field 'slo={"ttft_ms": 1000, "tpot_ms": 150}'`: two runs side by side
    /// then play two classes of traffic against one server.
    #[arg(
        long = "request-field",
        env = "BRISK_BENCH_REQUEST_FIELDS",
        value_delimiter = ';'
    )]
    pub request_fields: Vec<String>,
    /// Hide the progress bar.
    #[arg(long, env = "BRISK_BENCH_NO_PROGRESS")]
    pub no_progress: bool,
    /// Where to write the JSON report (with a sweep: the summary; per-rate reports beside it).
    #[arg(long, short, required = true, env = "BRISK_BENCH_OUTPUT")]
    pub output: Option<PathBuf>,
}

/// Subcommands of `brisk bench`.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum BenchCommand {
    /// Several servers on one PNG: TTFT/TPOT CDFs of reports, or latency and goodput
    /// against rate of sweep summaries.
    Plot(crate::plot::PlotArgs),
}

/// A latency objective in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Slo {
    /// Time-to-first-token bound.
    pub ttft_ms: f64,
    /// Time-per-output-token bound.
    pub tpot_ms: f64,
}

impl Slo {
    /// No bound on either latency: every completed request meets it.
    pub fn unbounded() -> Self {
        Slo {
            ttft_ms: f64::INFINITY,
            tpot_ms: f64::INFINITY,
        }
    }

    /// A bound in milliseconds: a number ≥ 0 (`inf` allowed).
    pub(crate) fn parse_ms(v: &str, flag: &'static str) -> Result<f64, BenchError> {
        match v.trim().parse::<f64>() {
            Ok(ms) if ms >= 0.0 => Ok(ms),
            Ok(_) => Err(BenchError::config(flag, format!("`{v}` must be ≥ 0 ms"))),
            Err(_) => Err(BenchError::config(flag, format!("`{v}` is not a number"))),
        }
    }

    /// Parses `ttft=MS,tpot=MS` (either may be left out: unbounded).
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        let mut slo = Slo::unbounded();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| BenchError::config("slo", format!("`{part}` is not key=ms")))?;
            let ms = Slo::parse_ms(v, "slo")?;
            match k.trim() {
                "ttft" => slo.ttft_ms = ms,
                "tpot" => slo.tpot_ms = ms,
                other => return Err(BenchError::config("slo", format!("unknown key `{other}`"))),
            }
        }
        Ok(slo)
    }
}

/// Validated settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Base URL without a trailing slash.
    pub url: String,
    /// Endpoint to stream from.
    pub endpoint: Endpoint,
    /// Prompt encoding.
    pub prompt_format: PromptFormat,
    /// Closed-loop cap on requests in flight.
    pub max_concurrency: Option<usize>,
    /// Per-request timeout, seconds.
    pub request_timeout_s: f64,
    /// The latency objectives (one unbounded class when none is given).
    pub slo: SloPolicy,
    /// Fields added to every request body (`--request-field`).
    pub request_fields: serde_json::Map<String, serde_json::Value>,
    /// Send each request's class objective and priority (`--send-slo`).
    pub send_slo: bool,
    /// Send each request's client as `user` (`--send-user`).
    pub send_user: bool,
    /// Outputs end at EOS, capped by their length (`--natural-output`).
    pub natural_output: bool,
    /// The run's seed (classes are drawn from it).
    pub seed: u64,
    /// Whether to draw a progress bar.
    pub progress: bool,
    /// The report file.
    pub output: PathBuf,
}

impl BenchArgs {
    /// Checks the flags and returns the run settings plus the synthetic spec, if any.
    pub fn validate(&self) -> Result<(BenchConfig, Option<SyntheticSpec>), BenchError> {
        let chosen = [
            self.synthetic.is_some(),
            self.trace.is_some(),
            self.lengths.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(BenchError::config(
                "synthetic",
                "give exactly one of --synthetic, --trace, --lengths",
            ));
        }
        if let Some(r) = self.rate {
            if r.is_nan() || r <= 0.0 {
                return Err(BenchError::config("rate", "must be > 0 (or inf)"));
            }
        }
        let mut rates = self.sweep_rates.iter().flatten().chain(&self.find_capacity);
        if rates.any(|r| r.is_nan() || *r <= 0.0) {
            return Err(BenchError::config("sweep-rates", "rates must be > 0"));
        }
        if self.burstiness.is_nan() || self.burstiness <= 0.0 {
            return Err(BenchError::config("burstiness", "must be > 0"));
        }
        if self.scale_lengths.is_nan() || self.scale_lengths <= 0.0 {
            return Err(BenchError::config("scale-lengths", "must be > 0"));
        }
        let share = |f: f64| (0.0..=1.0).contains(&f);
        if !share(self.cancel_fraction)
            || !share(self.malformed_fraction)
            || !share(self.cancel_fraction + self.malformed_fraction)
        {
            return Err(BenchError::config(
                "cancel-fraction",
                "--cancel-fraction and --malformed-fraction must be in [0, 1] and sum to at most 1",
            ));
        }
        if !(self.soak_warmup.is_finite() && self.soak_warmup >= 0.0) {
            return Err(BenchError::config("soak-warmup", "must be ≥ 0 seconds"));
        }
        if self.max_concurrency == Some(0) {
            return Err(BenchError::config("max-concurrency", "must be ≥ 1"));
        }
        let text_default =
            self.endpoint == Endpoint::Chat || self.prompts.is_some() || self.server_tokenizer;
        let prompt_format = self.prompt_format.unwrap_or(if text_default {
            PromptFormat::Text
        } else {
            PromptFormat::Ids
        });
        if self.endpoint == Endpoint::Chat && prompt_format == PromptFormat::Ids {
            return Err(BenchError::config(
                "prompt-format",
                "the chat endpoint takes text only",
            ));
        }
        if self.server_tokenizer && prompt_format == PromptFormat::Ids {
            return Err(BenchError::config(
                "server-tokenizer",
                "measures text prompts; token-id prompts are exact without it",
            ));
        }
        let synthetic = self
            .synthetic
            .as_deref()
            .map(SyntheticSpec::parse)
            .transpose()?;
        let slo = SloPolicy::from_flags(self.slo.as_deref(), &self.slo_class)?;
        let request_fields = request_fields(&self.request_fields)?;
        if self.send_user && request_fields.contains_key("user") {
            return Err(BenchError::config(
                "request-field",
                "`user` is set by --send-user; give one or the other",
            ));
        }
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| BenchError::config("url", "required"))?;
        let output = self
            .output
            .clone()
            .ok_or_else(|| BenchError::config("output", "required"))?;
        let config = BenchConfig {
            output,
            url: url.trim_end_matches('/').to_string(),
            endpoint: self.endpoint,
            prompt_format,
            max_concurrency: self.max_concurrency,
            request_timeout_s: self.request_timeout,
            slo,
            request_fields,
            send_slo: self.send_slo,
            send_user: self.send_user,
            natural_output: self.natural_output,
            seed: self.seed,
            progress: !self.no_progress,
        };
        Ok((config, synthetic))
    }
}

/// `KEY=JSON` pairs as a JSON object; the fields the benchmark itself sets are refused.
fn request_fields(
    pairs: &[String],
) -> Result<serde_json::Map<String, serde_json::Value>, BenchError> {
    const OWN: &[&str] = &[
        "model",
        "prompt",
        "messages",
        "max_tokens",
        "min_tokens",
        "ignore_eos",
        "stream",
        "stream_options",
    ];
    let mut fields = serde_json::Map::new();
    for pair in pairs {
        let bad = |why: String| BenchError::config("request-field", why);
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("`{pair}` is not KEY=JSON")))?;
        if OWN.contains(&key) {
            return Err(bad(format!("`{key}` is set by the benchmark itself")));
        }
        let value = serde_json::from_str(value)
            .map_err(|e| bad(format!("`{key}`: the value is not JSON ({e})")))?;
        fields.insert(key.to_owned(), value);
    }
    Ok(fields)
}

impl SyntheticSpec {
    /// Parses `prompt=70,output=64`, `prompt=uniform:50:100,output=64` or
    /// `prompt=mix:1600:50:0.2,output=64` (1,600 tokens for a fifth of the requests, else 50).
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        let (mut prompt, mut output) = (None, None);
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                BenchError::config("synthetic", format!("`{part}` is not key=len"))
            })?;
            let dist = LengthDist::parse(v)
                .ok_or_else(|| BenchError::config("synthetic", format!("bad length `{v}`")))?;
            match k.trim() {
                "prompt" => prompt = Some(dist),
                "output" => output = Some(dist),
                other => {
                    return Err(BenchError::config(
                        "synthetic",
                        format!("unknown key `{other}`"),
                    ))
                }
            }
        }
        match (prompt, output) {
            (Some(prompt), Some(output)) => Ok(SyntheticSpec { prompt, output }),
            _ => Err(BenchError::config(
                "synthetic",
                "needs both prompt= and output=",
            )),
        }
    }
}

impl LengthDist {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("uniform:") {
            let (a, b) = rest.split_once(':')?;
            let (lo, hi) = (a.parse().ok()?, b.parse().ok()?);
            (lo <= hi).then_some(LengthDist::Uniform(lo, hi))
        } else if let Some(rest) = s.strip_prefix("mix:") {
            let mut parts = rest.split(':');
            let first = parts.next()?.parse().ok()?;
            let second = parts.next()?.parse().ok()?;
            let first_share: f64 = parts.next()?.parse().ok()?;
            (parts.next().is_none() && (0.0..=1.0).contains(&first_share)).then_some(
                LengthDist::Mix {
                    first,
                    second,
                    first_share,
                },
            )
        } else {
            s.parse().ok().map(LengthDist::Fixed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_spec_parses_fixed_and_uniform() {
        let s = SyntheticSpec::parse("prompt=uniform:50:100,output=64").unwrap();
        assert_eq!(s.prompt, LengthDist::Uniform(50, 100));
        assert_eq!(s.output, LengthDist::Fixed(64));
        assert!(SyntheticSpec::parse("prompt=70").is_err());
        assert!(SyntheticSpec::parse("prompt=uniform:9:1,output=1").is_err());
        let mix = SyntheticSpec::parse("prompt=mix:1600:50:0.2,output=64").unwrap();
        assert_eq!(
            mix.prompt,
            LengthDist::Mix {
                first: 1600,
                second: 50,
                first_share: 0.2
            }
        );
        assert!(SyntheticSpec::parse("prompt=mix:1600:50:1.5,output=64").is_err());
        assert!(SyntheticSpec::parse("prompt=mix:1600:50,output=64").is_err());
    }

    #[test]
    fn slo_parses_both_bounds() {
        let s = Slo::parse("ttft=1000,tpot=100").unwrap();
        assert_eq!((s.ttft_ms, s.tpot_ms), (1000.0, 100.0));
        assert!(Slo::parse("e2e=5").is_err());
        assert!(Slo::parse("ttft=-1").is_err());
    }
}
