//! What an attempt came to and where that sends a record: [`Attempt`], [`Outcome`] and the pure `classify`
//! (SPEC "Outcomes", table-tested), and the [`Route`] and [`DeadReason`] that `route::plan` decides.

use std::time::{Duration, SystemTime};

/// What one HTTP attempt came to, before any decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered.
    Response {
        status: u16,
        /// The raw `Retry-After` header, if any.
        retry_after: Option<String>,
        /// Up to 64 KiB of the body, lossily decoded, for the error record.
        body: String,
    },
    /// No answer within the timeout.
    Timeout,
    /// Connect, DNS, TLS or protocol failure.
    Transport(String),
    /// The target guard refused the address.
    Forbidden(String),
}

/// What the relay does with a record after an attempt (or instead of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered { status: u16 },
    /// Try again later; `retry_after` is what the receiver asked for.
    Retryable { status: Option<u16>, error: String, retry_after: Option<Duration> },
    /// No attempt was made: the endpoint could not take the record now ([`Why`]).
    Deferred(Why),
    /// Read from a tier before its own due time (a tier holds a record for at
    /// most its delay): no attempt; it laps the last tier until `due_ms`.
    NotYet { due_ms: i64 },
    /// Never retried: a permanent status or a forbidden target.
    Final { reason: FinalReason, status: Option<u16>, error: String },
}

/// Why a record was passed on to the next tier without an attempt: the one
/// answer to "why was it deferred", from the scheduler to the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The endpoint's circuit is open.
    Circuit,
    /// The endpoint had more records waiting in the partition than `delivery.max_waiting_per_endpoint`.
    Overflow,
    /// The endpoint's pace (its `rate_limit`, or a `Retry-After` hold) would have kept it waiting past `rate_max_wait`.
    Pace,
    /// The event names an endpoint this replica does not know (yet): the
    /// registry is on and `registry.unknown_grace` has not passed.
    Unknown,
}

impl Why {
    /// The `hookrelay-last-error` of a record deferred for this reason.
    pub fn describe(self, endpoint: &str) -> String {
        match self {
            Why::Circuit => format!("deferred: circuit open for {endpoint}"),
            Why::Overflow => format!("deferred: {endpoint} has too many records waiting (overflow)"),
            Why::Unknown => format!("deferred: unknown endpoint {endpoint:?} (waiting registry.unknown_grace for it)"),
            Why::Pace => {
                format!("deferred: {endpoint} is paced (rate_limit or Retry-After) and this record would wait past rate_max_wait")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalReason {
    Rejected,
    ForbiddenTarget,
}

/// Where a record goes after its outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Delivered,
    /// To tier `index` of the ladder, not to be attempted before `due_ms`.
    Tier {
        index: usize,
        due_ms: i64,
    },
    Dead {
        reason: DeadReason,
    },
}

/// The `hookrelay-reason` of a dead record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadReason {
    InvalidEvent,
    Rejected,
    Expired,
    MaxAttempts,
    ForbiddenTarget,
    /// Larger than a tier or the producer takes.
    TooLarge,
    /// The handler failed in a way it could not classify (a panic).
    InternalError,
}

impl DeadReason {
    pub const ALL: [DeadReason; 7] = [
        DeadReason::InvalidEvent,
        DeadReason::Rejected,
        DeadReason::Expired,
        DeadReason::MaxAttempts,
        DeadReason::ForbiddenTarget,
        DeadReason::TooLarge,
        DeadReason::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::InvalidEvent => "invalid_event",
            DeadReason::Rejected => "rejected",
            DeadReason::Expired => "expired",
            DeadReason::MaxAttempts => "max_attempts",
            DeadReason::ForbiddenTarget => "forbidden_target",
            DeadReason::TooLarge => "too_large",
            DeadReason::InternalError => "internal_error",
        }
    }

    pub fn parse(text: &str) -> Option<DeadReason> {
        DeadReason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for DeadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an attempt. `now` resolves an HTTP-date `Retry-After`.
pub fn classify(attempt: &Attempt, permanent_statuses: &[u16], now: SystemTime) -> Outcome {
    match attempt {
        Attempt::Response { status, .. } if (200..300).contains(status) => Outcome::Delivered { status: *status },
        Attempt::Response { status, body, .. } if permanent_statuses.contains(status) => {
            Outcome::Final { reason: FinalReason::Rejected, status: Some(*status), error: status_error(*status, body) }
        }
        Attempt::Response { status, retry_after, body } => Outcome::Retryable {
            status: Some(*status),
            error: status_error(*status, body),
            retry_after: retry_after.as_deref().and_then(|v| parse_retry_after(v, now)),
        },
        Attempt::Timeout => Outcome::Retryable { status: None, error: "timeout".into(), retry_after: None },
        Attempt::Transport(e) => Outcome::Retryable { status: None, error: e.clone(), retry_after: None },
        Attempt::Forbidden(e) => {
            Outcome::Final { reason: FinalReason::ForbiddenTarget, status: None, error: e.clone() }
        }
    }
}

fn status_error(status: u16, body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in
/// the past means "now" (zero); anything unparsable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> Attempt {
        Attempt::Response { status, retry_after: retry_after.map(String::from), body: String::new() }
    }

    #[test]
    fn the_outcome_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let retry = |status, after| Outcome::Retryable {
            status: Some(status),
            error: format!("HTTP {status}"),
            retry_after: after,
        };
        let table: Vec<(Attempt, &[u16], Outcome)> = vec![
            (response(200, None), &[410], Outcome::Delivered { status: 200 }),
            (response(204, None), &[410], Outcome::Delivered { status: 204 }),
            (response(299, None), &[410], Outcome::Delivered { status: 299 }),
            (
                response(410, None),
                &[410],
                Outcome::Final { reason: FinalReason::Rejected, status: Some(410), error: "HTTP 410".into() },
            ),
            (
                response(400, None),
                &[400, 410],
                Outcome::Final { reason: FinalReason::Rejected, status: Some(400), error: "HTTP 400".into() },
            ),
            (response(410, None), &[], retry(410, None)),
            (response(301, None), &[410], retry(301, None)),
            (response(404, None), &[410], retry(404, None)),
            (response(429, Some("7")), &[410], retry(429, Some(Duration::from_secs(7)))),
            (response(503, Some(&later)), &[410], retry(503, Some(Duration::from_secs(90)))),
            (response(503, Some("soon")), &[410], retry(503, None)),
            (response(500, None), &[410], retry(500, None)),
            (Attempt::Timeout, &[410], Outcome::Retryable { status: None, error: "timeout".into(), retry_after: None }),
            (
                Attempt::Transport("connection refused".into()),
                &[410],
                Outcome::Retryable { status: None, error: "connection refused".into(), retry_after: None },
            ),
            (
                Attempt::Forbidden("127.0.0.1 is loopback".into()),
                &[410],
                Outcome::Final {
                    reason: FinalReason::ForbiddenTarget,
                    status: None,
                    error: "127.0.0.1 is loopback".into(),
                },
            ),
        ];
        for (attempt, permanent, expected) in table {
            assert_eq!(classify(&attempt, permanent, now), expected, "{attempt:?}");
        }
    }

    #[test]
    fn the_body_is_kept_in_the_error() {
        let attempt = Attempt::Response { status: 503, retry_after: None, body: " down for maintenance\n".into() };
        let Outcome::Retryable { error, .. } = classify(&attempt, &[410], SystemTime::now()) else { panic!() };
        assert_eq!(error, "HTTP 503: down for maintenance");
    }

    #[test]
    fn retry_after_in_the_past_is_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
