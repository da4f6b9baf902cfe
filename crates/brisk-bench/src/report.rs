//! The JSON report and the summary table.
//!
//! Keys follow vLLM's `benchmark_serving` result JSON (`completed`, `request_throughput`,
//! `mean_ttft_ms`, `p99_tpot_ms`, `request_goodput`, …) so reports from either tool can be
//! compared. Goodput and SLO attainment follow DistServe: a request is good when it
//! completed with TTFT ≤ ttft_slo and TPOT ≤ tpot_slo; goodput is good requests per
//! second of run time, attainment their share of all requests (failed ones are misses).
//! Percentiles interpolate linearly between order statistics (numpy's default, as vLLM).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::args::{Endpoint, Slo};
use crate::client::RequestRecord;
use crate::slo::{SloPolicy, DEFAULT_CLASS};

/// What the run was, copied into the report.
#[derive(Clone, Debug)]
pub struct RunMeta {
    /// The command line as typed.
    pub command_line: String,
    /// Server base URL.
    pub url: String,
    /// Model name sent.
    pub model: String,
    /// Endpoint used.
    pub endpoint: Endpoint,
    /// Workload description.
    pub workload: String,
    /// Mean request rate asked for (`None`: all at once, or a trace at its own pace).
    pub rate: Option<f64>,
    /// Gamma shape of synthetic arrivals.
    pub burstiness: f64,
    /// Closed-loop cap.
    pub max_concurrency: Option<usize>,
    /// The objectives.
    pub slo: SloPolicy,
    /// Whether every prompt has exactly its requested token count.
    pub prompt_lengths_exact: bool,
    /// Seed of the run.
    pub seed: u64,
}

/// Mean and maximum client lag.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Lag {
    /// Mean over requests.
    pub mean: f64,
    /// Maximum over requests.
    pub max: f64,
}

/// The benchmark report (one run at one rate).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// ISO-8601 UTC time the report was made.
    pub date: String,
    /// The command line.
    pub command_line: String,
    /// Server base URL.
    pub url: String,
    /// Model name sent.
    pub model: String,
    /// Endpoint used.
    pub endpoint: Endpoint,
    /// Workload description.
    pub workload: String,
    /// Seed.
    pub seed: u64,
    /// Requested mean rate; null when all requests were sent at once or a trace kept its pace.
    pub rate: Option<f64>,
    /// Gamma shape of synthetic arrivals.
    pub burstiness: f64,
    /// Closed-loop cap.
    pub max_concurrency: Option<usize>,
    /// Requests in the workload.
    pub num_requests: usize,
    /// Requests that completed.
    pub completed: usize,
    /// Requests that failed (HTTP error, broken stream, timeout).
    pub failed: usize,
    /// Seconds from start to the last completion.
    pub duration: f64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Prompt plus output tokens per second.
    pub total_token_throughput: f64,
    /// Prompt tokens of completed requests.
    pub total_input_tokens: usize,
    /// Output tokens of completed requests.
    pub total_output_tokens: usize,
    /// Good requests per second.
    pub request_goodput: f64,
    /// Share of all requests that were good.
    pub slo_attainment: f64,
    /// The `--slo` objective (null bounds are unbounded).
    pub slo: BTreeMap<&'static str, Option<f64>>,
    /// Attainment, goodput and latencies of each SLO class (one `default` class without
    /// `--slo-class`).
    pub slo_classes: Vec<ClassReport>,
    /// Client lag: actual − scheduled send, milliseconds.
    pub client_lag_ms: Lag,
    /// Completed requests that returned fewer tokens than asked (ignore_eos/min_tokens ignored).
    pub ignored_length_requests: usize,
    /// Whether prompts had exactly their requested token counts.
    pub prompt_lengths_exact: bool,
    /// How prompt lengths were measured: `token-ids`, `server:/tokenize`, `local:PATH`, or
    /// `none` (text at 1 word ≈ 1 token); null when the report's maker did not say.
    pub prompt_tokenizer: Option<String>,
    /// Completed requests whose server-counted prompt tokens (`usage.prompt_tokens`) differ
    /// from the tokens sent: a BOS the server added, a chat template's tokens, or text
    /// prompts measured with another tokenizer.
    pub prompt_len_mismatch_requests: usize,
    /// The replicas and router behind the latencies, when a run had several (`brisk sim
    /// --replicas N`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
    /// `{mean,median,std,p90,p99}_{ttft,tpot,itl,e2el}_ms`.
    #[serde(flatten)]
    pub latency: BTreeMap<String, f64>,
    /// Every request.
    pub requests: Vec<RequestRecord>,
}

