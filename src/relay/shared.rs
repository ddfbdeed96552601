//! What every relay consumer of a process shares: endpoints, the HTTP client, circuits, limits, the router.

use std::sync::Arc;

use super::*;
use crate::observe::attempts::AttemptLog;
use crate::pace;

/// What every relay consumer (events and each tier) shares.
pub struct Shared {
    pub endpoints: Endpoints,
    pub deliverer: Deliverer,
    pub circuits: Circuits,
    pub router: Router,
    pub ladder: Ladder,
    pub limiter: Limiter,
    pub permanent_statuses: Vec<u16>,
    pub max_age_ms: i64,
    pub max_attempts: u32,
    /// Checks the seal of `replay`'s headers on event topics.
    pub replay_key: Option<ReplayKey>,
    /// The attempt log (a no-op when `topics.attempts` is off).
    pub attempts: AttemptLog,
}

/// The relay could not set up its clients.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Http(#[from] crate::deliver::ClientError),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl Shared {
    /// `message_max_bytes` is the producer's limit ([`crate::sizes`]); `held` counts routes held by a failing produce.
    pub fn new(config: &Config, message_max_bytes: usize, held: Arc<Held>) -> Result<Arc<Shared>, SetupError> {
        Ok(Arc::new(Shared {
            endpoints: Endpoints::new(config),
            deliverer: Deliverer::new(config)?,
            circuits: Circuits::new(config.circuit.clone()),
            router: Router::new(config, message_max_bytes, held)?,
            ladder: Ladder::new(config.retry.tiers.iter().map(|t| t.delay), config.retry.jitter),
            limiter: limiter(config),
            permanent_statuses: config.delivery.permanent_statuses.clone(),
            max_age_ms: config.retry.max_age.as_millis() as i64,
            max_attempts: config.retry.max_attempts,
            replay_key: config.replay.key.as_ref().map(|key| ReplayKey::new(key.expose())),
            attempts: AttemptLog::new(config)?,
        }))
    }
}

/// The adaptive per-endpoint limits, with each configured endpoint's own ceiling and pace.
fn limiter(config: &Config) -> Limiter {
    let ceilings = config.endpoints.iter().filter_map(|(name, e)| e.max_in_flight.map(|n| (name.clone(), n))).collect();
    Limiter::new(config.delivery.max_in_flight_per_endpoint, ceilings).paced(pace_rules(config))
}

/// Each key of an endpoint's pace is its own or `[delivery]`'s; the rest (inline URLs) get `[delivery]`'s.
pub(crate) fn pace_rules(config: &Config) -> pace::Rules {
    let d = &config.delivery;
    let rule = |rate: Option<pace::Rate>, burst: Option<u32>, max_wait: Option<std::time::Duration>| pace::Rule {
        rate,
        burst: burst.or(rate.map(pace::Rate::default_burst)).unwrap_or(1),
        max_wait: max_wait.unwrap_or(d.rate_max_wait),
    };
    let endpoints = config.endpoints.iter().map(|(name, e)| {
        let rate = e.rate_limit.or(d.rate_limit);
        (name.clone(), rule(rate, e.rate_burst.or(d.rate_burst), e.rate_max_wait))
    });
    pace::Rules { default: rule(d.rate_limit, d.rate_burst, None), endpoints: endpoints.collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pace_key_is_the_endpoints_own_or_the_delivery_default() {
        let config = Config::from_toml(
            "[delivery]\nrate_limit = \"600/m\"\nrate_max_wait = \"5s\"\n\
             [endpoints.own]\nurl = \"https://own.example/\"\nrate_limit = \"20/s\"\nrate_burst = 1\n\
             [endpoints.fallback]\nurl = \"https://fallback.example/\"\nrate_max_wait = \"1s\"\n",
        )
        .unwrap();
        let rules = pace_rules(&config);
        let rule = |rate: &str, burst, secs| pace::Rule {
            rate: Some(rate.parse().unwrap()),
            burst,
            max_wait: std::time::Duration::from_secs(secs),
        };
        assert_eq!(rules.of("own"), rule("20/s", 1, 5));
        assert_eq!(rules.of("fallback"), rule("600/m", 10, 1), "one second's worth of 600/m");
        assert_eq!(rules.of("host.example:443"), rule("600/m", 10, 5), "inline URLs get [delivery]'s");
        let none = pace_rules(&Config::default());
        assert_eq!(none.of("any"), pace::Rule::default(), "no rate, 30 s");
    }
}
