//! Fair share between clients: a virtual token counter per client (VTC, Sheng et al., OSDI
//! '24) with a deficit quantum for prefix locality (DLPM, Cao et al., 2025).
//!
//! Without it, a client that floods the server with long requests takes every step's prompt
//! budget, and a light client queues behind the flood however little it asks for. VTC counts
//! the service each client has received — prompt tokens computed, weighted 1, and output
//! tokens, weighted 2, its default weights — and serves the least-served client's prompt
//! work first. A client that was idle does not bank credit: when it becomes backlogged
//! again its counter is lifted to the least counter among the backlogged clients (here,
//! a client with nothing queued or running is forgotten, and a returning one starts at that
//! least counter).
//!
//! Strict VTC switches clients at every token of difference, which interleaves clients'
//! requests and, with them, the prefixes they share (a client's system prompt leaves the
//! cache between its requests under memory pressure). DLPM relaxes the order by a quantum: a
//! client stays in the first group while it leads the least-served client by less than the
//! quantum, and within a group the wrapped policy's order holds (FCFS's queue order, the
//! SLO policy's slack). So a client runs up to a quantum of tokens ahead before yielding, and
//! a burst of its same-prefix requests runs together. The default quantum is one step's token
//! budget.
//!
//! Fair share orders prompt work only — which part-way prompt continues and which waiting
//! request is admitted. Decodes keep their token in every step, preemption victims are the
//! wrapped policy's (whose order is stable across steps, which the progress argument
//! needs; counters are not), and so is the step budget.

use std::collections::HashMap;

use crate::policy::{Admission, PromptWork, SchedulingPolicy};
use crate::sequence::SeqView;

/// Settings of fair share.
#[derive(Clone, Debug, PartialEq)]
pub struct FairShareConfig {
    /// How far (in weighted tokens) a client may lead the least-served client and still
    /// rank with it.
    pub quantum: f64,
    /// Weight of a computed prompt token.
    pub prompt_weight: f64,
    /// Weight of a generated token.
    pub output_weight: f64,
}

impl FairShareConfig {
    /// What `--no-fair-share` and `--fair-share-quantum` ask for (`brisk serve` and `brisk
    /// sim`): `None` when off, else VTC's weights and the quantum, by default the step
    /// budget.
    pub fn from_flags(off: bool, quantum: Option<usize>, step_budget: usize) -> Option<Self> {
        (!off).then(|| Self::with_quantum(quantum.unwrap_or(step_budget)))
    }

    /// VTC's weights (prompt 1, output 2) and a quantum of `quantum` tokens.
    pub fn with_quantum(quantum: usize) -> Self {
        Self {
            quantum: quantum.max(1) as f64,
            prompt_weight: 1.0,
            output_weight: 2.0,
        }
    }
}

/// One client's account.
#[derive(Clone, Debug, Default)]
struct Account {
    /// Weighted tokens served.
    served: f64,
    /// Its requests queued or running.
    unfinished: usize,
}

/// The virtual token counters of the clients with requests in the scheduler.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    accounts: HashMap<String, Account>,
}

/// The ledger key of a request's client (`None`: the anonymous client).
fn key(client: Option<&str>) -> &str {
    client.unwrap_or("")
}

impl Ledger {
    /// A request of `client` entered the scheduler. A client that had none starts at the
    /// least counter among the others (it banks no credit while idle).
    pub(crate) fn arrive(&mut self, client: Option<&str>) {
        let floor = self.floor();
        let account = self
            .accounts
            .entry(key(client).to_owned())
            .or_insert_with(|| Account {
                served: floor,
                unfinished: 0,
            });
        account.unfinished += 1;
    }

    /// A request of `client` left the scheduler; a client with none left is forgotten.
    pub(crate) fn leave(&mut self, client: Option<&str>) {
        let k = key(client);
        if let Some(account) = self.accounts.get_mut(k) {
            account.unfinished -= 1;
            if account.unfinished == 0 {
                self.accounts.remove(k);
            }
        }
    }

    /// Counts `tokens` weighted tokens of service to `client`.
    pub(crate) fn charge(&mut self, client: Option<&str>, tokens: f64) {
        if let Some(account) = self.accounts.get_mut(key(client)) {
            account.served += tokens;
        }
    }

    /// How far `client` leads the least-served client (0 for the least served).
    pub(crate) fn lead(&self, client: Option<&str>) -> f64 {
        self.lead_over(client, self.floor())
    }

