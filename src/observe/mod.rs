//! Watching what the relay did and does: the attempt log, and how long each endpoint's oldest record has waited.

pub mod attempts;
pub mod waiting;
