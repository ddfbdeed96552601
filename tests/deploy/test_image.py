"""The Dockerfile and .dockerignore (no Docker engine here: checked as text;
scripts/check-deploy.sh also lints the Dockerfile with hadolint)."""

import re

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def instructions():
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_of(instructions, word):
    return [rest for w, rest in instructions if w == word]


def test_multi_stage_rust_build_and_slim_runtime(instructions):
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG RUST_IMAGE=rust:1-bookworm" in text
    assert "ARG RUNTIME_IMAGE=debian:bookworm-slim" in text
    stages = args_of(instructions, "FROM")
    assert stages == ["${RUST_IMAGE} AS builder", "${RUNTIME_IMAGE}"]


def test_dependencies_are_built_before_the_sources_are_copied(instructions):
    copies = args_of(instructions, "COPY")
    assert copies[0] == "Cargo.toml Cargo.lock ./"
    assert copies[1] == "src ./src"
    runs = args_of(instructions, "RUN")
    build_runs = [r for r in runs if "cargo build --release --locked" in r]
    assert len(build_runs) == 2
    # The build tools librdkafka needs.
    assert all(pkg in runs[0] for pkg in ("cmake", "pkg-config", "libssl-dev", "zlib1g-dev", "make"))


def test_runtime_is_non_root_and_runs_the_relay(instructions):
    runs = args_of(instructions, "RUN")
    assert "libssl3" in runs[-1] and "ca-certificates" in runs[-1]
    assert args_of(instructions, "USER") == ["10001:10001"]
    assert args_of(instructions, "ENV") == ["HOOKRELAY_CONFIG=/etc/hookrelay/hookrelay.toml"]
    assert args_of(instructions, "EXPOSE") == ["9464"]
    assert args_of(instructions, "ENTRYPOINT") == ['["hookrelay"]']
    assert args_of(instructions, "CMD") == ['["run", "--config", "/etc/hookrelay/hookrelay.toml"]']


def test_dockerignore_keeps_local_state_out():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {"target", ".cache", ".git"} <= patterns
