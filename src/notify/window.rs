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

/// The most of one event id shown (SPEC: an id is at most 256 bytes).
const MAX_ID_CHARS: usize = 256;

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
            // Receiver text, inert and short in every sink (JSON, log, email).
            last_error: self.last_error.as_deref().map(|error| one_line(error, MAX_EXCERPT_CHARS)),
            last_status: self.last_status,
            first_failed_at: rfc3339(self.first_ms),
            last_failed_at: rfc3339(self.last_ms),
            event_ids: self.event_ids.iter().map(|id| one_line(id, MAX_ID_CHARS)).collect(),
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

/// Messages sent per window (`notify.window`), at most: dead letters to many
/// inline hosts must not become as many Slack messages or emails. The groups
/// past it roll into one summary, sent when the window ends.
pub(super) const MAX_MESSAGES_PER_WINDOW: usize = 20;

/// The message budget of one window and the groups rolled past it.
#[derive(Debug)]
pub(super) struct Cap {
    max: usize,
    window_ms: i64,
    started_ms: i64,
    sent: usize,
    /// The groups rolled into the summary, merged, and how many endpoints they were.
    rolled: Option<(Group, u64)>,
}

/// What becomes of a group whose window closed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Its own message.
    Send,
    /// Rolled into the summary; `Some(at_ms)` when it is the first, so the
    /// caller sends the summary then ([`Cap::summary`]).
    Rolled(Option<i64>),
}

impl Cap {
    pub(super) fn new(max: usize, window_ms: i64) -> Cap {
        Cap { max, window_ms: window_ms.max(1), started_ms: i64::MIN, sent: 0, rolled: None }
    }

    /// Counts a group closing at `now_ms` against the window's budget.
    pub(super) fn admit(&mut self, group: Group, now_ms: i64) -> (Admit, Option<Group>) {
        if now_ms.saturating_sub(self.started_ms) >= self.window_ms && self.rolled.is_none() {
            (self.started_ms, self.sent) = (now_ms, 0);
        }
        if self.sent < self.max && self.rolled.is_none() {
            self.sent += 1;
            return (Admit::Send, Some(group));
        }
        let first = self.rolled.is_none();
        let (summary, endpoints) =
            self.rolled.get_or_insert_with(|| (Group { first_ms: i64::MAX, ..Group::default() }, 0));
        summary.merge(group);
        *endpoints += 1;
        (Admit::Rolled(first.then_some(self.started_ms.saturating_add(self.window_ms))), None)
    }

    /// The summary of the rolled groups ("and 312 other endpoints"), taken;
    /// a new window starts with it.
    pub(super) fn summary(&mut self, now_ms: i64) -> Option<(Notification, Group)> {
        let (group, endpoints) = self.rolled.take()?;
        (self.started_ms, self.sent) = (now_ms, 1);
        let mut n = group.notification(&format!("{endpoints} other endpoints"));
        let noun = if group.count == 1 { "webhook" } else { "webhooks" };
        n.text = n.text.replacen(
            &format!("{} {noun} to {endpoints} other endpoints failed", group.count),
            &format!("and {endpoints} other endpoints: {} {noun} failed", group.count),
            1,
        );
        Some((n, group))
    }
}

impl Group {
    /// Adds `other`'s counts and offsets to this group (the summary).
    fn merge(&mut self, other: Group) {
        self.count += other.count;
        for (reason, n) in other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
        if other.last_error.is_some() {
            (self.last_error, self.last_status) = (other.last_error, other.last_status);
        }
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.event_ids.extend(other.event_ids.into_iter().take(MAX_IDS.saturating_sub(self.event_ids.len())));
        self.held.extend(other.held);
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
    fn past_the_cap_groups_roll_into_one_summary_per_window() {
        let group = |ms| {
            let mut g = Group { count: 2, first_ms: ms, last_ms: ms, ..Group::default() };
            g.reasons.insert("forbidden_target".into(), 2);
            g
        };
        let mut cap = Cap::new(3, 60_000);
        let t0 = 1_700_000_000_000;
        let admitted: Vec<Admit> = (0..10).map(|i| cap.admit(group(t0 + i), t0 + i).0).collect();
        assert_eq!(&admitted[..3], &[Admit::Send, Admit::Send, Admit::Send]);
        assert_eq!(admitted[3], Admit::Rolled(Some(t0 + 60_000)), "the first rolled one schedules the summary");
        assert!(admitted[4..].iter().all(|a| *a == Admit::Rolled(None)));
        let (n, _) = cap.summary(t0 + 60_000).unwrap();
        assert!(n.text.starts_with("and 7 other endpoints: 14 webhooks failed (forbidden_target: 14)"), "{}", n.text);
        assert_eq!(n.count, 14);
        assert!(cap.summary(t0 + 60_000).is_none(), "sent once");
        // The summary was this window's first message: two more go on their own, then they roll again.
        let next: Vec<Admit> = (0..3).map(|i| cap.admit(group(t0 + 60_001), t0 + 60_001 + i).0).collect();
        assert_eq!(next, vec![Admit::Send, Admit::Send, Admit::Rolled(Some(t0 + 120_000))]);
    }

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
