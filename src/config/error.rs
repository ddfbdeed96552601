//! Why a configuration was refused, and the helper every section's `validate` uses.

use std::path::PathBuf;

/// Why a configuration was refused. The CLI prints it on one line and exits 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// The error for `key`, which is at fault for `problem`.
pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}
