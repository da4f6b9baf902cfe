//! K/V sent ahead of a move while the request keeps running at its source: Llumnix's
//! multi-stage pre-copy for a migration ([`send_ahead`]), and for a hand-over the prompt's
//! blocks streamed to the decode replica as chunked prefill fills them ([`PromptStream`]),
//! so that the stop after the first token copies only the last chunk's blocks. Both send
//! whole blocks into the destination's prefix cache (`POST /internal/v1/blocks`); the stop
//! then exports from the first block the destination lacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::post_parts;
use crate::kv_wire::{convert, Direction};
use crate::ServerState;

/// Most rounds of blocks sent ahead of a migration.
const MAX_STAGES: usize = 64;
/// Most blocks one round sends: the engine copies them between two steps, so a bounded
/// copy (32 blocks of SmolLM2 in f32: 24 MB, ~20 ms here) keeps the request's own tokens
/// (and everyone's) flowing while a long context travels.
const STAGE_BLOCKS: usize = 32;
/// Fewer new full blocks than this are not worth another round of a migration: the stop
/// takes them.
const MIN_STAGE_BLOCKS: usize = 2;
/// How often a prompt's stream looks for blocks its prefill has filled.
const PROMPT_POLL: Duration = Duration::from_millis(10);

/// Blocks sent ahead so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ahead {
    /// Full blocks the destination holds.
    pub(crate) blocks: usize,
    /// Rounds sent.
    pub(crate) stages: usize,
    /// Bytes sent.
    pub(crate) bytes: usize,
}

/// What one round did.
enum Round {
    /// It sent blocks and the destination holds them.
    Sent,
    /// Fewer new full blocks than asked for (or the request is not running yet).
    TooFew,
    /// The destination refused or could not be reached, or the conversion failed.
    Failed,
}

/// Sends request `id`'s full blocks to `to` in rounds of at most [`STAGE_BLOCKS`] while it
/// keeps decoding here; stops when a round would carry fewer than [`MIN_STAGE_BLOCKS`] new
/// blocks, after [`MAX_STAGES`], or at the first failure (the stop then copies what the
/// destination lacks).
pub(crate) async fn send_ahead(state: &Arc<ServerState>, id: u64, to: &str) -> Ahead {
    let mut ahead = Ahead::default();
    while ahead.stages < MAX_STAGES {
        if !matches!(
            round(state, id, to, &mut ahead, MIN_STAGE_BLOCKS).await,
            Round::Sent
        ) {
            break;
        }
    }
    ahead
}

/// One round: the full blocks of `id` from `ahead.blocks` on (at most [`STAGE_BLOCKS`]),
/// sent if at least `min_new` are new.
async fn round(
    state: &Arc<ServerState>,
    id: u64,
    to: &str,
    ahead: &mut Ahead,
    min_new: usize,
) -> Round {
    let block_size = state.cache_config.block_size.max(1);
    let exported = state
        .engine
        .export_blocks(id, ahead.blocks, STAGE_BLOCKS)
        .await;
    let Ok(Some(mut blocks)) = exported else {
        return Round::TooFew;
    };
    let full = blocks.tokens.len() / block_size;
    if full < ahead.blocks + min_new {
        return Round::TooFew;
    }
    let started = Instant::now();
    let Ok(kv) = convert(state.kv_wire.as_ref(), Direction::Encode, blocks.kv).await else {
        return Round::Failed;
    };
    blocks.kv = kv;
    let bytes = blocks.kv.len();
    let request = post_parts(
        state,
        &format!("{to}/internal/v1/blocks"),
        blocks.into_wire_parts(),
    );
    let held = match request.send().await {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
        _ => None,
    };
    // A count past what was sent is not an answer (the stop would skip blocks it lacks).
    let held = held
        .and_then(|v| v["cached_blocks"].as_u64())
        .and_then(|h| usize::try_from(h).ok())
        .filter(|&h| h <= full);
    let Some(held) = held else {
        return Round::Failed;
    };
    state
        .metrics
        .transfers
        .kv_sent(bytes, started.elapsed().as_secs_f64());
    ahead.blocks = held;
    ahead.stages += 1;
    ahead.bytes += bytes;
    Round::Sent
}

/// A hand-over's prompt K/V on its way while the prompt is computed: started when the
/// request is submitted, finished by the first token's hook ([`Self::finish`]); dropped
/// unfinished (the request ended before its first token), it stops by itself.
pub(crate) struct PromptStream {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Ahead>,
}

impl PromptStream {
    /// Streams request `id`'s full prompt blocks to the decode replica at `to` as they
    /// fill.
    pub(crate) fn start(state: Arc<ServerState>, id: u64, to: String) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ahead = Ahead::default();
            loop {
                match round(&state, id, &to, &mut ahead, 1).await {
                    Round::Sent => {}
                    Round::Failed => return ahead,
                    Round::TooFew => {
                        tokio::select! {
                            _ = &mut stopped => return ahead,
                            () = tokio::time::sleep(PROMPT_POLL) => {}
                        }
                    }
                }
                if !matches!(
                    stopped.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ) {
                    return ahead;
                }
            }
        });
        Self { stop, task }
    }

    /// The first token came: stops streaming and returns what the destination holds.
    pub(crate) async fn finish(self) -> Ahead {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}
