# syntax=docker/dockerfile:1
# hookrelay container image: a Rust build stage and a small Debian runtime.
#
#   docker build -t hookrelay:dev .
#   docker run --rm -v $PWD/deploy/compose/hookrelay.toml:/etc/hookrelay/hookrelay.toml:ro hookrelay:dev check-config
#
# The image has no config of its own: mount one at /etc/hookrelay/hookrelay.toml
# (a ConfigMap in Kubernetes, a bind mount in docker-compose.yml; every command
# finds it there through HOOKRELAY_CONFIG) and pass secrets as HOOKRELAY_*
# environment variables.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
# librdkafka is compiled by the rdkafka crate: it needs a C toolchain, make,
# cmake and pkg-config, and links OpenSSL (TLS, SASL/SCRAM) and zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Dependencies first, against a placeholder main, so that a change to src/
# reuses this (long: librdkafka, the HTTP and TLS stack) layer. Other targets
# that Cargo.toml names by path (the e2e test harness, say) get placeholders
# too, so the manifest resolves without copying their sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
 && echo 'fn main() {}' > src/main.rs \
 && sed -nE 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' Cargo.toml \
    | while read -r target; do \
        [ -e "$target" ] || { mkdir -p "$(dirname "$target")" && echo 'fn main() {}' > "$target"; }; \
      done \
 && cargo build --release --locked \
 && rm -rf src

COPY src ./src
# COPY keeps the sources' old mtimes, which can look older than the
# placeholder build above: touch them so cargo rebuilds the crate itself.
RUN find src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/hookrelay /out/hookrelay

FROM ${RUNTIME_IMAGE}
# libssl3: TLS to Kafka and to webhook targets; ca-certificates: the public
# CAs both are verified against.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 hookrelay \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin hookrelay \
 && mkdir -p /etc/hookrelay
COPY --from=builder /out/hookrelay /usr/local/bin/hookrelay
# Every command (send, replay, topics, check-config) finds the mounted config
# without --config; hookrelay's config loader ignores this variable.
ENV HOOKRELAY_CONFIG=/etc/hookrelay/hookrelay.toml

# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# Admin server: /metrics, /live, /ready (admin.listen).
EXPOSE 9464
# No HEALTHCHECK here: Kubernetes ignores it and runs its own probes, and the
# one-shot `topics ensure` container shares this image. docker-compose.yml
# declares the health check of the long-running relay.
ENTRYPOINT ["hookrelay"]
CMD ["run", "--config", "/etc/hookrelay/hookrelay.toml"]
