//! `brisk bench --soak`: run a workload past the server's capacity with cancelled and
//! malformed requests mixed in, and check that the server survives it whole.
//!
//! Each request of the shaped workload is, by a seeded draw, sent as it is (a normal
//! streamed request), cancelled (the client drops the connection after a random delay, before
//! or during its stream), or replaced by one of a rotation of malformed bodies. The checks,
//! after the last request and a short settle, are the ones a server in front of users needs:
//!
//! - every request is answered: a normal one completes or gets a clean refusal (429, 503,
//!   504 with OpenAI's error JSON, or an error event in its stream) — never a reset
//!   connection, a 500 or a client-side timeout;
//! - every malformed body gets a 4xx with an error JSON;
//! - no panic (`brisk_panics_total` from `/metrics`);
//! - resident memory (`process_resident_memory_bytes`) grows less than 5 % from the end of
//!   the warm-up to the end of the load;
//! - KV-cache usage returns to its level before the run.
//!
//! The server's gauges are sampled from its Prometheus `/metrics` every two seconds; a server
//! without them gets those checks reported as "not measured".

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::args::{BenchArgs, BenchConfig};
use crate::client::{self, RequestBody, RequestRecord};
use crate::error::BenchError;
use crate::prompts::PromptBuilder;
use crate::workload::Workload;

/// Largest tolerated growth of resident memory after the warm-up.
pub const MAX_RSS_GROWTH: f64 = 0.05;
/// Seconds between two `/metrics` samples.
const SAMPLE_EVERY_S: f64 = 2.0;

/// What kind of request a workload slot becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Normal,
    Cancelled,
    Malformed,
}

/// How one request ended, as the soak judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Completed,
    /// The server refused or ended it cleanly (429/503/504, an error event).
    Refused,
    /// The client went away as planned.
    CancelledByClient,
    /// A malformed body got its 4xx error JSON.
    Rejected,
    /// Anything else: reset, 500, timeout, a malformed body accepted.
    Unanswered(String),
}

/// One `/metrics` sample.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: Option<f64>,
    /// `brisk_kv_cache_usage_ratio` (or vLLM's `kv_cache_usage_perc`).
    pub kv_usage: Option<f64>,
    /// Requests running and waiting.
    pub running: Option<f64>,
    /// Requests waiting.
    pub waiting: Option<f64>,
    /// `brisk_panics_total`.
    pub panics: Option<f64>,
}

/// One check: its name, whether it held (`None`: the server does not expose what it needs)
/// and the numbers behind it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it held.
    pub ok: Option<bool>,
    /// The measured values.
    pub detail: String,
}

/// The soak report (written as JSON to `--output`).
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// When the run started (UTC).
    pub date: String,
    /// The command line.
    pub command_line: String,
    /// The server.
    pub url: String,
    /// The workload's description.
    pub workload: String,
    /// Mean request rate, req/s.
    pub rate: Option<f64>,
    /// Seconds from the first send to the last answer.
    pub duration_s: f64,
    /// Requests by kind: normal, cancelled, malformed.
    pub sent: [usize; 3],
    /// Normal (and cancelled-too-late) requests that completed.
    pub completed: usize,
    /// Requests refused or ended cleanly by the server.
    pub refused: usize,
    /// Requests the client dropped on purpose.
    pub cancelled: usize,
    /// Malformed bodies answered with a 4xx error JSON.
    pub malformed_rejected: usize,
    /// Requests not answered properly, with the first few reasons.
    pub unanswered: usize,
    /// Up to 20 reasons for unanswered requests.
    pub unanswered_examples: Vec<String>,
    /// The verdicts.
    pub checks: Vec<Check>,
    /// Every `/metrics` sample.
    pub samples: Vec<Sample>,
}

impl SoakReport {
    /// Whether every measurable check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok != Some(false))
    }
}

