#!/usr/bin/env bash
# Installs what the end-to-end tests need besides Rust and Kafka: a real SMTP
# server (aiosmtpd, from PyPI) for the email sink, and the CloudEvents Python
# SDK (cloudevents, from PyPI) whose Kafka records the fan-out tests read.
# Idempotent and quiet.
set -euo pipefail
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
# Records made by a CloudEvents SDK (its Kafka binding) for the fan-out tests.
if ! python3 -c "import cloudevents.v1.kafka" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check 'cloudevents>=2,<3'
fi
# A real Prometheus scrapes a running relay in the end-to-end tests (Debian's package).
if ! command -v prometheus >/dev/null; then
    for try in 1 2 3; do
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) && break
        sleep 5
    done
fi
