//! [`RouterCore`]: membership, cached-block indexes, load and the choice of a replica.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use brisk_scheduler::{LatencyModel, Priority, StepShape};
use brisk_types::{Role, TokenId};

use crate::health::BreakerConfig;
use crate::index::IndexEvent;

mod migration;
mod replica;

pub use migration::Migration;
use replica::{Outstanding, Replica};

/// What the router needs to know about a replica (from what it advertises).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSpec {
    /// Tokens per KV block.
    pub block_size: usize,
    /// The salt of its block hashes (the model's content hash): replicas of one model agree.
    pub hash_salt: u64,
    /// KV blocks in its pool (caps what the router believes it caches).
    pub kv_blocks: usize,
    /// Most prompt tokens it computes in one step.
    pub chunk_tokens: usize,
    /// Its step-latency model.
    pub latency: LatencyModel,
    /// Whether it publishes KV events (otherwise its index is the router's own guess).
    pub publishes_events: bool,
    /// Which phases it serves: prompts go to `both` and `prefill` replicas; a request sent to
    /// a `prefill` replica names a `decode` (or `both`) replica to continue on.
    pub role: Role,
    /// Bytes of K/V per token it sends when it hands a request over (after its
    /// `--kv-transfer-dtype`); 0 when unknown (hand-overs then priced by latency alone).
    pub kv_transfer_bytes_per_token: usize,
}

/// A prompt as the router sees it.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    /// Token ids (after the chat template): matched exactly against the replicas' blocks.
    Tokens(&'a [TokenId]),
    /// Text the router could not tokenize: matched against its own routing history by
    /// fixed-size byte blocks, with token counts estimated.
    Text(&'a str),
}

/// One routing question.
#[derive(Clone, Copy, Debug)]
pub struct RouteRequest<'a> {
    /// The prompt.
    pub prompt: Prompt<'a>,
    /// Its time-to-first-token objective, seconds.
    pub ttft_slo: Option<f64>,
    /// Its time-per-output-token objective, seconds: taken as that of the decodes its
    /// prompt would run beside (see [`RouterConfig::price_interference`]).
    pub tpot_slo: Option<f64>,
    /// Refuse it when no replica is predicted to meet `ttft_slo` (otherwise it goes to the
    /// fastest anyway).
    pub reject_unattainable: bool,
    /// Its priority class (see [`RouterConfig::priority_migration`]).
    pub priority: Priority,
    /// Replicas not to use (they already failed this request).
    pub exclude: &'a [String],
}

/// Names a routed request until it finishes.
pub type RequestKey = u64;

/// Where a request goes, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The replica.
    pub replica: String,
    /// Pass to [`RouterCore::first_token`] and [`RouterCore::finished`].
    pub key: RequestKey,
    /// Prompt tokens (estimated for text).
    pub prompt_tokens: usize,
    /// Of which the replica is believed to hold.
    pub cached_tokens: usize,
    /// Predicted time to first token there, seconds.
    pub predicted_ttft: f64,
    /// When `replica` is a prefill replica: the replica the request decodes on after its
    /// first token (`None`: it decodes where it was prefilled, no decode replica being
    /// available).
    pub decode_on: Option<String>,
}

/// Why no replica was chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// None is known, or all are excluded or have an open circuit.
    NoReplica,
    /// The request asked for rejection and the fastest replica would miss its TTFT.
    Unattainable {
        /// The best prediction, seconds.
        best_ttft: f64,
        /// The objective, seconds.
        slo: f64,
    },
}

/// How a replica is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// The lowest predicted time to first token (cached prefix, queue, latency model),
    /// past the hot-spot guard: brisk's policy.
    #[default]
    PredictedTtft,
    /// Each available replica in turn, blind to caches and load: the baseline.
    RoundRobin,
    /// The lowest product of prompt work and load: (uncached prompt tokens plus those of
    /// the prompts routed there and not yet answered) × (requests routed there and not
    /// finished + 1) — the overlap-against-load cost of vllm-router's `kv_aware` and
    /// Dynamo's KV router, with no latency model: the baseline that knows caches and load.
    OverlapLoad,
}