/// Bodies no server should accept, with why (each must get a 4xx and an error JSON). The
/// context-overflow one assumes a context under 200,000 tokens.
fn malformed_bodies(model: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let completions = "/v1/completions";
    let chat = "/v1/chat/completions";
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    vec![
        (
            "truncated JSON",
            completions,
            br#"{"prompt": "hi", "max_tokens": "#.to_vec(),
        ),
        (
            "prompt of the wrong type",
            completions,
            json(serde_json::json!({"model": model, "prompt": {"a": 1}})),
        ),
        (
            "invalid UTF-8",
            completions,
            b"{\"prompt\": \"\xff\xfe\xfd\", \"max_tokens\": 4}".to_vec(),
        ),
        (
            "unknown model",
            completions,
            json(serde_json::json!({"model": "no-such-model-7f3a", "prompt": "hi"})),
        ),
        (
            "prompt longer than the context",
            completions,
            json(serde_json::json!({"model": model, "prompt": vec![42; 200_000], "max_tokens": 1})),
        ),
        (
            "absurd max_tokens",
            completions,
            json(
                serde_json::json!({"model": model, "prompt": "hi", "max_tokens": 1_000_000_000_000u64}),
            ),
        ),
        (
            "negative temperature",
            completions,
            json(serde_json::json!({"model": model, "prompt": "hi", "temperature": -3})),
        ),
        (
            "huge n",
            completions,
            json(serde_json::json!({"model": model, "prompt": "hi", "n": 1_000_000})),
        ),
        (
            "too many stop strings",
            completions,
            json(serde_json::json!({"model": model, "prompt": "hi", "stop": vec!["x"; 500]})),
        ),
        (
            "logit_bias id outside the vocabulary",
            completions,
            json(
                serde_json::json!({"model": model, "prompt": "hi", "logit_bias": {"999999999": 5}}),
            ),
        ),
        (
            "empty messages",
            chat,
            json(serde_json::json!({"model": model, "messages": []})),
        ),
        (
            "message without content",
            chat,
            json(serde_json::json!({"model": model, "messages": [{"role": "user"}]})),
        ),
        (
            "empty prompt",
            completions,
            json(serde_json::json!({"model": model, "prompt": ""})),
        ),
        ("not an object", chat, b"[1, 2, 3]".to_vec()),
    ]
}

/// Runs the soak and writes its report; an error when a check failed.
pub async fn run(
    args: &BenchArgs,
    cfg: &BenchConfig,
    model: &str,
    base: &Workload,
    builder: &PromptBuilder,
) -> Result<(), BenchError> {
    let workload = base.clone().shape(&crate::shaping(args, args.rate));
    let (prompts, _) = builder.build(&workload, 0).await?;
    let client = crate::runner::http_client()?;
    let url: Arc<str> = Arc::from(cfg.url.as_str());
    let before = sample(&client, &url, 0.0).await;
    let start = Instant::now();
    let load_end_s = workload.requests.last().map_or(0.0, |r| r.arrival_s);

    let sampling = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let t = start.elapsed().as_secs_f64();
                samples.push(sample(&client, &url, t).await);
                if t > load_end_s {
                    return samples;
                }
                tokio::time::sleep(Duration::from_secs_f64(SAMPLE_EVERY_S)).await;
            }
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x50a6);
    let bad = Arc::new(malformed_bodies(model));
    let prompts = Arc::new(prompts);
    let model: Arc<str> = Arc::from(model);
    let timeout = Duration::from_secs_f64(cfg.request_timeout_s);
    let mut sent = [0usize; 3];
    let mut tasks = Vec::with_capacity(workload.requests.len());
    for (i, spec) in workload.requests.iter().enumerate() {
        let draw: f64 = rng.random();
        let kind = if draw < args.malformed_fraction {
            Kind::Malformed
        } else if draw < args.malformed_fraction + args.cancel_fraction {
            Kind::Cancelled
        } else {
            Kind::Normal
        };
        sent[kind as usize] += 1;
        let cancel_after = Duration::from_secs_f64(rng.random_range(0.0..4.0));
        let bad_index = rng.random_range(0..bad.len());
        let at = start + Duration::from_secs_f64(spec.arrival_s);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let (client, url, model, prompts, bad) = (
            client.clone(),
            url.clone(),
            model.clone(),
            prompts.clone(),
            bad.clone(),
        );
        let (endpoint, output_len, natural) = (cfg.endpoint, spec.output_len, cfg.natural_output);
        tasks.push(tokio::spawn(async move {
            let body = RequestBody {
                model: &model,
                endpoint,
                prompt: &prompts[i],
                output_len,
                natural,
                extra: &serde_json::Map::new(),
            };
            let send = client::send(&client, &url, &body, timeout, RequestRecord::default());
            match kind {
                Kind::Normal => judge(&send.await),
                Kind::Cancelled => match tokio::time::timeout(cancel_after, send).await {
                    Ok(record) => judge(&record),
                    Err(_) => Outcome::CancelledByClient,
                },
                Kind::Malformed => {
                    let (what, path, bytes) = &bad[bad_index];
                    malformed(&client, &url, what, path, bytes.clone(), timeout).await
                }
            }
        }));
    }
    let mut report = SoakReport {
        date: crate::now_iso8601(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        url: cfg.url.clone(),
        workload: workload.source.clone(),
        rate: args.rate,
        duration_s: 0.0,
        sent,
        completed: 0,
        refused: 0,
        cancelled: 0,
        malformed_rejected: 0,
        unanswered: 0,
        unanswered_examples: Vec::new(),
        checks: Vec::new(),
        samples: Vec::new(),
    };
    for task in tasks {
        match task
            .await
            .unwrap_or_else(|e| Outcome::Unanswered(format!("client task failed: {e}")))
        {
            Outcome::Completed => report.completed += 1,
            Outcome::Refused => report.refused += 1,
            Outcome::CancelledByClient => report.cancelled += 1,
            Outcome::Rejected => report.malformed_rejected += 1,
            Outcome::Unanswered(why) => {
                report.unanswered += 1;
                if report.unanswered_examples.len() < 20 {
                    report.unanswered_examples.push(why);
                }
            }
        }
    }
    report.duration_s = start.elapsed().as_secs_f64();
    report.samples = sampling.await.unwrap_or_default();
    let after = settle(&client, &url, &before, start).await;
    report.checks = checks(&report, &before, &after, args.soak_warmup, load_end_s);
    report.samples.push(after);
    crate::write_json(&cfg.output, &report)?;
    print!("{}", summary(&report));
    if report.passed() {
        Ok(())
    } else {
        Err(BenchError::Check(
            "the soak failed a check (see above)".into(),
        ))
    }
}

