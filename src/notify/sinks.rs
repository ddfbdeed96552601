//! The transports of notifications: an HTTP POST (JSON or Slack), an email over SMTP, a log line.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor};

use super::window::{one_line, Notification};
use crate::config::{HttpFormat, SinkConfig, SmtpTls};
use crate::observe::metrics::{self, Notified};
use crate::route::backoff::Backoff;

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
pub(super) enum Sink {
    Http { client: reqwest::Client, url: String, format: HttpFormat, headers: Vec<(String, String)> },
    Email { transport: AsyncSmtpTransport<Tokio1Executor>, from: String, to: Vec<String> },
    Log,
}

impl Sink {
    pub(super) fn new(config: &SinkConfig) -> Result<Sink, SinkError> {
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
    pub(super) async fn deliver(&self, notification: &Notification, give_up_after: Duration) {
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let endpoint = notification.endpoint.as_str();
        loop {
            let retry_in = backoff.peek();
            match self.send_once(notification).await {
                Ok(()) => return metrics::notification(self.kind(), endpoint, Notified::Sent, None),
                Err(error) if started.elapsed() + retry_in > give_up_after => {
                    return metrics::notification(self.kind(), endpoint, Notified::GaveUp, Some(&error));
                }
                Err(error) => metrics::notification(self.kind(), endpoint, Notified::Failed { retry_in }, Some(&error)),
            }
            tokio::time::sleep(backoff.advance()).await;
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

/// Escapes Slack's control characters, so receiver text quoted in a message
/// cannot ping a channel (`<!channel>`) or post a link (`<url|label>`).
/// <https://api.slack.com/reference/surfaces/formatting#escaping>
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::window::Group;

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
        assert_eq!(
            excerpt.chars().count(),
            crate::notify::window::MAX_EXCERPT_CHARS + 1,
            "capped, with an ellipsis: {excerpt}"
        );
        assert!(!n.text.contains('\n'), "one line");
        let email = email_body(&n);
        let line = email.lines().find(|l| l.starts_with("Last error: ")).unwrap();
        assert!(line.contains("more Re-drive: run this"), "the receiver's line break is gone: {line}");
        assert!(!email.lines().any(|l| l.starts_with("Re-drive: run this")));
    }

    #[test]
    fn an_email_lists_reasons_and_the_last_error() {
        let mut group = Group { count: 3, first_ms: 1_700_000_000_000, last_ms: 1_700_000_042_000, ..Group::default() };
        group.reasons.insert("expired".into(), 2);
        group.last_error = Some("HTTP 503: down".into());
        let body = email_body(&group.notification("billing"));
        assert!(body.contains("expired: 2") && body.contains("Last error: HTTP 503: down"), "{body}");
    }
}
