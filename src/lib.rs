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
//!   `handler` (the contract with the work on a record, panics caught), `partition` (state and the
//!   pure scheduler), `order` (per-key order: the key gate the scheduler asks), `intake` (assignments
//!   and records into partition state), `budget` (the process's memory budget in bytes), `held` (offsets
//!   decided after the slot is free), `revoke` (letting partitions go within the grace), and the loop itself.
//! - [`relay`]: the handler of event and tier records, from decode to route (`in_place`: ordered
//!   records retried in place).
//! - [`notify`]: the failure handler on the dead topic: grouping and sinks (http, email, log).
//! - [`replay`]: re-drives dead records to the event topic. [`topics`]: `topics ensure` and `send`.
//!   [`ops`]: `trace` (the attempt-log records of one event).
//! - [`observe`]: the attempt log (`attempts`: one record per attempt and decision, best effort,
//!   counted) and the age of each endpoint's oldest undecided record (`waiting`).
//! - [`circuit`]: the per-endpoint circuit breaker (pure; returns its transitions).
//! - [`concurrency`]: the adaptive concurrency limit per endpoint (AIMD with slow start); it keeps each endpoint's pace.
//! - [`deliver`]: one HTTP attempt (signing, timeout, target guard, the endpoint's own client); no retry logic.
//! - [`route`]: pure `plan(outcome) -> Route` over the retry ladder, and the producer of tier and dead records;
//!   [`sizes`]: the producer's record size limit, read from the topics at start-up; [`held`]: routes
//!   held by a failing produce (gauges, `/ready`).
//! - [`metrics`]: every metric name and label, and each event that is both logged and counted;
//!   [`labels`]: the bounded `endpoint` label; [`series`]: the alerted series, at 0 from start-up;
//!   [`otel`]: span export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`hop`]: the relay's headers: names, the hop state read from them, the headers written on
//!   tier, dead and replayed records, the dead-letter reader.
//! - [`event`]: record value -> `Event` (decode + validate).
//! - [`kafka`]: librdkafka settings shared by every client, and what counts as a refusal.
//! - [`config`]: figment layers, documented structs by concern (`kafka`, `delivery`, `notify`),
//!   the redacting secret types (`secret`), `validate()`.
//! - Leaves: [`outcome`] (`classify`, `Outcome`, `Route`, `DeadReason`), [`target`] (URL and header
//!   rules, endpoint key, the guard's address ranges), [`pace`] (an endpoint's `rate_limit` as a token
//!   bucket, and its `Retry-After` hold), [`egress`] (client certificates, CAs, proxies), [`offsets`] (highest contiguous decided offset),
//!   [`sign`] (Standard Webhooks signatures), [`seal`] (the replay seal that tells `replay`'s
//!   headers from a producer's), [`clock`] (ms since the epoch, RFC 3339), [`headers`]
//!   (a record's headers as bytes, read and written without assuming UTF-8 keys: the one `unsafe` module),
//!   [`trace`] (the W3C trace context a record carries to its requests).
//! - Tests only: `fuzz`, property tests at scale over the decoder and record headers.

pub mod admin;
pub mod app;
pub mod circuit;
pub mod clock;
pub mod concurrency;
pub mod config;
pub mod consume;
pub mod deliver;
pub mod egress;
pub mod event;
pub mod headers;
pub mod held;
pub mod hop;
pub mod kafka;
pub mod labels;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod offsets;
pub mod ops;
pub mod otel;
pub mod outcome;
pub mod pace;
pub mod readiness;
pub mod relay;
pub mod replay;
pub mod route;
pub mod seal;
pub mod series;
pub mod shutdown;
pub mod sign;
pub mod sizes;
pub mod target;
pub mod topics;
pub mod trace;

#[cfg(test)]
mod fuzz;
