//! `hookrelay run`: one consumer for the event topics, one per retry tier, one for the dead topic, and the admin server.

pub mod clock;
pub mod shutdown;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::endpoint::registry::follow::{self, OnChange};
use crate::endpoint::registry::{Effect, Registry};

use crate::config::Config;
use crate::consume::budget::Budget;
use crate::consume::{self, ConsumeError, Handler, PauseReason, Role, Spec};
use crate::observe::readiness::Readiness;
use crate::relay::{Relay, Shared};
use crate::route::held::Held;
use crate::route::Router;

/// How long start-up waits for the brokers before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Dead records held (counted into an open notification window, offset not
/// yet decided) per replica, at most: about 100 bytes each, so tens of MB at
/// worst; at 5,000 dead letters/s a 1 m window holds 300,000.
const MAX_HELD: usize = 1_000_000;

/// Which roles this process runs (`--role events,retry,dead`).
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub events: bool,
    pub retry: bool,
    pub dead: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { events: true, retry: true, dead: true };

    pub fn parse(text: &str) -> Result<Roles, RolesError> {
        let mut roles = Roles { events: false, retry: false, dead: false };
        for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "events" => roles.events = true,
                "retry" => roles.retry = true,
                "dead" => roles.dead = true,
                other => return Err(RolesError::Unknown(other.to_string())),
            }
        }
        if !(roles.events || roles.retry || roles.dead) {
            return Err(RolesError::None);
        }
        Ok(roles)
    }
}

/// A `--role` list that names no role, or one that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolesError {
    #[error("unknown role {0:?} (expected events, retry, dead)")]
    Unknown(String),
    #[error("no role given")]
    None,
}

pub use crate::config::client::Unavailable;

/// Checks that the brokers answer (and accept our credentials) before anything starts.
pub async fn preflight(config: &Config) -> Result<(), Unavailable> {
    let kafka = config.kafka.clone();
    tokio::task::spawn_blocking(move || crate::config::client::check_connection(&kafka, CONNECT_TIMEOUT))
        .await
        .unwrap_or_else(|e| Err(Unavailable { brokers: config.kafka.brokers.clone(), why: e.to_string() }))
}

/// Runs the chosen roles until SIGTERM/SIGINT (or a fatal error) and the drain is over.
pub async fn run(config: Config, roles: Roles, shutdown: CancellationToken) -> anyhow::Result<()> {
    preflight(&config).await?;
    // A tier or dead topic that takes less than the event topics refuses the start (exit 64).
    let message_max_bytes = crate::route::sizes::producer_limit(&crate::route::sizes::read(&config).await)?;
    tracing::debug!(message_max_bytes, "producer record size limit");
    let specs = relay_specs(&config, roles);
    let consumers = specs.len() + usize::from(roles.dead);
    init_series(&config, roles);
    crate::observe::labels::init(crate::observe::labels::EndpointLabels::new(
        config.endpoints.keys().cloned(),
        config.delivery.max_endpoint_labels,
    ));
    crate::observe::waiting::init(config.endpoints.keys().map(String::as_str));
    let held = Arc::new(Held::default());
    // Empty and stale (not ready) until it is read to its end, before any role consumes.
    let registry = (!config.topics.endpoints.is_empty()).then(|| Arc::new(Registry::new(&config)));
    let readiness = Readiness::new(consumers)
        .held_bound(held.clone(), config.kafka.route_held_not_ready_after)
        .registry_bound(registry.clone());
    // The admin server outlives the drain (metrics stay scrapable); it stops last.
    let admin_stop = CancellationToken::new();
    let admin = crate::observe::admin::serve(config.admin.listen, readiness.clone(), admin_stop.clone()).await?;

    // Changes reach the per-endpoint state once it exists; those read before, it is made from.
    let state: Arc<OnceLock<Arc<Shared>>> = Arc::default();
    if let Some(registry) = &registry {
        let state = state.clone();
        let on_change: OnChange = Arc::new(move |name, effect, entry| {
            if let Some(shared) = state.get() {
                shared.registry_changed(name, effect, entry);
            }
        });
        follow::start(&config, registry, on_change, shutdown.clone()).await?;
    }
    let shared = Shared::new(&config, message_max_bytes, held.clone(), registry.clone())?;
    let _ = state.set(shared.clone());
    for (name, entry) in registry.as_ref().map(|r| r.all()).unwrap_or_default() {
        shared.registry_changed(&name, Effect::Kept, Some(&entry));
    }
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
    tasks.spawn(watch_router(shared.router.clone(), held, config.kafka.brokers.clone(), stop.clone()));
    tasks.spawn(evict_idle_endpoints(shared.clone(), stop.clone()));
    let budget = Arc::new(Budget::new(config.delivery.max_buffered_bytes.as_u64() as usize));
    let start = Start { config: &config, budget, stop: stop.clone(), readiness };
    for spec in specs {
        let handler = Arc::new(Relay::new(shared.clone(), spec.role));
        start.consumer(&mut tasks, spec, handler);
    }
    if roles.dead {
        let handler = Arc::new(crate::notify::FailureHandler::new(&config)?);
        let spec =
            consumer_spec(&config, Role::Dead, dead_group(&config.kafka.group_id), vec![config.topics.dead.clone()]);
        start.consumer(&mut tasks, spec, handler);
    }
    let result = join_consumers(tasks, &stop).await;
    shared.router.flush(Duration::from_secs(5));
    // Best effort: the last decisions' log records, if the broker takes them quickly.
    shared.attempts.flush(Duration::from_secs(2));
    shutdown.cancel();
    admin_stop.cancel();
    let _ = admin.await;
    tracing::info!("stopped");
    result
}

