//! Every parser on the real files in `shared/workloads` (counts from its README).
//! Fails loudly when the files are missing; `BRISK_WORKLOADS` overrides the location.

mod common;

use brisk_bench::traces;
use brisk_bench::workload::{Shaping, Workload};

fn shaping(rate: Option<f64>) -> Shaping {
    Shaping {
        rate,
        burstiness: 1.0,
        num_requests: None,
        duration_s: None,
        scale_lengths: 1.0,
        max_prompt_tokens: None,
        max_output_tokens: None,
        seed: 0,
    }
}

fn mean_rate(w: &Workload) -> f64 {
    let n = w.requests.len();
    (n - 1) as f64 / (w.requests[n - 1].arrival_s - w.requests[0].arrival_s)
}

#[test]
fn azure_conversation_trace_replays_with_its_arrivals_and_lengths() {
    let w = traces::load_trace(&common::workloads().join("traces/azure2023_conv.csv"), 0).unwrap();
    assert_eq!(w.requests.len(), 19_366);
    assert_eq!(
        (w.requests[0].prompt_len, w.requests[0].output_len),
        (374, 44)
    );
    assert!((mean_rate(&w) - 5.53).abs() < 0.05, "{}", mean_rate(&w));
    let w = w.shape(&Shaping {
        num_requests: Some(200),
        ..shaping(Some(2.0))
    });
    assert_eq!(w.requests[0].arrival_s, 0.0);
    assert!((mean_rate(&w) - 2.0).abs() < 1e-9);
}

#[test]
fn mooncake_trace_spreads_its_buckets_and_keeps_prefix_blocks() {
    let path = common::workloads().join("traces/mooncake_fast25_conversation_trace.jsonl");
    let w = traces::load_trace(&path, 1).unwrap();
    assert_eq!(w.requests.len(), 12_031);
    assert_eq!(w.block_size, traces::MOONCAKE_BLOCK);
    assert!(w
        .requests
        .windows(2)
        .all(|p| p[0].arrival_s <= p[1].arrival_s));
    let first_bucket: Vec<f64> = w
        .requests
        .iter()
        .map(|r| r.arrival_s)
        .take_while(|t| *t < 3.0)
        .collect();
    assert!(first_bucket.len() > 2 && first_bucket[0] < first_bucket[first_bucket.len() - 1]);
    let shared = w
        .requests
        .iter()
        .filter(|r| r.block_hashes.first() == Some(&0))
        .count();
    assert!(shared > 1, "hash id 0 is a prefix many requests share");
    let scaled = w.clone().shape(&Shaping {
        scale_lengths: 0.125,
        ..shaping(None)
    });
    assert_eq!(scaled.block_size, 64);
    assert_eq!(
        traces::load_trace(&path, 1).unwrap().requests,
        w.requests,
        "seeded"
    );
}

#[test]
fn length_samples_parse_and_draw_repeatably() {
    let dir = common::workloads().join("lengths");
    let share =
        traces::length_samples(&dir.join("sharegpt_8k_filtered_stats_llama2_tokenizer.csv"))
            .unwrap();
    assert_eq!((share.len(), share[0]), (30_731, (74, 918)));
    let arxiv = traces::length_samples(
        &dir.join("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"),
    )
    .unwrap();
    assert_eq!((arxiv.len(), arxiv[0]), (28_257, (3772, 54)));
    let a = traces::lengths_workload(&share, 50, 9, String::new());
    let b = traces::lengths_workload(&share, 50, 9, String::new());
    assert_eq!(a.requests, b.requests);
    assert_eq!(a.requests.len(), 50);
}

#[test]
fn sharegpt_first_turns_parse_keeping_human_text_only() {
    let dir = common::workloads().join("prompts");
    let v3 =
        traces::sharegpt_prompts(&dir.join("sharegpt_v3_filtered_first_turn_1000.json")).unwrap();
    assert_eq!(v3.len(), 1000);
    let sg =
        traces::sharegpt_prompts(&dir.join("sharegpt_sg90k_en_first_turn_sampled_sorted.json"))
            .unwrap();
    // 2,978 entries less 16 system, 4 gpt and 1 empty turn.
    assert_eq!(sg.len(), 2957);
}

