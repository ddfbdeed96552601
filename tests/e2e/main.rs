//! End-to-end tests: a real Kafka broker (`KAFKA_BOOTSTRAP`, started by `make test`),
//! real local HTTP receivers and SMTP server, real `hookrelay` processes.

mod bench;
mod dead_flood;
mod delivery;
mod drill;
mod exit_codes;
mod harness;
mod isolation;
mod mtls;
mod notify;
mod operate;
mod refused;
mod replay;
mod retry;
mod security;
mod smtp;
mod tls;
