//! Times the backend's steps on a model file: single-stream decode, batched decode and a
//! long prefill, each repeated, reporting medians.
//!
//! `cargo run --release -p brisk-backend --example step_bench -- MODEL.gguf [REPEATS] [PHASES]`
//!
//! PHASES is a comma-separated subset of `prefill,decode` (default both; `decode16` runs only
//! batch size 16). Each line also
//! gives the fastest repeat and the CPU time all threads spent per step (from
//! `/proc/self/task/*/schedstat`): with `BRISK_THREADS=1` that is the work a step needs,
//! which stays steady on a machine shared with others when wall time does not.
//!
//! Environment: `STEP_PROMPT` (prefill length, default 512), `STEP_CONTEXT` (tokens cached
//! per decoding sequence, default 64), `STEP_KV` (KV cache dtype, default f32) — long
//! contexts and 16-bit or 8-bit caches show attention's share of a step.

use std::time::Instant;

use brisk_backend::CpuBackend;
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch};

/// Nanoseconds all threads of this process have run on a CPU (0 where not Linux).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (median, minimum)
fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: step_bench MODEL [REPEATS]");
    let repeats: usize = args.next().map_or(5, |r| r.parse().expect("a number"));
    let phases = args.next().unwrap_or_else(|| "prefill,decode".into());
    let phases: Vec<&str> = phases.split(',').collect();
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let mut backend = CpuBackend::load(path.as_ref()).expect("model loads");
    backend.set_kv_cache_dtype(env("STEP_KV", "f32").parse().expect("a KV cache dtype"));
    const BS: usize = 16;
    // Tokens already in the cache for each decoding sequence.
    let context: usize = env("STEP_CONTEXT", "64").parse().expect("a number");
    let prompt_len: usize = env("STEP_PROMPT", "512").parse().expect("a number");

    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| 100 + (i * 37) % 20_000)
        .collect();
    let prompt_blocks = prompt_len.div_ceil(BS);
    let table: Vec<u32> = (0..prompt_blocks as u32).collect();
    let mut times = Vec::new();
    let cpu0 = cpu_ns();
    for _ in 0..if phases.contains(&"prefill") {
        repeats
    } else {
        0
    } {
        let mut kv = backend.allocate_kv(prompt_blocks, BS).unwrap();
        let t = Instant::now();
        let batch = StepBatch {
            seqs: vec![SeqStep {
                tokens: &prompt,
                start_pos: 0,
                block_table: &table,
                logits: LogitsWanted::Last,
            }],
        };
        backend.execute(&batch, &mut kv).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    if !times.is_empty() {
        let cpu_ms = (cpu_ns() - cpu0) as f64 / 1e6 / times.len() as f64;
        let (pp, best) = median(times);
        println!(
            "prefill {prompt_len} tokens: {:.1} ms ({:.1} tokens/s; best {:.1} tokens/s; cpu {cpu_ms:.1} ms)",
            pp * 1e3,
            prompt_len as f64 / pp,
            prompt_len as f64 / best
        );
    }
    // `decode` runs every batch size, `decodeN` only batch size N.
    let sizes: Vec<usize> = [1usize, 4, 16, 64]
        .into_iter()
        .filter(|n| phases.contains(&"decode") || phases.contains(&format!("decode{n}").as_str()))
        .collect();

    // Decode steps at several batch sizes, each sequence at position `context`.
    for batch_size in sizes {
        let blocks_per_seq = (context + 1).div_ceil(BS);
        let mut kv = backend
            .allocate_kv(batch_size * blocks_per_seq, BS)
            .unwrap();
        let tables: Vec<Vec<u32>> = (0..batch_size)
            .map(|s| ((s * blocks_per_seq) as u32..((s + 1) * blocks_per_seq) as u32).collect())
            .collect();
        // Fill each sequence's cache once.
        let fill: Vec<u32> = (0..context as u32).map(|i| 200 + i).collect();
        for t in &tables {
            let batch = StepBatch {
                seqs: vec![SeqStep {
                    tokens: &fill,
                    start_pos: 0,
                    block_table: t,
                    logits: LogitsWanted::None,
                }],
            };
            backend.execute(&batch, &mut kv).unwrap();
        }
        let tokens: Vec<[u32; 1]> = (0..batch_size).map(|s| [300 + s as u32]).collect();
        let mut times = Vec::new();
        let cpu0 = cpu_ns();
        for _ in 0..repeats.max(3) * 2 {
            let batch = StepBatch {
                seqs: tables
                    .iter()
                    .zip(&tokens)
                    .map(|(t, tok)| SeqStep {
                        tokens: tok,
                        start_pos: context,
                        block_table: t,
                        logits: LogitsWanted::Last,
                    })
                    .collect(),
            };
            let t = Instant::now();
            backend.execute(&batch, &mut kv).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        let cpu_ms = (cpu_ns() - cpu0) as f64 / 1e6 / times.len() as f64;
        let (step, best) = median(times);
        println!(
            "decode batch {batch_size:>2}: {:.2} ms/step ({:.1} tokens/s; best {:.2} ms; cpu {cpu_ms:.2} ms)",
            step * 1e3,
            batch_size as f64 / step,
            best * 1e3
        );
    }
}
