//! The endpoint: what a record is sent to and the state kept per endpoint.
//!
//! - [`guard`]: URL and header rules, the endpoint key, the address ranges the target guard refuses.
//! - [`circuit`]: the circuit breaker (pure; returns its transitions).
//! - [`state`]: the one map of per-endpoint state (limit, pace, circuit), evicted together; its [`state::Permit`]
//!   answers "may this endpoint take a record now, and if not, why".
//! - [`limit`]: the adaptive concurrency limit (AIMD with slow start).
//! - [`pace`]: `rate_limit` as a token bucket, and the `Retry-After` hold.
//! - [`egress`]: client certificates, CAs, proxies; [`deliver`]: one HTTP attempt; [`sign`]: Standard Webhooks signatures.
//! - [`registry`]: endpoints as data, from a compacted topic every replica follows.

pub mod circuit;
pub mod deliver;
pub mod egress;
pub mod guard;
pub mod limit;
pub mod pace;
pub mod registry;
pub mod sign;
pub mod state;
