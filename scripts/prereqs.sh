#!/usr/bin/env bash
# Checks what a fresh machine needs before `make run` or `make test`, and lists
# everything missing at once (with the Debian/Ubuntu package that provides it)
# instead of failing later in the middle of a build or a broker start.
#
#   scripts/prereqs.sh run    build + local broker (skips the broker's needs when KAFKA_BOOTSTRAP is set)
#   scripts/prereqs.sh test   the above + what the end-to-end tests and the deploy checks use
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-run}"
missing=()
need() { # need <command> <what to install>
    command -v "$1" >/dev/null 2>&1 || missing+=("$1: $2")
}

# Building: Rust (rust-version in Cargo.toml), a C toolchain and OpenSSL headers (librdkafka is compiled from source).
min_rust="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)"
need cargo "Rust $min_rust or newer (https://rustup.rs)"
if command -v rustc >/dev/null 2>&1; then
    have="$(rustc --version | cut -d' ' -f2)"
    if [[ "$(printf '%s\n%s\n' "$min_rust" "$have" | sort -V | head -n1)" != "$min_rust" ]]; then
        missing+=("rustc: $have is older than $min_rust (rustup update stable)")
    fi
fi
need cc "a C compiler (build-essential)"
need make "make (build-essential)"
need pkg-config "pkg-config"
if command -v pkg-config >/dev/null 2>&1 && ! pkg-config --exists openssl; then
    missing+=("OpenSSL headers: libssl-dev")
fi

# The local broker (scripts/kafka.sh), unless KAFKA_BOOTSTRAP points at one.
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    need java "Java 17+ (openjdk-17-jre-headless)"
    # Maven fetches the broker's jars once; later runs use .cache/kafka.
    compgen -G ".cache/kafka/libs-*/.complete" >/dev/null || need mvn "Maven (maven)"
    need openssl "the openssl CLI (openssl), for the test broker's TLS certificate"
fi

if [[ "$mode" == test ]]; then
    # scripts/test-deps.sh: aiosmtpd from PyPI; a real Prometheus (Debian's package).
    need python3 "Python 3 (python3)"
    if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
        missing+=("pip: python3-pip")
    fi
    command -v prometheus >/dev/null 2>&1 || need apt-get "prometheus (apt-get installs it when present)"
    # scripts/check-deploy.sh builds kustomize with Go once (then .cache/bin).
    [[ -x .cache/bin/kustomize ]] || need go "Go (golang), to build kustomize for the deploy checks"
fi

if ((${#missing[@]})); then
    echo "make $mode: missing on this machine:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