/// A normal request's verdict from its record.
fn judge(record: &RequestRecord) -> Outcome {
    let Some(error) = &record.error else {
        return Outcome::Completed;
    };
    let clean_status = ["HTTP 429", "HTTP 503", "HTTP 504"]
        .iter()
        .any(|s| error.starts_with(s))
        && error.contains("\"error\"");
    if clean_status || error.starts_with("server error in stream") {
        Outcome::Refused
    } else {
        Outcome::Unanswered(error.clone())
    }
}

/// Sends a malformed body; it must get a 4xx with an OpenAI error JSON.
async fn malformed(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Outcome {
    let answer = async {
        let response = client
            .post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, text))
    };
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Outcome::Unanswered(format!("{what}: no answer in {timeout:?}")),
        Ok(Err(e)) => Outcome::Unanswered(format!("{what}: {e}")),
        Ok(Ok((status, text))) => {
            let has_message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .map(serde_json::Value::is_string)
                })
                .unwrap_or(false);
            if (400..500).contains(&status) && has_message {
                Outcome::Rejected
            } else {
                let head: String = text.chars().take(160).collect();
                Outcome::Unanswered(format!("{what}: HTTP {status}: {head}"))
            }
        }
    }
}

/// One `/metrics` sample (empty fields when the server does not answer or expose them).
async fn sample(client: &reqwest::Client, url: &str, t_s: f64) -> Sample {
    let text = crate::runner::get_text(client, &format!("{url}/metrics"), Duration::from_secs(10))
        .await
        .unwrap_or_default();
    let value = |names: &[&str]| {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let bare = name.split('{').next()?;
            names.contains(&bare).then(|| value.parse::<f64>().ok())?
        })
    };
    Sample {
        t_s,
        rss_bytes: value(&["process_resident_memory_bytes"]),
        kv_usage: value(&["brisk_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc"]),
        running: value(&["brisk_num_requests_running", "vllm:num_requests_running"]),
        waiting: value(&["brisk_num_requests_waiting", "vllm:num_requests_waiting"]),
        panics: value(&["brisk_panics_total"]),
    }
}