#[test]
fn servegen_statistics_parse_and_generate_superposed_bursty_arrivals() {
    use brisk_bench::servegen;
    let path = common::workloads().join("servegen/servegen_deepseek-r1.tar.xz");
    assert!(servegen::is_servegen(&path));
    let stats = servegen::load(&path).unwrap();
    assert_eq!(stats.clients.len(), 73, "all 73 clients have both files");
    assert!(stats.clients.iter().all(|c| c.windows.len() == 144));
    let c1 = stats.clients.iter().find(|c| c.id == 1).unwrap();
    assert_eq!(
        c1.windows[0].arrivals,
        servegen::Arrivals::Gamma {
            shape: 1.1681033415865265,
            scale: 8.05582170861377
        }
    );
    assert_eq!(c1.lengths.len(), 4, "four 6-hour length windows");
    assert_eq!(c1.lengths[0].input.values[0], 39);
    // The first hour: the generated rate matches the sum of the clients' window rates.
    let w = stats.workload(5, None, "sg".into());
    let hour: Vec<_> = w.requests.iter().filter(|r| r.arrival_s < 3600.0).collect();
    let want: f64 = stats
        .clients
        .iter()
        .flat_map(|c| c.windows.iter().take(6))
        .map(|x| x.rate * servegen::WINDOW_S)
        .sum();
    let got = hour.len() as f64;
    assert!(
        (got - want).abs() / want < 0.1,
        "{got} requests, want ≈ {want}"
    );
    assert!(w
        .requests
        .windows(2)
        .all(|p| p[0].arrival_s <= p[1].arrival_s));
    assert!(w
        .requests
        .iter()
        .all(|r| r.prompt_len >= 1 && r.output_len >= 1));
    let limited = stats.workload(5, Some(500), "sg".into());
    assert_eq!(
        limited.requests[..],
        w.requests[..500],
        "seeded and limited"
    );
    let shaped = limited.shape(&Shaping {
        num_requests: Some(200),
        ..shaping(Some(2.0))
    });
    assert!((mean_rate(&shaped) - 2.0).abs() < 1e-9);
}

#[test]
fn a_servegen_run_must_bound_how_much_of_the_day_it_generates() {
    let path = common::workloads().join("servegen/servegen_deepseek-r1.tar.xz");
    let err = common::bench_err("http://127.0.0.1:9", &["--trace", path.to_str().unwrap()]);
    assert!(err.starts_with("invalid --num-requests"), "{err}");
}

#[test]
fn a_servegen_workload_runs_end_to_end_at_a_rescaled_rate() {
    let url = common::start(|n| common::Reply::Stream {
        ttft_ms: 1,
        itl_ms: 0,
        tokens: n,
    });
    let path = common::workloads().join("servegen/servegen_deepseek-r1.tar.xz");
    let r = common::bench(
        &url,
        &[
            "--trace",
            path.to_str().unwrap(),
            "--num-requests",
            "6",
            "--rate",
            "200",
            "--max-prompt-tokens",
            "64",
            "--max-output-tokens",
            "4",
        ],
    );
    assert_eq!(
        (r["completed"].as_u64(), r["failed"].as_u64()),
        (Some(6), Some(0))
    );
    assert!(r["workload"].as_str().unwrap().starts_with("servegen:"));
    let last = r["requests"][5]["scheduled_s"].as_f64().unwrap();
    assert!(
        (last - 5.0 / 200.0).abs() < 1e-9,
        "rescaled to 200 req/s: {last}"
    );
}

