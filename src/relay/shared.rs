//! What every relay consumer of a process shares: endpoints, the HTTP client, endpoint state, the router.

use std::sync::Arc;

use super::*;

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
    /// Checks the seal of `replay`'s headers on event topics.
    pub replay_key: Option<ReplayKey>,
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
    pub fn new(config: &Config, message_max_bytes: usize, held: Arc<Held>) -> Result<Arc<Shared>, SetupError> {
        Ok(Arc::new(Shared {
            endpoints: Endpoints::new(config),
            deliverer: Deliverer::new(config)?,
            states: States::new(config),
            router: Router::new(config, message_max_bytes, held)?,
            ladder: Ladder::new(config.retry.tiers.iter().map(|t| t.delay), config.retry.jitter),
            permanent_statuses: config.delivery.permanent_statuses.clone(),
            max_age_ms: config.retry.max_age.as_millis() as i64,
            max_attempts: config.retry.max_attempts,
            replay_key: config.replay.key.as_ref().map(|key| ReplayKey::new(key.expose())),
        }))
    }
}
