//! Live migration in the simulator, as `brisk route` and its replicas do it (Llumnix): every
//! `interval` — and at once when an interactive request is routed with priority migration
//! on — the router core is asked for a due migration ([`RouterCore::migration`]); the
//! source's newest decoding request of the class asked for moves, one at a time, up to
//! [`MOVES_PER_LOOK`] in a row.
//!
//! A move is the server's multi-stage pre-copy on the link of [`TransferSettings`]: rounds
//! of at most [`STAGE_BLOCKS`] full blocks travel while the request keeps decoding, until a
//! round would carry fewer than [`MIN_STAGE_BLOCKS`] new ones (or after [`MAX_STAGES`]);
//! then, at the source's next step boundary, the request stops and the rest of its K/V
//! travels — the pause its client sees — and it continues on the destination. A request
//! that ends before its stop, or a destination without room, leaves it at the source. The
//! engine's time to copy blocks out between steps is not modelled (the link's is).
//!
//! [`RouterCore::migration`]: brisk_router::RouterCore::migration

use brisk_engine::RequestExport;
use brisk_router::Migration;

use crate::fleet::TransferSettings;

/// Most migrations in a row before waiting for the next look (as the gateway).
pub(crate) const MOVES_PER_LOOK: usize = 16;
/// Most rounds of blocks sent ahead (as the server).
const MAX_STAGES: usize = 64;
/// Most blocks one round sends (as the server).
const STAGE_BLOCKS: usize = 32;
/// Fewer new full blocks than this are not worth another round (as the server).
const MIN_STAGE_BLOCKS: usize = 2;

/// When the router looks for migrations (`brisk route --rebalance-slack`,
/// `--priority-migration`, `--rebalance-interval`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MigrationSettings {
    /// Load balance: see [`brisk_router::RouterConfig::rebalance_slack`].
    pub rebalance_slack: Option<usize>,
    /// Priority: see [`brisk_router::RouterConfig::priority_migration`].
    pub priority: bool,
    /// Seconds between two looks.
    pub interval: f64,
}

impl Default for MigrationSettings {
    /// Off; looks every 0.5 s once on.
    fn default() -> Self {
        Self {
            rebalance_slack: None,
            priority: false,
            interval: 0.5,
        }
    }
}

impl MigrationSettings {
    /// Whether the router migrates at all.
    pub fn is_on(&self) -> bool {
        self.rebalance_slack.is_some() || self.priority
    }
}

/// Where a move stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Stage {
    /// A round of blocks travels until `until`; `sent` full blocks are there by then.
    Ahead {
        until: f64,
        sent: usize,
        rounds: usize,
    },
    /// Waiting for the source's step to end before stopping the request.
    Stopping { sent: usize },
    /// Stopped; the rest of its K/V arrives at `until`.
    Final { until: f64 },
}

/// One move under way.
#[derive(Debug)]
pub(crate) struct Move {
    pub(crate) plan: Migration,
    /// The request (its index).
    pub(crate) request: usize,
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) stage: Stage,
    /// When it stopped (its pause starts).
    pub(crate) stopped: f64,
    /// What the stop exported, on its way.
    pub(crate) export: Option<RequestExport>,
}

/// The migration state of a run.
#[derive(Debug)]
pub(crate) struct Migrations {
    pub(crate) settings: MigrationSettings,
    /// The next look (`None` while a move is under way).
    pub(crate) next_look: Option<f64>,
    /// Moves left in this look.
    pub(crate) moves_left: usize,
    pub(crate) under_way: Option<Move>,
    /// Moves made.
    pub(crate) made: usize,
    /// Each move's pause, seconds.
    pub(crate) pauses: Vec<f64>,
}

impl Migrations {
    pub(crate) fn new(settings: MigrationSettings) -> Self {
        Self {
            settings,
            next_look: settings.is_on().then_some(0.0),
            moves_left: MOVES_PER_LOOK,
            under_way: None,
            made: 0,
            pauses: Vec::new(),
        }
    }

    /// When something is next due: a look, or the end of a round or of the final copy.
    pub(crate) fn next_due(&self) -> Option<f64> {
        match self.under_way.as_ref().map(|m| m.stage) {
            Some(Stage::Ahead { until, .. } | Stage::Final { until }) => Some(until),
            Some(Stage::Stopping { .. }) => None,
            None => self.next_look,
        }
    }

    /// An interactive request was routed at `now`: look at once (priority migration).
    pub(crate) fn wake(&mut self, now: f64) {
        if self.settings.priority && self.under_way.is_none() {
            self.next_look = Some(now);
            self.moves_left = MOVES_PER_LOOK;
        }
    }

    /// The look at `now` found nothing (more) to do: the next one comes after `interval`.
    pub(crate) fn idle(&mut self, now: f64) {
        self.under_way = None;
        self.next_look = Some(now + self.settings.interval);
        self.moves_left = MOVES_PER_LOOK;
    }

    /// A move ended at `now` (`moved` or not): look again at once while the look has moves
    /// left, else after `interval`.
    pub(crate) fn ended(&mut self, now: f64, moved: bool) {
        self.under_way = None;
        self.moves_left -= 1;
        if moved && self.moves_left > 0 {
            self.next_look = Some(now);
        } else {
            self.idle(now);
        }
    }
}

/// The next pre-copy round for a request whose context fills `full` blocks, `sent` of
/// which are at the destination after `rounds` rounds: `Some(blocks)` to send, or `None`
/// when it is time to stop.
pub(crate) fn next_round(full: usize, sent: usize, rounds: usize) -> Option<usize> {
    let new = full.saturating_sub(sent);
    (rounds < MAX_STAGES && new >= MIN_STAGE_BLOCKS).then(|| new.min(STAGE_BLOCKS))
}

/// Seconds for `blocks` blocks of `block_size` tokens on `link`.
pub(crate) fn blocks_s(link: &TransferSettings, blocks: usize, block_size: usize) -> f64 {
    link.seconds(blocks * block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_carry_at_most_a_stage_and_stop_below_the_minimum() {
        assert_eq!(next_round(100, 0, 0), Some(32));
        assert_eq!(next_round(100, 96, 3), Some(4));
        assert_eq!(
            next_round(100, 99, 4),
            None,
            "one new block: the stop takes it"
        );
        assert_eq!(next_round(1000, 0, MAX_STAGES), None);
    }
}
