"""Kubernetes manifests: what the relay needs from its pods, the references
between objects (which schema validation does not see), the custom resources
against their CRD models, and the rendered example overlay."""

import json

import pytest

from conftest import (
    BASE,
    EXTRAS,
    OVERLAY,
    by_kind,
    duration_seconds,
    load_yaml,
    load_yaml_docs,
    one,
)

ADMIN_PORT = 9464
CONFIG_PATH = "/etc/hookrelay/hookrelay.toml"


def container_of(deployment):
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "hookrelay")


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# --- the Deployment -----------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(base_docs):
    return one(base_docs, "Deployment", "hookrelay")


def test_grace_period_outlasts_the_drain(deployment, base_config):
    grace = duration_seconds(base_config["shutdown"]["grace"])
    period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == 20
    assert period > grace


def test_probes_hit_live_and_ready_on_the_admin_port(deployment, base_config):
    container = container_of(deployment)
    assert base_config["admin"]["listen"] == f"0.0.0.0:{ADMIN_PORT}"
    assert {"name": "metrics", "containerPort": ADMIN_PORT, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": ADMIN_PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": ADMIN_PORT}
    assert container["startupProbe"]["httpGet"]["port"] == ADMIN_PORT


def test_runs_locked_down(deployment):
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container_of(deployment)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_resources_replicas_and_spread(deployment):
    resources = container_of(deployment)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert selects(anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    assert selects(pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"], labels)
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)


def test_config_from_configmap_and_secrets_from_optional_secret(deployment):
    container = container_of(deployment)
    assert container["args"] == ["run", "--config", CONFIG_PATH]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/hookrelay")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "hookrelay-config"
    assert {"secretRef": {"name": "hookrelay-secrets", "optional": True}} in container["envFrom"]
    assert "HOOKRELAY_KAFKA__BROKERS" in env_of(container)


def test_configmap_is_generated_from_the_toml(base_config):
    kustomization = load_yaml(BASE / "kustomization.yaml")
    generator = next(g for g in kustomization["configMapGenerator"] if g["name"] == "hookrelay-config")
    assert generator["files"] == ["hookrelay.toml"]
    assert base_config["topics"]["events"] == ["webhooks.events"]
    assert base_config["topics"]["dead"] == "webhooks.dead"
    assert base_config["kafka"]["security_protocol"] in {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"}
    assert base_config["kafka"]["sasl"]["mechanism"] in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    # Credentials come from the Secret, never from the ConfigMap.
    assert "password" not in base_config["kafka"]["sasl"]
    assert all("secrets" not in e for e in base_config["endpoints"].values())


# --- Service, PDB, monitoring ---------------------------------------------------


def test_service_pdb_and_servicemonitor_select_the_pods(base_docs, deployment):
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(base_docs, "Service", "hookrelay")
    assert selects(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": ADMIN_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    pdb = one(base_docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = one(base_docs, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # hookrelay's own `endpoint` label must survive the operator's target label.
    assert endpoint.get("honorLabels") or {"action": "labeldrop", "regex": "endpoint"} in endpoint.get(
        "relabelings", [])


def test_grafana_dashboard_configmap(base_docs):
    kustomization = load_yaml(BASE / "kustomization.yaml")
    generator = next(g for g in kustomization["configMapGenerator"] if "grafana" in g["name"])
    assert generator["options"]["labels"] == {"grafana_dashboard": "1"}
    for path in generator["files"]:
        assert (BASE / path).resolve().is_relative_to(BASE.resolve())
        json.loads((BASE / path).read_text(encoding="utf-8"))


# --- autoscaling ------------------------------------------------------------------


def test_keda_scales_the_events_group_of_this_deployment(base_docs, deployment, base_config):
    scaled = one(base_docs, "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert spec["minReplicaCount"] == deployment["spec"]["replicas"] == 2
    # Replicas beyond the partition count of the events topic would idle.
    assert spec["maxReplicaCount"] == base_config["topics"]["partitions"]
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == base_config["kafka"]["group_id"] == "hookrelay"
    assert meta["topic"] in base_config["topics"]["events"]
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"
    # The scaler reads the brokers from the relay's own environment.
    assert meta["bootstrapServersFromEnv"] in env_of(container_of(deployment))
    assert spec["scaleTargetRef"]["envSourceContainerName"] == "hookrelay"
    # Same transport as the relay.
    assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
    assert base_config["kafka"]["sasl"]["mechanism"] == "SCRAM-SHA-512"
    assert base_config["kafka"]["security_protocol"] == "sasl_ssl"
    auth = one(base_docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    example_secret = load_yaml(OVERLAY / "secret.example.yaml")
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == example_secret["metadata"]["name"] == "hookrelay-secrets"
        assert ref["key"] in example_secret["stringData"]


def test_no_hpa_in_the_base_and_the_extra_one_is_complete(base_docs, deployment, base_config):
    assert not [d for d in base_docs if d["kind"] == "HorizontalPodAutoscaler"]
    hpa = one(load_yaml_docs(EXTRAS / "hpa.yaml"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == base_config["topics"]["partitions"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "hookrelay_consumer_lag"
    assert metric["external"]["metric"]["selector"]["matchLabels"]["group"] == "hookrelay"


# --- custom resources against their CRD models -----------------------------------

CRD_MODELS = {
    ("keda.sh/v1alpha1", "ScaledObject"): ("cloudcoil.models.keda.v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): ("cloudcoil.models.keda.v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("cloudcoil.models.prometheus_operator.v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("cloudcoil.models.prometheus_operator.v1", "PrometheusRule"),
}


def fields_not_in(original, dumped, path=""):
    """Fields of `original` that the model dropped: unknown to the CRD schema."""
    if isinstance(original, dict):
        if not isinstance(dumped, dict):
            return [path or "."]
        out = []
        for key, value in original.items():
            out += [f"{path}.{key}"] if key not in dumped else fields_not_in(value, dumped[key], f"{path}.{key}")
        return out
    if isinstance(original, list):
        if not isinstance(dumped, list) or len(dumped) != len(original):
            return [path]
        return [p for i, (a, b) in enumerate(zip(original, dumped)) for p in fields_not_in(a, b, f"{path}[{i}]")]
    return []


def check_custom_resource(doc):
    """Validates a custom resource with the pydantic models generated from its CRD."""
    import importlib

    module, cls = CRD_MODELS[(doc["apiVersion"], doc["kind"])]
    model = getattr(importlib.import_module(module), cls)
    dumped = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
    return fields_not_in(doc, dumped)


def custom_resources(docs):
    return [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_MODELS]


def assert_match_crds(docs):
    unknown = {f"{d['kind']}/{d['metadata']['name']}": check_custom_resource(d) for d in docs}
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, f"fields the CRDs do not define: {unknown}"


def test_crd_check_catches_unknown_fields():
    pytest.importorskip("cloudcoil.models.keda.v1alpha1")
    doc = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"name": "x"}, "minReplicas": 2,
                    "triggers": [{"type": "kafka", "metadata": {}}]}}
    assert check_custom_resource(doc) == [".spec.minReplicas"]


def test_custom_resources_match_their_crds(base_docs):
    pytest.importorskip("cloudcoil.models.keda.v1alpha1")
    found = custom_resources(base_docs)
    assert {d["kind"] for d in found} == {k for _, k in CRD_MODELS}
    assert_match_crds(found)


# --- the rendered example overlay ------------------------------------------------


@pytest.fixture(scope="module")
def rendered(render):
    return render(OVERLAY)


def test_overlay_renders_namespaced_and_patched(rendered):
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "hookrelay", doc["metadata"]["name"]
    deployment = one(rendered, "Deployment", "hookrelay")
    container = container_of(deployment)
    assert container["image"] == "registry.example.com/platform/hookrelay:0.1.0"
    assert "example.internal" in env_of(container)["HOOKRELAY_KAFKA__BROKERS"]
    assert deployment["spec"]["replicas"] == 3
    scaled = one(rendered, "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 3
    assert scaled["spec"]["triggers"][0]["metadata"]["topic"] == "webhooks.events"


def test_overlay_config_reference_follows_the_generated_name(rendered):
    deployment = one(rendered, "Deployment", "hookrelay")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    configmap = one(rendered, "ConfigMap", volume["configMap"]["name"])
    assert configmap["metadata"]["name"].startswith("hookrelay-config-")
    assert set(configmap["data"]) == {"hookrelay.toml"}
    dashboard = one(rendered, "ConfigMap", "hookrelay-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dashboard["data"]["hookrelay-dashboard.json"])


def test_overlay_ships_no_secret_and_the_example_is_a_placeholder(rendered):
    assert not [d for d in rendered if d["kind"] == "Secret"]
    secret = load_yaml(OVERLAY / "secret.example.yaml")
    assert secret["metadata"]["name"] == "hookrelay-secrets"
    for key, value in secret["stringData"].items():
        assert key.startswith("HOOKRELAY_"), key
        assert "REPLACE_ME" in value, key


def test_overlay_custom_resources_match_their_crds(rendered):
    pytest.importorskip("cloudcoil.models.keda.v1alpha1")
    assert_match_crds(custom_resources(rendered))
