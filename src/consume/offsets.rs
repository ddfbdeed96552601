//! Per-partition offset tracker: the committable position is the highest contiguous decided offset + 1.
//!
//! Records of a partition finish out of order; the tracker only lets the
//! commit position pass a record once it and everything before it is decided.
//! Offsets need not be contiguous (compaction, transaction markers): the
//! position after the last seen record is "one past it", not "count + base".

use std::collections::BTreeSet;

#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// Offsets handed out and not yet decided.
    pending: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: Option<i64>,
    /// The position last reported by [`OffsetTracker::decide`] or [`OffsetTracker::begin`].
    reported: Option<i64>,
}

impl OffsetTracker {
    /// A record at `offset` is now being worked on. Offsets arrive in increasing order.
    pub fn begin(&mut self, offset: i64) {
        debug_assert!(self.next.is_none_or(|n| offset >= n), "offsets of a partition arrive in order");
        self.pending.insert(offset);
        // The position before anything is decided is where consumption
        // started: already committed, so not a move.
        self.reported.get_or_insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The record at `offset` is decided. Returns the new commit position when it moved.
    pub fn decide(&mut self, offset: i64) -> Option<i64> {
        if !self.pending.remove(&offset) {
            return None;
        }
        let position = self.position()?;
        if self.reported.is_some_and(|r| r >= position) {
            return None;
        }
        self.reported = Some(position);
        Some(position)
    }

    /// The offset to commit: the first undecided one, or one past the last seen.
    pub fn position(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }

    /// Records being worked on.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The offsets being worked on, increasing (for the commit's map of decided ones).
    pub fn pending_offsets(&self) -> impl Iterator<Item = i64> + '_ {
        self.pending.iter().copied()
    }

    /// One past the highest offset seen.
    pub fn next(&self) -> Option<i64> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn out_of_order_completion() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 14] {
            t.begin(o);
        }
        assert_eq!(t.position(), Some(10));
        assert_eq!(t.decide(11), None, "10 is still undecided");
        assert_eq!(t.decide(12), None);
        assert_eq!(t.decide(10), Some(14), "gap 13 does not hold it back");
        assert_eq!(t.decide(14), Some(15));
        assert_eq!(t.decide(14), None, "deciding twice changes nothing");
        assert_eq!(t.pending(), 0);
    }

    proptest! {
        /// The committed position never passes an undecided record, never goes
        /// backwards, and reaches one past the last record when all are decided.
        #[test]
        fn never_passes_an_undecided_record(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
        ) {
            let mut offsets = Vec::new();
            let mut o = 100;
            for gap in &gaps {
                offsets.push(o);
                o += gap;
            }
            let mut t = OffsetTracker::default();
            for &o in &offsets {
                t.begin(o);
            }
            let mut undecided = offsets.clone();
            let mut last = None;
            for pick in order.iter().cycle().take(offsets.len() * 2) {
                if undecided.is_empty() {
                    break;
                }
                let o = undecided.remove(pick.index(undecided.len()));
                if let Some(position) = t.decide(o) {
                    prop_assert!(undecided.iter().all(|&u| position <= u), "{} passed an undecided record", position);
                    prop_assert!(last.is_none_or(|l| position > l));
                    last = Some(position);
                }
            }
            while let Some(o) = undecided.pop() {
                if let Some(position) = t.decide(o) {
                    prop_assert!(undecided.iter().all(|&u| position <= u));
                    last = Some(position);
                }
            }
            prop_assert_eq!(last, Some(offsets.last().unwrap() + 1));
            prop_assert_eq!(t.position(), Some(offsets.last().unwrap() + 1));
        }
    }
}
