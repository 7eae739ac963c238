"""Where the embedded broker differs from Apache Kafka, the helpers hide it, and only behind
README's table: every row of that table names the tests that check what the helpers do
about it (this file's tests, and tests elsewhere that exercise the difference on a live
broker), and each named test exists. The workflow's Apache Kafka job runs the same helpers
against the apache/kafka image, so a helper that hid a difference wrongly fails there.
"""
from __future__ import annotations

import ast
import re
import sys

import pytest

from helpers import doctor
from helpers.kafka import broker, choice, clients, embedded, probe
from helpers.tooling.paths import ROOT

TABLE_HEADER = "| difference (Tansu"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def difference_rows() -> list[list[str]]:
    """The cells of each row of README's table of differences."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(TABLE_HEADER))
    rows = []
    for line in lines[start + 2:]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def missing_tests(rows: list[list[str]]) -> list[str]:
    """What is wrong with the rows' third column: a row naming no test, a test that does not exist."""
    problems, defined = [], {}
    for row in rows:
        if len(row) != 3:
            problems.append(f"needs 3 columns (difference, what the helpers do, checked by): {row}")
            continue
        refs = TEST_REF.findall(row[2])
        if not refs:
            problems.append(f"no test named for {row[0]!r} (write `tests/file.py::test_name` in its third column)")
        for path, name in refs:
            if path not in defined:
                source = ROOT / path
                tree = ast.parse(source.read_text(encoding="utf-8")) if source.is_file() else ast.Module([], [])
                defined[path] = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            if name not in defined[path]:
                problems.append(f"{path}::{name}, named for {row[0]!r}, does not exist")
    return problems


def test_every_difference_in_readme_names_tests_that_exist():
    rows = difference_rows()
    assert len(rows) >= 8 and any("ListOffsets" in row[0] for row in rows), rows
    assert not missing_tests(rows), "README's table of differences:\n" + "\n".join(missing_tests(rows))


def test_the_table_check_refuses_a_row_without_a_test_or_with_a_missing_one():
    ok = ["lag", "fetch high watermark", "`tests/test_kafka.py::test_lag_is_right_after_a_batched_produce`"]
    assert missing_tests([ok]) == []
    assert "no test named" in missing_tests([["lag", "hidden", "nothing"]])[0]
    assert "does not exist" in missing_tests([["lag", "hidden", "`tests/test_kafka.py::test_no_such_thing`"]])[0]
    assert "3 columns" in missing_tests([["lag", "hidden"]])[0]


def test_consumers_get_the_teaching_settings_that_make_a_group_join_quick(kafka):
    consumer = clients.consumer(kafka, group_id=clients.unique_name("settings"))
    try:
        assert consumer.config["session_timeout_ms"] == 6000
        assert consumer.config["heartbeat_interval_ms"] == 1000
        assert consumer.config["enable_auto_commit"] is False
        assert consumer.config["auto_offset_reset"] == "earliest"
    finally:
        consumer.close()


def test_the_admin_client_pins_its_api_version_on_the_embedded_broker_only(monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(clients, "KafkaAdminClient", lambda **config: seen.append(config))
    monkeypatch.setattr(clients.Kafka, "ensure_alive", lambda self: None, raising=False)
    clients.admin(clients.Kafka("127.0.0.1:1", "embedded"))
    clients.admin(clients.Kafka("127.0.0.1:1", "environment"))
    assert seen[0].get("api_version") == (2, 2)
    assert "api_version" not in seen[1]


def test_producers_wait_for_every_replica_and_are_not_idempotent(kafka):
    producer = clients.producer(kafka)
    try:
        assert producer.config["acks"] in ("all", -1)
        assert producer.config["enable_idempotence"] is False
    finally:
        producer.close()
    with pytest.raises(ValueError, match="acks"):
        clients.producer(kafka, acks=0)


def test_windows_learners_are_sent_to_docker_or_wsl(monkeypatch, tmp_path):
    """No embedded broker on Windows: every way to it says what to start instead, and none starts it."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv(embedded.ENV_STATE_DIR, str(tmp_path))
    monkeypatch.setenv(choice.ENV_KAFKA_FILE, str(tmp_path / "kafka"))
    for var in (probe.ENV_BOOTSTRAP, broker.ENV_CONFIG, choice.ENV_KAFKA):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(broker, "DOCKER_ADDRESS", ("127.0.0.1", embedded.free_port()))  # Docker Desktop is not up
    what_to_start = r"docker compose -f docker/compose.yml up -d kafka.*setup\.md#windows-with-docker-desktop.*WSL"
    with pytest.raises(probe.BrokerUnavailable, match=what_to_start):
        embedded.tansu_binary()
    with pytest.raises(probe.BrokerUnavailable, match="No Kafka answers on 127.0.0.1:.*" + what_to_start):
        broker.connect()  # no setting: the container's address is checked, then what to start
    monkeypatch.setenv(choice.ENV_KAFKA, "embedded")
    with pytest.raises(probe.BrokerUnavailable, match=what_to_start):
        broker.connect()
    monkeypatch.setenv(choice.ENV_KAFKA, "docker")
    with pytest.raises(probe.BrokerUnavailable, match=r"docker compose -f docker/compose.yml up -d kafka.*WSL"):
        broker.connect()
    assert not (tmp_path / "broker.json").exists()
    check = doctor.check_platform()
    assert "docker/" in check.detail and "WSL" in check.detail and "docs/setup.md#windows-with-wsl" in check.detail
