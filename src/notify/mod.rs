//! The failure handler on the dead topic: log and count every dead record, group them per endpoint within a window, notify the sinks.
//!
//! A dead record's offset is decided once the notification that includes it
//! was sent by every sink, or a sink finally gave up (after
//! `notify.give_up_after` of retries with backoff). Sinks run side by side,
//! so a failing one never delays the others' messages.
//!
//! A dead record does not stay in flight for its window: the handler counts it
//! into its group and keeps only its [`Later`] offset, so the consumer moves on
//! at full speed while memory stays small (counts, a few ids, offsets). A drain
//! or revoke [`flush`](Handler::flush)es: open windows are sent at once and their
//! offsets decided before the final commit, so a deploy does not notify twice.

mod sinks;
mod window;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use self::sinks::Sink;
pub use self::sinks::SinkError;
pub use self::window::Notification;
use self::window::Windows;
use crate::app::clock::now_ms;
use crate::config::Config;
use crate::consume::{Decider, Done, Handler, Later, Ticket, Work};
use crate::event::dead_letter::DeadLetter;
use crate::observe::metrics;

/// The handler of the dead topic.
pub struct FailureHandler {
    window: Duration,
    give_up_after: Duration,
    sinks: Arc<Vec<Sink>>,
    windows: Arc<Mutex<Windows>>,
    /// Fired by [`Handler::flush`]: every open window is sent now. Replaced
    /// after firing, so windows opened later wait their full time again.
    flush: Mutex<CancellationToken>,
}

impl FailureHandler {
    pub fn new(config: &Config) -> Result<FailureHandler, SinkError> {
        let sinks = config.notify.sinks.iter().map(Sink::new).collect::<Result<Vec<_>, _>>()?;
        Ok(FailureHandler {
            window: config.notify.window,
            give_up_after: config.notify.give_up_after,
            sinks: Arc::new(sinks),
            windows: Arc::default(),
            flush: Mutex::default(),
        })
    }

    /// Adds a dead record to its endpoint's window; `held` is decided once the
    /// window's notification is done. The record that opens a window starts its timer.
    fn add(&self, dead: &DeadLetter, held: Later) {
        let at_ms = dead.at_ms.unwrap_or_else(now_ms);
        let opened = self.windows.lock().expect("windows lock poisoned").add(dead, at_ms, held);
        if opened {
            let (windows, sinks, endpoint) = (self.windows.clone(), self.sinks.clone(), dead.endpoint.clone());
            let (window, give_up_after) = (self.window, self.give_up_after);
            let flush = self.flush.lock().expect("flush lock poisoned").clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(window) => {}
                    _ = flush.cancelled() => {}
                }
                let group = windows.lock().expect("windows lock poisoned").close(&endpoint);
                if let Some(group) = group {
                    let notification = group.notification(&endpoint);
                    futures::future::join_all(sinks.iter().map(|s| s.deliver(&notification, give_up_after))).await;
                    group.held.into_iter().for_each(Later::decide);
                }
            });
        }
    }
}

impl Handler for FailureHandler {
    type Record = DeadLetter;

    fn prepare(&self, record: OwnedMessage) -> (Ticket, DeadLetter) {
        (Ticket::default(), DeadLetter::read(&record))
    }

    /// The dead topic has no endpoint limits, so `Work::Defer` never comes here.
    /// Holds every record: its offset is decided when its window was sent (or gave up).
    fn handle(
        self: Arc<Self>,
        dead: Arc<DeadLetter>,
        _: Work,
        _: CancellationToken,
        decider: Decider,
    ) -> BoxFuture<'static, Done> {
        metrics::dead_letter_handled(&dead);
        self.add(&dead, decider.later());
        futures::future::ready(Done::Later).boxed()
    }

    /// Sends every open window now; windows opened from here on wait their full time.
    fn flush(&self) {
        std::mem::take(&mut *self.flush.lock().expect("flush lock poisoned")).cancel();
    }

    /// A dead record whose handling panicked is not produced anywhere again:
    /// the panic was counted, the record is logged and decided.
    fn recover(self: Arc<Self>, dead: Arc<DeadLetter>, why: String, _: CancellationToken) -> BoxFuture<'static, Done> {
        let here = &dead.here;
        tracing::error!(
            id = dead.id,
            topic = here.topic,
            partition = here.partition,
            offset = here.offset,
            why,
            "dead letter not notified: its handler panicked"
        );
        futures::future::ready(Done::Decided).boxed()
    }
}
