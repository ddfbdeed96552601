//! Operator commands beside `run`: [`replay`] re-drives dead records to the event topic;
//! [`topics`]: `topics ensure` and `send`; [`trace`]: the attempt-log records of one event.

pub mod replay;
pub mod topics;
pub mod trace;
