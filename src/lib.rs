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
//! Folders follow the path of a record; arrows between them point one way,
//! from the top of this list (wiring) to the bottom (leaves).
//! - [`app`]: wires the roles of `hookrelay run` together; `shutdown` (SIGTERM/SIGINT to a
//!   cancellation token), `clock` (ms since the epoch, RFC 3339).
//! - [`consume`]: the consumer every role runs: `client` (librdkafka callbacks, poll thread),
//!   `handler` (the contract with the work on a record), `ticket` (what the loop learns of a record
//!   when it reads it), `later` (records whose offset a handler decides after their slot is free),
//!   `panics` (the guard that turns a panic into a decision), `partition` (a partition's state),
//!   `schedule` (the pure scheduler), `order` (per-key order), `intake` (the partition map:
//!   assignments and records into it), `pump` (the scheduler's choice to handlers), `budget` (the
//!   memory budget in bytes), `offsets` (highest contiguous decided offset), `offset_store` (decided
//!   positions to librdkafka), `revoke` (letting partitions go within the grace), `error`, and the loop.
//! - [`relay`]: the handler of event and tier records, from decode to route (`attempt`: one attempt
//!   through the endpoint's permit; `in_place`: ordered records retried in place).
//! - [`notify`]: the failure handler on the dead topic: `window` (grouping) and `sinks` (http, email, log).
//! - [`ops`]: operator commands: `replay` (dead records back to the event topic), `topics` (`topics ensure`, `send`),
//!   `endpoints` (the endpoint registry: put, get, list, delete, rotate-secret),
//!   `trace` (the attempt-log records of one event).
//! - [`observe`]: metrics and logged events, the bounded endpoint label, alerted series, readiness,
//!   the admin server, OTLP span export; `attempts` (the attempt log: one record per attempt and
//!   decision, best effort, counted), `waiting` (the age of each endpoint's oldest undecided record).
//! - [`route`]: pure `plan(outcome) -> Route` over the retry ladder and the producer of tier and dead
//!   records; `outcome` (`classify`, `Outcome`, `Why` a record was deferred, `Route`, `DeadReason`),
//!   `sizes` (the producer's record size limit), `held` (routes held by a failing produce),
//!   `backoff` (the retry delay of the relay's own I/O).
//! - [`endpoint`]: where a record is sent and the state kept per endpoint: `state` (the one map of
//!   per-endpoint state: limit, pace and circuit, one eviction; its permit answers whether the
//!   endpoint may take a record now), `guard`, `circuit`, `limit`, `pace`, `egress`, `deliver` (one
//!   HTTP attempt), `sign`, `registry` (endpoints as data: a compacted topic every replica follows).
//! - [`event`]: record -> `Event` (decode + validate); `hop` (the relay's headers), `trust` (which of
//!   them an event topic may carry), `dead_letter` (the dead-letter reader), `seal` (the replay seal),
//!   `headers` (a record's headers as bytes: the one `unsafe` module), `trace_context` (the W3C trace
//!   context a record carries to its requests). Tests only: `fuzz`.
//! - [`config`]: figment layers, one struct per section that validates itself (`kafka`, `delivery`,
//!   `notify`), the redacting secret types (`secret`), `error`, and `client`: librdkafka settings
//!   shared by every client, and what counts as a refusal.

pub mod app;
pub mod config;
pub mod consume;
pub mod endpoint;
pub mod event;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod relay;
pub mod route;
