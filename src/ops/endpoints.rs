//! `hookrelay endpoints put | get | list | delete | rotate-secret`: the
//! endpoint registry as operators see it (SPEC "Endpoints as data"), and the
//! registry topic's part of `topics ensure`.
//!
//! Every write reads the registry first (to its end), so that its write time
//! is after the applied record's even across machines whose clocks differ,
//! and waits for the broker's acknowledgement.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::Value;

use crate::app::clock::{now_ms, rfc3339};
use crate::config::{Config, ConfigError, Files};
use crate::endpoint::registry::follow::{Follower, OnChange};
use crate::endpoint::registry::record::{self, check_name};
use crate::endpoint::registry::{Registry, RegistryKey};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `hookrelay endpoints ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EndpointsCommand {
    /// Create or replace a registry endpoint from a spec (JSON or TOML; `-` = stdin).
    Put {
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Show one endpoint as JSON, secrets redacted.
    Get { name: String },
    /// One line per endpoint: name, source (file or registry), URL host, types.
    List,
    /// Delete a registry endpoint.
    Delete { name: String },
    /// Add a generated signing secret (printed once); the others sign until --keep has passed.
    RotateSecret {
        name: String,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        keep: Duration,
    },
}

/// Why an `endpoints` command failed: usage (exit 64), not found (exit 1), or Kafka.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Follow(#[from] crate::endpoint::registry::follow::FollowError),
}

impl From<ConfigError> for EndpointsError {
    fn from(error: ConfigError) -> Self {
        EndpointsError::Usage(error.to_string())
    }
}

fn usage(key: &str, problem: impl std::fmt::Display) -> EndpointsError {
    EndpointsError::Usage(format!("{key}: {problem}"))
}

/// Runs one command; returns the lines for stdout.
pub async fn execute(config: &Config, command: EndpointsCommand) -> Result<Vec<String>, EndpointsError> {
    match command {
        EndpointsCommand::Put { name, file } => {
            let text = read_spec(&file).map_err(|e| usage("--file", format!("cannot read {}: {e}", file.display())))?;
            put(config, &name, &text).await.map(|line| vec![line])
        }
        EndpointsCommand::Get { name } => get(config, &name).await.map(|shown| vec![shown]),
        EndpointsCommand::List => list(config).await,
        EndpointsCommand::Delete { name } => delete(config, &name).await.map(|line| vec![line]),
        EndpointsCommand::RotateSecret { name, keep } => {
            let (secret, line) = rotate_secret(config, &name, keep).await?;
            eprintln!("{line}");
            Ok(vec![secret])
        }
    }
}

fn read_spec(file: &std::path::Path) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
}

/// The registry is on, `name` is a registry name, not the file's.
fn registry_name(config: &Config, name: &str) -> Result<(), EndpointsError> {
    if config.topics.endpoints.is_empty() {
        return Err(usage("topics.endpoints", "is \"\": the registry is off"));
    }
    check_name(name).map_err(|problem| usage("name", problem))?;
    if config.endpoints.contains_key(name) {
        return Err(usage(
            &format!("endpoints.{name}"),
            "is defined in the config file (the file's names cannot be put, deleted or rotated)",
        ));
    }
    Ok(())
}

/// `registry.key`, needed to read or write registry records.
fn key(config: &Config) -> Result<RegistryKey, EndpointsError> {
    match config.registry.key_bytes() {
        Some(Ok(bytes)) => Ok(RegistryKey::new(&bytes)),
        Some(Err(problem)) => Err(usage("registry.key", problem)),
        None => Err(usage("registry.key", "is not set (needed to read and write the registry)")),
    }
}

/// The registry as it is now, read to its end (empty when the topic does not exist).
pub async fn load(config: &Config) -> Result<Arc<Registry>, EndpointsError> {
    let registry = Arc::new(Registry::new(config));
    if config.topics.endpoints.is_empty() {
        return Ok(registry);
    }
    if let Some(mut follower) = Follower::open(config, Files::Skip).await? {
        let ignore: OnChange = Arc::new(|_, _, _| {});
        let counts = follower.catch_up(&registry, &ignore, TIMEOUT).await?;
        if counts.no_key > 0 {
            return Err(usage("registry.key", "is not set (needed to read and write the registry)"));
        }
    }
    Ok(registry)
}

/// Writes a put (`Some`) or a delete (`None`) after the applied record of `name`; waits for the ack.
async fn write(
    config: &Config,
    registry: &Registry,
    name: &str,
    clear: Option<&Value>,
) -> Result<String, EndpointsError> {
    let key = key(config)?;
    let at_ms = now_ms().max(registry.get(name).map_or(0, |e| e.at_ms + 1));
    let encoded = record::encode(&key, name, clear, at_ms);
    let mut headers = OwnedHeaders::new();
    for (header, value) in &encoded.headers {
        headers = headers.insert(Header { key: header, value: Some(value) });
    }
    let topic = &config.topics.endpoints;
    let producer: FutureProducer = crate::config::client::producer_config(&config.kafka).create()?;
    let mut out = FutureRecord::<str, [u8]>::to(topic).key(name).headers(headers);
    if let Some(value) = &encoded.value {
        out = out.payload(value);
    }
    let delivered = producer.send(out, Timeout::After(TIMEOUT)).await.map_err(|(e, _)| EndpointsError::Kafka(e))?;
    Ok(format!("{topic} partition {} offset {}", delivered.partition, delivered.offset))
}

/// `endpoints put NAME --file SPEC`.
pub async fn put(config: &Config, name: &str, text: &str) -> Result<String, EndpointsError> {
    registry_name(config, name)?;
    key(config)?;
    let clear = record::read_text(name, text)?;
    let spec = record::spec_of(name, &clear, &config.registry, Files::Skip)?;
    let registry = load(config).await?;
    let at = write(config, &registry, name, Some(&clear)).await?;
    let host = crate::endpoint::guard::parse_target_url(spec.endpoint.url.expose())
        .map(|u| crate::endpoint::guard::endpoint_key(&u))
        .unwrap_or_default();
    Ok(format!("put {name} ({host}) to {at}"))
}

/// `endpoints get NAME`: JSON, secrets redacted.
pub async fn get(config: &Config, name: &str) -> Result<String, EndpointsError> {
    if let Some(endpoint) = config.endpoints.get(name) {
        // The file's table; its Serialize redacts every secret kind.
        let shown = serde_json::to_value(endpoint).unwrap_or_default();
        return Ok(serde_json::to_string_pretty(&shown).unwrap_or_default());
    }
    if !config.topics.endpoints.is_empty() {
        key(config)?;
    }
    let entry = load(config).await?.get(name).ok_or_else(|| not_found(name))?;
    Ok(serde_json::to_string_pretty(&record::redacted(&entry.spec.clear)).unwrap_or_default())
}

fn not_found(name: &str) -> EndpointsError {
    EndpointsError::NotFound(format!("no endpoint {name:?} in the config file or the registry"))
}

/// `endpoints list`: name, source, URL host, types; the file's first.
pub async fn list(config: &Config) -> Result<Vec<String>, EndpointsError> {
    let host = |url: &str| {
        crate::endpoint::guard::parse_target_url(url)
            .map_or_else(|_| "-".into(), |u| crate::endpoint::guard::endpoint_key(&u))
    };
    let types = |clear: Option<&Value>| {
        let listed = clear.and_then(|c| c.get("types")?.as_array().cloned()).unwrap_or_default();
        let names: Vec<&str> = listed.iter().filter_map(Value::as_str).collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(",")
        }
    };
    let mut lines: Vec<String> = config
        .endpoints
        .iter()
        .map(|(name, e)| format!("{name}\tfile\t{}\t{}", host(e.url.expose()), types(None)))
        .collect();
    if !config.topics.endpoints.is_empty() {
        key(config)?;
        for (name, entry) in load(config).await?.all() {
            let url = entry.spec.endpoint.url.expose();
            lines.push(format!("{name}\tregistry\t{}\t{}", host(url), types(Some(&entry.spec.clear))));
        }
    }
    Ok(lines)
}

/// `endpoints delete NAME`.
pub async fn delete(config: &Config, name: &str) -> Result<String, EndpointsError> {
    registry_name(config, name)?;
    key(config)?;
    let registry = load(config).await?;
    registry.get(name).ok_or_else(|| not_found(name))?;
    let at = write(config, &registry, name, None).await?;
    Ok(format!("deleted {name} at {at}"))
}

/// `endpoints rotate-secret NAME --keep D`: returns the new secret and a status line.
pub async fn rotate_secret(config: &Config, name: &str, keep: Duration) -> Result<(String, String), EndpointsError> {
    registry_name(config, name)?;
    key(config)?;
    let registry = load(config).await?;
    let entry = registry.get(name).ok_or_else(|| not_found(name))?;
    let now = now_ms();
    let until = now + keep.as_millis() as i64;
    let mut secrets: Vec<Value> = Vec::new();
    for (secret, not_after) in entry.spec.endpoint.secrets.iter().zip(&entry.spec.not_after) {
        let not_after = not_after.map_or(until, |t| t.min(until));
        // Past its not_after, a secret no longer signs: drop it from the record.
        if not_after > now {
            secrets.push(serde_json::json!({ "secret": secret.expose(), "not_after": rfc3339(not_after) }));
        }
    }
    let new = format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()));
    secrets.push(Value::String(new.clone()));
    let mut clear = entry.spec.clear.clone();
    clear["secrets"] = Value::Array(secrets);
    record::spec_of(name, &clear, &config.registry, Files::Skip)?;
    let at = write(config, &registry, name, Some(&clear)).await?;
    let kept = clear["secrets"].as_array().map_or(0, |s| s.len() - 1);
    let line = format!("rotated {name}: {kept} older secret(s) sign until {} ({at})", rfc3339(until));
    Ok((new, line))
}
