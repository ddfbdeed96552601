//! Held records: a handler that let go of a record's slot decides its offset later through a [`Held`].
//!
//! The loop counts held records per partition (a drain or revoke waits for
//! them) and applies each decision to the partition's offset tracker, which
//! takes decisions in any order. A decision for an assignment that is gone
//! (its generation differs) is ignored: the next owner reads the record again.

use super::handler::Decision;
use super::{Handler, Loop};

impl<H: Handler> Loop<H> {
    /// A held record was decided (or let go): count it out, and decide its offset.
    pub(super) fn apply(&mut self, decision: Decision) {
        let Some(partition) = self.partitions.get_mut(&decision.key) else { return };
        if partition.generation != decision.generation {
            return;
        }
        let was_full = self.held >= self.spec.max_held as i64;
        partition.held -= 1;
        self.held -= 1;
        if decision.decided {
            partition.tracker.decide(decision.offset);
            partition.dirty = true;
            self.commits.decisions += 1;
        }
        if was_full {
            self.pump_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consume::handler::{Decider, Held};
    use std::sync::Arc;
    use tokio::sync::mpsc;

    fn decider(tx: &mpsc::UnboundedSender<Decision>, offset: i64) -> Decider {
        Decider { tx: tx.clone(), key: (Arc::from("dead"), 0), generation: 7, offset }
    }

    #[test]
    fn a_held_record_reports_once_decided_or_dropped() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let held: Held = decider(&tx, 5).hold();
        held.decide();
        let d = rx.try_recv().unwrap();
        assert_eq!((d.offset, d.generation, d.decided), (5, 7, true));
        assert!(rx.try_recv().is_err(), "deciding sends one message, the drop after it none");

        drop(decider(&tx, 6).hold());
        let d = rx.try_recv().unwrap();
        assert_eq!((d.offset, d.decided), (6, false), "dropped undecided: let go, so a drain does not wait for it");

        drop(decider(&tx, 7));
        assert!(rx.try_recv().is_err(), "an unused decider says nothing");
    }
}
