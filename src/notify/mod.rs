//! The failure handler on the dead topic: log and count every dead record, group them per endpoint within a window, notify the sinks.
//!
//! A dead record's offset is decided once the notification that includes it
//! was sent by every sink, or a sink finally gave up (after
//! `notify.give_up_after` of retries with backoff). Sinks run side by side,
//! so a failing one never delays the others' messages.
//!
//! A dead record does not stay in flight for its window: the handler counts it
//! into its group and keeps only its [`Held`] offset, so the consumer moves on
//! at full speed while memory stays small (counts, a few ids, offsets). A drain
//! or revoke [`flush`](Handler::flush)es: open windows are sent at once and their
//! offsets decided before the final commit, so a deploy does not notify twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor};
use rdkafka::message::OwnedMessage;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::clock::{now_ms, rfc3339};
use crate::config::{Config, HttpFormat, SinkConfig, SmtpTls};
use crate::consume::{Decider, Done, Handler, Held, Ticket, Work};
use crate::event::hop::DeadLetter;
use crate::observe::metrics::{self, Notified};
use crate::route::outcome::DeadReason;

/// Event ids listed in one notification, at most.
const MAX_IDS: usize = 20;

/// The most of the last error (a receiver's text) quoted in the one-line summary, in characters.
const MAX_EXCERPT_CHARS: usize = 300;

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
struct Group {
    count: u64,
    reasons: BTreeMap<String, u64>,
    last_error: Option<String>,
    last_status: Option<u16>,
    first_ms: i64,
    last_ms: i64,
    event_ids: Vec<String>,
    /// The offsets this window covers, decided once it is sent.
    held: Vec<Held>,
}

impl Group {
    fn notification(&self, endpoint: &str) -> Notification {
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

/// The handler of the dead topic.
pub struct FailureHandler {
    window: Duration,
    give_up_after: Duration,
    sinks: Arc<Vec<Sink>>,
    groups: Arc<Mutex<HashMap<String, Group>>>,
    /// Fired by [`Handler::flush`]: every open window is sent now. Replaced
    /// after firing, so windows opened later wait their full time again.
    flush: Mutex<CancellationToken>,
}

impl FailureHandler {
    pub fn new(config: &Config) -> Result<FailureHandler, SinkError> {
        let sinks = config.notify.sinks.iter().map(Sink::new).collect::<Result<Vec<_>, _>>()?;
        Ok(FailureHandler {
            window: config.notify.window,
            give_up_after: config.notify.give_up_after,
            sinks: Arc::new(sinks),
            groups: Arc::default(),
            flush: Mutex::default(),
        })
    }

    /// Adds a dead record to its endpoint's group; `held` is decided once the group's notification is done.
    fn add(&self, dead: &DeadLetter, held: Held) {
        let endpoint = dead.endpoint.as_str();
        let at_ms = dead.at_ms.unwrap_or_else(now_ms);
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        let opened = !groups.contains_key(endpoint);
        let group = groups.entry(endpoint.to_string()).or_default();
        if opened {
            group.first_ms = at_ms;
        }
        group.count += 1;
        *group.reasons.entry(dead.reason.map_or("unknown", DeadReason::as_str).to_string()).or_default() += 1;
        group.first_ms = group.first_ms.min(at_ms);
        group.last_ms = group.last_ms.max(at_ms);
        if dead.last_error.is_some() {
            group.last_error = dead.last_error.clone();
            group.last_status = dead.last_status;
        }
        if group.event_ids.len() < MAX_IDS {
            group.event_ids.push(dead.id.clone());
        }
        group.held.push(held);
        if opened {
            let (groups, sinks, endpoint) = (self.groups.clone(), self.sinks.clone(), endpoint.to_string());
            let (window, give_up_after) = (self.window, self.give_up_after);
            let flush = self.flush.lock().expect("flush lock poisoned").clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(window) => {}
                    _ = flush.cancelled() => {}
                }
                let group = groups.lock().expect("groups lock poisoned").remove(&endpoint);
                if let Some(group) = group {
                    let notification = group.notification(&endpoint);
                    futures::future::join_all(sinks.iter().map(|s| s.deliver(&notification, give_up_after))).await;
                    group.held.into_iter().for_each(Held::decide);
                }
            });
        }
    }
}

