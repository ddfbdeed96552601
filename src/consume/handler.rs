//! The contract between a consumer's loop and the work done on each record: [`Handler`], what the loop
//! learns of a record when it reads it ([`Ticket`]), what it asks ([`Work`]) and hears back ([`Done`]).
//! A handler that decides a record's offset after letting go of its slot does so through [`super::later`];
//! [`super::panics`] keeps a panicking handler from pinning its partition.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use super::later::Decider;
use super::ticket::Ticket;
use crate::route::outcome::Why;

/// Which part of the relay a consumer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The event topics: first attempts.
    Events,
    /// Tier `index` of the ladder: records wait there until they are due.
    Tier(usize),
    /// The dead topic: the failure handler.
    Dead,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Events => "events",
            Role::Tier(_) => "retry",
            Role::Dead => "dead",
        }
    }
}

/// What became of a record a handler was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Its outcome is decided (delivered, or a route acknowledged): the offset may pass it.
    Decided,
    /// Given up at shutdown or revoke: it will be read again.
    Abandoned,
    /// The handler kept the record's [`Later`](super::later::Later) (from [`Decider::later`]): its slot is
    /// free now, its offset waits for [`Later::decide`](super::later::Later::decide) (or is never passed if the
    /// `Later` is dropped undecided). Drains wait for held records, after [`Handler::flush`].
    Later,
    /// Not decided: to be worked on again in place at `due_ms` (a record of an
    /// ordered key, retried by the events consumer so that its key keeps its
    /// order). The loop puts it back into its partition's backlog at its
    /// offset; the handler keeps what it learned (the attempts) in the record.
    Again { due_ms: i64 },
}

/// What a handler is asked to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Work on it: attempt, classify, route.
    Attempt,
    /// Its endpoint cannot take it in time (too many of its records waiting in
    /// this partition, or its pace would keep it waiting longer than
    /// `rate_max_wait`): pass it on without an attempt, as an open circuit does.
    Defer(Why),
}

/// Works on one record at a time; many run concurrently.
pub trait Handler: Send + Sync + 'static {
    /// A record as the handler keeps it between being read and being worked on.
    type Record: Send + Sync + 'static;

    /// Reads what the handler needs from a record, once, when the loop accepts
    /// it: the loop keeps the result, so nothing is parsed or copied twice.
    fn prepare(&self, record: OwnedMessage) -> (Ticket, Self::Record);

    /// Bytes a prepared record will hold besides what it was read with (a
    /// fan-out's legs), counted with it in `delivery.max_buffered_bytes`.
    fn held_bytes(&self, _record: &Self::Record) -> usize {
        0
    }

    /// Works on the record until its outcome is decided, or `cancel` fires;
    /// or holds it with `decider` and returns [`Done::Later`].
    fn handle(
        self: Arc<Self>,
        record: Arc<Self::Record>,
        work: Work,
        cancel: CancellationToken,
        decider: Decider,
    ) -> BoxFuture<'static, Done>;

    /// Decides held records now, as far as it can (a drain or revoke is waiting for them).
    fn flush(&self) {}

    /// Decides a record whose `handle` panicked (`why` is the panic's message).
    /// A panic is a bug, never a reason to hold the partition: the record is
    /// set aside (dead letter `internal_error`, or logged in the dead role).
    fn recover(
        self: Arc<Self>,
        record: Arc<Self::Record>,
        why: String,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Done>;
}

/// One consumer: its group, topics and limits.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: Role,
    pub group_id: String,
    pub topics: Vec<String>,
    pub max_in_flight: usize,
    pub max_in_flight_per_partition: usize,
    /// Records read but waiting, per partition, before the partition is paused.
    pub max_read_ahead: usize,
    /// Due records of one endpoint waiting in one partition before the overflow is deferred.
    pub max_waiting_per_endpoint: usize,
    /// Later records ([`Done::Later`]) of this consumer, at most: at this many, no new work starts.
    pub max_held: usize,
    pub grace: Duration,
}
