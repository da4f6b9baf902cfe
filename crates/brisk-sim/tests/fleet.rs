//! `brisk sim --replicas N`: a fleet behind the router core, on a workload of requests that
//! share a few long prefixes (a Mooncake-format trace written here).

mod common;

use std::path::{Path, PathBuf};

use brisk_scheduler::LatencyModel;
use common::{args, report};

/// Prefixes the workload's requests share.
const PREFIXES: u64 = 12;
/// Mooncake blocks (512 tokens) per shared prefix; each request adds one block of its own.
const PREFIX_BLOCKS: u64 = 3;
const REQUESTS: u64 = 240;

/// A Mooncake JSONL trace: a request every 0.4 s, each a random one of the shared prefixes
/// followed by a block of its own.
fn shared_prefix_trace(dir: &Path) -> PathBuf {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut lines = String::new();
    for i in 0..REQUESTS {
        // xorshift: a fixed, spread-out choice of prefix.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let prefix = state % PREFIXES;
        let mut ids: Vec<u64> = (0..PREFIX_BLOCKS).map(|b| prefix * 100 + b).collect();
        ids.push(1_000_000 + i);
        lines += &format!(
            "{{\"timestamp\": {}, \"input_length\": {}, \"output_length\": 16, \"hash_ids\": {ids:?}}}\n",
            i * 400,
            ids.len() * 512
        );
    }
    let path = dir.join("shared.jsonl");
    std::fs::write(&path, lines).unwrap();
    path
}

/// The fleet flags over the shared-prefix workload, with 8,192 tokens of KV cache per
/// replica: room for about four prefixes, so a replica that sees all twelve keeps evicting.
fn fleet_args(dir: &Path, extra: &[&str]) -> brisk_sim::SimArgs {
    let trace = shared_prefix_trace(dir);
    let mut flags = vec![
        "--trace",
        trace.to_str().unwrap(),
        "--kv-cache-tokens",
        "8192",
    ];
    if !extra.contains(&"--slo") {
        flags.extend(["--slo", "ttft=2000,tpot=100"]);
    }
    flags.extend_from_slice(extra);
    args(dir, &flags)
}

#[test]
fn ttft_routing_keeps_shared_prefixes_cached_where_round_robin_scatters_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = |router: &str| {
        report(&fleet_args(
            dir.path(),
            &["--replicas", "4", "--router", router],
        ))
    };
    let (ttft, rr) = (run("ttft"), run("round-robin"));
    for r in [&ttft, &rr] {
        assert_eq!(r.completed, REQUESTS as usize, "every request finishes");
    }
    let (f, g) = (ttft.fleet.as_ref().unwrap(), rr.fleet.as_ref().unwrap());
    assert_eq!((f.replicas, f.router.as_str()), (4, "ttft"));
    assert_eq!(g.router, "round-robin");
    assert_eq!(
        g.requests_by_replica,
        Some(vec![60; 4]),
        "round robin takes turns"
    );
    assert_eq!(
        f.requests_by_replica
            .as_ref()
            .unwrap()
            .iter()
            .sum::<usize>(),
        240
    );
    assert!(
        f.prefix_cache_hit_rate > g.prefix_cache_hit_rate + 0.2,
        "ttft {:.3} vs round robin {:.3}",
        f.prefix_cache_hit_rate,
        g.prefix_cache_hit_rate
    );
    assert!(ttft.latency["mean_ttft_ms"] < rr.latency["mean_ttft_ms"]);
}

#[test]
fn one_replica_is_the_single_server_run_with_no_fleet_section() {
    let dir = tempfile::tempdir().unwrap();
    let plain = report(&fleet_args(dir.path(), &[]));
    let one = report(&fleet_args(
        dir.path(),
        &["--replicas", "1", "--router", "round-robin"],
    ));
    assert!(plain.fleet.is_none() && one.fleet.is_none());
    let json = |r: &brisk_bench::Report| {
        let mut v = serde_json::to_value(r).unwrap();
        v.as_object_mut().unwrap().remove("date");
        v
    };
    assert_eq!(json(&plain), json(&one));
    assert!(json(&plain).get("fleet").is_none());
    let two = report(&fleet_args(dir.path(), &["--replicas", "2"]));
    assert!(json(&two).get("fleet").is_some());
}

