//! The process's memory budget for records read and not yet decided (`delivery.max_buffered_bytes`).
//!
//! Every consumer of a process adds a record's size when it reads it and
//! takes it off when the record is done (or dropped at a revoke). While the
//! budget is spent, partitions pause for capacity; they resume below
//! [`RESUME_AT`] of it, so they do not flap at the edge.

use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::message::{Headers, Message, OwnedMessage};

/// Paused partitions resume once the bytes held are below this share of the budget.
pub const RESUME_AT: f64 = 0.9;

/// Bytes held besides payload, key and headers, per record (the loop's own
/// bookkeeping and librdkafka's message struct, roughly).
pub const RECORD_OVERHEAD: usize = 256;

/// Bytes held per record header besides its name and value (its two copies'
/// allocations and entries: librdkafka's and the relay's decoded one).
pub const HEADER_OVERHEAD: usize = 64;

/// Bytes of a record's headers, names and values: what `max_record_header_bytes` bounds.
pub fn header_bytes(record: &OwnedMessage) -> usize {
    record.headers().map_or(0, |headers| crate::event::headers::byte_size(headers.as_borrowed()))
}

/// What a record costs the budget while it is read and not yet decided: its
/// payload and key, its headers (copied twice, each with [`HEADER_OVERHEAD`])
/// and [`RECORD_OVERHEAD`]. A record of a million tiny headers counts as the
/// tens of MB it holds, not as 256 B.
pub fn record_bytes(record: &OwnedMessage) -> usize {
    let headers = record.headers().map_or(0, |h| h.count());
    record.payload().map_or(0, <[u8]>::len)
        + record.key().map_or(0, <[u8]>::len)
        + 2 * header_bytes(record)
        + headers * HEADER_OVERHEAD
        + RECORD_OVERHEAD
}

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
    fn record_headers_count_in_the_budget() {
        use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
        let record = |headers: Option<OwnedHeaders>| {
            OwnedMessage::new(Some(vec![0; 100]), Some(vec![0; 10]), "t".into(), Timestamp::NotAvailable, 0, 0, headers)
        };
        assert_eq!(record_bytes(&record(None)), 110 + RECORD_OVERHEAD);
        // Ten thousand tiny headers (a 1-byte name and value each): 20 KB of data,
        // before counted as nothing.
        let many = (0..10_000).fold(OwnedHeaders::new(), |h, _| h.insert(Header { key: "k", value: Some("v") }));
        let bombed = record(Some(many));
        assert_eq!(header_bytes(&bombed), 20_000);
        assert_eq!(record_bytes(&bombed), 110 + 2 * 20_000 + 10_000 * HEADER_OVERHEAD + RECORD_OVERHEAD);
        // A name that is not UTF-8 is counted, not a panic (rdkafka's `iter` unwraps it as UTF-8).
        let odd = crate::event::headers::add(OwnedHeaders::new(), b"\xff\xfe", Some(b"value"));
        assert_eq!(header_bytes(&record(Some(odd))), 7);
    }

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
