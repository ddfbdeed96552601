"""Alert rules and the Grafana dashboard: structure, and that every query only
uses metrics, labels and label values that hookrelay exports."""

import json
import re

import pytest

from conftest import ALERTS, BASE, DASHBOARD, DEPLOY, METRICS, TARGET_LABELS, load_yaml

REQUIRED_ALERTS = {
    "HookrelayDeadLettersRising",
    "HookrelayConsumerLagHigh",
    "HookrelayFailureRatioHigh",
    "HookrelayNoDeliveriesWhileLagGrows",
    "HookrelayCircuitOpenTooLong",
    "HookrelayDown",
    "HookrelayPartitionsPausedTooLong",
    "HookrelayNotificationsFailing",
}
SEVERITIES = {"critical", "warning", "info"}

METRIC_RE = re.compile(r"\b(hookrelay_[a-z0-9_]+)\b(\s*\{([^}]*)\})?")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def base_metric(name):
    """The catalogue entry a series name belongs to (histograms have 3 series)."""
    if name in METRICS:
        return name, METRICS[name]
    for suffix in ("_bucket", "_sum", "_count"):
        stem = name[: -len(suffix)]
        if name.endswith(suffix) and METRICS.get(stem, {}).get("histogram"):
            return stem, METRICS[stem]
    return None, None


def check_query(expr, legend=""):
    """Problems with one PromQL expression (empty when it is fine)."""
    problems = []
    known_labels = set(TARGET_LABELS)
    for m in METRIC_RE.finditer(expr):
        name, spec = base_metric(m.group(1))
        if spec is None:
            problems.append(f"unknown metric {m.group(1)}")
            continue
        if spec.get("histogram") and m.group(1) == name:
            problems.append(f"histogram {name} used without _bucket/_sum/_count")
        labels = spec["labels"] | TARGET_LABELS
        if m.group(1).endswith("_bucket"):
            labels = labels | {"le"}
        known_labels |= labels
        for label, op, value in MATCHER_RE.findall(m.group(3) or ""):
            if label not in labels:
                problems.append(f"{name} has no label {label}")
                continue
            allowed = spec.get("values", {}).get(label)
            if allowed is None or "$" in value:
                continue
            # Plain words of an alternation must be real values.
            words = value.split("|") if op in ("=~", "!~") else [value]
            for word in words:
                if re.fullmatch(r"[a-z_]+", word) and word not in allowed:
                    problems.append(f"{name}{{{label}}} never has the value {word!r}")
    for group in GROUPING_RE.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            if label not in known_labels:
                problems.append(f"grouping by {label}, which no metric in the query has")
    for label in LEGEND_RE.findall(legend):
        if label not in known_labels:
            problems.append(f"legend uses {label}, which no metric in the query has")
    return problems


def all_rules(doc):
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries(dashboard):
    def walk(panels):
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                yield panel["title"], target.get("expr", ""), target.get("legendFormat", "")

    yield from walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            yield f"variable {var['name']}", query["query"], ""


def test_the_checker_catches_mistakes():
    assert check_query('sum by (outcome) (rate(hookrelay_deliveries_total{outcome="delivered"}[5m]))') == []
    assert check_query("hookrelay_deliveries") == ["unknown metric hookrelay_deliveries"]
    assert check_query('hookrelay_deliveries_total{outcome="failed"}')
    assert check_query('hookrelay_deliveries_total{reason="x"}')
    assert check_query("sum by (endpiont) (hookrelay_deliveries_total)")
    assert check_query("hookrelay_attempt_duration_seconds")
    assert check_query("hookrelay_ready", legend="{{endpoint}}")


def test_every_required_alert_exists(alerts):
    names = [rule["alert"] for rule in all_rules(alerts)]
    assert REQUIRED_ALERTS <= set(names), REQUIRED_ALERTS - set(names)
    assert len(names) == len(set(names)), "duplicate alert names"


def test_every_alert_has_severity_summary_description_and_runbook(alerts):
    runbooks = (DEPLOY.parent / "docs" / "src" / "operations" / "alerts.md").read_text(encoding="utf-8")
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'.
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+\s+(.*)$", runbooks, flags=re.M)
    }
    for rule in all_rules(alerts):
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("description"), name
        url = annotations.get("runbook_url", "")
        assert url == f"docs/src/operations/alerts.md#runbook-{name.lower()}", (name, url)
        assert f"runbook-{name.lower()}" in anchors, f"docs/src/operations/alerts.md has no 'Runbook: {name}' section"


def test_alert_queries_use_known_metrics_and_labels(alerts):
    problems = {rule["alert"]: check_query(rule["expr"]) for rule in all_rules(alerts)}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, problems


def test_prometheusrule_embeds_the_same_groups(alerts):
    rule = load_yaml(BASE / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == alerts["groups"], (
        "deploy/kubernetes/base/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: "
        "copy alerts.yml's `groups:` under `spec:` (indented by two spaces)"
    )


def test_alert_unit_tests_make_every_alert_fire(alerts):
    tests = load_yaml(ALERTS.parent / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    fired, silent = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fired == {rule["alert"] for rule in all_rules(alerts)}
    assert {"HookrelayDeadLettersRising", "HookrelayCircuitOpenTooLong", "HookrelayDown"} <= silent


def test_dashboard_is_valid_json_with_the_expected_panels():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "hookrelay"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for words in ["deliveries by outcome", "failure ratio", "attempt duration", "end-to-end latency",
                  "consumer lag", "in-flight", "paused partitions", "circuit state",
                  "dead letters by reason", "retries routed", "notifications"]:
        assert words in titles, words
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    used = set()
    for _, expr, _ in dashboard_queries(dashboard):
        used |= {base_metric(m.group(1))[0] for m in METRIC_RE.finditer(expr)}
    # Every metric hookrelay exports is on the dashboard somewhere.
    assert used >= set(METRICS), set(METRICS) - used


def test_dashboard_queries_use_known_metrics_and_labels():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    problems = {}
    for title, expr, legend in dashboard_queries(dashboard):
        found = check_query(expr, legend)
        if found:
            problems.setdefault(title, []).extend(found)
    assert not problems, problems


def test_dashboard_file_under_deploy_grafana_is_the_base_one():
    # deploy/grafana/hookrelay-dashboard.json is a link to the file the base's
    # configMapGenerator ships, so there is one dashboard to edit.
    linked = DEPLOY / "grafana" / "hookrelay-dashboard.json"
    assert linked.read_bytes() == DASHBOARD.read_bytes()


@pytest.mark.parametrize("path", [ALERTS, BASE / "prometheusrule.yaml"])
def test_rule_files_parse(path):
    assert load_yaml(path)