/// Settings of the router core.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterConfig {
    /// How a replica is chosen.
    pub policy: Policy,
    /// How long a speculative entry lives on a replica that publishes events, seconds.
    pub speculative_ttl: f64,
    /// How long a routing-history entry lives on a replica that publishes none, seconds.
    pub approximate_ttl: f64,
    /// Bytes per block when matching text prompts.
    pub text_block_bytes: usize,
    /// Bytes per token when estimating a text prompt's length.
    pub text_bytes_per_token: usize,
    /// Requests a replica may have beyond the least loaded one's (or twice its count, if
    /// more) before it stops getting new ones: the guard against one shared prefix sending
    /// everything to one replica.
    pub hot_spot_slack: usize,
    /// Predicted TTFT a request may give up, seconds, to go where more of its prompt is
    /// cached (requests without a TTFT objective): keeping a conversation's turns on the
    /// replica that holds its history pays on every later turn, which the greedy choice of
    /// the fastest replica would forget. Default 2 s: in `brisk sim` (idle profile) at 8–64
    /// replicas on the Mooncake conversation trace capacity grew with it up to there (3–7 %
    /// over 250 ms), live at 2 replicas it was neutral (BENCHMARKS.md); under load
    /// `affinity_ratio` takes over, and the hot-spot guard still bounds the pile-up.
    pub affinity_slack: f64,
    /// Multiple of the fastest predicted TTFT a request may also accept to go where more of
    /// its prompt is cached (with or without an objective): under load every queue is long,
    /// a fixed allowance is soon smaller than the differences between them, and conversations
    /// leave the replicas holding their history just when the fleet can least afford to
    /// compute it again — the hit rate falls and the fleet tips over. Default 8: in `brisk
    /// sim` calibrated on live steps, near capacity at 16 replicas it kept 93 % attainment
    /// where the fixed allowance alone kept 69 % (with objectives sent: 95 % against 52 %),
    /// and cost under 0.3 points at two thirds of capacity (BENCHMARKS.md).
    pub affinity_ratio: f64,
    /// Share of a request's TTFT objective it may spend to go where more of its prompt is
    /// cached (requests with one; never less than the fastest prediction).
    pub slo_headroom: f64,
    /// Live migration for load balance (Llumnix): when the replica decoding the most
    /// requests decodes more than this many beyond the one decoding the fewest, one of its
    /// requests moves there. `None`: never.
    pub rebalance_slack: Option<usize>,
    /// Live migration for priority (Llumnix): a replica serving an interactive request
    /// beside batch-class decodes, whose decode step is predicted past the tightest TPOT
    /// objective of its interactive requests (any step, for requests without one), gives
    /// those up, one per look, to the replica decoding fewest among those serving no
    /// interactive request — freeing the interactive burst's replica from work nobody waits
    /// on when it would otherwise miss what it promised. It implies `priority_placement`; and load
    /// balance (`rebalance_slack`) then never moves a request from a replica serving only
    /// batch work onto one serving interactive work (priority would move it back).
    pub priority_migration: bool,
    /// Batch-class prompts go to replicas serving no interactive request, while there are
    /// any (among those, the usual choice).
    pub priority_placement: bool,
    /// In a fleet with both prefill replicas and replicas that serve both phases, price
    /// what a placement costs others, not only the request's own TTFT (DistServe's
    /// question, asked per request): a prompt computed on a replica that decodes stalls
    /// the decodes running there for as long as its chunks take — counted, per decode
    /// stalled, when the step with its first chunk is predicted past the TPOT objective
    /// (always, for requests without one); a prompt computed on a prefill replica instead
    /// delays its own second token by the hand-over (`kv_transfer`). Among the replicas
    /// within a request's TTFT allowance that hold as much of its prompt, the cheapest
    /// wins. Off, or in fleets of one kind: the lowest predicted TTFT wins.
    pub price_interference: bool,
    /// What a hand-over's transfer is priced at.
    pub kv_transfer: TransferCost,
    /// The per-replica circuit breaker.
    pub breaker: BreakerConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            policy: Policy::PredictedTtft,
            speculative_ttl: 10.0,
            approximate_ttl: 300.0,
            text_block_bytes: 64,
            text_bytes_per_token: 4,
            hot_spot_slack: 4,
            affinity_slack: 2.0,
            affinity_ratio: 8.0,
            slo_headroom: 0.5,
            rebalance_slack: None,
            priority_migration: false,
            priority_placement: false,
            price_interference: true,
            kv_transfer: TransferCost::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// The time a hand-over's K/V take between replicas: `latency_s + bytes / bytes_per_s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransferCost {
    /// Bandwidth between replicas, bytes per second.
    pub bytes_per_s: f64,
    /// Fixed cost of a transfer (connection, export, import), seconds.
    pub latency_s: f64,
}

