//! `[notify]`: where the failure handler sends its messages (http, email, log).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::secret::Secret;

/// The failure handler's notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Dead letters of one endpoint within this window make one message. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a failing sink keeps retrying one message before giving up. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Where messages go. Default: one `log` sink.
    pub sinks: Vec<SinkConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            window: Duration::from_secs(60),
            give_up_after: Duration::from_secs(300),
            sinks: vec![SinkConfig::Log],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON POST to an operator URL.
    Http {
        /// The whole URL is a credential (a Slack webhook's path is its key).
        url: Secret,
        /// `json` (default) or `slack` (`{"text": ...}`).
        #[serde(default)]
        format: HttpFormat,
        /// Extra request headers (for an auth token, say).
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
    },
    /// SMTP.
    Email {
        /// SMTP server host.
        host: String,
        /// Default 587 for starttls, 465 for tls, 25 for none.
        #[serde(default)]
        port: Option<u16>,
        /// `starttls` (default), `tls` or `none`.
        #[serde(default)]
        tls: SmtpTls,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
    },
    /// A structured log line per message (every dead record is logged anyway).
    Log,
}

impl NotifyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(invalid("notify.window", "must be more than 0"));
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            sink.validate(&format!("notify.sinks[{i}]"))?;
        }
        Ok(())
    }
}

impl SinkConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            SinkConfig::Http { url, .. } => {
                let parsed = url::Url::parse(url.expose()).map_err(|e| invalid(key, format!("url: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(key, "url must be http or https"));
                }
            }
            SinkConfig::Email { to, from, username, password, .. } => {
                if to.is_empty() {
                    return Err(invalid(key, "email sink needs at least one `to` address"));
                }
                for address in to.iter().chain(std::iter::once(from)) {
                    address
                        .parse::<lettre::message::Mailbox>()
                        .map_err(|e| invalid(key, format!("address {address:?}: {e}")))?;
                }
                if username.is_some() != password.is_some() {
                    return Err(invalid(key, "username and password go together"));
                }
            }
            SinkConfig::Log => {}
        }
        Ok(())
    }

    /// The sink's `kind`, as in the config and the `sink` metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Http { .. } => "http",
            SinkConfig::Email { .. } => "email",
            SinkConfig::Log => "log",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    #[default]
    Json,
    Slack,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}
