//! The `hookrelay` binary: parse the CLI, load the config (exit 64 when it is bad), start logging, call into the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookrelay::app::{self, Roles};
use hookrelay::config::Config;
use hookrelay::ops::{endpoints, replay, topics};
use hookrelay::route::outcome::DeadReason;

/// Exit codes from sysexits.h, so scripts can tell bad config from an outage.
const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(name = "hookrelay", version, about = "Kafka events in, signed webhooks out.")]
struct Cli {
    /// Config file (TOML). Default: hookrelay.toml if present.
    #[arg(long, global = true, env = "HOOKRELAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Run {
        /// Roles to run, comma separated: events, retry, dead.
        #[arg(long, default_value = "events,retry,dead", value_parser = Roles::parse)]
        role: Roles,
    },
    /// Produce one event to the first event topic (smoke test).
    Send {
        /// Target URL.
        #[arg(long, conflicts_with = "endpoint", required_unless_present = "endpoint")]
        url: Option<String>,
        /// Named endpoint from the config.
        #[arg(long)]
        endpoint: Option<String>,
        /// The payload, JSON.
        #[arg(long)]
        payload: String,
        /// Event id (default: <topic>-<partition>-<offset>).
        #[arg(long)]
        id: Option<String>,
        /// Record key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Re-drive dead records to the event topic with a fresh deadline.
    Replay {
        /// Dead since (RFC 3339, or a duration meaning that long ago: 2h).
        #[arg(long)]
        since: Option<String>,
        /// Dead before (RFC 3339 or a duration ago).
        #[arg(long)]
        until: Option<String>,
        /// Only this reason (invalid_event, rejected, expired, max_attempts, forbidden_target, too_large,
        /// internal_error).
        #[arg(long)]
        reason: Option<String>,
        /// Only this endpoint (name, or URL host).
        #[arg(long)]
        endpoint: Option<String>,
        /// List what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Print what happened to one event: its attempt-log records, oldest first.
    Trace {
        /// The event id.
        id: String,
        /// Records since (RFC 3339, or a duration meaning that long ago: 24h).
        #[arg(long, default_value = "24h")]
        since: String,
        /// One JSON record per line, as written.
        #[arg(long)]
        json: bool,
    },
    /// Validate and print the effective config (secrets redacted).
    CheckConfig,
    /// The endpoint registry: put, get, list, delete, rotate-secret.
    Endpoints {
        #[command(subcommand)]
        command: endpoints::EndpointsCommand,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the topics that are missing; report the others.
    Ensure,
}

/// mimalloc rather than glibc's malloc: with glibc, malloc and free were about a fifth
/// of the relay's CPU in the benchmark's profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: their normal output on stdout, exit 0.
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("hookrelay: {}", usage_line(error.kind(), &error.to_string()));
            return ExitCode::from(EX_USAGE);
        }
    };
    // Before the config, so that its debug lines (ignored variables) can show.
    let _exporting = init_logs();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hookrelay: invalid config: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookrelay: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, config)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hookrelay: {error:#}");
            if error.downcast_ref::<app::Unavailable>().is_some() {
                ExitCode::from(EX_UNAVAILABLE)
            } else if error.downcast_ref::<hookrelay::route::sizes::TooSmall>().is_some() || is_usage(&error) {
                // A topic too small for what the event topics take is a configuration error.
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { role } => {
            let shutdown = hookrelay::app::shutdown::on_signal()?;
            app::run(config, role, shutdown).await?;
        }
        Command::Send { url, endpoint, payload, id, key } => {
            return send(&config, url, endpoint, &payload, id.as_deref(), key.as_deref()).await
        }
        Command::Replay { since, until, reason, endpoint, dry_run } => {
            return replay_dead(&config, since, until, reason, endpoint, dry_run).await
        }
        Command::Topics { command: TopicsCommand::Ensure } => {
            app::preflight(&config).await?;
            for line in topics::ensure(&config).await? {
                println!("{line}");
            }
        }
        Command::Trace { id, since, json } => return trace(&config, &id, &since, json).await,
        Command::Endpoints { command } => {
            // A broker that does not answer is exit 69, as for every command that needs one.
            app::preflight(&config).await?;
            match endpoints::execute(&config, command).await {
                Ok(lines) => lines.iter().for_each(|line| println!("{line}")),
                Err(endpoints::EndpointsError::Usage(line)) => {
                    eprintln!("hookrelay: {line}");
                    return Ok(ExitCode::from(EX_USAGE));
                }
                Err(endpoints::EndpointsError::NotFound(line)) => {
                    eprintln!("hookrelay: {line}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(other) => return Err(other.into()),
            }
        }
        Command::CheckConfig => {
            println!("# effective config (secrets redacted)\n{}", config.to_redacted_toml());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hookrelay send`: one event to the first event topic.
async fn send(
    config: &Config,
    url: Option<String>,
    endpoint: Option<String>,
    payload: &str,
    id: Option<&str>,
    key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let target = match (url, endpoint) {
        (Some(url), _) => topics::Target::Url(url),
        (None, Some(name)) => topics::Target::Endpoint(name),
        (None, None) => unreachable!("clap requires one of --url and --endpoint"),
    };
    // A name the file does not define may be the registry's.
    let registry = match &target {
        // Only Kafka can say whether the registry has it: unreachable is exit 69.
        topics::Target::Endpoint(name)
            if !config.endpoints.contains_key(name) && !config.topics.endpoints.is_empty() =>
        {
            app::preflight(config).await?;
            endpoints::load(config).await.ok()
        }
        _ => None,
    };
    let value = match topics::event_value(config, registry, target, payload, id) {
        Ok(value) => value,
        Err(error) => {
            eprintln!("hookrelay: {error}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    // Without it a down broker shows as a produce timeout (exit 1 after 30 s).
    app::preflight(config).await?;
    println!("{}", topics::send(config, &value, key).await?);
    Ok(ExitCode::SUCCESS)
}

/// `hookrelay replay`: dead records back to the event topic.
async fn replay_dead(
    config: &Config,
    since: Option<String>,
    until: Option<String>,
    reason: Option<String>,
    endpoint: Option<String>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let now = hookrelay::app::clock::now_ms();
    let time = |t: Option<String>| t.map(|t| replay::parse_time(&t, now)).transpose();
    let (since_ms, until_ms) = match (time(since), time(until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("hookrelay: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let reason = match reason.as_deref().map(|r| (r, DeadReason::parse(r))) {
        None => None,
        Some((_, Some(reason))) => Some(reason),
        Some((r, None)) => {
            eprintln!("hookrelay: unknown reason {r:?}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let filter = replay::Filter { since_ms, until_ms, reason, endpoint };
    app::preflight(config).await?;
    let summary = match replay::replay(config, &filter, dry_run, |line| println!("{line}")).await {
        Ok(summary) => summary,
        Err(error @ replay::ReplayError::LegNeedsKey { .. }) => {
            eprintln!("hookrelay: {error}");
            return Ok(ExitCode::from(EX_USAGE));
        }
        Err(error) => return Err(error.into()),
    };
    if dry_run {
        println!("dry run: would replay {} of {} scanned, moved nothing", summary.matched, summary.scanned);
    } else {
        println!("replayed {} of {} scanned", summary.replayed, summary.scanned);
    }
    Ok(ExitCode::SUCCESS)
}

/// `hookrelay trace`: exit 0 when something was found, 1 with one line when nothing was.
async fn trace(config: &Config, id: &str, since: &str, json: bool) -> anyhow::Result<ExitCode> {
    let since_ms = match replay::parse_time(since, hookrelay::app::clock::now_ms()) {
        Ok(ms) => ms,
        Err(error) => {
            eprintln!("hookrelay: {error}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    app::preflight(config).await?;
    let found = match hookrelay::ops::trace::find(config, id, since_ms).await {
        Ok(found) => found,
        Err(error @ hookrelay::ops::trace::TraceError::Off) => {
            eprintln!("hookrelay: {error}");
            return Ok(ExitCode::from(EX_USAGE));
        }
        Err(error) => return Err(error.into()),
    };
    if found.is_empty() {
        eprintln!("no record of {id} since {}", hookrelay::app::clock::rfc3339(since_ms));
        return Ok(ExitCode::FAILURE);
    }
    let lines = if json { found.into_iter().map(|f| f.json).collect() } else { hookrelay::ops::trace::lines(&found) };
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Errors that are the configuration's fault (exit 64): a registry topic that is
/// not compacted, or one holding records without `registry.key` to verify them.
fn is_usage(error: &anyhow::Error) -> bool {
    use hookrelay::endpoint::registry::follow::FollowError;
    matches!(error.downcast_ref::<topics::TopicsError>(), Some(topics::TopicsError::NotCompacted(..)))
        || matches!(error.downcast_ref::<FollowError>(), Some(FollowError::NoKey { .. }))
}

/// clap's argument errors span several lines (usage, tips, help); the CLI
/// contract is one line on stderr. Keeps the error, drops usage and hints.
fn usage_line(kind: clap::error::ErrorKind, rendered: &str) -> String {
    use clap::error::ErrorKind::{DisplayHelpOnMissingArgumentOrSubcommand, MissingSubcommand};
    if matches!(kind, DisplayHelpOnMissingArgumentOrSubcommand | MissingSubcommand) {
        // clap rendered the help or a list of commands: keep its usage line.
        let usage = rendered.lines().find_map(|l| l.trim().strip_prefix("Usage: ")).unwrap_or("hookrelay <COMMAND>");
        return format!("a command is missing: {usage} (--help lists them)");
    }
    let first = rendered.split("\n\n").map(str::trim).find(|p| !p.is_empty()).unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON logs when stderr is not a terminal (containers), human-readable otherwise.
/// The filter comes from `HOOKRELAY_LOG` (default `info`). Spans are exported
/// over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the returned guard
/// flushes them at exit.
fn init_logs() -> Option<hookrelay::observe::otel::Exporting> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKRELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (otel, exporting, otel_error) = match hookrelay::observe::otel::layer() {
        Ok(Some((layer, exporting))) => (Some(layer), Some(exporting), None),
        Ok(None) => (None, None, None),
        Err(error) => (None, None, Some(error)),
    };
    let subscriber = tracing_subscriber::registry().with(otel).with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        subscriber.with(fmt).init();
    } else {
        subscriber.with(fmt.json()).init();
    }
    if let Some(error) = otel_error {
        // Tracing is an aid: the relay runs on without it.
        tracing::warn!(%error, "spans are not exported");
    }
    exporting
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each clap error becomes one line that still says what is wrong.
    #[test]
    fn argument_errors_are_one_line() {
        let cases: [(&[&str], &str); 7] = [
            (&["hookrelay", "send", "--payload", "1"], "required arguments were not provided: --url <URL>"),
            (&["hookrelay", "rn"], "unrecognized subcommand 'rn'"),
            (&["hookrelay", "run", "--role", "x"], "invalid value 'x' for '--role <ROLE>': unknown role \"x\""),
            (&["hookrelay", "run", "--bogus"], "unexpected argument '--bogus' found"),
            (&["hookrelay"], "a command is missing: hookrelay [OPTIONS] <COMMAND>"),
            (&["hookrelay", "topics"], "a command is missing: hookrelay topics [OPTIONS] <COMMAND>"),
            (&["hookrelay", "--config", "x.toml"], "a command is missing: hookrelay"),
        ];
        for (args, expected) in cases {
            let error = Cli::try_parse_from(args).err().expect("an error");
            assert!(error.use_stderr(), "{args:?}");
            let line = usage_line(error.kind(), &error.to_string());
            assert!(!line.contains('\n'), "{args:?}: {line:?}");
            assert!(line.contains(expected), "{args:?}: {line:?} lacks {expected:?}");
        }
        for args in [&["hookrelay", "--help"][..], &["hookrelay", "--version"], &["hookrelay", "run", "--help"]] {
            let error = Cli::try_parse_from(args).err().expect("help is an error to clap");
            assert!(!error.use_stderr(), "{args:?} prints to stdout and exits 0");
        }
    }
}