/// How a fleet of replicas behind a router shared a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FleetReport {
    /// Replicas.
    pub replicas: usize,
    /// The router's policy (`ttft`, `round-robin`).
    pub router: String,
    /// Requests the router refused (429, counted in `failed`).
    pub refused: usize,
    /// Prompt tokens of completed requests.
    pub prompt_tokens: u64,
    /// Of those, the tokens the replicas' prefix caches held.
    pub cached_prompt_tokens: u64,
    /// `cached_prompt_tokens / prompt_tokens` (0 without prompt tokens).
    pub prefix_cache_hit_rate: f64,
    /// Requests routed to a replica: the fewest, the mean and the most.
    pub requests_per_replica: Spread,
    /// Requests routed to each replica, in replica order (fleets of 64 or fewer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_by_replica: Option<Vec<usize>>,
    /// Of the replicas, the prefill replicas (0: colocated serving).
    pub prefill_replicas: usize,
    /// Of the replicas, the decode replicas (the rest serve both phases).
    pub decode_replicas: usize,
    /// Whether the router priced interference and hand-overs
    /// (`RouterConfig::price_interference`).
    pub price_interference: bool,
    /// Requests handed from a prefill replica to a decode replica.
    pub handovers: usize,
    /// Running requests live-migrated (for balance or priority).
    pub migrations: usize,
    /// The pause of the median and the 99th-percentile migration, ms (with migrations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_pause_ms: Option<(f64, f64)>,
}

/// Smallest, mean and largest of a set of counts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: usize,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: usize,
}

impl Spread {
    /// The spread of `counts` (all zero when empty).
    pub fn of(counts: &[usize]) -> Self {
        Self {
            min: counts.iter().copied().min().unwrap_or(0),
            mean: counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64,
            max: counts.iter().copied().max().unwrap_or(0),
        }
    }
}

/// One SLO class's share of the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassReport {
    /// Class name (`default` for `--slo`).
    pub name: String,
    /// The assignment rule (`all`, `max-prompt=256`, `share=0.3`, …).
    pub rule: String,
    /// TTFT bound, ms (null: unbounded).
    pub ttft_ms: Option<f64>,
    /// TPOT bound, ms (null: unbounded).
    pub tpot_ms: Option<f64>,
    /// Requests assigned to the class.
    pub num_requests: usize,
    /// Of those, completed.
    pub completed: usize,
    /// Of those, within the class's objective.
    pub good: usize,
    /// Good requests of the class per second of the whole run.
    pub request_goodput: f64,
    /// Share of the class's requests that were good (0 for an empty class).
    pub slo_attainment: f64,
    /// `{mean,median,p90,p99}_{ttft,tpot}_ms` over the class's completed requests.
    #[serde(flatten)]
    pub latency: BTreeMap<String, f64>,
}

/// Linear-interpolation percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let pos = p / 100.0 * (n - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