impl Handler for FailureHandler {
    type Record = DeadLetter;

    fn prepare(&self, record: OwnedMessage) -> (Ticket, DeadLetter) {
        (Ticket::default(), DeadLetter::read(&record))
    }

    /// The dead topic has no endpoint limits, so `Work::Defer` never comes here.
    /// Holds every record: its offset is decided when its window was sent (or gave up).
    fn handle(
        self: Arc<Self>,
        dead: Arc<DeadLetter>,
        _: Work,
        _: CancellationToken,
        decider: Decider,
    ) -> BoxFuture<'static, Done> {
        metrics::dead_letter_handled(&dead);
        self.add(&dead, decider.hold());
        futures::future::ready(Done::Held).boxed()
    }

    /// Sends every open window now; windows opened from here on wait their full time.
    fn flush(&self) {
        std::mem::take(&mut *self.flush.lock().expect("flush lock poisoned")).cancel();
    }

    /// A dead record whose handling panicked is not produced anywhere again:
    /// the panic was counted, the record is logged and decided.
    fn recover(self: Arc<Self>, dead: Arc<DeadLetter>, why: String, _: CancellationToken) -> BoxFuture<'static, Done> {
        let here = &dead.here;
        tracing::error!(
            id = dead.id,
            topic = here.topic,
            partition = here.partition,
            offset = here.offset,
            why,
            "dead letter not notified: its handler panicked"
        );
        futures::future::ready(Done::Decided).boxed()
    }
}

/// A sink could not be set up, or one message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Without its URL: a sink URL is a credential (a Slack webhook's path is its key).
    #[error("http: {0}")]
    Http(reqwest::Error),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("email: {0}")]
    Email(String),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<reqwest::Error> for SinkError {
    fn from(error: reqwest::Error) -> SinkError {
        SinkError::Http(error.without_url())
    }
}

/// A configured destination of notifications.
enum Sink {
    Http { client: reqwest::Client, url: String, format: HttpFormat, headers: Vec<(String, String)> },
    Email { transport: AsyncSmtpTransport<Tokio1Executor>, from: String, to: Vec<String> },
    Log,
}