impl Default for TransferCost {
    /// 10 Gbit/s and 1 ms: a data-centre link.
    fn default() -> Self {
        Self {
            bytes_per_s: 10e9 / 8.0,
            latency_s: 1e-3,
        }
    }
}

impl TransferCost {
    /// Seconds to move `bytes`.
    pub fn seconds(&self, bytes: f64) -> f64 {
        self.latency_s + bytes / self.bytes_per_s.max(f64::MIN_POSITIVE)
    }
}

/// A replica's load and state, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaLoad {
    /// Requests routed there and not finished.
    pub outstanding: usize,
    /// Of which still before their first token.
    pub prefilling: usize,
    /// Predicted seconds of prompt work queued there.
    pub queued_prefill_s: f64,
    /// Blocks believed cached (confirmed and speculative).
    pub index_entries: usize,
    /// Of which confirmed by events.
    pub confirmed_entries: usize,
    /// Whether its circuit is closed at the time asked.
    pub available: bool,
}

/// A prompt's block hashes under one hashing scheme (block size, salt).
struct PromptBlocks {
    scheme: (usize, u64),
    hashes: Rc<[u64]>,
    per_block: usize,
}

/// One replica's answer to a routing question.
struct Candidate<'a> {
    id: &'a str,
    /// The prompt's block hashes in this replica's terms (shared by replicas of one scheme;
    /// the chosen one's become its speculative entries).
    hashes: Rc<[u64]>,
    outstanding: usize,
    last_chosen: RequestKey,
    ttft: f64,
    /// `ttft` plus what the placement costs beyond it (see
    /// [`RouterConfig::price_interference`]).
    cost: f64,
    prompt_tokens: usize,
    cached_tokens: usize,
}

/// The router's state (see the crate docs).
#[derive(Debug)]
pub struct RouterCore {
    cfg: RouterConfig,
    replicas: BTreeMap<String, Replica>,
    /// Which replica each routed request went to.
    routed: HashMap<RequestKey, String>,
    next_key: RequestKey,
    /// Round robin's turn.
    turn: usize,
}

impl RouterCore {
    /// An empty router.
    pub fn new(cfg: RouterConfig) -> Self {
        Self {
            cfg,
            replicas: BTreeMap::new(),
            routed: HashMap::new(),
            next_key: 1,
            turn: 0,
        }
    }

    /// Adds a replica or updates what it advertises. A change of block size or hash salt
    /// empties its index (its hashes name other things now).
    pub fn upsert(&mut self, id: &str, spec: ReplicaSpec) {
        match self.replicas.get_mut(id) {
            Some(r) => {
                if (r.spec.block_size, r.spec.hash_salt) != (spec.block_size, spec.hash_salt) {
                    r.index.clear();
                }
                r.spec = spec;
            }
            None => {
                self.replicas.insert(id.to_owned(), Replica::new(spec));
            }
        }
    }

