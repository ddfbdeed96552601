//! The grouping window: the dead records of one endpoint within a window make
//! one [`Notification`]. Pure: no clock and no I/O (the role in `mod.rs`
//! times the window and the sinks send the message).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::app::clock::rfc3339;
use crate::consume::Later;
use crate::event::dead_letter::DeadLetter;
use crate::route::outcome::DeadReason;

/// Event ids listed in one notification, at most.
const MAX_IDS: usize = 20;

/// The most of the last error (a receiver's text) quoted in the one-line summary, in characters.
pub(super) const MAX_EXCERPT_CHARS: usize = 300;

/// One message about the dead records of one endpoint within a window.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Notification {
    /// The one-line summary; also the whole Slack message.
    pub text: String,
    pub endpoint: String,
    pub count: u64,
    pub reasons: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    pub first_failed_at: String,
    pub last_failed_at: String,
    /// The first few event ids (`webhook-id` defaults), for looking them up.
    pub event_ids: Vec<String>,
}

/// Dead records of one endpoint waiting for their window to close.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) count: u64,
    pub(super) reasons: BTreeMap<String, u64>,
    pub(super) last_error: Option<String>,
    pub(super) last_status: Option<u16>,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
    pub(super) event_ids: Vec<String>,
    /// The offsets this window covers, decided once it is sent.
    pub(super) held: Vec<Later>,
}

impl Group {
    /// Counts a dead record written at `at_ms` into the group; `held` is its
    /// offset, decided once the group's notification is done.
    fn count_in(&mut self, dead: &DeadLetter, at_ms: i64, held: Later) {
        self.count += 1;
        *self.reasons.entry(dead.reason.map_or("unknown", DeadReason::as_str).to_string()).or_default() += 1;
        self.first_ms = self.first_ms.min(at_ms);
        self.last_ms = self.last_ms.max(at_ms);
        if dead.last_error.is_some() {
            self.last_error = dead.last_error.clone();
            self.last_status = dead.last_status;
        }
        if self.event_ids.len() < MAX_IDS {
            self.event_ids.push(dead.id.clone());
        }
        self.held.push(held);
    }

    pub(super) fn notification(&self, endpoint: &str) -> Notification {
        let reasons = self.reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>().join(", ");
        let noun = if self.count == 1 { "webhook" } else { "webhooks" };
        let mut text = format!("{} {noun} to {endpoint} failed ({reasons})", self.count);
        if let Some(error) = &self.last_error {
            text.push_str(&format!(", last error: {}", one_line(error, MAX_EXCERPT_CHARS)));
        }
        text.push_str(&format!(", between {} and {}", rfc3339(self.first_ms), rfc3339(self.last_ms)));
        Notification {
            text,
            endpoint: endpoint.to_string(),
            count: self.count,
            reasons: self.reasons.clone(),
            last_error: self.last_error.clone(),
            last_status: self.last_status,
            first_failed_at: rfc3339(self.first_ms),
            last_failed_at: rfc3339(self.last_ms),
            event_ids: self.event_ids.clone(),
        }
    }
}

/// The open windows, one per endpoint.
#[derive(Debug, Default)]
pub(super) struct Windows(HashMap<String, Group>);

impl Windows {
    /// Counts a dead record written at `at_ms` into its endpoint's window;
    /// true when this record opened that window.
    pub(super) fn add(&mut self, dead: &DeadLetter, at_ms: i64, held: Later) -> bool {
        let endpoint = dead.endpoint.as_str();
        let opened = !self.0.contains_key(endpoint);
        let group = self.0.entry(endpoint.to_string()).or_default();
        if opened {
            group.first_ms = at_ms;
        }
        group.count_in(dead, at_ms, held);
        opened
    }

    /// Closes the window of `endpoint`, if open.
    pub(super) fn close(&mut self, endpoint: &str) -> Option<Group> {
        self.0.remove(endpoint)
    }
}

/// Receiver text made inert for a one-line message: control characters
/// (line breaks included) become spaces, and it is cut to `max_chars` with `…`.
pub(super) fn one_line(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_reads_as_one_message() {
        let mut group = Group { count: 3, first_ms: 1_700_000_000_000, last_ms: 1_700_000_042_000, ..Group::default() };
        group.reasons.insert("expired".into(), 2);
        group.reasons.insert("rejected".into(), 1);
        group.last_error = Some("HTTP 503: down".into());
        let n = group.notification("billing");
        assert_eq!(
            n.text,
            "3 webhooks to billing failed (expired: 2, rejected: 1), last error: HTTP 503: down, \
             between 2023-11-14T22:13:20.000Z and 2023-11-14T22:14:02.000Z"
        );
    }
}
