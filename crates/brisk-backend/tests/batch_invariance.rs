//! A sequence's logits do not depend on what else is in its step, how its prompt was chunked,
//! where its blocks lie in the pool, or how large the blocks are.
//!
//! Tolerance: 1e-4 max abs logit difference everywhere. brisk's current kernels compute each
//! row of a packed batch independently, so the measured differences are exactly 0; the
//! tolerance leaves room for batched kernels that reorder sums, without hiding a sequence
//! reading another's K/V or a position off by one (those move logits by whole units).

mod common;

use brisk_backend::{CpuBackend, CpuKvPool};
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch, StepOutput};
use common::{argmax, max_abs_diff, COUNTING_CONTINUATION, COUNTING_IDS, FRANCE_IDS};

const TOLERANCE: f32 = 1e-4;
const CHATML_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
<|im_start|>assistant\n";
const STORY_PROMPT: &str = "Once upon a time, in a small village by the sea, there lived an old \
fisherman who";

/// One sequence's share of one step.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    tokens: &'a [u32],
    start_pos: usize,
    logits: LogitsWanted,
}

/// A sequence's whole run: its block table and, per step, its chunk (or nothing).
struct Script<'a> {
    name: &'static str,
    table: Vec<u32>,
    steps: Vec<Option<Chunk<'a>>>,
}

fn chunk(tokens: &[u32], start_pos: usize, logits: LogitsWanted) -> Option<Chunk<'_>> {
    Some(Chunk {
        tokens,
        start_pos,
        logits,
    })
}

/// The logit rows of every sequence at every step (empty where it asked for none).
type Rows = Vec<Vec<Vec<f32>>>;

fn rows_of(out: &StepOutput, seq: usize, n: usize) -> Vec<f32> {
    (0..n).flat_map(|r| out.row(seq, r).to_vec()).collect()
}

