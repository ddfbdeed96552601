//! The `hookrelay` binary: parse the CLI, load the config (exit 64 when it is bad), start logging, call into the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookrelay::app::{self, Roles};
use hookrelay::config::Config;
use hookrelay::outcome::DeadReason;
use hookrelay::{replay, topics};

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
        /// Only this reason (invalid_event, rejected, expired, max_attempts, forbidden_target).
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
    /// Validate and print the effective config (secrets redacted).
    CheckConfig,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the topics that are missing; report the others.
    Ensure,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hookrelay: invalid config: {error}");
            return ExitCode::from(EX_USAGE);
        }
    };
    init_logs();
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
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { role } => {
            let shutdown = hookrelay::shutdown::on_signal()?;
            app::run(config, role, shutdown).await?;
        }
        Command::Send { url, endpoint, payload, id, key } => {
            let target = match (url, endpoint) {
                (Some(url), _) => topics::Target::Url(url),
                (None, Some(name)) => topics::Target::Endpoint(name),
                (None, None) => unreachable!("clap requires one of --url and --endpoint"),
            };
            println!("{}", topics::send(&config, target, &payload, id.as_deref(), key.as_deref()).await?);
        }
        Command::Replay { since, until, reason, endpoint, dry_run } => {
            let now = hookrelay::clock::now_ms();
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
            app::preflight(&config).await?;
            let summary = replay::replay(&config, &filter, dry_run, |line| println!("{line}")).await?;
            if dry_run {
                println!("dry run: would replay {} of {} scanned, moved nothing", summary.matched, summary.scanned);
            } else {
                println!("replayed {} of {} scanned", summary.replayed, summary.scanned);
            }
        }
        Command::Topics { command: TopicsCommand::Ensure } => {
            app::preflight(&config).await?;
            for line in topics::ensure(&config).await? {
                println!("{line}");
            }
        }
        Command::CheckConfig => {
            println!("# effective config (secrets redacted)\n{}", config.to_redacted_toml());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON logs when stderr is not a terminal (containers), human-readable otherwise.
/// The filter comes from `HOOKRELAY_LOG` (default `info`).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKRELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}
