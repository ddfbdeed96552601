//! The panic guard: every handler task reports a [`Done`], whether its work panicked or not.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::handler::{Done, Handler, Role, Work};
use super::later::Decider;
use crate::observe::metrics;

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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::consume::handler::{Handler, Role, Work};
    use crate::consume::ticket::Ticket;
    use futures::future::BoxFuture;
    use rdkafka::message::OwnedMessage;
    use tokio::sync::mpsc;

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