#[test]
fn requests_the_router_refuses_are_429_failures() {
    let dir = tempfile::tempdir().unwrap();
    // Twice the pace on two replicas, with an objective a cold prompt alone nearly misses.
    let a = fleet_args(
        dir.path(),
        &[
            "--replicas",
            "2",
            "--rate",
            "5",
            "--slo",
            "ttft=1200,tpot=100",
            "--send-slo",
            "--router-reject-unattainable",
        ],
    );
    let r = report(&a);
    let refused = r.fleet.as_ref().unwrap().refused;
    assert!(refused > 0, "an overload is refused at the router");
    let at_router = r
        .requests
        .iter()
        .filter_map(|q| q.error.as_deref())
        .filter(|e| e.starts_with("HTTP 429: no replica can meet"))
        .count();
    assert_eq!(at_router, refused);
    assert!(r.failed >= refused);
    assert_eq!(r.completed + r.failed, REQUESTS as usize);
}

#[test]
fn a_fleet_run_repeats_exactly_with_late_kv_events() {
    let dir = tempfile::tempdir().unwrap();
    let a = fleet_args(
        dir.path(),
        &["--replicas", "3", "--router-event-delay", "0.5"],
    );
    let (r1, r2) = (report(&a), report(&a));
    assert_eq!(r1.requests, r2.requests);
    assert_eq!(r1.fleet, r2.fleet);
    assert_eq!(r1.completed, REQUESTS as usize);
}

#[test]
fn a_disaggregated_fleet_prefills_on_one_side_and_decodes_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut flags = vec!["--replicas", "3"];
        flags.extend_from_slice(extra);
        report(&fleet_args(dir.path(), &flags))
    };
    let colocated = run(&[]);
    let split = run(&["--prefill-replicas", "1"]);
    let slow_link = run(&["--prefill-replicas", "1", "--kv-transfer-gbit", "0.1"]);
    for r in [&colocated, &split, &slow_link] {
        assert_eq!(r.completed, REQUESTS as usize, "every request finishes");
    }
    let f = split.fleet.as_ref().unwrap();
    assert_eq!((f.prefill_replicas, f.handovers), (1, REQUESTS as usize));
    // Every prompt goes to the prefill replica; the decode replicas get none.
    assert_eq!(f.requests_by_replica, Some(vec![REQUESTS as usize, 0, 0]));
    assert_eq!(colocated.fleet.as_ref().unwrap().handovers, 0);
    // A hand-over delays the second token by its transfer: 2,048 tokens of K/V at
    // 0.1 Gbit/s take 7.5 s, at 10 Gbit/s 75 ms.
    let second_token = |r: &brisk_bench::Report| r.latency["p99_itl_ms"];
    assert!(
        second_token(&slow_link) > 7000.0,
        "{}",
        second_token(&slow_link)
    );
    assert!(second_token(&split) < 1000.0, "{}", second_token(&split));
}

