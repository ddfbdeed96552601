//! `hookrelay run`: one consumer for the event topics, one per retry tier, one for the dead topic, and the admin server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consume::{self, Readiness, Role, Spec};
use crate::relay::{Relay, Shared};

/// How long start-up waits for the brokers before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Which roles this process runs (`--role events,retry,dead`).
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub events: bool,
    pub retry: bool,
    pub dead: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { events: true, retry: true, dead: true };

    pub fn parse(text: &str) -> Result<Roles, String> {
        let mut roles = Roles { events: false, retry: false, dead: false };
        for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "events" => roles.events = true,
                "retry" => roles.retry = true,
                "dead" => roles.dead = true,
                other => return Err(format!("unknown role {other:?} (expected events, retry, dead)")),
            }
        }
        if !(roles.events || roles.retry || roles.dead) {
            return Err("no role given".into());
        }
        Ok(roles)
    }
}

pub use crate::kafka::Unavailable;

/// Checks that the brokers answer (and accept our credentials) before anything starts.
pub async fn preflight(config: &Config) -> Result<(), Unavailable> {
    let kafka = config.kafka.clone();
    tokio::task::spawn_blocking(move || crate::kafka::check_connection(&kafka, CONNECT_TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(Unavailable { brokers: config.kafka.brokers.clone(), why: e.to_string() }))
}

/// Runs the chosen roles until SIGTERM/SIGINT (or a fatal error) and the drain is over.
pub async fn run(config: Config, roles: Roles, shutdown: CancellationToken) -> anyhow::Result<()> {
    preflight(&config).await?;
    let mut specs: Vec<(Spec, Option<usize>)> = Vec::new();
    let spec = |role, group_id: String, topics: Vec<String>| Spec {
        role,
        group_id,
        topics,
        max_in_flight: config.delivery.max_in_flight,
        max_in_flight_per_partition: config.delivery.max_in_flight_per_partition,
        max_read_ahead: config.delivery.max_read_ahead_per_partition,
        grace: config.shutdown.grace,
    };
    let group = &config.kafka.group_id;
    if roles.events {
        specs.push((spec(Role::Events, group.clone(), config.topics.events.clone()), None));
    }
    if roles.retry {
        for (index, tier) in config.retry.tiers.iter().enumerate() {
            specs.push((spec(Role::Retry, tier_group(group, &tier.topic), vec![tier.topic.clone()]), Some(index)));
        }
    }
    let consumers = specs.len() + usize::from(roles.dead);
    let readiness = Readiness::new(consumers);
    // The admin server outlives the drain (metrics stay scrapable); it stops last.
    let admin_stop = CancellationToken::new();
    let admin = crate::admin::serve(config.admin.listen, readiness.clone(), admin_stop.clone()).await?;

    let shared = Shared::new(&config)?;
    // A fatal error in one consumer stops them all.
    let stop = shutdown.child_token();
    {
        // Not ready from the first moment of a drain, whether a signal or a fatal error started it.
        let (stop, readiness) = (stop.clone(), readiness.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            readiness.drain();
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, tier) in specs {
        let handler = Arc::new(Relay::new(shared.clone(), tier));
        let (config, stop, readiness) = (config.clone(), stop.clone(), readiness.clone());
        tasks.spawn(async move { consume::run(&config, spec, handler, stop, readiness).await });
    }
    if roles.dead {
        let handler = Arc::new(crate::notify::FailureHandler::new(&config)?);
        let spec = Spec {
            max_in_flight_per_partition: config.delivery.max_in_flight_per_partition.max(1024),
            ..spec(Role::Dead, dead_group(group), vec![config.topics.dead.clone()])
        };
        let (config, stop, readiness) = (config.clone(), stop.clone(), readiness.clone());
        tasks.spawn(async move { consume::run(&config, spec, handler, stop, readiness).await });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(error) = outcome {
            tracing::error!(%error, "consumer stopped");
            stop.cancel();
            if result.is_ok() {
                result = Err(error);
            }
        }
    }
    shared.router.flush(Duration::from_secs(5));
    shutdown.cancel();
    admin_stop.cancel();
    let _ = admin.await;
    tracing::info!("stopped");
    result
}

/// The consumer group of a tier: `<group_id>.<tier topic>`.
pub fn tier_group(group: &str, topic: &str) -> String {
    format!("{group}.{topic}")
}

/// The consumer group of the failure handler: `<group_id>.dead`.
pub fn dead_group(group: &str) -> String {
    format!("{group}.dead")
}
