#!/usr/bin/env bash
# Installs what the end-to-end tests need besides Rust and Kafka: a real SMTP
# server (aiosmtpd, from PyPI) for the email sink. Idempotent and quiet.
set -euo pipefail
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
