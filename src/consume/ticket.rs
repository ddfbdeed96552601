//! What the loop learns of a record when it reads it, to schedule it: its [`Ticket`] (due time,
//! endpoint slot, order key), made once by the handler's `prepare`.

use std::sync::Arc;

use super::order::Order;
use crate::endpoint::limit::LiveLimit;
use crate::endpoint::pace::Pace;

/// The endpoint a record goes to, how many of its records may be in flight and
/// its pace (its rate and `Retry-After` hold), read when scheduling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlot {
    pub key: Arc<str>,
    pub limit: LiveLimit,
    pub pace: Arc<Pace>,
}

impl EndpointSlot {
    /// The endpoint's identity for the loop's counts (cheap: no hashing of its name).
    pub fn id(&self) -> usize {
        self.limit.id()
    }
}

/// What the loop needs to know to schedule a record, read once when it is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    /// When the record may be worked on (ms since the epoch); `None` = now.
    pub due_ms: Option<i64>,
    /// `None` = no endpoint limit (an invalid record, say).
    pub endpoint: Option<EndpointSlot>,
    /// Set for a record whose endpoint keeps its key's order, one key per
    /// ordered leg for a fan-out (see [`super::order`]); empty = unordered.
    pub order: Order,
}