impl Sink {
    fn new(config: &SinkConfig) -> Result<Sink, SinkError> {
        Ok(match config {
            SinkConfig::Http { url, format, headers } => Sink::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .user_agent(crate::endpoint::deliver::USER_AGENT)
                    .build()?,
                url: url.expose().to_string(),
                format: *format,
                headers: headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect(),
            },
            SinkConfig::Email { host, port, tls, username, password, from, to } => {
                let mut builder = match tls {
                    SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                };
                let default_port = match tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                };
                builder = builder.port(port.unwrap_or(default_port)).timeout(Some(Duration::from_secs(10)));
                if let (Some(user), Some(password)) = (username, password) {
                    builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
                }
                Sink::Email { transport: builder.build(), from: from.clone(), to: to.clone() }
            }
            SinkConfig::Log => Sink::Log,
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Sink::Http { .. } => "http",
            Sink::Email { .. } => "email",
            Sink::Log => "log",
        }
    }

    /// Sends, retrying with backoff (1 s doubling to 30 s) until sent or `give_up_after` has passed.
    async fn deliver(&self, notification: &Notification, give_up_after: Duration) {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_secs(1);
        let endpoint = notification.endpoint.as_str();
        loop {
            match self.send_once(notification).await {
                Ok(()) => return metrics::notification(self.kind(), endpoint, Notified::Sent, None),
                Err(error) if started.elapsed() + backoff > give_up_after => {
                    return metrics::notification(self.kind(), endpoint, Notified::GaveUp, Some(&error));
                }
                Err(error) => {
                    metrics::notification(self.kind(), endpoint, Notified::Failed { retry_in: backoff }, Some(&error))
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn send_once(&self, n: &Notification) -> Result<(), SinkError> {
        match self {
            Sink::Http { client, url, format, headers } => {
                let body = match format {
                    HttpFormat::Json => serde_json::to_vec(n),
                    HttpFormat::Slack => serde_json::to_vec(&serde_json::json!({ "text": slack_escape(&n.text) })),
                }?;
                let mut request = client.post(url).header("content-type", "application/json").body(body);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                let response = request.send().await?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(SinkError::Status(response.status().as_u16()))
                }
            }
            Sink::Email { transport, from, to } => {
                let noun = if n.count == 1 { "webhook" } else { "webhooks" };
                let mut message = Email::builder()
                    .from(from.parse().map_err(|e| SinkError::Email(format!("from: {e}")))?)
                    .subject(format!("[hookrelay] {} {noun} to {} failed", n.count, n.endpoint))
                    .header(ContentType::TEXT_PLAIN);
                for address in to {
                    message = message.to(address.parse().map_err(|e| SinkError::Email(format!("to: {e}")))?);
                }
                let message = message.body(email_body(n)).map_err(|e| SinkError::Email(e.to_string()))?;
                transport.send(message).await?;
                Ok(())
            }
            Sink::Log => {
                tracing::error!(
                    endpoint = n.endpoint, count = n.count, reasons = ?n.reasons, last_error = n.last_error,
                    first_failed_at = n.first_failed_at, last_failed_at = n.last_failed_at, "{}", n.text
                );
                Ok(())
            }
        }
    }
}

fn email_body(n: &Notification) -> String {
    let mut body = format!("{}\n\nEndpoint: {}\nFailed: {}\n", n.text, n.endpoint, n.count);
    for (reason, count) in &n.reasons {
        body.push_str(&format!("  {reason}: {count}\n"));
    }
    body.push_str(&format!("First: {}\nLast: {}\n", n.first_failed_at, n.last_failed_at));
    if let Some(error) = &n.last_error {
        // One line, so a receiver's text cannot pose as the relay's own lines.
        body.push_str(&format!("Last error: {}\n", one_line(error, crate::observe::metrics::MAX_LOGGED_ERROR_BYTES)));
    }
    if !n.event_ids.is_empty() {
        body.push_str(&format!("Event ids: {}\n", n.event_ids.join(", ")));
    }
    body.push_str("\nRe-drive them once the receiver is fixed: hookrelay replay --endpoint <name>\n");
    body
}

/// Receiver text made inert for a one-line message: control characters
/// (line breaks included) become spaces, and it is cut to `max_chars` with `…`.
fn one_line(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// Escapes Slack's control characters, so receiver text quoted in a message
/// cannot ping a channel (`<!channel>`) or post a link (`<url|label>`).
/// <https://api.slack.com/reference/surfaces/formatting#escaping>
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_text_in_a_notification_is_inert() {
        let body =
            format!("HTTP 500: <!channel> <https://evil.example|click> & more\nRe-drive: run this{}", "x".repeat(2000));
        let group = Group { count: 1, last_error: Some(body), ..Group::default() };
        let n = group.notification("billing");
        let slack = slack_escape(&n.text);
        assert!(slack.contains("&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; more"), "{slack}");
        assert!(!slack.contains('<') && !slack.contains('>'), "{slack}");
        let excerpt = n.text.split("last error: ").nth(1).unwrap().split(", between").next().unwrap();
        assert_eq!(excerpt.chars().count(), MAX_EXCERPT_CHARS + 1, "capped, with an ellipsis: {excerpt}");
        assert!(!n.text.contains('\n'), "one line");
        let email = email_body(&n);
        let line = email.lines().find(|l| l.starts_with("Last error: ")).unwrap();
        assert!(line.contains("more Re-drive: run this"), "the receiver's line break is gone: {line}");
        assert!(!email.lines().any(|l| l.starts_with("Re-drive: run this")));
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
        let body = email_body(&n);
        assert!(body.contains("expired: 2") && body.contains("Last error: HTTP 503: down"), "{body}");
    }
}
