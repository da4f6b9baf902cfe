//! What moving a decoding request between two engine cores costs: the bytes of its K/V and
//! the pause it sees (export on the source, import on the destination), in one process —
//! no network; the wire adds its own time for the same bytes.
//!
//! `cargo run --release -p brisk-engine --example move_bench -- MODEL.gguf [CONTEXTS] [DTYPES] [WIRES]`
//!
//! CONTEXTS (default `1024,4096`) are prompt lengths; DTYPES (default `f32,bf16,int8`) the
//! KV cache types; WIRES (default `auto`) the `--kv-transfer-dtype`s the source sends with.
//! For each, a request prefills its prompt and decodes 4 tokens, is moved, and decodes one
//! more on the destination (checked against an undisturbed run: a compressed move may
//! differ).

use std::time::Instant;

use brisk_backend::{CpuBackend, KvCacheDtype, KvTransferDtype};
use brisk_engine::{Clock, EngineCore, EngineRequest, Output, RequestSpec};
use brisk_scheduler::{SchedulerConfig, SchedulerCore};
use brisk_types::{Backend, TokenId};

struct Wall(Instant);

impl Clock for Wall {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

fn core(
    path: &str,
    dtype: KvCacheDtype,
    wire: KvTransferDtype,
    context: usize,
) -> EngineCore<CpuBackend> {
    let mut backend = CpuBackend::load(path.as_ref()).expect("the model loads");
    backend.set_kv_cache_dtype(dtype);
    backend.set_kv_transfer_dtype(wire);
    let num_blocks = (context + 64).div_ceil(16);
    let kv = backend.allocate_kv(num_blocks, 16).unwrap();
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        max_num_batched_tokens: 512,
        max_model_len: context + 64,
        block_size: 16,
        num_blocks,
        ..SchedulerConfig::default()
    };
    EngineCore::new(backend, kv, SchedulerCore::new(cfg).unwrap(), 0)
}

fn request(context: usize) -> EngineRequest {
    let prompt = (0..context as u32)
        .map(|i| 100 + (i * 37) % 20_000)
        .collect();
    let mut spec = RequestSpec::new(prompt, 16);
    spec.ignore_eos = true;
    EngineRequest::greedy(spec)
}

/// Steps until request `id` has `n` more tokens.
fn tokens(core: &mut EngineCore<CpuBackend>, clock: &Wall, id: u64, n: usize) -> Vec<TokenId> {
    let mut out = Vec::new();
    while out.len() < n {
        let report = core.step(clock.now(), clock).expect("work");
        for o in report.outputs {
            if let Output::Token { id: i, token } = o {
                if i == id {
                    out.push(token.token);
                }
            }
        }
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: move_bench MODEL [CONTEXTS] [DTYPES] [WIRES]");
    let contexts = args.next().unwrap_or_else(|| "1024,4096".into());
    let dtypes = args.next().unwrap_or_else(|| "f32,bf16,int8".into());
    let wires: Vec<KvTransferDtype> = args
        .next()
        .unwrap_or_else(|| "auto".into())
        .split(',')
        .map(|w| w.parse().expect("a KV transfer dtype"))
        .collect();
    let clock = Wall(Instant::now());
    println!(
        "context  dtype  wire  kv bytes     export ms  import ms  pause ms  continues exactly"
    );
    for context in contexts
        .split(',')
        .map(|c| c.parse::<usize>().expect("a number"))
    {
        let dtypes = dtypes
            .split(',')
            .map(|d| d.parse::<KvCacheDtype>().expect("a dtype"));
        for (dtype, &wire) in dtypes.flat_map(|d| wires.iter().map(move |w| (d, w))) {
            let mut alone = core(&path, dtype, wire, context);
            alone.add(1, request(context), 0.0, clock.now()).unwrap();
            let want = tokens(&mut alone, &clock, 1, 5);
            drop(alone);

            let (mut source, mut dest) = (
                core(&path, dtype, wire, context),
                core(&path, dtype, KvTransferDtype::Auto, context),
            );
            source.add(1, request(context), 0.0, clock.now()).unwrap();
            let mut got = tokens(&mut source, &clock, 1, 4);
            let t0 = Instant::now();
            let export = source.export(1, clock.now()).unwrap();
            let exported = t0.elapsed();
            let bytes = export.kv_bytes();
            let t1 = Instant::now();
            dest.import(7, export, clock.now()).unwrap();
            let imported = t1.elapsed();
            source.release(1);
            got.extend(tokens(&mut dest, &clock, 7, 1));
            println!(
                "{context:7}  {:5}  {:4}  {bytes:11}  {:9.1}  {:9.1}  {:8.1}  {}",
                dtype.name(),
                wire.name(),
                exported.as_secs_f64() * 1e3,
                imported.as_secs_f64() * 1e3,
                (exported + imported).as_secs_f64() * 1e3,
                got == want
            );
        }
    }
}
