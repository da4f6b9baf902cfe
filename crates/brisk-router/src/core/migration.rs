//! Live migration plans (Llumnix): which replica should give a running request to which,
//! for load balance ([`RouterConfig::rebalance_slack`]) and for priority
//! ([`RouterConfig::priority_migration`]). The core only plans and keeps its accounting;
//! the gateway (or the simulator) asks the replica to move one and reports back.
//!
//! [`RouterConfig::rebalance_slack`]: super::RouterConfig::rebalance_slack
//! [`RouterConfig::priority_migration`]: super::RouterConfig::priority_migration

use std::cmp::Reverse;

use brisk_scheduler::Priority;

use super::replica::Replica;
use super::RouterCore;

/// A live migration the router asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The replica giving up one of its decoding requests.
    pub from: String,
    /// The replica taking it.
    pub to: String,
    /// The class of the request to move (`None`: any).
    pub class: Option<Priority>,
}

impl RouterCore {
    /// The migration due at `now`, if any: priority's (a batch decode off a replica serving
    /// interactive work) before balance's.
    pub fn migration(&self, now: f64) -> Option<Migration> {
        self.for_priority(now).or_else(|| self.for_balance(now))
    }

    /// The available replicas that decode.
    fn decoders(&self, now: f64) -> impl Iterator<Item = (&String, &Replica)> + Clone {
        self.replicas.iter().filter(move |(_, r)| r.migratable(now))
    }

    /// From the replica serving interactive work with the most batch decodes, among those
    /// whose decode step misses the interactive requests' TPOT objective, one batch decode
    /// to the replica decoding fewest among those serving no interactive request.
    fn for_priority(&self, now: f64) -> Option<Migration> {
        if !self.cfg.priority_migration {
            return None;
        }
        let (from, _) = self
            .decoders(now)
            .filter(|(_, r)| r.interactive_tpot_missed())
            .map(|(id, r)| (id, r.decoding_of(Priority::Batch)))
            .filter(|&(_, batch)| batch > 0)
            .max_by_key(|&(id, batch)| (batch, Reverse(id)))?;
        let (to, _) = self
            .decoders(now)
            .filter(|(id, r)| *id != from && !r.serves(Priority::Interactive))
            .min_by_key(|&(id, r)| (r.decoding, id))?;
        Some(Migration {
            from: from.clone(),
            to: to.clone(),
            class: Some(Priority::Batch),
        })
    }

    /// From the replica decoding the most requests to the one decoding the fewest, when
    /// the difference exceeds the slack.
    fn for_balance(&self, now: f64) -> Option<Migration> {
        let slack = self.cfg.rebalance_slack?;
        let (from, busiest) = self.decoders(now).max_by_key(|(_, r)| r.decoding)?;
        // Batch work priority moved off an interactive replica is not moved back.
        let protect = self.cfg.priority_migration && !busiest.serves(Priority::Interactive);
        let (to, idlest) = self
            .decoders(now)
            .filter(|(id, r)| *id != from && !(protect && r.serves(Priority::Interactive)))
            .min_by_key(|(_, r)| r.decoding)?;
        (busiest.decoding > idlest.decoding + slack).then(|| Migration {
            from: from.clone(),
            to: to.clone(),
            class: None,
        })
    }

    /// A request of `m.class` decoding on `m.from` moved to `m.to`: the longest context of
    /// that class outstanding there goes over in the accounting (the router does not know
    /// which one the replica chose; the counts stay right).
    pub fn migrated(&mut self, m: &Migration) {
        let longest = self.replicas.get(&m.from).and_then(|source| {
            source
                .outstanding
                .iter()
                .filter(|(_, o)| o.prefilled && m.class.is_none_or(|c| o.priority == c))
                .max_by_key(|(k, o)| (o.context, **k))
                .map(|(k, _)| *k)
        });
        if let Some(key) = longest {
            self.move_decode(key, &m.from, &m.to);
        }
    }
}