    /// Removes a replica; returns the requests that were outstanding there.
    pub fn remove(&mut self, id: &str) -> Vec<RequestKey> {
        let Some(replica) = self.replicas.remove(id) else {
            return Vec::new();
        };
        let keys: Vec<RequestKey> = replica.outstanding.into_keys().collect();
        for key in &keys {
            self.routed.remove(key);
        }
        keys
    }

    /// The replicas known, by id.
    pub fn replica_ids(&self) -> impl Iterator<Item = &str> {
        self.replicas.keys().map(String::as_str)
    }

    /// Whether `id` is known.
    pub fn contains(&self, id: &str) -> bool {
        self.replicas.contains_key(id)
    }

    /// Applies a replica's KV events to its index.
    pub fn apply_events(&mut self, id: &str, events: &[IndexEvent]) {
        if let Some(r) = self.replicas.get_mut(id) {
            for event in events {
                r.index.apply(event);
            }
        }
    }

    /// A replica's events were lost (a gap its replay could not fill, or it restarted):
    /// its index is dropped and rebuilt from later events.
    pub fn events_lost(&mut self, id: &str) {
        if let Some(r) = self.replicas.get_mut(id) {
            r.index.clear();
        }
    }

    /// Chooses a replica for `req` at `now` and records the request there.
    pub fn route(&mut self, req: &RouteRequest<'_>, now: f64) -> Result<Choice, Refusal> {
        let best = match self.cfg.policy {
            Policy::PredictedTtft => self.best_candidate(req, now),
            Policy::RoundRobin => self.next_in_turn(req, now),
            Policy::OverlapLoad => self.least_overlap_load(req, now),
        }
        .ok_or(Refusal::NoReplica)?;
        if let (Some(slo), true) = (req.ttft_slo, req.reject_unattainable) {
            if best.ttft > slo {
                return Err(Refusal::Unattainable {
                    best_ttft: best.ttft,
                    slo,
                });
            }
        }
        let (id, prompt_tokens, cached_tokens, ttft) = (
            best.id.to_owned(),
            best.prompt_tokens,
            best.cached_tokens,
            best.ttft,
        );
        let hashes = best.hashes;
        let key = self.next_key;
        self.next_key += 1;
        let cfg = &self.cfg;
        let replica = self.replicas.get_mut(&id).expect("the candidate exists");
        replica.last_chosen = key;
        let ttl = match (req.prompt, replica.spec.publishes_events) {
            (Prompt::Tokens(_), true) => cfg.speculative_ttl,
            _ => cfg.approximate_ttl,
        };
        replica
            .index
            .speculate(&hashes, now, ttl, replica.spec.kv_blocks);
        replica.index.expire(now);
        let prefill_s = replica.prefill_s(cached_tokens, prompt_tokens - cached_tokens);
        replica.queued_prefill_s += prefill_s;
        let hands_over = replica.spec.role == Role::Prefill;
        let decode_on = if hands_over {
            self.decode_target(&id, req.exclude, prompt_tokens, now)
        } else {
            None
        };
        let replica = self.replicas.get_mut(&id).expect("the candidate exists");
        replica.outstanding.insert(
            key,
            Outstanding {
                prefill_s,
                uncached: prompt_tokens - cached_tokens,
                context: prompt_tokens,
                prefilled: false,
                decode_on: decode_on.clone(),
                priority: req.priority,
                tpot_slo: req.tpot_slo,
            },
        );
        self.routed.insert(key, id.clone());
        Ok(Choice {
            replica: id,
            key,
            prompt_tokens,
            cached_tokens,
            predicted_ttft: ttft,
            decode_on,
        })
    }

