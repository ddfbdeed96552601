//! End-to-end tests: a real Kafka broker (`KAFKA_BOOTSTRAP`, started by `make test`),
//! real local HTTP receivers and SMTP server, real `hookrelay` processes.

mod attempts;
mod connections;
mod dead_flood;
mod delivery;
mod drill;
mod duplicates;
mod endpoint_tls;
mod examples;
mod exit_codes;
mod fanout;
mod harness;
mod hostile;
mod hosts;
mod isolation;
mod mtls;
mod notify;
mod operate;
mod ordering;
mod otlp;
mod pace;
mod proxy;
mod refused;
mod registry;
mod replay;
mod retry;
mod security;
mod series;
mod sizes;
mod smtp;
mod stuck;
mod tls;
mod trace;
