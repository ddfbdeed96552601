//! Why a consumer stopped.

use rdkafka::error::KafkaError;

use crate::config::client::Unavailable;

/// Why a consumer stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    /// The brokers refused the client mid-run: the process exits 69, as at start-up.
    #[error(transparent)]
    Refused(#[from] Unavailable),
    #[error("cannot start the poll thread: {0}")]
    Thread(#[from] std::io::Error),
}