    /// The replica a request prefilled on `source` decodes on: of the available replicas
    /// that decode (but `source` and those excluded), the one whose decode step is
    /// predicted shortest with the request's `context` added — the decode side's
    /// counterpart of the choice by predicted TTFT.
    fn decode_target(
        &self,
        source: &str,
        exclude: &[String],
        context: usize,
        now: f64,
    ) -> Option<String> {
        self.replicas
            .iter()
            .filter(|(id, r)| {
                r.spec.role.decodes()
                    && id.as_str() != source
                    && r.breaker.is_closed(now)
                    && !exclude.contains(id)
            })
            .map(|(id, r)| {
                let shape = StepShape {
                    decode_seqs: r.decoding + 1,
                    decode_context: r.decode_context + context,
                    ..StepShape::default()
                };
                (r.spec.latency.predict(&shape), r.decoding, id)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(b.2)))
            .map(|(_, _, id)| id.clone())
    }

    /// The next eligible replica in turn (its prediction still computed, for the record).
    fn next_in_turn(&mut self, req: &RouteRequest<'_>, now: f64) -> Option<Candidate<'_>> {
        let eligible: Vec<&String> = self
            .replicas
            .iter()
            .filter(|(id, r)| r.eligible(req, id, now))
            .map(|(id, _)| id)
            .collect();
        if eligible.is_empty() {
            return None;
        }
        let id = eligible[self.turn % eligible.len()];
        self.turn = self.turn.wrapping_add(1);
        let replica = &self.replicas[id];
        Some(self.candidate(id, replica, req, now))
    }

    /// The choice among eligible replicas past the hot-spot guard: of those predicted to
    /// serve the first token within the request's allowance, the one holding most of its
    /// prompt; ties to the lowest cost (the prediction, priced as `price_interference`
    /// says). The allowance is the larger of a fixed part (its TTFT objective's headroom, or
    /// `affinity_slack` beyond the fastest) and `affinity_ratio` times the fastest.
    fn best_candidate(&self, req: &RouteRequest<'_>, now: f64) -> Option<Candidate<'_>> {
        let candidates = self.candidates(req, now);
        let fastest = candidates.iter().map(|c| c.ttft).min_by(f64::total_cmp)?;
        let fixed = match req.ttft_slo {
            Some(slo) => fastest.max(slo * self.cfg.slo_headroom),
            None => fastest + self.cfg.affinity_slack,
        };
        let allowance = fixed.max(fastest * self.cfg.affinity_ratio);
        candidates
            .into_iter()
            .filter(|c| c.ttft <= allowance)
            .min_by(|a, b| {
                b.cached_tokens
                    .cmp(&a.cached_tokens)
                    .then(a.cost.total_cmp(&b.cost))
                    .then(a.outstanding.cmp(&b.outstanding))
                    .then(a.last_chosen.cmp(&b.last_chosen))
                    .then(a.id.cmp(b.id))
            })
    }

    /// The candidate with the lowest overlap-against-load cost ([`Policy::OverlapLoad`]);
    /// ties to the least recently chosen. Each candidate's cost is computed once (its
    /// queued tokens are a sum over the replica's outstanding requests).
    fn least_overlap_load(&self, req: &RouteRequest<'_>, now: f64) -> Option<Candidate<'_>> {
        self.candidates(req, now)
            .into_iter()
            .map(|c| {
                let queued = self.replicas[c.id].queued_tokens();
                (
                    (c.prompt_tokens - c.cached_tokens + queued) * (c.outstanding + 1),
                    c,
                )
            })
            .min_by(|(cost_a, a), (cost_b, b)| {
                cost_a
                    .cmp(cost_b)
                    .then(a.last_chosen.cmp(&b.last_chosen))
                    .then(a.id.cmp(b.id))
            })
            .map(|(_, c)| c)
    }

    /// Every eligible replica's answer, past the hot-spot guard.
    fn candidates(&self, req: &RouteRequest<'_>, now: f64) -> Vec<Candidate<'_>> {
        let mut eligible: Vec<(&String, &Replica)> = self
            .replicas
            .iter()
            .filter(|(id, r)| r.eligible(req, id, now))
            .collect();
        // Batch work goes where no interactive request is (where there is such a replica):
        // placed beside one, it would slow it, or be moved off again.
        if (self.cfg.priority_placement || self.cfg.priority_migration)
            && req.priority == Priority::Batch
            && eligible
                .iter()
                .any(|(_, r)| !r.serves(Priority::Interactive))
        {
            eligible.retain(|(_, r)| !r.serves(Priority::Interactive));
        }
        let Some(least) = eligible.iter().map(|(_, r)| r.outstanding.len()).min() else {
            return Vec::new();
        };
        let ceiling = least + self.cfg.hot_spot_slack.max(least);
        // Interference is priced against the alternative of stalling no one: a fleet with
        // both a prefill replica and one that also decodes. Among replicas that all decode,
        // every choice stalls someone (pricing the difference cost 1–2 % of capacity in
        // `brisk sim`, BENCHMARKS.md); among prefill replicas, every choice hands over.
        let has = |role| eligible.iter().any(|(_, r)| r.spec.role == role);
        let price = self.cfg.price_interference && has(Role::Prefill) && has(Role::Both);
        // The prompt is hashed once per hashing scheme, not once per replica: replicas of one
        // model share one, so a fleet of any size hashes each prompt once.
        let mut hashed: Vec<PromptBlocks> = Vec::new();
        eligible
            .into_iter()
            .filter(|(_, r)| r.outstanding.len() <= ceiling)
            .map(|(id, r)| {
                let scheme = (r.spec.block_size, r.spec.hash_salt);
                let at = match hashed.iter().position(|h| h.scheme == scheme) {
                    Some(at) => at,
                    None => {
                        let (hashes, per_block) = r.prompt_blocks(req.prompt, &self.cfg);
                        hashed.push(PromptBlocks {
                            scheme,
                            hashes: hashes.into(),
                            per_block,
                        });
                        hashed.len() - 1
                    }
                };
                let h = &hashed[at];
                let hashes = Rc::clone(&h.hashes);
                self.candidate_of(id, r, req, (hashes, h.per_block), price, now)
            })
            .collect()
    }

    fn candidate<'a>(
        &self,
        id: &'a str,
        r: &Replica,
        req: &RouteRequest<'_>,
        now: f64,
    ) -> Candidate<'a> {
        let (hashes, tokens_per_block) = r.prompt_blocks(req.prompt, &self.cfg);
        self.candidate_of(id, r, req, (hashes.into(), tokens_per_block), false, now)
    }

    /// A replica's answer, given the prompt's block hashes in its terms (and tokens per
    /// block); `price`: whether its cost includes interference or the hand-over.
    fn candidate_of<'a>(
        &self,
        id: &'a str,
        r: &Replica,
        req: &RouteRequest<'_>,
        (hashes, tokens_per_block): (Rc<[u64]>, usize),
        price: bool,
        now: f64,
    ) -> Candidate<'a> {
        let prompt_tokens = match req.prompt {
            Prompt::Tokens(t) => t.len(),
            Prompt::Text(s) => s.len().div_ceil(self.cfg.text_bytes_per_token).max(1),
        };
        // A replica always computes the last prompt token (it needs its logits).
        let cached_tokens =
            (r.index.matched(&hashes, now) * tokens_per_block).min(prompt_tokens.saturating_sub(1));
        let own = r.prefill_s(cached_tokens, prompt_tokens - cached_tokens);
        let ttft = r.queued_prefill_s + own;
        let beyond = match (price, r.spec.role) {
            (false, _) => 0.0,
            (true, Role::Prefill) => self
                .cfg
                .kv_transfer
                .seconds(((prompt_tokens + 1) * r.spec.kv_transfer_bytes_per_token) as f64),
            (true, _) => r.interference_s(cached_tokens, prompt_tokens - cached_tokens, own, req),
        };
        Candidate {
            id,
            hashes,
            outstanding: r.outstanding.len(),
            last_chosen: r.last_chosen,
            ttft,
            cost: ttft + beyond,
            prompt_tokens,
            cached_tokens,
        }
    }

