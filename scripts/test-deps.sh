#!/usr/bin/env bash
# Installs what the end-to-end tests need besides Rust and Kafka: a real SMTP
# server (aiosmtpd, from PyPI) for the email sink. Idempotent and quiet.
set -euo pipefail
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
# A real Prometheus scrapes a running relay in the end-to-end tests (Debian's package).
if ! command -v prometheus >/dev/null; then
    for try in 1 2 3; do
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) && break
        sleep 5
    done
fi
