//! Shutdown: stop fetching, give in-flight work `shutdown.grace`, abandon the
//! rest, and commit what is decided (a revoke waiting on it is answered).

use std::time::Duration;

use rdkafka::consumer::Consumer;
use tokio::time::Instant;

use super::handler::Handler;
use super::{Loop, Touched};

impl<H: Handler> Loop<H> {
    /// Stop fetching, give in-flight work the grace period, abandon the rest, commit what is decided.
    /// `refused`: the brokers refused the client, so no closing commit can land.
    pub(super) async fn drain(&mut self, refused: bool) {
        tracing::info!(role = self.spec.role.as_str(), in_flight = self.in_flight.records, "draining");
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        for partition in self.partitions.values_mut() {
            // No new work and no resume from here on; waiting records are read again after a restart.
            self.budget.give_back(partition.stop());
            partition.paused = None;
        }
        // Later records are decided by the handler: ask it to do so now, not at its own pace.
        self.handler.flush();
        let deadline = Instant::now() + self.spec.grace;
        while self.in_flight.records > 0 || self.partitions.held > 0 {
            tokio::select! {
                // Draining partitions take no new work: nothing to pump after.
                Some(done) = self.reports.done_rx.recv() => self.complete(done, &mut Touched::default()),
                Some(decision) = self.reports.decide_rx.recv() => self.apply(decision),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let role = self.spec.role.as_str();
        if self.partitions.held > 0 {
            tracing::warn!(role, held = self.partitions.held, "grace period over, held records stay undecided");
        }
        if self.in_flight.records > 0 {
            tracing::warn!(role, abandoned = self.in_flight.records, "grace period over, abandoning in-flight records");
            self.partitions.abandon.cancel();
            self.tasks.close();
            // Abandoned handlers return promptly; their records stay undecided.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
            while let Ok(done) = self.reports.done_rx.try_recv() {
                self.complete(done, &mut Touched::default());
            }
        }
        // Closing: what is decided is committed now, with its map (a revoke waiting on this too).
        if refused {
            tracing::warn!(role, "no closing commit: the brokers refused the client; what was decided since the last commit is read again");
        } else {
            self.offsets.commit_all(&mut self.partitions).await;
        }
        if let Some(revoke) = self.revoke.take() {
            revoke.acknowledge(None);
        }
        self.publish_gauges();
    }
}
