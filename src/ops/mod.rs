//! Operator commands beside `run`: [`replay`] re-drives dead records to the event topic;
//! [`topics`]: `topics ensure` and `send`; [`endpoints`]: the endpoint registry's commands;
//! [`trace`]: the attempt-log records of one event.

pub mod endpoints;
pub mod replay;
pub mod topics;
pub mod trace;
