//! Operator commands beside `run`: [`replay`] re-drives dead records to the event topic;
//! [`topics`]: `topics ensure` and `send`.

pub mod replay;
pub mod topics;