#[test]
fn fleet_flags_that_cannot_apply_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = |extra: &[&str]| {
        let a = args(dir.path(), extra);
        let model = LatencyModel::load(&a.latency_model).unwrap();
        a.settings(model).unwrap_err().to_string()
    };
    assert_eq!(
        error(&["--replicas", "0"]),
        "--replicas: must be at least 1"
    );
    let e = error(&["--router-reject-unattainable"]);
    assert!(
        e.starts_with("--router-reject-unattainable: there is no router"),
        "{e}"
    );
    let e = error(&["--replicas", "2", "--router-event-delay=-1"]);
    assert!(e.starts_with("--router-event-delay:"), "{e}");
    let e = error(&["--replicas", "2", "--prefill-replicas", "2"]);
    assert!(e.starts_with("--prefill-replicas: must leave"), "{e}");
    let e = error(&[
        "--replicas",
        "2",
        "--prefill-replicas",
        "1",
        "--kv-transfer-gbit",
        "0",
    ]);
    assert!(e.starts_with("--kv-transfer-gbit:"), "{e}");
    let e = error(&[
        "--replicas",
        "3",
        "--prefill-replicas",
        "2",
        "--decode-replicas",
        "2",
    ]);
    assert!(
        e.starts_with("--decode-replicas: prefill and decode"),
        "{e}"
    );
    let e = error(&["--priority-migration"]);
    assert!(
        e.starts_with("--priority-migration: there is no router"),
        "{e}"
    );
    let e = error(&["--replicas", "2", "--rebalance-interval", "0"]);
    assert!(e.starts_with("--rebalance-interval:"), "{e}");
}

#[test]
fn a_mixed_fleet_serves_some_requests_colocated_and_hands_the_others_over() {
    let dir = tempfile::tempdir().unwrap();
    // Replica 0 prefills, 1 decodes, 2 serves both.
    let flags = [
        "--replicas",
        "3",
        "--prefill-replicas",
        "1",
        "--decode-replicas",
        "1",
    ];
    let r = report(&fleet_args(dir.path(), &flags));
    assert_eq!(r.completed, REQUESTS as usize);
    let f = r.fleet.as_ref().unwrap();
    assert_eq!((f.prefill_replicas, f.decode_replicas), (1, 1));
    assert!(f.price_interference);
    let by_replica = f.requests_by_replica.clone().unwrap();
    assert_eq!(by_replica[1], 0, "the decode replica takes no prompt");
    assert!(by_replica[0] > 0 && by_replica[2] > 0, "{by_replica:?}");
    // What the prefill replica took it handed over (but requests that end at their first
    // token).
    assert!(
        f.handovers > 0 && f.handovers <= by_replica[0],
        "{}",
        f.handovers
    );
}

#[test]
fn migration_moves_running_requests_and_every_request_still_gets_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--replicas", "2", "--rate", "8", "--num-requests", "120"];
    let with = |extra: &[&str]| {
        let flags: Vec<&str> = base.iter().chain(extra).copied().collect();
        report(&fleet_args(dir.path(), &flags))
    };
    let still = with(&[]);
    assert_eq!(still.fleet.as_ref().unwrap().migrations, 0);
    // Load balance: any lead at all moves a request.
    let balanced = with(&["--rebalance-slack", "0", "--rebalance-interval", "0.05"]);
    let f = balanced.fleet.as_ref().unwrap();
    assert!(f.migrations > 0);
    let (p50, p99) = f.migration_pause_ms.unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{p50} {p99}");
    assert_eq!(balanced.completed, still.completed);
    assert_eq!(
        balanced.total_output_tokens, still.total_output_tokens,
        "no token lost or doubled"
    );
    // Priority: only with batch-class requests beside interactive ones.
    let priority = ["--priority-migration", "--rebalance-interval", "0.05"];
    assert_eq!(
        with(&priority).fleet.unwrap().migrations,
        0,
        "all interactive"
    );
    // An interactive TPOT objective no step meets: batch decodes beside interactive work
    // always move. (Interactive requests here share one prefix: with the allowance that
    // grows with the queues, placement alone kept batch decodes apart from them in this run,
    // leaving nothing to move; the fixed allowance alone does not.)
    let classes = [
        &priority[..],
        &["--router-affinity-ratio", "1"],
        &[
            "--slo",
            "ttft=2000,tpot=1",
            "--slo-class",
            "batch:ttft=60000,tpot=1000,share=0.5",
            "--send-slo",
        ],
    ]
    .concat();
    let mixed = with(&classes);
    assert!(mixed.fleet.as_ref().unwrap().migrations > 0);
    assert_eq!(mixed.total_output_tokens, still.total_output_tokens);
    // The same input gives the same run.
    assert_eq!(with(&classes).fleet, mixed.fleet);
}
