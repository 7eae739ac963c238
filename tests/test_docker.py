"""docker/compose.yml is valid and binds only to 127.0.0.1 (no Docker engine runs here)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from helpers.tooling.paths import ROOT

COMPOSE = ROOT / "docker" / "compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_is_valid():
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run installs Debian's docker-compose package")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    out = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_kafka_is_pinned_kraft_single_node_with_a_healthcheck():
    kafka = _compose()["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag and tag != "latest"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka and kafka["healthcheck"]["test"]


def test_every_published_port_is_bound_to_loopback():
    ports = [p for svc in _compose()["services"].values() for p in svc.get("ports", [])]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports


def test_jupyter_reaches_kafka_on_its_internal_listener():
    services = _compose()["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    bootstrap = services["jupyter"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert f"INTERNAL://{bootstrap}" in advertised
    assert (ROOT / services["jupyter"]["build"]["context"].replace("..", ".") /
            services["jupyter"]["build"]["dockerfile"]).exists()