fn stats(name: &str, mut v: Vec<f64>, out: &mut BTreeMap<String, f64>) {
    v.sort_by(f64::total_cmp);
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    out.insert(format!("mean_{name}_ms"), mean);
    out.insert(format!("median_{name}_ms"), percentile(&v, 50.0));
    out.insert(format!("std_{name}_ms"), std);
    out.insert(format!("p90_{name}_ms"), percentile(&v, 90.0));
    out.insert(format!("p99_{name}_ms"), percentile(&v, 99.0));
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Whether a record meets the objective.
pub fn meets(r: &RequestRecord, slo: &Slo) -> bool {
    r.ok() && r.ttft.is_some_and(|t| t <= slo.ttft_ms) && r.tpot.unwrap_or(0.0) <= slo.tpot_ms
}

fn class_report(
    class: &crate::slo::SloClass,
    mine: &[&RequestRecord],
    per_s: impl Fn(f64) -> f64,
) -> ClassReport {
    let good = mine.iter().filter(|r| meets(r, &class.slo)).count();
    let done: Vec<&&RequestRecord> = mine.iter().filter(|r| r.ok()).collect();
    let mut all = BTreeMap::new();
    stats(
        "ttft",
        done.iter().filter_map(|r| r.ttft).collect(),
        &mut all,
    );
    stats(
        "tpot",
        done.iter().filter_map(|r| r.tpot).collect(),
        &mut all,
    );
    all.retain(|k, _| !k.starts_with("std_"));
    ClassReport {
        name: class.name.clone(),
        rule: class.rule.describe(),
        ttft_ms: finite(class.slo.ttft_ms),
        tpot_ms: finite(class.slo.tpot_ms),
        num_requests: mine.len(),
        completed: done.len(),
        good,
        request_goodput: per_s(good as f64),
        slo_attainment: if mine.is_empty() {
            0.0
        } else {
            good as f64 / mine.len() as f64
        },
        latency: all,
    }
}

/// Aggregates records into the report; each record is judged against its SLO class,
/// assigned here from its prompt length and the seed.
pub fn build(meta: &RunMeta, mut records: Vec<RequestRecord>, duration_s: f64) -> Report {
    let lens: Vec<usize> = records.iter().map(|r| r.prompt_len).collect();
    let assigned = meta.slo.assign(&lens, meta.seed);
    for (r, &c) in records.iter_mut().zip(&assigned) {
        r.slo_class.clone_from(&meta.slo.classes[c].name);
    }
    let done: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
    let good = records
        .iter()
        .zip(&assigned)
        .filter(|(r, &c)| meets(r, &meta.slo.classes[c].slo))
        .count();
    let total_input_tokens: usize = done.iter().map(|r| r.prompt_len).sum();
    let total_output_tokens: usize = done.iter().map(|r| r.output_len).sum();
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    let mut latency = BTreeMap::new();
    stats(
        "ttft",
        done.iter().filter_map(|r| r.ttft).collect(),
        &mut latency,
    );
    stats(
        "tpot",
        done.iter().filter_map(|r| r.tpot).collect(),
        &mut latency,
    );
    stats(
        "itl",
        done.iter().flat_map(|r| r.itls.iter().copied()).collect(),
        &mut latency,
    );
    stats(
        "e2el",
        done.iter().filter_map(|r| r.e2el).collect(),
        &mut latency,
    );
    let slo_classes = meta
        .slo
        .classes
        .iter()
        .enumerate()
        .map(|(i, class)| {
            let mine: Vec<&RequestRecord> = records
                .iter()
                .zip(&assigned)
                .filter(|(_, &c)| c == i)
                .map(|(r, _)| r)
                .collect();
            class_report(class, &mine, per_s)
        })
        .collect();
    let default = meta
        .slo
        .classes
        .iter()
        .find(|c| c.name == DEFAULT_CLASS)
        .map_or(Slo::unbounded(), |c| c.slo);
    let lags: Vec<f64> = records.iter().map(|r| r.lag_ms).collect();
    let lag = Lag {
        mean: lags.iter().sum::<f64>() / lags.len().max(1) as f64,
        max: lags.iter().copied().fold(0.0, f64::max),
    };
    Report {
        date: crate::now_iso8601(),
        command_line: meta.command_line.clone(),
        url: meta.url.clone(),
        model: meta.model.clone(),
        endpoint: meta.endpoint,
        workload: meta.workload.clone(),
        seed: meta.seed,
        rate: meta.rate.and_then(finite),
        burstiness: meta.burstiness,
        max_concurrency: meta.max_concurrency,
        num_requests: records.len(),
        completed: done.len(),
        failed: records.len() - done.len(),
        duration: duration_s,
        request_throughput: per_s(done.len() as f64),
        output_throughput: per_s(total_output_tokens as f64),
        total_token_throughput: per_s((total_input_tokens + total_output_tokens) as f64),
        total_input_tokens,
        total_output_tokens,
        request_goodput: per_s(good as f64),
        slo_attainment: if records.is_empty() {
            0.0
        } else {
            good as f64 / records.len() as f64
        },
        slo: BTreeMap::from([
            ("ttft_ms", finite(default.ttft_ms)),
            ("tpot_ms", finite(default.tpot_ms)),
        ]),
        slo_classes,
        client_lag_ms: lag,
        ignored_length_requests: done
            .iter()
            .filter(|r| r.output_len < r.output_len_requested)
            .count(),
        prompt_lengths_exact: meta.prompt_lengths_exact,
        prompt_tokenizer: None,
        prompt_len_mismatch_requests: done
            .iter()
            .filter(|r| r.prompt_len_reported.is_some_and(|n| n != r.prompt_len))
            .count(),
        fleet: None,
        latency,
        requests: records,
    }
}

/// The readable summary table (vLLM's layout).
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let rate = r.rate.map_or("inf".to_string(), |x| format!("{x}"));
    let slo = |k| {
        r.slo
            .get(k)
            .copied()
            .flatten()
            .map_or("-".to_string(), |x: f64| format!("{x}"))
    };
    let _ = writeln!(s, "{:=^60}", " brisk bench result ");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<44}{v:>16}");
    };
    row("Request rate (req/s):", rate);
    row("Successful requests:", r.completed.to_string());
    row("Failed requests:", r.failed.to_string());
    row("Benchmark duration (s):", format!("{:.2}", r.duration));
    row("Total input tokens:", r.total_input_tokens.to_string());
    row("Total generated tokens:", r.total_output_tokens.to_string());
    row(
        "Request throughput (req/s):",
        format!("{:.2}", r.request_throughput),
    );
    row(
        "Output token throughput (tok/s):",
        format!("{:.2}", r.output_throughput),
    );
    row(
        "Total token throughput (tok/s):",
        format!("{:.2}", r.total_token_throughput),
    );
    let goodput_label = if r.slo_classes.len() > 1 {
        "Goodput (req/s), each request at its class's SLO:".to_string()
    } else {
        format!(
            "Goodput (req/s) @ ttft≤{} tpot≤{} ms:",
            slo("ttft_ms"),
            slo("tpot_ms")
        )
    };
    row(&goodput_label, format!("{:.2}", r.request_goodput));
    row(
        "SLO attainment:",
        format!("{:.1}%", r.slo_attainment * 100.0),
    );
    row(
        "Client lag mean / max (ms):",
        format!("{:.2} / {:.2}", r.client_lag_ms.mean, r.client_lag_ms.max),
    );
    row(
        "Requests that ignored the length asked:",
        r.ignored_length_requests.to_string(),
    );
    row(
        "Prompt lengths exact (measured by):",
        format!(
            "{} ({})",
            r.prompt_lengths_exact,
            r.prompt_tokenizer.as_deref().unwrap_or("-")
        ),
    );
    row(
        "Server-counted prompt lengths differ:",
        r.prompt_len_mismatch_requests.to_string(),
    );
    if r.slo_classes.len() > 1 {
        let _ = writeln!(s, "{:-^60}", " SLO classes ");
        let _ = writeln!(
            s,
            "{:<14}{:>7}{:>7}{:>9}{:>9}{:>7}{:>7}",
            "class", "ttft", "tpot", "requests", "goodput", "attain", "p99ttft"
        );
        let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v}"));
        for c in &r.slo_classes {
            let _ = writeln!(
                s,
                "{:<14}{:>7}{:>7}{:>9}{:>9.2}{:>6.1}%{:>7.0}",
                c.name,
                ms(c.ttft_ms),
                ms(c.tpot_ms),
                c.num_requests,
                c.request_goodput,
                c.slo_attainment * 100.0,
                c.latency.get("p99_ttft_ms").copied().unwrap_or(0.0)
            );
        }
    }
    for (name, title) in [
        ("ttft", "Time to First Token"),
        ("tpot", "Time per Output Token (excl. 1st)"),
        ("itl", "Inter-token Latency"),
        ("e2el", "End-to-end Latency"),
    ] {
        let _ = writeln!(s, "{:-^60}", format!(" {title} "));
        for stat in ["mean", "median", "p90", "p99"] {
            let v = r
                .latency
                .get(&format!("{stat}_{name}_ms"))
                .copied()
                .unwrap_or(0.0);
            let _ = writeln!(
                s,
                "{:<44}{v:>16.2}",
                format!("{stat} {} (ms):", name.to_uppercase())
            );
        }
    }
    let _ = writeln!(s, "{}", "=".repeat(60));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-9);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
