//! Moving a running request between schedulers: [`SchedulerCore::export`] and
//! [`SchedulerCore::import`].
//!
//! A request moves between steps, while it decodes: every token but the last sampled one
//! has its K/V in the pool. The export carries what the destination's scheduler needs to
//! continue it — the request spec, the tokens so far, how many are computed, its cache and
//! preemption history — with its times as ages, since two replicas' clocks share no origin.
//! Its KV blocks travel separately (the backend's `export_blocks`, in the order of
//! [`SeqExport::blocks`]); the destination gives it fresh blocks and says which.

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
    /// The source's blocks holding its K/V, in order (`num_computed` tokens' worth).
    pub blocks: Vec<BlockId>,
}

impl SchedulerCore {
    /// What `id` needs to continue elsewhere, as of `now`. From then on the request is
    /// paused here — it keeps its blocks but no step runs it — until [`Self::release`] (it
    /// moved) or [`Self::resume`] (the move failed), so no token is produced twice. Refused
    /// for an unknown request, one that is not decoding (waiting, preempted or still in its
    /// prompt), one already exported, or while a planned step is pending.
    pub fn export(&mut self, id: RequestId, now: f64) -> Result<SeqExport, SchedulerError> {
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
            blocks: blocks[..self.kv.blocks_for(s.num_computed)].to_vec(),
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

    /// Takes in an exported request as `id`, running, with fresh blocks for its computed
    /// tokens: returns them, in order, for the caller to write its K/V into before the next
    /// step. Refused, with nothing changed, when `id` is taken, no seat is free, the
    /// request does not fit this scheduler's limits or the pool has too few free blocks.
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
        let nothing = self.kv.match_prefix(&[]);
        self.kv
            .allocate_new(id, nothing, export.num_computed)
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
        Ok(self.kv.block_table(id).to_vec())
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
