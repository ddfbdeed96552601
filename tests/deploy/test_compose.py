"""docker-compose.yml and the files it mounts (deploy/compose/)."""

from urllib.parse import urlparse

import pytest

from conftest import DEPLOY, ROOT, duration_seconds, load_yaml

COMPOSE_TOML = "/etc/hookrelay/hookrelay.toml"


@pytest.fixture(scope="module")
def compose():
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def published_ports(service):
    """host port -> container port ("[ip:]host:container" strings)."""
    return dict(str(p).rsplit(":", 2)[-2:] for p in service.get("ports", []))


def bind_mounts(service):
    """target -> source of the service's bind mounts (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def test_services_exist(services):
    assert {"kafka", "topics", "hookrelay", "receiver", "prometheus"} <= set(services)


def test_kafka_is_a_single_kraft_node_with_a_healthcheck(services):
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "localhost:29092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1
    assert published_ports(kafka) == {"29092": "29092"}
    test = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in test and "localhost:9092" in test


def test_topics_runs_once_after_kafka_is_healthy(services):
    topics = services["topics"]
    assert topics["command"][:2] == ["topics", "ensure"]
    assert topics["command"][-2:] == ["--config", COMPOSE_TOML]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["image"] == services["hookrelay"]["image"]


def test_hookrelay_waits_for_kafka_topics_and_receiver(services):
    depends = services["hookrelay"]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["receiver"]["condition"] == "service_started"


def test_hookrelay_config_ports_health_and_grace(services, compose_config):
    relay = services["hookrelay"]
    assert relay["command"] == ["run", "--config", COMPOSE_TOML]
    assert bind_mounts(relay)[COMPOSE_TOML] == "./deploy/compose/hookrelay.toml"
    assert published_ports(relay) == {"9464": "9464"}
    assert "/ready" in " ".join(relay["healthcheck"]["test"])
    assert "9464" in " ".join(relay["healthcheck"]["test"])
    assert relay["environment"]["HOOKRELAY_DELIVERY__ALLOW_PRIVATE_NETWORKS"] == "true"
    grace = duration_seconds(compose_config["shutdown"]["grace"])
    assert duration_seconds(relay["stop_grace_period"]) > grace


def test_every_bind_mount_source_exists(services):
    for name, service in services.items():
        for source in bind_mounts(service).values():
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_compose_config_parses_and_points_at_the_stack(compose_config, services):
    assert compose_config["kafka"]["brokers"] == "kafka:9092"
    assert compose_config["admin"]["listen"].endswith(":9464")
    demo = compose_config["endpoints"]["demo"]
    url = urlparse(demo["url"])
    assert (url.hostname, str(url.port)) == ("receiver", "8080")
    assert published_ports(services["receiver"]) == {"8080": "8080"}
    assert demo["secrets"][0].startswith("whsec_")
    # The receiver verifies signatures with the same secret.
    assert services["receiver"]["environment"]["WEBHOOK_SECRET"] == demo["secrets"][0]
    assert [sink["kind"] for sink in compose_config["notify"]["sinks"]] == ["log"]
    assert compose_config["topics"]["events"] == ["webhooks.events"]
    assert [t["topic"] for t in compose_config["retry"]["tiers"]] == [
        "webhooks.retry-1m", "webhooks.retry-10m", "webhooks.retry-1h"]


def test_receiver_service_runs_the_demo_receiver(services):
    receiver = services["receiver"]
    assert receiver["image"] == "python:3.12-slim"
    script = receiver["command"][-1]
    assert bind_mounts(receiver)[script] == "./deploy/compose/receiver.py"


def test_prometheus_scrapes_hookrelay_and_loads_the_alerts(services):
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert published_ports(prometheus) == {"9090": "9090"}
    mounts = bind_mounts(prometheus)
    config_target = next(t for t, s in mounts.items() if s == "./deploy/compose/prometheus.yml")
    config = load_yaml(DEPLOY / "compose" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "hookrelay")
    assert job["static_configs"][0]["targets"] == ["hookrelay:9464"]
    # rule_files are relative to the config file's directory in the container.
    config_dir = config_target.rsplit("/", 1)[0]
    for rule_file in config["rule_files"]:
        target = rule_file if rule_file.startswith("/") else f"{config_dir}/{rule_file}"
        assert mounts.get(target) == "./deploy/prometheus/alerts.yml", target
