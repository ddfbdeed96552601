//! What every relay consumer of a process shares: endpoints, the HTTP client, endpoint state, the router.

use std::sync::Arc;

use super::*;
use crate::endpoint::registry::{Effect, Entry, Registry};
use crate::observe::attempts::AttemptLog;

/// What every relay consumer (events and each tier) shares.
pub struct Shared {
    pub endpoints: Endpoints,
    pub deliverer: Deliverer,
    /// Every endpoint's limit, pace and circuit.
    pub states: States,
    pub router: Router,
    pub ladder: Ladder,
    pub permanent_statuses: Vec<u16>,
    pub max_age_ms: i64,
    pub max_attempts: u32,
    /// `delivery.max_record_header_bytes`: an event-topic record with more header bytes is dead.
    pub max_record_header_bytes: usize,
    /// Checks the seal of `replay`'s headers on event topics.
    pub replay_key: Option<ReplayKey>,
    /// The attempt log (a no-op when `topics.attempts` is off).
    pub attempts: AttemptLog,
    /// The endpoint registry, when it is on.
    pub registry: Option<Arc<Registry>>,
    /// Which endpoints an event that names none goes to.
    pub subscriptions: crate::endpoint::subscription::Live,
    /// `delivery.max_fanout`: the most legs of one event.
    pub max_fanout: usize,
    /// Fan-out legs in flight per endpoint (see [`super::fanout::LegLoad`]).
    pub leg_load: super::fanout::LegLoad,
    /// `delivery.max_waiting_per_endpoint`.
    pub max_waiting_per_endpoint: usize,
}

/// The relay could not set up its clients.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Http(#[from] crate::endpoint::deliver::ClientError),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl Shared {
    /// `message_max_bytes` is the producer's limit ([`crate::route::sizes`]); `held` counts routes held by a failing produce.
    /// `registry` is the live view of the endpoint registry, when it is on.
    pub fn new(
        config: &Config,
        message_max_bytes: usize,
        held: Arc<Held>,
        registry: Option<Arc<Registry>>,
    ) -> Result<Arc<Shared>, SetupError> {
        Ok(Arc::new(Shared {
            endpoints: Endpoints::new(config).with_registry(registry.clone()),
            deliverer: Deliverer::new(config)?,
            states: States::new(config).with_registry(registry.clone()),
            router: Router::new(config, message_max_bytes, held)?,
            ladder: Ladder::new(config.retry.tiers.iter().map(|t| t.delay), config.retry.jitter),
            permanent_statuses: config.delivery.permanent_statuses.clone(),
            max_age_ms: config.retry.max_age.as_millis() as i64,
            max_attempts: config.retry.max_attempts,
            max_record_header_bytes: usize::try_from(config.delivery.max_record_header_bytes.as_u64())
                .unwrap_or(usize::MAX),
            replay_key: config.replay.key.as_ref().map(|key| ReplayKey::new(key.expose())),
            attempts: AttemptLog::new(config)?,
            subscriptions: crate::endpoint::subscription::Live::new(config, registry.clone()),
            max_fanout: config.delivery.max_fanout,
            leg_load: super::fanout::LegLoad::new(config.delivery.max_in_flight),
            max_waiting_per_endpoint: config.delivery.max_waiting_per_endpoint,
            registry,
        }))
    }

    /// Keeps the per-endpoint state in step with an applied registry change:
    /// a new host, or new limits or pace, start its state afresh (limit, pace
    /// and circuit); secrets, headers and paths keep it.
    pub fn registry_changed(&self, name: &str, effect: Effect, entry: Option<&Entry>) {
        self.subscriptions.changed();
        if matches!(effect, Effect::Host | Effect::Limits) {
            self.states.forget(name);
        }
        if let Err(error) = self.deliverer.set_registered(name, entry.map(|e| &e.spec.endpoint)) {
            tracing::error!(endpoint = name, %error, "the registry endpoint's own HTTP client cannot be built; it uses the shared one");
        }
    }
}
