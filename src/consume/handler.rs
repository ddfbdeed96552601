//! The contract between a consumer's loop and the work done on each record: [`Handler`], [`Ticket`], [`Done`],
//! and [`Decider`]/[`Held`] for a handler that decides a record's offset after it has let go of its slot.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::endpoint::limit::LiveLimit;
use crate::endpoint::pace::Pace;
use crate::observe::metrics;
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
    /// The handler kept the record's [`Held`] (from [`Decider::hold`]): its slot is
    /// free now, its offset waits for [`Held::decide`] (or is never passed if the
    /// `Held` is dropped undecided). Drains wait for held records, after [`Handler::flush`].
    Held,
    /// Not decided: to be worked on again in place at `due_ms` (a record of an
    /// ordered key, retried by the events consumer so that its key keeps its
    /// order). The loop puts it back into its partition's backlog at its
    /// offset; the handler keeps what it learned (the attempts) in the record.
    Again { due_ms: i64 },
}

/// A decision on a held record, sent to the loop that read it.
#[derive(Debug)]
pub(crate) struct Decision {
    pub key: (Arc<str>, i32),
    pub generation: u64,
    pub offset: i64,
    /// `false`: let go undecided (the record will be read again).
    pub decided: bool,
}

/// Given with each record: the way to hold it past its slot. Dropping it unused costs nothing.
#[derive(Debug)]
pub struct Decider {
    pub(crate) tx: mpsc::UnboundedSender<Decision>,
    pub(crate) key: (Arc<str>, i32),
    pub(crate) generation: u64,
    pub(crate) offset: i64,
}

impl Decider {
    /// Takes the record's offset into the handler's keeping; the handler then returns [`Done::Held`].
    pub fn hold(self) -> Held {
        Held { decider: Some(self) }
    }
}

/// A record whose offset a handler decides later. Small (no record): what a
/// handler keeps instead of the record. Dropped undecided, it releases the
/// record without deciding it, so a drain never waits for a lost handle.
#[derive(Debug)]
#[must_use = "a held record is decided with `decide`; dropping it leaves it to be read again"]
pub struct Held {
    decider: Option<Decider>,
}

impl Held {
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

impl Drop for Held {
    fn drop(&mut self) {
        self.send(false);
    }
}

/// The endpoint a record goes to, how many of its records may be in flight and
/// its pace (its rate and `Retry-After` hold), read when scheduling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlot {
    pub key: Arc<str>,
    pub limit: LiveLimit,
    pub pace: Arc<Pace>,
}

impl EndpointSlot {
    /// The endpoint's identity for the loop's counts (cheap: no hashing of its name).
    pub fn id(&self) -> usize {
        self.limit.id()
    }
}

/// Counts keyed by [`EndpointSlot::id`] (small integers: the Fx hash, one multiplication, suits them).
pub type IdMap<V> = rustc_hash::FxHashMap<usize, V>;

/// The order key of a record of an ordered endpoint: its endpoint and its
/// Kafka record key, hashed (see `order::order_key`).
pub type OrderKey = u64;

/// What the loop needs to know to schedule a record, read once when it is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    /// When the record may be worked on (ms since the epoch); `None` = now.
    pub due_ms: Option<i64>,
    /// `None` = no endpoint limit (an invalid record, say).
    pub endpoint: Option<EndpointSlot>,
    /// Set for a record whose endpoint keeps its key's order (see [`super::order`]);
    /// `None` = unordered.
    pub order: Option<OrderKey>,
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

    /// Works on the record until its outcome is decided, or `cancel` fires;
    /// or holds it with `decider` and returns [`Done::Held`].
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

/// Runs `handle`, and `recover` if it panicked, so every task reports a [`Done`]:
/// a panic neither leaks its in-flight slot nor pins its partition's offset.
/// A `recover` that panics too leaves the record undecided (read again after a restart).
pub async fn guarded<H: Handler>(
    handler: Arc<H>,
    role: Role,
    record: Arc<H::Record>,
    work: Work,
    cancel: CancellationToken,
    decider: Decider,
) -> Done {
    // The call is inside the guarded future too: a panic before its first await is caught as well.
    let work = async { handler.clone().handle(record.clone(), work, cancel.clone(), decider).await };
    let why = match AssertUnwindSafe(work).catch_unwind().await {
        Ok(done) => return done,
        Err(panic) => panic_message(&*panic),
    };
    metrics::handler_panicked(role.as_str(), &why);
    AssertUnwindSafe(handler.recover(record, why, cancel)).catch_unwind().await.unwrap_or(Done::Abandoned)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
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
    /// Held records ([`Done::Held`]) of this consumer, at most: at this many, no new work starts.
    pub max_held: usize,
    pub grace: Duration,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Panics on odd records; remembers what `recover` was given.
    #[derive(Default)]
    struct Fragile {
        recovered: Mutex<Vec<(u32, String)>>,
        panic_in_recover: bool,
    }

    impl Handler for Fragile {
        type Record = u32;

        fn prepare(&self, _: OwnedMessage) -> (Ticket, u32) {
            unreachable!("not used by these tests")
        }

        fn handle(
            self: Arc<Self>,
            record: Arc<u32>,
            _: Work,
            _: CancellationToken,
            _: Decider,
        ) -> BoxFuture<'static, Done> {
            async move {
                tokio::task::yield_now().await;
                assert!(*record % 2 == 0, "odd record {record}");
                Done::Decided
            }
            .boxed()
        }

        fn recover(self: Arc<Self>, record: Arc<u32>, why: String, _: CancellationToken) -> BoxFuture<'static, Done> {
            async move {
                assert!(!self.panic_in_recover, "recover fails too");
                self.recovered.lock().unwrap().push((*record, why));
                Done::Decided
            }
            .boxed()
        }
    }

    fn decider() -> Decider {
        let (tx, _) = mpsc::unbounded_channel();
        Decider { tx, key: (Arc::from("t"), 0), generation: 1, offset: 0 }
    }

    #[tokio::test]
    async fn a_panicking_handler_still_reports_done_and_its_record_is_recovered() {
        let handler = Arc::new(Fragile::default());
        let cancel = CancellationToken::new();
        assert_eq!(
            guarded(handler.clone(), Role::Events, Arc::new(2), Work::Attempt, cancel.clone(), decider()).await,
            Done::Decided
        );
        assert!(handler.recovered.lock().unwrap().is_empty(), "no panic, no recovery");
        assert_eq!(
            guarded(handler.clone(), Role::Tier(0), Arc::new(3), Work::Attempt, cancel.clone(), decider()).await,
            Done::Decided
        );
        assert_eq!(*handler.recovered.lock().unwrap(), vec![(3, "odd record 3".to_string())]);

        let broken = Arc::new(Fragile { panic_in_recover: true, ..Fragile::default() });
        assert_eq!(
            guarded(broken, Role::Dead, Arc::new(5), Work::Attempt, cancel, decider()).await,
            Done::Abandoned,
            "a panic in recover is caught too"
        );
    }
}
