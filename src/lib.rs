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
//! Modules follow the path of a record; arrows between them point one way,
//! from the top of this list (wiring) to the bottom (leaves).
//! - [`app`]: wires the roles of `hookrelay run` together; [`admin`]: `/metrics`, `/live`, `/ready`;
//!   [`readiness`]: the latch behind `/ready`; [`shutdown`]: SIGTERM/SIGINT to a cancellation token.
//! - [`consume`]: the consumer every role runs: `client` (librdkafka callbacks, poll thread),
//!   `handler` (the contract with the work on a record), `partition` (state and the pure scheduler),
//!   `held` (offsets decided after the slot is free), `revoke`, and the loop itself.
//! - [`relay`]: the handler of event and tier records, from decode to route.
//! - [`notify`]: the failure handler on the dead topic: grouping and sinks (http, email, log).
//! - [`replay`]: re-drives dead records to the event topic. [`topics`]: `topics ensure` and `send`.
//! - [`circuit`]: the per-endpoint circuit breaker (pure; returns its transitions).
//! - [`deliver`]: one HTTP attempt (signing, timeout, target guard); no retry logic.
//! - [`route`]: pure `plan(outcome) -> Route` over the retry ladder, and the producer of tier and dead records.
//! - [`metrics`]: every metric name and label, and each event that is both logged and counted.
//! - [`hop`]: the relay's headers: names, the hop state read from them, the headers written on
//!   tier, dead and replayed records, the dead-letter reader.
//! - [`event`]: record value -> `Event` (decode + validate).
//! - [`kafka`]: librdkafka settings shared by every client, and what counts as a refusal.
//! - [`config`]: figment layers, documented structs by concern (`kafka`, `delivery`, `notify`), `validate()`.
//! - Leaves: [`outcome`] (`classify`, `Outcome`, `Route`, `DeadReason`), [`target`] (URL and header
//!   rules, endpoint key, the guard's address ranges), [`offsets`] (highest contiguous decided offset),
//!   [`sign`] (Standard Webhooks signatures), [`seal`] (the replay seal that tells `replay`'s
//!   headers from a producer's), [`clock`] (ms since the epoch, RFC 3339).

pub mod admin;
pub mod app;
pub mod circuit;
pub mod clock;
pub mod concurrency;
pub mod config;
pub mod consume;
pub mod deliver;
pub mod event;
pub mod hop;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod offsets;
pub mod outcome;
pub mod readiness;
pub mod relay;
pub mod replay;
pub mod route;
pub mod seal;
pub mod shutdown;
pub mod sign;
pub mod target;
pub mod topics;