/// Runs all scripts packed together, step by step, in one pool.
fn run_packed(backend: &CpuBackend, kv: &mut CpuKvPool, scripts: &[Script<'_>]) -> Rows {
    let steps = scripts.iter().map(|s| s.steps.len()).max().unwrap_or(0);
    let mut rows: Rows = scripts.iter().map(|_| Vec::new()).collect();
    for step in 0..steps {
        let mut members = Vec::new();
        let mut batch = StepBatch::default();
        for (i, s) in scripts.iter().enumerate() {
            if let Some(Some(c)) = s.steps.get(step) {
                members.push(i);
                batch.seqs.push(SeqStep {
                    tokens: c.tokens,
                    start_pos: c.start_pos,
                    block_table: &s.table,
                    logits: c.logits,
                });
            }
        }
        let out = backend.execute(&batch, kv).expect("packed step");
        assert_eq!(out.first_row.len(), members.len());
        for (b, &i) in members.iter().enumerate() {
            let n = batch.seqs[b].logit_rows();
            rows[i].push(rows_of(&out, b, n));
        }
        for (i, r) in rows.iter_mut().enumerate() {
            if !members.contains(&i) {
                r.push(Vec::new());
            }
        }
    }
    rows
}

/// Runs each script alone in a fresh pool with the same geometry and block table.
fn run_alone(
    backend: &CpuBackend,
    num_blocks: usize,
    block_size: usize,
    scripts: &[Script<'_>],
) -> Rows {
    scripts
        .iter()
        .map(|s| {
            let mut kv = backend.allocate_kv(num_blocks, block_size).unwrap();
            let alone = Script {
                name: s.name,
                table: s.table.clone(),
                steps: s.steps.clone(),
            };
            run_packed(backend, &mut kv, std::slice::from_ref(&alone))
                .pop()
                .unwrap()
        })
        .collect()
}

/// Hands out block ids `0..n` from a fixed scrambled order, so that tables interleave.
struct Blocks(Vec<u32>);

impl Blocks {
    fn scrambled(n: u32) -> Self {
        // 11 is coprime with every pool size used here, so this is a permutation.
        let mut ids: Vec<u32> = (0..n).map(|i| (i * 11 + 3) % n).collect();
        ids.reverse();
        Self(ids)
    }

    fn take(&mut self, positions: usize, block_size: usize) -> Vec<u32> {
        (0..positions.div_ceil(block_size))
            .map(|_| self.0.pop().expect("pool large enough"))
            .collect()
    }

    fn without(mut self, used: &[u32]) -> Self {
        self.0.retain(|b| !used.contains(b));
        self
    }
}

#[test]
fn a_decoding_sequence_gets_the_same_logits_alone_as_packed_with_prefills_and_decodes() {
    let (file, backend) = common::load();
    let story = common::encode(&file, STORY_PROMPT);
    let chat = common::encode(&file, CHATML_PROMPT);
    let bs = 4;
    let pool = 40;
    let target_table = vec![5, 2, 9, 14, 20];
    let france_table = vec![0, 7];
    let mut blocks = Blocks::scrambled(pool).without(&[5, 2, 9, 14, 20, 0, 7]);
    let story_table = blocks.take(story.len(), bs);
    let chat_table = blocks.take(chat.len(), bs);
    let n = COUNTING_IDS.len();
    let scripts = vec![
        Script {
            name: "target: counting prompt, then decodes",
            table: target_table,
            steps: vec![
                chunk(&COUNTING_IDS, 0, LogitsWanted::Last),
                chunk(&COUNTING_CONTINUATION[..1], n, LogitsWanted::Last),
            ],
        },
        Script {
            name: "france: prompt, then decodes",
            table: france_table,
            steps: vec![
                chunk(&FRANCE_IDS, 0, LogitsWanted::Last),
                chunk(&[7042], FRANCE_IDS.len(), LogitsWanted::Last),
            ],
        },
        Script {
            name: "story: whole prompt in step 1, all logits",
            table: story_table,
            steps: vec![None, chunk(&story, 0, LogitsWanted::All)],
        },
        Script {
            name: "chat: prefill split over both steps",
            table: chat_table,
            steps: vec![
                chunk(&chat[..6], 0, LogitsWanted::None),
                chunk(&chat[6..], 6, LogitsWanted::Last),
            ],
        },
    ];
    for s in &scripts {
        eprintln!("{}: block table {:?}", s.name, s.table);
    }
    let mut kv = backend.allocate_kv(pool as usize, bs).unwrap();
    let packed = run_packed(&backend, &mut kv, &scripts);
    let alone = run_alone(&backend, pool as usize, bs, &scripts);

    let target_decode = max_abs_diff(&packed[0][1], &alone[0][1]);
    eprintln!("target's decode logits, alone vs packed: max abs difference {target_decode:e}");
    let mut worst = 0.0f32;
    for (i, s) in scripts.iter().enumerate() {
        for step in 0..2 {
            let (p, a) = (&packed[i][step], &alone[i][step]);
            assert_eq!(p.len(), a.len(), "{} step {step}: row counts", s.name);
            let d = max_abs_diff(p, a);
            worst = worst.max(d);
            assert!(
                d <= TOLERANCE,
                "{} step {step}: alone vs packed differ by {d}",
                s.name
            );
        }
    }
    eprintln!("every sequence, every step, alone vs packed: max abs difference {worst:e}");
    assert_eq!(
        argmax(&alone[0][1]),
        COUNTING_CONTINUATION[1],
        "the decode itself is right"
    );
}

#[test]
fn a_prompt_prefilled_in_chunks_of_3_7_and_1_ends_with_the_same_logits_as_in_one_chunk() {
    let (file, backend) = common::load();
    let prompt = common::encode(&file, CHATML_PROMPT);
    let bs = 4;
    let table: Vec<u32> = Blocks::scrambled(16).take(prompt.len() + 1, bs);

    let mut kv = backend.allocate_kv(16, bs).unwrap();
    let whole = common::run_one(&backend, &mut kv, &prompt, 0, &table, LogitsWanted::Last);
    let next = argmax(&whole);
    let whole_decode = common::run_one(
        &backend,
        &mut kv,
        &[next],
        prompt.len(),
        &table,
        LogitsWanted::Last,
    );

    let mut kv = backend.allocate_kv(16, bs).unwrap();
    let mut start = 0;
    let mut last = Vec::new();
    for size in [3, 7, 1, prompt.len() - 11] {
        let end = start + size;
        let wanted = if end == prompt.len() {
            LogitsWanted::Last
        } else {
            LogitsWanted::None
        };
        last = common::run_one(
            &backend,
            &mut kv,
            &prompt[start..end],
            start,
            &table,
            wanted,
        );
        if wanted == LogitsWanted::None {
            assert!(last.is_empty(), "no logits asked, none returned");
        }
        start = end;
    }
    let chunked_decode = common::run_one(
        &backend,
        &mut kv,
        &[next],
        prompt.len(),
        &table,
        LogitsWanted::Last,
    );

    let d_prefill = max_abs_diff(&whole, &last);
    let d_decode = max_abs_diff(&whole_decode, &chunked_decode);
    eprintln!(
        "{} prompt tokens; last prefill logits, one chunk vs 3+7+1+{}: max abs difference \
         {d_prefill:e}; following decode step: {d_decode:e}",
        prompt.len(),
        prompt.len() - 11
    );
    assert!(
        d_prefill <= TOLERANCE,
        "prefill logits differ by {d_prefill}"
    );
    assert!(
        d_decode <= TOLERANCE,
        "decode logits after the prefill differ by {d_decode}"
    );
}

/// Greedy continuation of the counting prompt, with or without company in every step.
fn greedy_counting(
    backend: &CpuBackend,
    file: &brisk_gguf::GgufFile,
    crowded: bool,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let bs = 4;
    let pool = 48;
    let steps = COUNTING_CONTINUATION.len();
    let target_table: Vec<u32> = vec![5, 2, 9, 0, 7, 30, 11];
    let mut blocks = Blocks::scrambled(pool).without(&target_table);
    let story = common::encode(file, STORY_PROMPT);
    let chat = common::encode(file, CHATML_PROMPT);
    let france_table = blocks.take(FRANCE_IDS.len() + steps, bs);
    let story_table = blocks.take(story.len(), bs);
    let chat_table = blocks.take(chat.len() + steps, bs);
    let mut kv = backend.allocate_kv(pool as usize, bs).unwrap();

    let mut target: Vec<u32> = COUNTING_IDS.to_vec();
    let mut france: Vec<u32> = FRANCE_IDS.to_vec();
    let mut chat_seq: Vec<u32> = chat.clone();
    let (mut target_done, mut france_done, mut chat_done) = (0, 0, 0);
    let mut rows = Vec::new();
    for step in 0..steps {
        let mut batch = StepBatch::default();
        let mut target_index = 0;
        if crowded {
            // france: prefill at step 0, then decodes greedily.
            batch.seqs.push(SeqStep {
                tokens: &france[france_done..],
                start_pos: france_done,
                block_table: &france_table,
                logits: LogitsWanted::Last,
            });
            // story: prefilled 5 tokens a step, no logits, for as long as it lasts.
            let s = step * 5;
            if s < story.len() {
                batch.seqs.push(SeqStep {
                    tokens: &story[s..(s + 5).min(story.len())],
                    start_pos: s,
                    block_table: &story_table,
                    logits: LogitsWanted::None,
                });
            }
            // chat: joins at step 2 with its whole prompt, then decodes.
            if step >= 2 {
                batch.seqs.push(SeqStep {
                    tokens: &chat_seq[chat_done..],
                    start_pos: chat_done,
                    block_table: &chat_table,
                    logits: LogitsWanted::All,
                });
            }
            target_index = batch.seqs.len() / 2;
        }
        batch.seqs.insert(
            target_index,
            SeqStep {
                tokens: &target[target_done..],
                start_pos: target_done,
                block_table: &target_table,
                logits: LogitsWanted::Last,
            },
        );
        let out = backend.execute(&batch, &mut kv).expect("step");
        let row = out.last_row(target_index).to_vec();
        let (tn, fnn, cn) = (target.len(), france.len(), chat_seq.len());
        let next = argmax(&row);
        rows.push(row);
        if crowded {
            let f = if target_index == 0 { 1 } else { 0 };
            let france_next = argmax(out.last_row(f));
            let chat_next = (step >= 2).then(|| argmax(out.last_row(batch.seqs.len() - 1)));
            drop(batch);
            france.push(france_next);
            france_done = fnn;
            if let Some(c) = chat_next {
                chat_seq.push(c);
                chat_done = cn;
            }
        } else {
            drop(batch);
        }
        target.push(next);
        target_done = tn;
    }
    (target[COUNTING_IDS.len()..].to_vec(), rows)
}

#[test]
fn greedy_counting_tokens_are_identical_alone_and_alongside_other_sequences_in_every_step() {
    let (file, backend) = common::load();
    let (alone, alone_rows) = greedy_counting(&backend, &file, false);
    let (crowded, crowded_rows) = greedy_counting(&backend, &file, true);
    let worst = alone_rows
        .iter()
        .zip(&crowded_rows)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f32::max);
    eprintln!("alone {alone:?}, crowded {crowded:?}; max abs logit difference {worst:e}");
    assert_eq!(alone, COUNTING_CONTINUATION);
    assert_eq!(crowded, alone);
    assert!(worst <= TOLERANCE, "logits differ by {worst}");
}

#[test]
fn blocks_of_16_and_blocks_of_4_give_the_same_logits() {
    let (file, backend) = common::load();
    let prompt = common::encode(&file, CHATML_PROMPT);
    let decode = [504u32, 3575];
    let total = prompt.len() + decode.len();
    let run = |bs: usize, table: &[u32], pool: usize| {
        assert!(table.len() * bs >= total);
        let mut kv = backend.allocate_kv(pool, bs).unwrap();
        let mut rows = common::run_one(&backend, &mut kv, &prompt, 0, table, LogitsWanted::All);
        for (i, &t) in decode.iter().enumerate() {
            let pos = prompt.len() + i;
            rows.extend(common::run_one(
                &backend,
                &mut kv,
                &[t],
                pos,
                table,
                LogitsWanted::Last,
            ));
        }
        rows
    };
    let big = run(16, &[2, 0, 3], 4);
    let small_table = Blocks::scrambled(13).take(total, 4);
    eprintln!("block size 4 table {small_table:?}");
    let small = run(4, &small_table, 13);
    assert_eq!(big.len(), small.len());
    let d = max_abs_diff(&big, &small);
    eprintln!("{total} positions, block size 16 vs 4: max abs logit difference {d:e}");
    assert!(d <= TOLERANCE, "logits differ by {d}");
}
