//! Operator commands beside `run`: [`replay`] re-drives dead records to the event topic;
//! [`topics`]: `topics ensure` and `send`; [`endpoints`]: the endpoint registry's commands.

pub mod endpoints;
pub mod replay;
pub mod topics;
