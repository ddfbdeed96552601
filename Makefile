# hookrelay: the commands a newcomer needs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= hookrelay.example.toml
# Set KAFKA_BOOTSTRAP to use your own broker; otherwise a local one is started.
KAFKA_BOOTSTRAP ?=
# make bench BENCH_ARGS="--scenario S0,S2 --quick"
BENCH_ARGS ?=
# make profile SCENARIO=S0
SCENARIO ?= S0

.PHONY: help build release run test unit lint doc-check docs deny fmt bench profile drill kafka-up kafka-down deploy-check clean

help:
	@echo "make run          local Kafka (unless KAFKA_BOOTSTRAP is set) + topics ensure + hookrelay run"
	@echo "make test         local Kafka + every test (unit, end-to-end, deploy checks) + stop"
	@echo "make unit         unit tests and the handbook reference checks (no broker)"
	@echo "make lint         cargo fmt --check, clippy -D warnings, cargo doc -D warnings"
	@echo "make docs         the handbook (docs/) into docs/book, internal links checked"
	@echo "make deny         supply chain: cargo deny (advisories, bans, licences, sources; deny.toml)"
	@echo "make bench        the benchmark (S0..S12, 3 repeats: medians, spreads, targets), .bench/*.json + docs/src/results/bench.md"
	@echo "make profile      perf + flame graph of the relay during one scenario (SCENARIO=S0): .bench/flame-s0.svg"
	@echo "make drill        fault drills (kill -9, broker down, malformed, ...): one ledger line each, lost = 0"
	@echo "make kafka-up     start the local broker (127.0.0.1:9092; SASL on :9094)"
	@echo "make kafka-down   stop it"

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

kafka-up:
	@scripts/kafka.sh up

kafka-down:
	@scripts/kafka.sh down

# The example config targets https://billing.example.com; for a local receiver
# the private-network guard is lifted here (and only here).
run:
	@scripts/prereqs.sh run
	$(CARGO) build --locked
	@scripts/run.sh $(CONFIG)

test:
	@scripts/test.sh

unit:
	$(CARGO) test --locked --lib --bins --test docs

lint: doc-check
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

# The crate's API docs: a broken intra-doc link or bad doc markup fails.
doc-check:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps

docs:
	@scripts/docs.sh

# Builds cargo-deny once into .cache/tools; reads the advisory snapshot in ../shared/advisory-db.
deny:
	@scripts/deny.sh

fmt:
	$(CARGO) fmt --all

bench:
	@scripts/bench.sh $(BENCH_ARGS)

profile:
	@scripts/profile.sh "$(SCENARIO)" $(BENCH_ARGS)

drill:
	@scripts/drill.sh

deploy-check:
	@scripts/check-deploy.sh

clean:
	$(CARGO) clean
	rm -rf .cache/kafka/run
