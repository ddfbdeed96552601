//! The retry delay of the relay's own I/O (a produce to a tier or the dead topic, a
//! notification to a sink): doubling from a first delay up to a ceiling.

use std::time::Duration;

/// Doubling delays: `first`, `2 x first`, ... up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first.min(max), max }
    }

    /// The delay to wait now (the next call returns twice as much, up to `max`).
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Takes the delay to wait now and doubles the next one.
    pub fn advance(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let taken: Vec<u128> = (0..6).map(|_| b.advance().as_millis()).collect();
        assert_eq!(taken, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.peek(), Duration::from_secs(1));
    }
}
