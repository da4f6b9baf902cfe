//! `brisk generate`: one prompt, one completion, printed as it is produced, then timing.
//!
//! It drives the backend directly (one sequence, one contiguous block table) rather than
//! through the engine, so that it checks the model path alone.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use brisk_sampling::{Sampler, SamplingParams};
use brisk_tokenizer::ChatMessage;
use brisk_types::{Backend, LogitsWanted, SeqStep, StepBatch};

use crate::{loaded_model, ModelArgs};

const BLOCK_SIZE: usize = 16;

/// Arguments of `brisk generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (plain completion unless --chat).
    #[arg(long)]
    prompt: String,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// System message for --chat (default: the template's own default, if any).
    #[arg(long)]
    system: Option<String>,
    /// Maximum number of tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed for sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
}

/// Runs `brisk generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let path = loaded_model::resolve_path(args.model.model.as_deref())?;
    let model = loaded_model::load(&path)?;
    let tok = &model.tokenizer;
    let backend = &model.backend;

    let text = if args.chat {
        let Some(template) = tok.chat_template() else {
            bail!(
                "{} has no chat template; run without --chat",
                path.display()
            );
        };
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new("system", system.clone()));
        }
        messages.push(ChatMessage::new("user", args.prompt.clone()));
        template.render(&messages, true)?
    } else {
        args.prompt.clone()
    };
    let prompt = tok.encode(&text, tok.add_bos_by_default())?;
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let max_context = backend.geometry().max_context;
    if prompt.len() >= max_context {
        bail!(
            "the prompt has {} tokens; the model's context is {max_context}",
            prompt.len()
        );
    }
    let max_tokens = args.max_tokens.min(max_context - prompt.len());
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        ..SamplingParams::default()
    };
    params.validate()?;
    let mut sampler = Sampler::new(params, rand_seed());

    let capacity = prompt.len() + max_tokens;
    let blocks = capacity.div_ceil(BLOCK_SIZE);
    let mut kv = backend.allocate_kv(blocks, BLOCK_SIZE)?;
    let table: Vec<u32> = (0..u32::try_from(blocks)?).collect();

    let start = Instant::now();
    let mut tokens = prompt.clone();
    let mut output = Vec::new();
    let mut decoder = tok.decoder(true);
    let mut stdout = std::io::stdout().lock();
    let mut first_token_at = None;
    let mut fed = 0;
    while output.len() < max_tokens {
        let batch = StepBatch {
            seqs: vec![SeqStep {
                tokens: &tokens[fed..],
                start_pos: fed,
                block_table: &table,
                logits: LogitsWanted::Last,
            }],
        };
        let logits = backend.execute(&batch, &mut kv)?;
        fed = tokens.len();
        let next = sampler.sample(logits.last_row(0), &prompt, &output).token;
        first_token_at.get_or_insert_with(|| start.elapsed());
        if !args.ignore_eos && backend.stop_tokens().contains(&next) {
            break;
        }
        output.push(next);
        tokens.push(next);
        write!(stdout, "{}", decoder.push(next)?)?;
        stdout.flush()?;
    }
    writeln!(stdout, "{}", decoder.finish()?)?;
    let total = start.elapsed();
    let ttft = first_token_at.unwrap_or(total);
    let decode_steps = output.len().saturating_sub(1);
    let decode_time = total.saturating_sub(ttft).as_secs_f64();
    let decode_rate = if decode_steps > 0 && decode_time > 0.0 {
        decode_steps as f64 / decode_time
    } else {
        0.0
    };
    eprintln!(
        "prompt tokens: {}, generated tokens: {}, time to first token: {:.1} ms, decode: {:.1} tokens/s",
        prompt.len(),
        output.len(),
        ttft.as_secs_f64() * 1000.0,
        decode_rate
    );
    Ok(())
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
