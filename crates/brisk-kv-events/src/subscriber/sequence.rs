//! The subscriber's bookkeeping of sequence numbers, kept apart from the sockets so that
//! every case (first message, next one, gap, restart, replay that falls short) is a plain
//! function of numbers.

use std::ops::Range;

use bytes::Bytes;

/// The last sequence number delivered (or reported lost) in the current stream.
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    last: Option<u64>,
    /// The connection dropped since the last message: the publisher may have restarted.
    reconnected: bool,
    /// Caught up by replay to this sequence: live batches up to it (sent while the replay
    /// ran) are duplicates, until the first newer one.
    replayed_to: Option<u64>,
}

/// What must happen before a live batch is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Already delivered by the catch-up replay: skip it.
    pub(crate) duplicate: bool,
    /// The sequence went back: a new publisher, whose batches start a new stream.
    pub(crate) restarted: bool,
    /// Batches of this stream published before this one that this subscriber has not seen.
    pub(crate) missing: Option<Range<u64>>,
}

impl Sequencer {
    /// Notes that the connection to the publisher dropped (and ZMQ is reconnecting).
    pub(crate) fn reconnected(&mut self) {
        self.reconnected = true;
    }

    /// Takes `seq`, just received live, as the stream's newest and says what came before it:
    /// everything from 0 on the first message or after a restart (the consumer wants the
    /// whole cache), everything after the last one otherwise. A restart is a sequence that
    /// went back, or any jump right after a reconnection: a restarted publisher may already
    /// be past the old sequence, and a gap in an old one is as well served from 0.
    pub(crate) fn next(&mut self, seq: u64) -> Plan {
        if let Some(replayed_to) = self.replayed_to {
            if seq <= replayed_to && !self.reconnected {
                return Plan {
                    duplicate: true,
                    restarted: false,
                    missing: None,
                };
            }
            self.replayed_to = None;
        }
        let (restarted, from) = match self.last {
            None => (false, 0),
            Some(last) if seq <= last => (true, 0),
            Some(last) if self.reconnected && seq != last + 1 => (true, 0),
            Some(last) => (false, last + 1),
        };
        self.last = Some(seq);
        self.reconnected = false;
        Plan {
            duplicate: false,
            restarted,
            missing: (from < seq).then_some(from..seq),
        }
    }

    /// Notes that a replay on connecting delivered the stream up to `last`.
    pub(crate) fn caught_up(&mut self, last: u64) {
        self.last = Some(last);
        self.replayed_to = Some(last);
    }
}

/// One step of filling a gap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// A replayed batch to deliver.
    Deliver(u64, Bytes),
    /// Sequence numbers `from..=to` cannot be had.
    Lost { from: u64, to: u64 },
}

/// Fills `missing` from what the replay socket sent (in its order, possibly short, possibly
/// with more than was asked): the batches in range in order, and a [`Fill::Lost`] for each
/// stretch the replay did not hold.
pub(crate) fn fill(missing: Range<u64>, replayed: Vec<(u64, Bytes)>) -> Vec<Fill> {
    let mut out = Vec::new();
    let mut next = missing.start;
    for (seq, payload) in replayed {
        if seq < next || seq >= missing.end {
            continue;
        }
        if seq > next {
            out.push(Fill::Lost {
                from: next,
                to: seq - 1,
            });
        }
        out.push(Fill::Deliver(seq, payload));
        next = seq + 1;
    }
    if next < missing.end {
        out.push(Fill::Lost {
            from: next,
            to: missing.end - 1,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(seqs: &[u64]) -> Vec<Plan> {
        let mut s = Sequencer::default();
        seqs.iter().map(|&seq| s.next(seq)).collect()
    }

    fn plan(restarted: bool, missing: Option<Range<u64>>) -> Plan {
        Plan {
            duplicate: false,
            restarted,
            missing,
        }
    }

    #[test]
    fn after_catching_up_live_duplicates_are_skipped_until_a_newer_batch() {
        let mut s = Sequencer::default();
        s.caught_up(4);
        assert!(s.next(3).duplicate);
        assert!(s.next(4).duplicate);
        assert_eq!(s.next(5), plan(false, None));
        // Past the catch-up, going back is a restart again.
        assert_eq!(s.next(2), plan(true, Some(0..2)));
    }

    #[test]
    fn a_stream_joined_at_its_start_needs_nothing_before_each_batch() {
        assert_eq!(plans(&[0, 1, 2]), vec![plan(false, None); 3]);
    }

    #[test]
    fn a_stream_joined_late_needs_its_history_and_a_jump_needs_the_gap() {
        assert_eq!(
            plans(&[5, 6, 9]),
            vec![
                plan(false, Some(0..5)),
                plan(false, None),
                plan(false, Some(7..9))
            ]
        );
    }

    #[test]
    fn a_sequence_going_back_is_a_restart_from_zero() {
        assert_eq!(
            plans(&[4, 0, 1, 3, 2]),
            vec![
                plan(false, Some(0..4)),
                plan(true, None),
                plan(false, None),
                plan(false, Some(2..3)),
                plan(true, Some(0..2)),
            ]
        );
    }

    #[test]
    fn a_jump_after_a_reconnection_is_a_restart_and_the_next_batch_is_not() {
        let mut s = Sequencer::default();
        s.next(0);
        s.next(1);
        s.reconnected();
        assert_eq!(
            s.next(2),
            plan(false, None),
            "the same stream, nothing missed"
        );
        s.reconnected();
        assert_eq!(s.next(9), plan(true, Some(0..9)));
        assert_eq!(
            s.next(12),
            plan(false, Some(10..12)),
            "one reconnection, one restart"
        );
    }

    fn replayed(seqs: &[u64]) -> Vec<(u64, Bytes)> {
        seqs.iter().map(|&s| (s, Bytes::from(vec![0; 1]))).collect()
    }

    fn delivered_and_lost(fills: Vec<Fill>) -> Vec<(char, u64, u64)> {
        fills
            .into_iter()
            .map(|f| match f {
                Fill::Deliver(seq, _) => ('d', seq, seq),
                Fill::Lost { from, to } => ('l', from, to),
            })
            .collect()
    }

    #[test]
    fn a_full_replay_delivers_the_gap_and_ignores_the_rest() {
        assert_eq!(
            delivered_and_lost(fill(3..6, replayed(&[2, 3, 4, 5, 6, 7]))),
            vec![('d', 3, 3), ('d', 4, 4), ('d', 5, 5)]
        );
    }

    #[test]
    fn a_buffer_that_moved_on_or_a_short_replay_is_lost() {
        assert_eq!(
            delivered_and_lost(fill(0..6, replayed(&[2, 3]))),
            vec![('l', 0, 1), ('d', 2, 2), ('d', 3, 3), ('l', 4, 5)]
        );
        assert_eq!(
            delivered_and_lost(fill(0..6, Vec::new())),
            vec![('l', 0, 5)]
        );
        // Out of order or repeated replies are not delivered twice.
        assert_eq!(
            delivered_and_lost(fill(1..4, replayed(&[1, 3, 2, 3]))),
            vec![('d', 1, 1), ('l', 2, 2), ('d', 3, 3)]
        );
    }
}