/// Waits (at most 30 s) for the server to go idle with its KV usage back where it started,
/// and returns the last sample.
async fn settle(client: &reqwest::Client, url: &str, before: &Sample, start: Instant) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = sample(client, url, start.elapsed().as_secs_f64()).await;
        let idle = s.running.unwrap_or(0.0) == 0.0 && s.waiting.unwrap_or(0.0) == 0.0;
        if (idle && s.kv_usage <= before.kv_usage) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn checks(
    report: &SoakReport,
    before: &Sample,
    after: &Sample,
    warmup_s: f64,
    load_end_s: f64,
) -> Vec<Check> {
    let mut checks = vec![Check {
        name: "every request answered",
        ok: Some(report.unanswered == 0),
        detail: format!(
            "{} completed, {} refused cleanly, {} cancelled by the client, {} malformed rejected, {} unanswered",
            report.completed,
            report.refused,
            report.cancelled,
            report.malformed_rejected,
            report.unanswered
        ),
    }];
    checks.push(Check {
        name: "no panic",
        ok: after.panics.map(|p| p <= before.panics.unwrap_or(0.0)),
        detail: format!(
            "brisk_panics_total {:?} before, {:?} after",
            before.panics, after.panics
        ),
    });
    let under_load: Vec<&Sample> = report
        .samples
        .iter()
        .filter(|s| s.t_s >= warmup_s && s.t_s <= load_end_s && s.rss_bytes.is_some())
        .collect();
    let rss = match (under_load.first(), under_load.last()) {
        (Some(first), Some(last)) if under_load.len() >= 2 => {
            let (a, b) = (first.rss_bytes.unwrap_or(0.0), last.rss_bytes.unwrap_or(0.0));
            let peak = under_load
                .iter()
                .filter_map(|s| s.rss_bytes)
                .fold(0.0, f64::max);
            let growth = if a > 0.0 { (b - a) / a } else { f64::INFINITY };
            Check {
                name: "resident memory growth after warm-up < 5 %",
                ok: Some(growth < MAX_RSS_GROWTH),
                detail: format!(
                    "{:.1} MiB at {:.0} s, {:.1} MiB at {:.0} s ({:+.2} %), peak {:.1} MiB",
                    a / 1048576.0,
                    first.t_s,
                    b / 1048576.0,
                    last.t_s,
                    growth * 100.0,
                    peak / 1048576.0
                ),
            }
        }
        _ => Check {
            name: "resident memory growth after warm-up < 5 %",
            ok: None,
            detail: "not measured (no process_resident_memory_bytes, or the run is shorter than the warm-up)".into(),
        },
    };
    checks.push(rss);
    checks.push(Check {
        name: "KV cache usage back to its level before the run",
        ok: after
            .kv_usage
            .map(|k| k <= before.kv_usage.unwrap_or(0.0) + 1e-9),
        detail: format!(
            "{:?} before, {:?} after (running {:?}, waiting {:?})",
            before.kv_usage, after.kv_usage, after.running, after.waiting
        ),
    });
    checks
}

/// The human summary.
pub fn summary(report: &SoakReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let [normal, cancelled, malformed] = report.sent;
    let _ = writeln!(
        out,
        "soak of {} for {:.0} s: {normal} normal, {cancelled} to cancel, {malformed} malformed requests",
        report.url, report.duration_s
    );
    for c in &report.checks {
        let verdict = match c.ok {
            Some(true) => "ok  ",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        let _ = writeln!(out, "  {verdict} {}: {}", c.name, c.detail);
    }
    for e in &report.unanswered_examples {
        let _ = writeln!(out, "       unanswered: {e}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_with_error_json_are_clean_and_resets_are_not() {
        let with = |e: &str| RequestRecord {
            error: Some(e.into()),
            ..RequestRecord::default()
        };
        assert_eq!(judge(&RequestRecord::default()), Outcome::Completed);
        assert_eq!(
            judge(&with(r#"HTTP 429: {"error":{"message":"full"}}"#)),
            Outcome::Refused
        );
        assert_eq!(
            judge(&with(r#"server error in stream: {"message":"timeout"}"#)),
            Outcome::Refused
        );
        assert!(matches!(
            judge(&with("request failed: connection reset")),
            Outcome::Unanswered(_)
        ));
        assert!(matches!(
            judge(&with(r#"HTTP 500: {"error":{"message":"bug"}}"#)),
            Outcome::Unanswered(_)
        ));
    }

    #[test]
    fn every_malformed_body_is_distinct() {
        let bodies = malformed_bodies("m");
        let mut seen: Vec<&Vec<u8>> = bodies.iter().map(|b| &b.2).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), bodies.len());
    }
}
