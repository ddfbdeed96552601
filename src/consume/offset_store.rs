//! The offset store: a partition's new commit position goes to librdkafka,
//! which commits it in the background, on revoke and on close.
//!
//! Positions come from each partition's offset tracker, which takes decisions
//! in any order: at once for a record its handler decided, later for one the
//! handler held past its slot (a [`Later`](super::Later) decides it; the loop
//! counts held records per partition, since a drain or revoke waits for them).
//! A decision for an assignment that is gone (its generation differs) is
//! ignored: the next owner reads the record again.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::client::KafkaConsumer;
use super::partition::PartitionKey;

/// Where decided offsets go.
pub struct OffsetStore {
    consumer: Arc<KafkaConsumer>,
}

impl OffsetStore {
    pub fn new(consumer: Arc<KafkaConsumer>) -> OffsetStore {
        OffsetStore { consumer }
    }

    /// Stores a partition's new commit position.
    pub fn store(&self, key: &PartitionKey, position: i64) {
        let mut tpl = TopicPartitionList::new();
        let stored = tpl
            .add_partition_offset(&key.0, key.1, Offset::Offset(position))
            .and_then(|()| self.consumer.store_offsets(&tpl));
        if let Err(error) = stored {
            tracing::debug!(topic = &*key.0, partition = key.1, position, %error, "offset not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use crate::consume::later::{Decider, Decision, Later};

    fn decider(tx: &mpsc::UnboundedSender<Decision>, offset: i64) -> Decider {
        Decider { tx: tx.clone(), key: (Arc::from("dead"), 0), generation: 7, offset }
    }

    #[test]
    fn a_held_record_reports_once_decided_or_dropped() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let held: Later = decider(&tx, 5).later();
        held.decide();
        let d = rx.try_recv().unwrap();
        assert_eq!((d.offset, d.generation, d.decided), (5, 7, true));
        assert!(rx.try_recv().is_err(), "deciding sends one message, the drop after it none");

        drop(decider(&tx, 6).later());
        let d = rx.try_recv().unwrap();
        assert_eq!((d.offset, d.decided), (6, false), "dropped undecided: let go, so a drain does not wait for it");

        drop(decider(&tx, 7));
        assert!(rx.try_recv().is_err(), "an unused decider says nothing");
    }
}
