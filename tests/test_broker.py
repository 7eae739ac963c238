"""Unit tests of helpers.kafka.broker (and the embedded broker, the wire probe), helpers.core.params and
helpers.kafka.clients that need no shared broker."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from helpers.core import params
from helpers.kafka import broker, clients, embedded, probe


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private state directory, so these tests never touch the session's broker."""
    monkeypatch.setenv("COURSE_STATE_DIR", str(tmp_path))
    for var in (probe.ENV_BOOTSTRAP, broker.ENV_CONFIG):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    embedded.stop_embedded()


def test_client_properties_are_mapped_to_kafka_python(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text(
        "# Required connection configs for Kafka producer, consumer, and admin\n"
        "bootstrap.servers=pkc-123.eu-west-1.aws.confluent.cloud:9092\n"
        "security.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\n"
        "sasl.username=KEY123\nsasl.password=s3cr3t/with=equals\n"
        "session.timeout.ms=45000\n")
    servers, config = broker.parse_client_properties(props)
    assert servers == "pkc-123.eu-west-1.aws.confluent.cloud:9092"
    assert config == {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
                      "sasl_plain_username": "KEY123", "sasl_plain_password": "s3cr3t/with=equals"}


def test_secrets_never_printed(tmp_path, monkeypatch, capsys):
    props = tmp_path / "client.properties"
    props.write_text("bootstrap.servers=example.invalid:9092\nsecurity.protocol=SASL_SSL\n"
                     "sasl.mechanisms=PLAIN\nsasl.username=KEY123\nsasl.password=s3cr3t\n")
    _, config = broker.parse_client_properties(props)
    kafka = clients.Kafka("example.invalid:9092", "environment", config)
    text = kafka.describe() + repr(kafka) + json.dumps(broker.redact(config))
    assert "s3cr3t" not in text and "KEY123" not in text
    assert "SASL_SSL" in kafka.describe()


@pytest.mark.parametrize("content, message", [
    ("bootstrap.servers\n", "not key=value"),
    ("bootstrap.servers=a:1\nssl.keystore.location=/x\n", "unsupported property 'ssl.keystore.location'"),
])
def test_bad_client_properties_name_the_problem(tmp_path, content, message):
    props = tmp_path / "client.properties"
    props.write_text(content)
    with pytest.raises(ValueError, match=message):
        broker.parse_client_properties(props)


def test_missing_client_properties_file(tmp_path):
    with pytest.raises(ValueError, match="KAFKA_CONFIG"):
        broker.parse_client_properties(tmp_path / "nope.properties")


@pytest.mark.parametrize("servers", ["", "localhost", "host:port", "host:70000", ":9092"])
def test_bad_bootstrap_servers_raise_value_error_naming_the_variable(servers):
    with pytest.raises(ValueError, match="KAFKA_BOOTSTRAP_SERVERS"):
        probe.parse_bootstrap(servers)


@pytest.mark.parametrize("call, name", [
    (lambda: params.time_scale(0), "TIME_SCALE"),
    (lambda: params.time_scale(-1.0), "TIME_SCALE"),
    (lambda: params.time_scale(float("nan")), "TIME_SCALE"),
    (lambda: params.check_int("partitions", 0), "partitions"),
    (lambda: params.check_int("partitions", 2.5), "partitions"),
    (lambda: params.check_probability("failure_rate", 1.5), "failure_rate"),
    (lambda: clients.unique_name("bad name!"), "prefix"),
    (lambda: embedded.start_embedded(port=70000), "port"),
    (lambda: clients.producer(clients.Kafka("127.0.0.1:1", "embedded"), acks=0), "acks"),
])
def test_bad_parameters_raise_value_error_naming_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_time_scale_from_environment(monkeypatch):
    monkeypatch.setenv(params.ENV_TIME_SCALE, "0.25")
    assert params.time_scale() == 0.25
    assert params.time_scale(2) == 2
    monkeypatch.setenv(params.ENV_TIME_SCALE, "fast")
    with pytest.raises(ValueError, match=params.ENV_TIME_SCALE):
        params.time_scale()


def test_unique_names_differ_across_calls_and_processes():
    here = {clients.unique_name("orders") for _ in range(3)}
    code = "from helpers.kafka import clients; print(clients.unique_name('orders'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert len(here) == 3 and other not in here


def test_probe_tells_kafka_from_a_closed_port_and_from_another_program():
    port = embedded.free_port()
    assert probe.probe("127.0.0.1", port) == "refused"
    with socket.socket() as srv:  # an HTTP-ish server that is not Kafka
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        def answer():
            conn, _ = srv.accept()
            conn.recv(100)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()
        t = threading.Thread(target=answer, daemon=True)
        t.start()
        assert probe.probe("127.0.0.1", srv.getsockname()[1]) == "not-kafka"
        t.join(5)


@pytest.mark.slow  # starts a broker of its own
def test_state_file_records_the_broker_and_a_second_caller_reuses_it(state):
    first = embedded.start_embedded()
    assert not first["reused"] and first["bootstrap_servers"].startswith("127.0.0.1:")
    recorded = json.loads((state / "broker.json").read_text())
    assert recorded["pid"] == first["pid"] and recorded["port"] == first["port"]
    second = embedded.start_embedded()
    assert second["reused"] and second["pid"] == first["pid"]


@pytest.mark.slow  # starts a broker of its own
def test_broker_listens_on_loopback_only(state):
    import psutil

    started = embedded.start_embedded()
    listening = [c.laddr for c in psutil.Process(started["pid"]).net_connections() if c.status == "LISTEN"]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)


