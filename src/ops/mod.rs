//! Operator commands beside `run`.

pub mod trace;
