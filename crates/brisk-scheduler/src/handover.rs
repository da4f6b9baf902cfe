//! Moving a running request between schedulers: [`SchedulerCore::export`] and
//! [`SchedulerCore::import`].
//!
//! A request moves between steps, while it decodes: every token but the last sampled one
//! has its K/V in the pool. The export carries what the destination's scheduler needs to
//! continue it — the request spec, the tokens so far, how many are computed, its cache and
//! preemption history — with its times as ages, since two replicas' clocks share no origin.
//! Its KV blocks travel separately (the backend's `export_blocks`, in the order of
//! [`SeqExport::blocks`]); the destination gives it fresh blocks and says which.
//!
//! A live migration copies most blocks ahead, while the request keeps decoding
//! ([`SchedulerCore::full_blocks`] at the source, [`SchedulerCore::stage_blocks`] at the
//! destination, which keeps them in its prefix cache under their content hashes); the final
//! export then skips the blocks sent ahead ([`SeqExport::first_block`]) and the import finds
//! them by prefix match — or refuses ([`SchedulerError::PrefixLost`]) if eviction took one.

use brisk_kv::PrefixMatch;
use brisk_types::{BlockId, TokenId};

use crate::config::SchedulerError;
use crate::core::SchedulerCore;
use crate::request::{RequestId, SchedRequest};

/// A decoding request as it leaves a scheduler.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeqExport {
    /// The request spec (its `arrival` is meaningless here: see `age_s`).
    pub request: SchedRequest,
    /// Tokens generated so far.
    pub output: Vec<TokenId>,
    /// Tokens whose K/V exist: all but the last generated one.
    pub num_computed: usize,
    /// Prompt tokens its first admission found in the prefix cache (for `usage`).
    pub cached_tokens: usize,
    /// Seconds since it arrived, at export.
    pub age_s: f64,
    /// Seconds since its first token, at export.
    pub since_first_token_s: f64,
    /// Times it was preempted.
    pub num_preemptions: u32,
    /// Demoted to best effort by admission control.
    pub demoted: bool,
    /// The source's blocks holding its K/V, in order (`num_computed` tokens' worth), from
    /// block `first_block` on.
    pub blocks: Vec<BlockId>,
    /// Full blocks not carried: sent ahead, the destination holds them in its prefix cache.
    #[serde(default)]
    pub first_block: usize,
}

/// The id the block manager knows blocks being staged under (never a request's).
const STAGING: RequestId = RequestId::MAX;

impl SchedulerCore {
    /// What `id` needs to continue elsewhere, as of `now`. From then on the request is
    /// paused here — it keeps its blocks but no step runs it — until [`Self::release`] (it
    /// moved) or [`Self::resume`] (the move failed), so no token is produced twice. Refused
    /// for an unknown request, one that is not decoding (waiting, preempted or still in its
    /// prompt), one already exported, or while a planned step is pending.
    pub fn export(&mut self, id: RequestId, now: f64) -> Result<SeqExport, SchedulerError> {
        self.export_from(id, now, 0)
    }

    /// [`Self::export`] without the first `first_block` blocks (sent ahead): refused unless
    /// they are full blocks of computed tokens.
    pub fn export_from(
        &mut self,
        id: RequestId,
        now: f64,
        first_block: usize,
    ) -> Result<SeqExport, SchedulerError> {
        let refuse = |why: &str| {
            Err(SchedulerError::InvalidRequest {
                id,
                message: format!("cannot move: {why}"),
            })
        };
        if self.pending {
            return refuse("a step is in flight");
        }
        let Some(s) = self.seqs.get(&id) else {
            return refuse("unknown request");
        };
        if !self.running.contains(&id) || !s.view().is_decoding() {
            return refuse("it is not decoding");
        }
        if s.exported {
            return refuse("it is already moving");
        }
        if first_block.saturating_mul(self.kv.block_size()) > s.num_computed {
            return refuse("it has fewer full blocks than were sent ahead");
        }
        let mut request = s.req.clone();
        request.prompt = s.tokens[..s.num_prompt].to_vec();
        let blocks = self.kv.block_table(id);
        let export = SeqExport {
            request,
            output: s.tokens[s.num_prompt..].to_vec(),
            num_computed: s.num_computed,
            cached_tokens: s.cached_tokens.unwrap_or(0),
            age_s: (now - s.req.arrival).max(0.0),
            since_first_token_s: s.first_token_at.map_or(0.0, |t| (now - t).max(0.0)),
            num_preemptions: s.num_preemptions,
            demoted: s.demoted,
            blocks: blocks[first_block..self.kv.blocks_for(s.num_computed)].to_vec(),
            first_block,
        };
        let s = self.seqs.get_mut(&id).expect("checked above");
        (s.paused, s.exported) = (true, true);
        Ok(export)
    }

