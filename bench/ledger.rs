//! The ledger that closes every run: each produced event is delivered, dead or
//! pending, and nothing else. Pure, so the accounting itself is tested.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Ledger {
    pub produced: u64,
    /// Unique event ids answered 2xx by the sink.
    pub delivered: u64,
    /// Ids on the dead topic and not delivered, by `hookrelay-reason`.
    pub dead: BTreeMap<String, u64>,
    pub dead_total: u64,
    /// Ids still in a tier topic or past the committed offset of the events topic, neither delivered nor dead.
    pub pending: u64,
    /// 2xx answers for an id already delivered.
    pub duplicates: u64,
    /// Ids both delivered and on the dead topic (the relay said final failure for a delivered event).
    pub delivered_and_dead: u64,
    /// produced - delivered - dead - pending: must be 0.
    pub lost: i64,
}

impl Ledger {
    pub fn void(&self) -> bool {
        self.lost != 0
    }
}

/// `dead` holds (id, reason) for every dead record; `pending` the ids seen in tiers or unconsumed.
pub fn close(
    produced: u64,
    delivered: &HashSet<u64>,
    duplicates: u64,
    dead: &[(u64, Option<String>)],
    pending: &HashSet<u64>,
) -> Ledger {
    let mut dead_ids = HashSet::new();
    let mut by_reason = BTreeMap::new();
    let mut delivered_and_dead = HashSet::new();
    for (id, reason) in dead {
        if delivered.contains(id) {
            delivered_and_dead.insert(*id);
        } else if dead_ids.insert(*id) {
            *by_reason.entry(reason.clone().unwrap_or_else(|| "(none)".into())).or_insert(0) += 1;
        }
    }
    let pending = pending.iter().filter(|id| !delivered.contains(id) && !dead_ids.contains(id)).count() as u64;
    let (delivered_n, dead_total) = (delivered.len() as u64, dead_ids.len() as u64);
    Ledger {
        produced,
        delivered: delivered_n,
        dead: by_reason,
        dead_total,
        pending,
        duplicates,
        delivered_and_dead: delivered_and_dead.len() as u64,
        lost: produced as i64 - delivered_n as i64 - dead_total as i64 - pending as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> HashSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn every_event_is_counted_once_in_the_first_of_delivered_dead_pending() {
        let dead =
            vec![(3, Some("expired".into())), (3, Some("expired".into())), (4, None), (1, Some("rejected".into()))];
        // 1 delivered and dead; 5 pending and delivered; 4 dead and pending; 6 only pending.
        let l = close(7, &set(&[0, 1, 2, 5]), 2, &dead, &set(&[4, 5, 6]));
        assert_eq!(l.delivered, 4);
        assert_eq!(l.dead_total, 2);
        assert_eq!(l.dead, BTreeMap::from([("(none)".into(), 1), ("expired".into(), 1)]));
        assert_eq!(l.pending, 1);
        assert_eq!((l.duplicates, l.delivered_and_dead), (2, 1));
        assert_eq!(l.lost, 0);
        assert!(!l.void());
    }

    #[test]
    fn a_missing_event_voids_the_run() {
        let l = close(3, &set(&[0, 1]), 0, &[], &set(&[]));
        assert_eq!(l.lost, 1);
        assert!(l.void());
    }
}
