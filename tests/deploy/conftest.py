"""Shared paths, loaders and the metric catalogue for the deployment tests.

Run by scripts/check-deploy.sh (which installs what these need); on its own:
python3 -m pytest -q tests/deploy
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
EXTRAS = DEPLOY / "kubernetes" / "extras"
OVERLAY = DEPLOY / "kubernetes" / "overlays" / "example"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = BASE / "grafana" / "hookrelay-dashboard.json"

# Models of the KEDA and Prometheus Operator CRDs (cloudcoil-models-*), which
# scripts/check-deploy.sh installs here rather than into site-packages: the
# package registers a pytest plugin that would load in every pytest run.
# Appended, so installed packages win.
PYDEPS = ROOT / ".cache" / "pydeps"
if PYDEPS.is_dir():
    sys.path.append(str(PYDEPS))

# The metrics hookrelay exports (src/observe/metrics/ is the Rust side of this
# list): name -> labels, and the closed sets of values some labels take.
METRICS = {
    "hookrelay_build_info": {"labels": {"version"}},
    "hookrelay_ready": {"labels": set()},
    "hookrelay_deliveries_total": {
        "labels": {"endpoint", "outcome"},
        "values": {"outcome": {"delivered", "retry", "deferred", "dead"}},
    },
    "hookrelay_attempt_duration_seconds": {"labels": {"endpoint"}, "histogram": True},
    "hookrelay_end_to_end_latency_seconds": {"labels": {"endpoint"}, "histogram": True},
    "hookrelay_retries_routed_total": {"labels": {"tier"}},
    "hookrelay_dead_letters_total": {
        "labels": {"reason"},
        "values": {
            "reason": {"invalid_event", "rejected", "expired", "max_attempts", "forbidden_target", "too_large"}
        },
    },
    "hookrelay_in_flight_records": {
        "labels": {"role"},
        "values": {"role": {"events", "retry", "dead"}},
    },
    "hookrelay_paused_partitions": {
        "labels": {"role", "reason"},
        "values": {"role": {"events", "retry", "dead"}, "reason": {"capacity", "not_due"}},
    },
    "hookrelay_consumer_lag": {"labels": {"group", "topic", "partition"}},
    "hookrelay_circuit_state": {"labels": {"endpoint"}},
    "hookrelay_notifications_total": {
        "labels": {"sink", "outcome"},
        "values": {"sink": {"http", "email", "log"}, "outcome": {"sent", "failed", "gave_up"}},
    },
    "hookrelay_dead_letters_handled_total": {
        "labels": {"endpoint", "reason"},
        "values": {
            "reason": {"invalid_event", "rejected", "expired", "max_attempts", "forbidden_target", "too_large"}
        },
    },
    "hookrelay_produce_failures_total": {"labels": {"topic"}},
    "hookrelay_route_held_seconds": {"labels": {"topic"}},
    "hookrelay_route_held_records": {"labels": {"topic"}},
    "hookrelay_endpoint_oldest_waiting_seconds": {"labels": {"endpoint"}},
    "hookrelay_attempt_log_dropped_total": {"labels": set()},
}
# Labels Prometheus attaches to every scraped series (static config and
# Prometheus Operator), plus the histogram bucket label.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service"}


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_docs(path_or_text):
    text = path_or_text
    if isinstance(path_or_text, Path):
        text = path_or_text.read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d is not None]


def load_toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def duration_seconds(text):
    """'20s', '10m', '1h' (the config's duration form) in seconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    assert m, f"not a simple duration: {text!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def by_kind(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} among the manifests"
    return found


def one(docs, kind, name=None):
    found = by_kind(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kustomize_cmd():
    """The kustomize to render with: $KUSTOMIZE, .cache/bin, PATH, or kubectl's."""
    for candidate in (os.environ.get("KUSTOMIZE"), str(ROOT / ".cache" / "bin" / "kustomize"),
                      shutil.which("kustomize")):
        if candidate and os.access(candidate, os.X_OK):
            return [candidate, "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.fixture(scope="session")
def render():
    """Renders a kustomization directory to its list of objects."""
    cmd = kustomize_cmd()
    if cmd is None:
        pytest.skip("no kustomize (scripts/check-deploy.sh installs one)")
    cache = {}

    def _render(path):
        if path not in cache:
            out = subprocess.run(cmd + [str(path)], check=True, capture_output=True, text=True).stdout
            cache[path] = load_yaml_docs(out)
        return cache[path]

    return _render


@pytest.fixture(scope="session")
def base_docs():
    """The base's hand-written resources, as listed in its kustomization."""
    kustomization = load_yaml(BASE / "kustomization.yaml")
    docs = []
    for resource in kustomization["resources"]:
        docs += load_yaml_docs(BASE / resource)
    return docs


@pytest.fixture(scope="session")
def base_config():
    return load_toml(BASE / "hookrelay.toml")


@pytest.fixture(scope="session")
def compose_config():
    return load_toml(DEPLOY / "compose" / "hookrelay.toml")


@pytest.fixture(scope="session")
def alerts():
    return load_yaml(ALERTS)
