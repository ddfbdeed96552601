//! End-to-end tests: a real Kafka broker (`KAFKA_BOOTSTRAP`, started by `make test`),
//! real local HTTP receivers and SMTP server, real `hookrelay` processes.

mod bench;
mod delivery;
mod harness;
mod notify;
mod operate;
mod replay;
mod retry;
mod smtp;
mod stuck;
mod tls;
