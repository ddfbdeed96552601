//! hookrelay turns events on Kafka into reliable, signed webhook deliveries.
//!
//! ```text
//! event topics ──► consume ──► decode ──► deliver (HTTP POST) ──► classify
//!                                                   │
//!         ┌──────────────── delivered ◄─────────────┤
//!         │                                         ├─► retryable ─► retry tier ─► (due) ─► deliver ...
//!         ▼                                         └─► final ────► dead topic ─► failure handler ─► notify
//!   commit offset (only once the outcome is decided and, for a route, acknowledged by the broker)
//! ```
//!
//! # Layout
//! Modules follow the path of a record:
//! - [`config`]: figment layers, documented structs, defaults, `validate()`.
//! - [`kafka`]: librdkafka settings shared by every client (brokers, TLS, SASL).
//! - [`consume`]: consumer group, partition lifecycle, pause/resume, rebalance; run by every role.
//! - [`event`]: record -> `Event` (decode + validate) and the hop state in relay headers.
//! - [`relay`]: the handler of event and tier records, from decode to route.
//! - [`circuit`]: the per-endpoint circuit breaker.
//! - [`deliver`]: one HTTP attempt (signing, timeout, target guard); no retry logic.
//! - [`sign`]: Standard Webhooks signatures.
//! - [`outcome`]: pure `classify(attempt) -> Outcome`.
//! - [`route`]: pure `plan(outcome) -> Route`, and the producer of tier and dead records.
//! - [`offsets`]: per-partition tracker of the highest contiguous decided offset.
//! - [`notify`]: the failure handler on the dead topic: grouping and sinks (http, email, log).
//! - [`replay`]: re-drives dead records to the event topic.
//! - [`topics`]: `topics ensure` and `send`.
//! - [`metrics`]: every metric name and label, and the events that are both logged and counted.
//! - [`admin`]: `/metrics`, `/live`, `/ready`.
//! - [`shutdown`]: SIGTERM/SIGINT to a cancellation token.
//! - [`app`]: wires the roles of `hookrelay run` together.

pub mod admin;
pub mod app;
pub mod circuit;
pub mod config;
pub mod consume;
pub mod deliver;
pub mod event;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod offsets;
pub mod outcome;
pub mod relay;
pub mod replay;
pub mod route;
pub mod shutdown;
pub mod sign;
pub mod topics;