    /// How far `client` leads `floor`, the least counter ([`Self::floor`], computed once
    /// for many clients).
    pub(crate) fn lead_over(&self, client: Option<&str>, floor: f64) -> f64 {
        self.accounts
            .get(key(client))
            .map_or(0.0, |a| a.served - floor)
    }

    /// The least counter among the clients present (0 when none is).
    pub(crate) fn floor(&self) -> f64 {
        self.accounts
            .values()
            .map(|a| a.served)
            .min_by(f64::total_cmp)
            .unwrap_or(0.0)
    }

    /// Clients present.
    pub(crate) fn num_clients(&self) -> usize {
        self.accounts.len()
    }

    /// Requests counted, over every client.
    pub(crate) fn num_requests(&self) -> usize {
        self.accounts.values().map(|a| a.unfinished).sum()
    }
}

/// A policy with fair share between clients layered over it (see the module docs).
pub struct FairShare {
    inner: Box<dyn SchedulingPolicy>,
    quantum: f64,
}

impl FairShare {
    /// `inner` with prompt work grouped by client lead in steps of `quantum` tokens.
    pub fn new(inner: Box<dyn SchedulingPolicy>, quantum: f64) -> Self {
        Self { inner, quantum }
    }

    /// The fairness group of a sequence: 0 for clients within one quantum of the least
    /// served, 1 within two, …
    fn group(&self, v: &SeqView) -> u64 {
        (v.share_lead.max(0.0) / self.quantum).floor() as u64
    }
}

impl SchedulingPolicy for FairShare {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    /// The inner order, stably regrouped by fairness group.
    fn admission_order(&self, waiting: &[SeqView], now: f64) -> Vec<usize> {
        let mut order = self.inner.admission_order(waiting, now);
        order.sort_by_key(|&i| self.group(&waiting[i]));
        order
    }

    /// The inner order, stably regrouped by fairness group.
    fn prompt_order(&self, partway: &[SeqView], waiting: &[SeqView], now: f64) -> Vec<PromptWork> {
        let mut order = self.inner.prompt_order(partway, waiting, now);
        order.sort_by_key(|w| match *w {
            PromptWork::Partway(i) => self.group(&partway[i]),
            PromptWork::Waiting(i) => self.group(&waiting[i]),
        });
        order
    }

    fn preemption_victim(&self, running: &[SeqView], now: f64) -> usize {
        self.inner.preemption_victim(running, now)
    }

    /// The inner verdict, judged against the work that fair share serves before `new`:
    /// that of clients in its group or an earlier one.
    fn on_arrival(
        &self,
        new: &SeqView,
        waiting: &[SeqView],
        running: &[SeqView],
        now: f64,
    ) -> Admission {
        let group = self.group(new);
        let ahead = |views: &[SeqView]| -> Vec<SeqView> {
            views
                .iter()
                .filter(|v| self.group(v) <= group)
                .cloned()
                .collect()
        };
        self.inner
            .on_arrival(new, &ahead(waiting), &ahead(running), now)
    }

    fn step_token_budget(&self, running: &[SeqView], max: usize, now: f64) -> usize {
        self.inner.step_token_budget(running, max, now)
    }

    fn observe_step(&mut self, shape: &crate::StepShape, seconds: f64) {
        self.inner.observe_step(shape, seconds);
    }

    fn step_time_correction(&self) -> f64 {
        self.inner.step_time_correction()
    }

    fn admission_victim(
        &self,
        candidate: &SeqView,
        running: &[SeqView],
        now: f64,
    ) -> Option<usize> {
        self.inner.admission_victim(candidate, running, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returning_client_starts_at_the_least_counter() {
        let mut l = Ledger::default();
        l.arrive(Some("flood"));
        l.charge(Some("flood"), 5000.0);
        l.arrive(Some("light"));
        assert_eq!(l.lead(Some("light")), 0.0);
        assert_eq!(
            l.lead(Some("flood")),
            0.0,
            "light starts at flood's counter"
        );
        l.charge(Some("light"), 100.0);
        assert_eq!(l.lead(Some("light")), 100.0);
        l.leave(Some("light"));
        assert_eq!(
            l.num_clients(),
            1,
            "a client with nothing left is forgotten"
        );
        l.arrive(None);
        l.charge(None, 30.0);
        assert_eq!(l.lead(None), 30.0);
        assert_eq!(l.lead(Some("flood")), 0.0);
    }
}