    /// Lets a paused request (see [`Self::export`]) run again: its move did not happen.
    pub fn resume(&mut self, id: RequestId) -> bool {
        self.seqs.get_mut(&id).is_some_and(|s| {
            let was = s.paused;
            (s.paused, s.exported) = (false, false);
            was
        })
    }

    /// Takes in an exported request as `id`, running: the blocks the export skips from the
    /// prefix cache, fresh blocks for the rest, which it returns, in order, for the caller
    /// to write the K/V into before the next step. Refused, with nothing changed, when `id` is taken, no seat is free, the
    /// request does not fit this scheduler's limits, the pool has too few free blocks or the
    /// blocks the export skips are no longer cached.
    pub fn import(
        &mut self,
        id: RequestId,
        export: SeqExport,
        now: f64,
    ) -> Result<Vec<BlockId>, SchedulerError> {
        let refuse = |message: String| Err(SchedulerError::InvalidRequest { id, message });
        if self.pending {
            return refuse("cannot take a request in while a step is in flight".into());
        }
        if self.seqs.contains_key(&id) {
            return Err(SchedulerError::DuplicateRequest(id));
        }
        if self.running.len() >= self.cfg.max_num_seqs {
            return refuse(format!("no free seat ({} running)", self.running.len()));
        }
        let total = export.request.prompt.len() + export.output.len();
        if export.output.is_empty() || export.num_computed + 1 != total {
            return refuse("only a decoding request can move".into());
        }
        let longest = export.request.prompt.len() + export.request.max_tokens;
        if longest > self.cfg.max_model_len {
            return Err(SchedulerError::ContextTooLong {
                id,
                prompt_tokens: export.request.prompt.len(),
                max_tokens: export.request.max_tokens,
                max_model_len: self.cfg.max_model_len,
            });
        }
        let mut tokens = export.request.prompt.clone();
        tokens.extend(&export.output);
        let prefix = self.blocks_sent_ahead(&tokens, export.first_block)?;
        let held = prefix.blocks().len();
        self.kv
            .allocate_new(id, prefix, export.num_computed)
            .map_err(SchedulerError::from)?;
        let mut request = export.request;
        request.id = id;
        request.arrival = now - export.age_s;
        let mut seq = self.new_sequence(request);
        seq.tokens.extend(&export.output);
        seq.num_computed = export.num_computed;
        seq.cached_tokens = Some(export.cached_tokens);
        seq.admitted_rank = Some(self.next_rank);
        self.next_rank += 1;
        seq.num_preemptions = export.num_preemptions;
        seq.demoted = export.demoted;
        seq.first_token_at = Some(now - export.since_first_token_s);
        self.ledger.arrive(seq.req.client.as_deref());
        self.seqs.insert(id, seq);
        self.running.push(id);
        Ok(self.kv.block_table(id)[held..].to_vec())
    }

    /// The tokens of `id`'s full blocks of computed K/V and those blocks, for sending them
    /// ahead of a move while it keeps running. Refused for an unknown or waiting request.
    pub fn full_blocks(
        &self,
        id: RequestId,
    ) -> Result<(Vec<TokenId>, Vec<BlockId>), SchedulerError> {
        let s = self.seqs.get(&id).filter(|_| self.running.contains(&id));
        let Some(s) = s else {
            return Err(SchedulerError::InvalidRequest {
                id,
                message: "cannot send blocks ahead: it is not running".into(),
            });
        };
        let full = s.num_computed / self.kv.block_size();
        let tokens = s.tokens[..full * self.kv.block_size()].to_vec();
        Ok((tokens, self.kv.block_table(id)[..full].to_vec()))
    }

