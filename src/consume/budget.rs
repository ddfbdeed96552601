//! The process's memory budget for records read and not yet decided (`delivery.max_buffered_bytes`).
//!
//! Every consumer of a process adds a record's size when it reads it and
//! takes it off when the record is done (or dropped at a revoke). While the
//! budget is spent, partitions pause for capacity; they resume below
//! [`RESUME_AT`] of it, so they do not flap at the edge.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Paused partitions resume once the bytes held are below this share of the budget.
pub const RESUME_AT: f64 = 0.9;

/// Bytes held besides payload, key and headers, per record (the loop's own
/// bookkeeping and librdkafka's message struct, roughly).
pub const RECORD_OVERHEAD: usize = 256;

#[derive(Debug)]
pub struct Budget {
    max: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget { max, used: AtomicUsize::new(0) }
    }

    pub fn take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether reading must stop; `paused` applies the hysteresis of a partition already paused.
    pub fn spent(&self, paused: bool) -> bool {
        let used = self.used() as f64;
        if paused {
            used >= self.max as f64 * RESUME_AT
        } else {
            used >= self.max as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_at_the_budget_and_free_again_below_nine_tenths() {
        let b = Budget::new(1000);
        b.take(999);
        assert!(!b.spent(false));
        b.take(1);
        assert!(b.spent(false));
        b.give_back(50);
        assert!(!b.spent(false), "a running partition reads on below the budget");
        assert!(b.spent(true), "a paused one waits until below 900");
        b.give_back(51);
        assert!(!b.spent(true));
        assert_eq!(b.used(), 899);
    }
}
