//! `hookrelay_endpoint_oldest_waiting_seconds{endpoint}`: the age of the oldest undecided record of each endpoint in this replica.
//!
//! Consumer lag is a total: one endpoint that stopped answering hides in the
//! average of many healthy ones (and makes an autoscaler add replicas that
//! cannot help). This gauge names the endpoint. A record is tracked from the
//! moment its consumer read it until it is decided or let go (the [`Waiting`]
//! guard lives in the record); its age counts from the original event's
//! timestamp, so an event that has been through the tiers for an hour is an
//! hour old. Endpoints with nothing waiting read 0. The gauge is computed when
//! scraped, so tracking costs one short lock per record read and one per decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use crate::app::clock::now_ms;

/// Per endpoint label: the event times of its undecided records (time -> how many).
#[derive(Default)]
struct Ages(HashMap<Arc<str>, BTreeMap<i64, u32>>);

/// The process's tracker, registered as a collector with the other metrics on first use.
struct Tracker {
    ages: Mutex<Ages>,
    gauge: GaugeVec,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Ages> {
        // Each holder changes one count: a poisoned map is still a valid one.
        self.ages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static TRACKER: LazyLock<Arc<Tracker>> = LazyLock::new(|| {
    let opts = Opts::new(
        "hookrelay_endpoint_oldest_waiting_seconds",
        "Age (since its event was first written) of the oldest record of this endpoint read and not yet decided by this replica; 0 when none.",
    );
    let tracker =
        Arc::new(Tracker { ages: Mutex::default(), gauge: GaugeVec::new(opts, &["endpoint"]).expect("valid metric") });
    crate::observe::metrics::register(&crate::observe::metrics::get().registry, Collected(tracker.clone()));
    tracker
});

#[derive(Clone)]
struct Collected(Arc<Tracker>);

/// Registers the gauge (on first use; for the list of metric names).
pub(crate) fn registered() -> bool {
    LazyLock::force(&TRACKER);
    true
}

impl Collector for Collected {
    fn desc(&self) -> Vec<&Desc> {
        self.0.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = now_ms();
        for (endpoint, ages) in &self.0.lock().0 {
            let oldest = ages.keys().next().map_or(0.0, |&since| (now - since).max(0) as f64 / 1000.0);
            self.0.gauge.with_label_values(&[endpoint]).set(oldest);
        }
        self.0.gauge.collect()
    }
}

/// Starts the gauge at 0 for endpoints known at start-up (so an alert sees the series from the start).
pub fn init<'a>(endpoints: impl IntoIterator<Item = &'a str>) {
    let mut ages = TRACKER.lock();
    for endpoint in endpoints {
        let label = crate::observe::labels::endpoint(endpoint);
        if !ages.0.contains_key(label) {
            ages.0.insert(label.into(), BTreeMap::new());
        }
    }
}

/// One undecided record, counted under its endpoint's label until dropped.
#[derive(Debug)]
pub struct Waiting {
    label: Arc<str>,
    since_ms: i64,
}

/// Tracks a record of `endpoint` (its key; labelled as the other endpoint
/// series) whose event was written at `since_ms`.
pub fn track(endpoint: &str, since_ms: i64) -> Waiting {
    let label = crate::observe::labels::endpoint(endpoint);
    let mut ages = TRACKER.lock();
    let label = match ages.0.get_key_value(label) {
        Some((key, _)) => key.clone(),
        None => {
            let key: Arc<str> = label.into();
            ages.0.insert(key.clone(), BTreeMap::new());
            key
        }
    };
    *ages.0.get_mut(&label).expect("inserted above").entry(since_ms).or_default() += 1;
    Waiting { label, since_ms }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut ages = TRACKER.lock();
        if let Some(times) = ages.0.get_mut(&self.label) {
            if let Some(count) = times.get_mut(&self.since_ms) {
                *count -= 1;
                if *count == 0 {
                    times.remove(&self.since_ms);
                }
            }
        }
    }
}

/// The oldest waiting age of `label` in ms at `now`, for tests.
#[cfg(test)]
fn oldest_ms(label: &str, now: i64) -> Option<i64> {
    TRACKER.lock().0.get(label).map(|ages| ages.keys().next().map_or(0, |&since| now - since))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_undecided_record_sets_the_age_until_it_is_decided() {
        let endpoint = "waiting-test.example";
        let old = track(endpoint, 1_000);
        let also_old = track(endpoint, 1_000);
        let young = track(endpoint, 5_000);
        assert_eq!(oldest_ms(endpoint, 10_000), Some(9_000));
        drop(old);
        assert_eq!(oldest_ms(endpoint, 10_000), Some(9_000), "another record of the same time still waits");
        drop(also_old);
        assert_eq!(oldest_ms(endpoint, 10_000), Some(5_000));
        drop(young);
        assert_eq!(oldest_ms(endpoint, 10_000), Some(0), "nothing waiting: 0, the series stays");
        let text = crate::observe::metrics::render();
        assert!(
            text.contains("hookrelay_endpoint_oldest_waiting_seconds{endpoint=\"waiting-test.example\"} 0"),
            "{text}"
        );
    }
}