/// `stats.json` beside the workloads: the published statistics of every file.
fn published(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(common::workloads().join("stats.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[file].clone()
}

/// n, min, max and mean (published to one decimal) of `values` against `stats`.
fn assert_matches(what: &str, values: &[usize], stats: &serde_json::Value) {
    let n = values.len();
    let mean = values.iter().sum::<usize>() as f64 / n as f64;
    assert_eq!(n as u64, stats["n"].as_u64().unwrap(), "{what} n");
    assert_eq!(
        values.iter().min().copied(),
        stats["min"].as_u64().map(|x| x as usize),
        "{what} min"
    );
    assert_eq!(
        values.iter().max().copied(),
        stats["max"].as_u64().map(|x| x as usize),
        "{what} max"
    );
    let want = stats["mean"].as_f64().unwrap();
    assert!(
        (mean - want).abs() <= 0.051,
        "{what} mean {mean} vs published {want}"
    );
}

#[test]
fn every_parsed_file_matches_its_published_statistics() {
    for file in [
        "traces/azure2023_conv.csv",
        "traces/mooncake_fast25_conversation_trace.jsonl",
    ] {
        let w = traces::load_trace(&common::workloads().join(file), 0).unwrap();
        let s = published(file);
        let prompts: Vec<usize> = w.requests.iter().map(|r| r.prompt_len).collect();
        let outputs: Vec<usize> = w.requests.iter().map(|r| r.output_len).collect();
        assert_matches(file, &prompts, &s["prompt_tokens"]);
        assert_matches(file, &outputs, &s["output_tokens"]);
        if let Some(unique) = s["unique_hash_ids"].as_u64() {
            let ids: std::collections::HashSet<u64> = w
                .requests
                .iter()
                .flat_map(|r| r.block_hashes.iter().copied())
                .collect();
            assert_eq!(ids.len() as u64, unique);
        }
    }
    for file in [
        "lengths/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        "lengths/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
    ] {
        let rows = traces::length_samples(&common::workloads().join(file)).unwrap();
        let s = published(file);
        let prompts: Vec<usize> = rows.iter().map(|r| r.0).collect();
        let outputs: Vec<usize> = rows.iter().map(|r| r.1).collect();
        assert_matches(file, &prompts, &s["prompt_tokens"]);
        assert_matches(file, &outputs, &s["output_tokens"]);
    }
    let file = "prompts/sharegpt_v3_filtered_first_turn_1000.json";
    let texts = traces::sharegpt_prompts(&common::workloads().join(file)).unwrap();
    let chars: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
    assert_matches(file, &chars, &published(file)["prompt_chars"]);
}

#[test]
fn servegen_rates_and_length_pmfs_match_the_published_statistics() {
    use brisk_bench::servegen::{self, Pmf};
    let file = "servegen/servegen_deepseek-r1.tar.xz";
    let s = published(file);
    let stats = servegen::load(&common::workloads().join(file)).unwrap();
    assert_eq!(
        stats.clients.len() as u64,
        s["clients_with_length_pmf"].as_u64().unwrap()
    );
    let windows = s["windows"].as_u64().unwrap() as usize;
    let expected: f64 = stats
        .clients
        .iter()
        .flat_map(|c| &c.windows)
        .map(|w| w.rate * servegen::WINDOW_S)
        .sum();
    assert!((expected - s["expected_requests_total"].as_f64().unwrap()).abs() < 1.0);
    let mean_rate = expected / servegen::WINDOW_S / windows as f64;
    assert!((mean_rate - s["aggregate_rate_rps"]["mean"].as_f64().unwrap()).abs() < 0.001);
    // Input length averaged over requests: each window's pmf mean weighted by its rate.
    let pmf_mean = |p: &Pmf| {
        let mut prev = 0.0;
        p.values
            .iter()
            .zip(&p.cdf)
            .map(|(v, c)| {
                let m = *v as f64 * (c - prev);
                prev = *c;
                m
            })
            .sum::<f64>()
    };
    let (mut num, mut den) = (0.0, 0.0);
    for c in &stats.clients {
        for w in c.windows.iter().filter(|w| w.rate > 0.0) {
            let lengths = c
                .lengths
                .iter()
                .rev()
                .find(|l| l.start_s <= w.start_s)
                .unwrap_or(&c.lengths[0]);
            num += w.rate * pmf_mean(&lengths.input);
            den += w.rate;
        }
    }
    let want = s["rate_weighted_input_tokens"]["mean"].as_f64().unwrap();
    assert!((num / den - want).abs() <= 0.051, "{} vs {want}", num / den);
}
