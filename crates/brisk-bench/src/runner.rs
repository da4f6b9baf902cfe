//! Sends a workload on its schedule.
//!
//! The client must not distort what it measures (as vLLM's `benchmark_serving` and
//! DistServe's harness take care to): each request is sent at its scheduled instant by
//! its own task, on its own connection (the pool keeps no idle connections, so no
//! request queues behind another's socket), and the gap between the scheduled and the
//! actual send is recorded as client lag. `--max-concurrency` closes the loop: a request
//! waits for a free slot, and its lag is counted from the moment the slot freed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Semaphore;

use crate::args::BenchConfig;
use crate::client::{self, RequestBody, RequestRecord};
use crate::error::BenchError;
use crate::prompts::Prompt;
use crate::slo::SloClass;
use crate::workload::Workload;

/// Records of every request (in workload order) and the run's duration in seconds
/// (start → last completion).
pub struct RunOutcome {
    /// One record per request, failed ones included.
    pub records: Vec<RequestRecord>,
    /// Seconds from the first scheduled send to the last completion.
    pub duration_s: f64,
}

/// Builds the HTTP client: no idle connections kept, so each in-flight request has its own.
pub fn http_client() -> Result<reqwest::Client, BenchError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| BenchError::Setup(e.to_string()))
}

/// The fields each request carries beyond the benchmark's own: `--request-field`s, with
/// `--send-slo` its class's objective and priority (a class named `batch` is batch work), and
/// with `--send-user` its client as `user`, as `brisk sim` plays them.
fn request_fields(
    cfg: &BenchConfig,
    workload: &Workload,
) -> Vec<Arc<serde_json::Map<String, serde_json::Value>>> {
    let shared = Arc::new(cfg.request_fields.clone());
    if !cfg.send_slo && !cfg.send_user {
        return vec![shared; workload.requests.len()];
    }
    let per_class: Vec<Arc<serde_json::Map<String, serde_json::Value>>> = cfg
        .slo
        .classes
        .iter()
        .map(|class| {
            let mut fields = cfg.request_fields.clone();
            if cfg.send_slo {
                class_fields(class, &mut fields);
            }
            Arc::new(fields)
        })
        .collect();
    let lens: Vec<usize> = workload.requests.iter().map(|r| r.prompt_len).collect();
    let classes = cfg.slo.assign(&lens, cfg.seed);
    workload
        .requests
        .iter()
        .zip(classes)
        .map(|(r, c)| {
            if !cfg.send_user {
                return Arc::clone(&per_class[c]);
            }
            let mut fields = (*per_class[c]).clone();
            let user = r.user(&cfg.slo.classes[c].name);
            fields.insert("user".into(), serde_json::json!(user));
            Arc::new(fields)
        })
        .collect()
}

/// Adds `class`'s objective (`slo`) and, for a class named `batch`, batch priority.
fn class_fields(class: &SloClass, fields: &mut serde_json::Map<String, serde_json::Value>) {
    let mut slo = serde_json::Map::new();
    for (key, ms) in [
        ("ttft_ms", class.slo.ttft_ms),
        ("tpot_ms", class.slo.tpot_ms),
    ] {
        if ms.is_finite() {
            slo.insert(key.into(), serde_json::json!(ms));
        }
    }
    if !slo.is_empty() {
        fields.insert("slo".into(), serde_json::Value::Object(slo));
    }
    if class.name == "batch" {
        fields.insert("priority".into(), serde_json::json!("batch"));
    }
}

/// Runs the workload against the server and collects one record per request.
pub async fn execute(
    cfg: &BenchConfig,
    model: &str,
    workload: &Workload,
    prompts: Vec<Prompt>,
    label: &str,
) -> Result<RunOutcome, BenchError> {
    let client = http_client()?;
    let n = workload.requests.len();
    let bar = if cfg.progress {
        let b = ProgressBar::new(n as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
        ) {
            b.set_style(style);
        }
        b.set_message(label.to_string());
        b
    } else {
        ProgressBar::hidden()
    };
    let prompts = Arc::new(prompts);
    let model: Arc<str> = Arc::from(model);
    let base: Arc<str> = Arc::from(cfg.url.as_str());
    let endpoint = cfg.endpoint;
    let fields = request_fields(cfg, workload);
    let timeout = Duration::from_secs_f64(cfg.request_timeout_s);
    let slots = cfg.max_concurrency.map(|c| Arc::new(Semaphore::new(c)));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (i, spec) in workload.requests.iter().enumerate() {
        let at = start + Duration::from_secs_f64(spec.arrival_s);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let permit = match &slots {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| BenchError::Setup(e.to_string()))?,
            ),
            None => None,
        };
        let ready = Instant::now().max(at);
        let record = RequestRecord {
            prompt_len: spec.prompt_len,
            output_len_requested: spec.output_len,
            scheduled_s: spec.arrival_s,
            ..RequestRecord::default()
        };
        let (client, prompts, model, base, bar, extra) = (
            client.clone(),
            prompts.clone(),
            model.clone(),
            base.clone(),
            bar.clone(),
            fields[i].clone(),
        );
        let (output_len, natural) = (spec.output_len, cfg.natural_output);
        handles.push(tokio::spawn(async move {
            let mut record = record;
            record.lag_ms = Instant::now()
                .saturating_duration_since(ready)
                .as_secs_f64()
                * 1e3;
            let body = RequestBody {
                model: &model,
                endpoint,
                prompt: &prompts[i],
                output_len,
                natural,
                extra: &extra,
            };
            let record = client::send(&client, &base, &body, timeout, record).await;
            drop(permit);
            bar.inc(1);
            record
        }));
    }
    let mut records = Vec::with_capacity(n);
    for (h, spec) in handles.into_iter().zip(&workload.requests) {
        records.push(h.await.unwrap_or_else(|e| RequestRecord {
            prompt_len: spec.prompt_len,
            output_len_requested: spec.output_len,
            scheduled_s: spec.arrival_s,
            error: Some(format!("client task failed: {e}")),
            ..RequestRecord::default()
        }));
    }
    let duration_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok(RunOutcome {
        records,
        duration_s,
    })
}

/// The first model id of `GET /v1/models`, or `"default"` when the server has none.
pub async fn discover_model(base_url: &str) -> String {
    let Ok(client) = http_client() else {
        return "default".into();
    };
    get_text(
        &client,
        &format!("{base_url}/v1/models"),
        Duration::from_secs(10),
    )
    .await
    .and_then(|text| {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.pointer("/data/0/id")?.as_str().map(str::to_string)
    })
    .unwrap_or_else(|| "default".into())
}

/// The body of a GET, or `None` when the server does not answer in time or at all.
pub async fn get_text(client: &reqwest::Client, url: &str, timeout: Duration) -> Option<String> {
    let fetch = async { client.get(url).send().await.ok()?.text().await.ok() };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}