    /// Makes room for blocks sent ahead of a move: `tokens` fill whole blocks, the payload
    /// carries blocks from `first_block` on (the earlier ones were sent before and should
    /// be cached here). Returns the fresh blocks to write the payload into, in order (a
    /// payload block whose content is cached already is written again and left out of the
    /// cache); then [`Self::commit_staged`]
    /// (or [`Self::abandon_staged`] if writing failed). Refused with [`SchedulerError::PrefixLost`]
    /// when blocks before `first_block` are no longer cached, or when the pool is full.
    pub fn stage_blocks(
        &mut self,
        tokens: &[TokenId],
        first_block: usize,
    ) -> Result<Vec<BlockId>, SchedulerError> {
        let bs = self.kv.block_size();
        let refuse = |message: String| {
            Err(SchedulerError::InvalidRequest {
                id: STAGING,
                message,
            })
        };
        if self.pending {
            return refuse("cannot take blocks in while a step is in flight".into());
        }
        if !tokens.len().is_multiple_of(bs) || tokens.len() / bs <= first_block {
            return refuse(format!(
                "{} tokens are not whole blocks of {bs} beyond block {first_block}",
                tokens.len()
            ));
        }
        let prefix = self.blocks_sent_ahead(tokens, first_block)?;
        let held = prefix.blocks().len();
        self.kv.allocate_new(STAGING, prefix, tokens.len())?;
        Ok(self.kv.block_table(STAGING)[held..].to_vec())
    }

    /// The cached blocks holding the first `first_block` blocks of `tokens` (sent ahead of a
    /// move), exactly those; refused with [`SchedulerError::PrefixLost`] when any is no longer
    /// cached (or `tokens` do not reach that far).
    fn blocks_sent_ahead(
        &self,
        tokens: &[TokenId],
        first_block: usize,
    ) -> Result<PrefixMatch, SchedulerError> {
        if first_block == 0 {
            return Ok(self.kv.match_prefix(&[]));
        }
        // A match leaves the last token uncached: one token past the blocks.
        let end = first_block
            .saturating_mul(self.kv.block_size())
            .saturating_add(1)
            .min(tokens.len());
        let prefix = self.kv.match_prefix(&tokens[..end]);
        let held = prefix.blocks().len();
        if held < first_block {
            return Err(SchedulerError::PrefixLost {
                needed: first_block,
                held,
            });
        }
        Ok(prefix)
    }

    /// The staged blocks hold their K/V: into the prefix cache with them (free, so
    /// evictable like any cached block).
    pub fn commit_staged(&mut self, tokens: &[TokenId]) -> Result<(), SchedulerError> {
        let committed = self.kv.commit_full_blocks(STAGING, tokens);
        self.kv.free(STAGING);
        committed?;
        Ok(())
    }

    /// Writing the staged blocks failed: they go back unused.
    pub fn abandon_staged(&mut self) {
        self.kv.free(STAGING);
    }

    /// Puts the full blocks of an imported request in the prefix cache, once its K/V are
    /// written (until then a prefix match must not find them).
    pub fn commit_imported(&mut self, id: RequestId) -> Result<(), SchedulerError> {
        let s = self.seqs.get(&id).ok_or(SchedulerError::InvalidRequest {
            id,
            message: "unknown request".into(),
        })?;
        let computed = s.tokens[..s.num_computed].to_vec();
        self.kv.commit_full_blocks(id, &computed)?;
        Ok(())
    }

    /// Forgets `id` without a trace (it moved elsewhere): its blocks are freed, no event.
    pub fn release(&mut self, id: RequestId) -> bool {
        self.end(id, crate::request::FinishReason::Abort).is_some()
    }
}
