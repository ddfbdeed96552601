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
//!   `handler` (the contract with the work on a record, panics caught), `partition` (a partition's
//!   state), `schedule` (the pure scheduler), `order` (per-key order), `intake` (assignments and records
//!   into partition state), `pump` (completions out, work in), `budget` (the memory budget in bytes),
//!   `offsets` (highest contiguous decided offset), `held` (offsets decided after the slot is free),
//!   `revoke` (letting partitions go within the grace), and the loop itself.
//! - [`relay`]: the handler of event and tier records, from decode to route (`in_place`: ordered
//!   records retried in place).
//! - [`notify`]: the failure handler on the dead topic: grouping and sinks (http, email, log).
//! - [`ops`]: operator commands: `replay` (dead records back to the event topic), `topics` (`topics ensure`, `send`).
//! - [`observe`]: metrics and logged events, the bounded endpoint label, alerted series, readiness,
//!   the admin server, OTLP span export.
//! - [`route`]: pure `plan(outcome) -> Route` over the retry ladder and the producer of tier and dead
//!   records; `outcome` (`classify`, `Outcome`, `Route`, `DeadReason`), `sizes` (the producer's
//!   record size limit), `held` (routes held by a failing produce).
//! - [`endpoint`]: where a record is sent and the state kept per endpoint: `guard`, `circuit`,
//!   `limit`, `pace`, `egress`, `deliver` (one HTTP attempt), `sign`.
//! - [`event`]: record -> `Event` (decode + validate); `hop` (the relay's headers), `seal` (the
//!   replay seal), `headers` (a record's headers as bytes: the one `unsafe` module), `trace_context`
//!   (the W3C trace context a record carries to its requests). Tests only: `fuzz`.
//! - [`config`]: figment layers, documented structs by concern (`kafka`, `delivery`, `notify`), the
//!   redacting secret types (`secret`), `validate()`, and `client`: librdkafka settings shared by every
//!   client, and what counts as a refusal.

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
