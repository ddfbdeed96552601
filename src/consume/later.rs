//! Records whose offset a handler decides after it let go of their slot (the dead role's
//! notifications): the [`Decider`] given with each record, and the [`Later`] a handler keeps.

use tokio::sync::mpsc;

use super::partition::PartitionKey;

/// A decision on a held record, sent to the loop that read it.
#[derive(Debug)]
pub(crate) struct Decision {
    pub key: PartitionKey,
    pub generation: u64,
    pub offset: i64,
    /// `false`: let go undecided (the record will be read again).
    pub decided: bool,
}

/// Given with each record: the way to hold it past its slot. Dropping it unused costs nothing.
#[derive(Debug)]
pub struct Decider {
    pub(crate) tx: mpsc::UnboundedSender<Decision>,
    pub(crate) key: PartitionKey,
    pub(crate) generation: u64,
    pub(crate) offset: i64,
}

impl Decider {
    /// Takes the record's offset into the handler's keeping; the handler then returns [`Done::Later`](super::handler::Done::Later).
    pub fn later(self) -> Later {
        Later { decider: Some(self) }
    }
}

/// A record whose offset a handler decides later. Small (no record): what a
/// handler keeps instead of the record. Dropped undecided, it releases the
/// record without deciding it, so a drain never waits for a lost handle.
#[derive(Debug)]
#[must_use = "a held record is decided with `decide`; dropping it leaves it to be read again"]
pub struct Later {
    decider: Option<Decider>,
}

impl Later {
    /// The offset may pass this record.
    pub fn decide(mut self) {
        self.send(true);
    }

    fn send(&mut self, decided: bool) {
        if let Some(d) = self.decider.take() {
            // A closed loop has stopped: nothing left to decide.
            let _ = d.tx.send(Decision { key: d.key, generation: d.generation, offset: d.offset, decided });
        }
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        self.send(false);
    }
}