    /// The request's first token arrived: its prompt work leaves the queue, its decode joins
    /// the running set of the replica it decodes on (where it was prefilled, or the decode
    /// replica it is handed to, which from then on answers for it).
    pub fn first_token(&mut self, key: RequestKey) {
        let Some(source) = self.routed.get(&key).cloned() else {
            return;
        };
        let Some(replica) = self.replicas.get_mut(&source) else {
            return;
        };
        let Some(o) = replica.outstanding.get_mut(&key) else {
            return;
        };
        if o.prefilled {
            return;
        }
        o.prefilled = true;
        replica.queued_prefill_s = (replica.queued_prefill_s - o.prefill_s).max(0.0);
        replica.decoding += 1;
        replica.decode_context += o.context;
        if let Some(target) = o.decode_on.clone() {
            self.move_decode(key, &source, &target);
        }
    }

    /// The request ended: `ok` is whether the replica served it (a failure counts against
    /// the replica's circuit breaker).
    pub fn finished(&mut self, key: RequestKey, ok: bool, now: f64) {
        let Some(id) = self.routed.remove(&key) else {
            return;
        };
        let Some(replica) = self.replicas.get_mut(&id) else {
            return;
        };
        if let Some(o) = replica.outstanding.remove(&key) {
            if o.prefilled {
                replica.decoding -= 1;
                replica.decode_context -= o.context;
            } else {
                replica.queued_prefill_s = (replica.queued_prefill_s - o.prefill_s).max(0.0);
            }
        }
        if replica.outstanding.is_empty() {
            // Clears rounding left by the running sum.
            replica.queued_prefill_s = 0.0;
        }
        if ok {
            replica.breaker.success();
        } else {
            replica.breaker.failure(now, &self.cfg.breaker);
        }
    }