@pytest.mark.slow  # starts a broker of its own
def test_stale_state_file_of_a_dead_broker_is_replaced(state):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / "broker.json").write_text(json.dumps({"pid": dead.pid, "port": embedded.free_port()}))
    assert embedded.live_state() is None
    fresh = embedded.start_embedded()
    assert not fresh["reused"] and fresh["pid"] != dead.pid
    assert probe.probe("127.0.0.1", fresh["port"]) == "kafka"


@pytest.mark.slow  # starts a broker of its own
def test_garbage_state_file_is_treated_as_stale(state):
    (state / "broker.json").write_text("{not json")
    assert embedded.read_state() is None
    assert not embedded.start_embedded()["reused"]


@pytest.mark.slow  # starts a broker of its own
def test_killed_broker_is_detected_and_replaced(state):
    first = embedded.start_embedded()
    assert embedded.kill_embedded() == first["pid"]
    import psutil
    psutil.Process(first["pid"]).wait(5) if psutil.pid_exists(first["pid"]) else None
    assert embedded.live_state() is None
    second = embedded.start_embedded()
    assert not second["reused"] and second["pid"] != first["pid"]


@pytest.mark.slow  # starts a broker of its own
def test_requested_port_already_in_use_fails_clearly(state):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(probe.BrokerUnavailable, match="did not become ready"):
            embedded.start_embedded(port=taken.getsockname()[1])
    assert embedded.read_state() is None


@pytest.mark.slow  # starts a broker of its own
def test_free_port_is_chosen_when_another_program_holds_one(state):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        started = embedded.start_embedded()
        assert started["port"] != taken.getsockname()[1]


@pytest.mark.slow  # starts a broker of its own
def test_stop_stops_and_reports(state):
    import psutil

    started = embedded.start_embedded()
    assert embedded.stop_embedded() is True
    assert not psutil.pid_exists(started["pid"]) or psutil.Process(started["pid"]).status() == psutil.STATUS_ZOMBIE
    assert embedded.stop_embedded() is False


@pytest.mark.slow  # starts a broker of its own
def test_clients_of_a_killed_broker_get_a_clear_error_naming_the_fix(state):
    kafka = broker.connect(quiet=True)
    embedded.kill_embedded()
    import time
    started = time.monotonic()
    with pytest.raises(probe.BrokerUnavailable, match=r"helpers\.connect\(\)"):
        clients.consumer(kafka)
    assert time.monotonic() - started < 5
    fresh = broker.connect(quiet=True)
    assert fresh.bootstrap_servers != kafka.bootstrap_servers or fresh.pid != kafka.pid
    clients.consumer(fresh).close()


def test_stop_treats_an_unreaped_zombie_as_stopped(state):
    """A broker started by a still-running kernel turns zombie when stopped from elsewhere."""
    import psutil

    code = ("import os,time,helpers.kafka.embedded as e; s=e.start_embedded(); print(s['pid'], flush=True); "
            "time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "COURSE_STATE_DIR": str(state)})
    try:
        pid = int(holder.stdout.readline())
        import time
        started = time.monotonic()
        assert embedded.stop_embedded() is True
        assert time.monotonic() - started < 5
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        holder.kill()
        holder.wait()
