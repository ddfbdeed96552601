//! The readiness latch behind `/ready`: ready once every consumer joined its group, never again once a drain starts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::metrics;

/// Readiness latch: ready once every consumer of the process joined its
/// group; not ready again from the moment a drain starts (SIGTERM).
#[derive(Clone, Default)]
pub struct Readiness {
    expected: usize,
    joined: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new(consumers: usize) -> Readiness {
        Readiness { expected: consumers, ..Readiness::default() }
    }

    /// One consumer joined its group (called once per consumer).
    pub fn joined_one(&self) {
        self.joined.fetch_add(1, Ordering::SeqCst);
        metrics::get().ready.set(i64::from(self.is_ready()));
    }

    /// The process is shutting down: not ready any more, for good.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::get().ready.set(0);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.joined.load(Ordering::SeqCst) >= self.expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_a_latch() {
        let r = Readiness::new(2);
        assert!(!r.is_ready());
        r.joined_one();
        assert!(!r.is_ready(), "one of two consumers joined");
        r.joined_one();
        assert!(r.is_ready());
        r.drain();
        assert!(!r.is_ready(), "draining is not ready");
        r.joined_one();
        assert!(!r.is_ready(), "and stays so");
    }
}