/// The relay's consumers of the chosen roles: one for the event topics, one per retry tier.
fn relay_specs(config: &Config, roles: Roles) -> Vec<Spec> {
    let group = &config.kafka.group_id;
    let mut specs = Vec::new();
    if roles.events {
        specs.push(consumer_spec(config, Role::Events, group.clone(), config.topics.events.clone()));
    }
    if roles.retry {
        for (index, tier) in config.retry.tiers.iter().enumerate() {
            specs.push(consumer_spec(
                config,
                Role::Tier(index),
                tier_group(group, &tier.topic),
                vec![tier.topic.clone()],
            ));
        }
    }
    specs
}

/// One consumer's settings: its group and topics, and the limits from `[delivery]` and `[shutdown]`.
fn consumer_spec(config: &Config, role: Role, group_id: String, topics: Vec<String>) -> Spec {
    Spec {
        role,
        group_id,
        topics,
        max_in_flight: config.delivery.max_in_flight,
        max_in_flight_per_partition: config.delivery.max_in_flight_per_partition,
        max_read_ahead: config.delivery.max_read_ahead_per_partition,
        max_waiting_per_endpoint: config.delivery.max_waiting_per_endpoint,
        max_held: MAX_HELD,
        grace: config.shutdown.grace,
    }
}

/// What every consumer task shares: the config, the read budget, the stop signal and readiness.
struct Start<'a> {
    config: &'a Config,
    budget: Arc<Budget>,
    stop: CancellationToken,
    readiness: Readiness,
}

impl Start<'_> {
    fn consumer<H>(&self, tasks: &mut JoinSet<Result<(), ConsumeError>>, spec: Spec, handler: Arc<H>)
    where
        H: Handler,
    {
        let (config, stop, readiness) = (self.config.clone(), self.stop.clone(), self.readiness.clone());
        let budget = self.budget.clone();
        tasks.spawn(async move { consume::run(&config, spec, budget, handler, stop, readiness).await });
    }
}

/// Waits for every task; the first failure stops the others and is the result.
async fn join_consumers(mut tasks: JoinSet<Result<(), ConsumeError>>, stop: &CancellationToken) -> anyhow::Result<()> {
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok(Ok(())) => Ok(()),
            // A refusal keeps its type, so the CLI exits 69 as it does at start-up.
            Ok(Err(ConsumeError::Refused(unavailable))) => Err(anyhow::Error::from(unavailable)),
            Ok(Err(error)) => Err(anyhow::Error::from(error)),
            Err(panicked) => Err(anyhow::Error::from(panicked)),
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "consumer stopped");
            stop.cancel();
            if result.is_ok() {
                result = Err(error);
            }
        }
    }
    result
}

/// Every series an alert or the dashboard reads, at 0 from start-up.
fn init_series(config: &Config, roles: Roles) {
    let run = [(roles.events, Role::Events), (roles.retry, Role::Tier(0)), (roles.dead, Role::Dead)];
    crate::observe::series::init(&crate::observe::series::Known {
        tiers: &config.retry.tiers.iter().map(|t| t.topic.clone()).collect::<Vec<_>>(),
        dead_topic: &config.topics.dead,
        endpoints: config.endpoints.keys().map(String::as_str).collect(),
        sinks: if roles.dead { config.notify.sinks.iter().map(|s| s.kind()).collect() } else { Vec::new() },
        roles: run.iter().filter(|(on, _)| *on).map(|(_, role)| role.as_str()).collect(),
        pause_reasons: &PauseReason::ALL.map(PauseReason::as_str),
    });
}

/// Keeps the held-route gauges current, and turns a fatal producer error into
/// a refusal (exit 69) so the pod restarts with a fresh producer.
async fn watch_router(
    router: Router,
    held: Arc<Held>,
    brokers: String,
    stop: CancellationToken,
) -> Result<(), ConsumeError> {
    let topics: Vec<String> = router.tier_topics().iter().chain([&router.dead_topic().to_string()]).cloned().collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                for topic in &topics {
                    let holding = held.holding(topic, now);
                    crate::observe::metrics::route_held(topic, holding.records, holding.oldest);
                }
            }
            why = router.fatal_error() => {
                let why = format!("fatal producer error: {why}");
                return Err(ConsumeError::Refused(Unavailable { brokers, why }));
            }
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// Forgets the state (limit, pace, circuit) of endpoints idle for a while
/// (inline URLs can name any number of hosts), once a minute.
async fn evict_idle_endpoints(shared: Arc<Shared>, stop: CancellationToken) -> Result<(), ConsumeError> {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                for endpoint in shared.states.evict_idle(now) {
                    crate::observe::metrics::endpoint_evicted(&endpoint);
                }
            }
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// The consumer group of a tier: `<group_id>.<tier topic>`.
pub fn tier_group(group: &str, topic: &str) -> String {
    format!("{group}.{topic}")
}

/// The consumer group of the failure handler: `<group_id>.dead`.
pub fn dead_group(group: &str) -> String {
    format!("{group}.dead")
}