    /// A failure seen outside a routed request (a health check); returns whether it opened
    /// the circuit.
    pub fn failure(&mut self, id: &str, now: f64) -> bool {
        let cfg = self.cfg.breaker;
        self.replicas
            .get_mut(id)
            .is_some_and(|r| r.breaker.failure(now, &cfg))
    }

    /// A success seen outside a routed request (a health check after an open circuit).
    pub fn success(&mut self, id: &str) {
        if let Some(r) = self.replicas.get_mut(id) {
            r.breaker.success();
        }
    }

    /// Decoding request `key` now runs on `to` instead of `from` (a hand-over or a
    /// migration); nothing changes if either replica is unknown.
    fn move_decode(&mut self, key: RequestKey, from: &str, to: &str) {
        if from == to || !self.replicas.contains_key(to) {
            return;
        }
        let Some(source) = self.replicas.get_mut(from) else {
            return;
        };
        let Some(o) = source.outstanding.remove(&key) else {
            return;
        };
        source.decoding -= 1;
        source.decode_context -= o.context;
        if source.outstanding.is_empty() {
            // Clears rounding left by the running sum.
            source.queued_prefill_s = 0.0;
        }
        let dest = self.replicas.get_mut(to).expect("checked above");
        dest.decoding += 1;
        dest.decode_context += o.context;
        dest.outstanding.insert(key, o);
        self.routed.insert(key, to.to_owned());
    }

    /// A replica's load and state at `now`.
    pub fn load(&self, id: &str, now: f64) -> Option<ReplicaLoad> {
        self.replicas.get(id).map(|r| r.load(now))
    }
}

#[cfg(test)]
mod tests;
