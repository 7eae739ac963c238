"""The fault suite: what a learner's machine does to the course, and what the course does back.

Every case asserts a data outcome (events produced, processed, committed), not only
that no exception escaped:

1. the embedded broker is SIGKILLed while a lesson's consumer runs;
2. port 9092 is held by something that is not Kafka;
3. two notebooks execute at once;
4. a kernel is restarted in the middle of a consumer lesson;
5. an unreachable KAFKA_BOOTSTRAP_SERVERS fails every entry point fast, naming the fix.

Cases that start or kill brokers use their own COURSE_STATE_DIR (a tmp folder), never
the session broker of tests/conftest.py, and stop every broker they start.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from helpers.core.wait import wait_until
from helpers.kafka import broker, embedded, probe
from helpers.tooling.paths import ROOT

WELCOME = ROOT / "lessons" / "00_welcome.ipynb"
FIX_HINT = re.compile(r"python -m helpers broker start|unset KAFKA_BOOTSTRAP_SERVERS")


# --------------------------------------------------------------------------- fixtures

def _brokers_in(state_dir: Path) -> list:
    """Tansu processes started for ``state_dir`` (they inherit COURSE_STATE_DIR)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if "tansu" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get(embedded.ENV_STATE_DIR) == str(state_dir):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def private_state(tmp_path, monkeypatch):
    """A private COURSE_STATE_DIR with no KAFKA_* configured; every broker started in it is stopped."""
    if probe.probe(*broker.DOCKER_ADDRESS, timeout=1.0) == "kafka":
        pytest.skip("a real Kafka answers on 127.0.0.1:9092, so connect() would not use the embedded broker")
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv(embedded.ENV_STATE_DIR, str(state))
    monkeypatch.delenv(probe.ENV_BOOTSTRAP, raising=False)
    monkeypatch.delenv(broker.ENV_CONFIG, raising=False)
    monkeypatch.setenv("COURSE_TIME_SCALE", "0.1")
    yield state
    embedded.stop_embedded()
    for proc in _brokers_in(state):  # strays, e.g. a second broker a race would have started
        proc.kill()


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.update(extra)
    return env


def _produce(kafka, topic: str, count: int, start: int = 0) -> list[str]:
    """Send ``count`` events (values 'event-i'), wait for every acknowledgement, return the values."""
    producer = kafka.producer()
    try:
        values = [f"event-{i}" for i in range(start, start + count)]
        futures = [producer.send(topic, key=v.encode(), value=v.encode()) for v in values]
        for f in futures:
            f.get(timeout=10)
        return values
    finally:
        producer.close()


def _consume_all(kafka, topic: str, expected: int, group_id: str | None = None, timeout: float = 30.0) -> list[str]:
    """Read ``topic`` from the start (a new group, or all partitions assigned) until ``expected`` values."""
    from helpers.kafka.clients import read_from_start

    consumer = kafka.consumer(group_id=group_id)
    try:
        if group_id:
            consumer.subscribe([topic])
        else:
            read_from_start(consumer, topic)
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while len(seen) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                seen += [r.value.decode() for r in records]
            if group_id and seen:
                consumer.commit(timeout_ms=5000)
        return seen
    finally:
        consumer.close()


# ------------------------------------------------------------- 1. broker SIGKILLed

@pytest.mark.slow  # starts a broker of its own
def test_broker_killed_while_a_consumer_runs(private_state):
    from helpers.backlog import consumers
    from helpers.kafka.clients import partitions_for, unique_name

    kafka = broker.connect(quiet=True)
    assert kafka.kind == "embedded"
    topic = kafka.create_topic(prefix="fault-kill")
    produced = _produce(kafka, topic, 100)
    consumer = consumers.ConsumerProcess(kafka, topic, unique_name("fault-kill"), rate=40, batch_size=10)
    consumer.start()
    try:
        got_going = wait_until(lambda: len(consumer.processed()) >= 20, 60, "20 processed events", strict=False)
        assert got_going, f"the consumer never got going:\n{consumer.log_tail()}"
        killed = embedded.kill_embedded()
        assert killed == kafka.pid
        at_kill = len(consumer.processed())

        # The helpers say so at once, and name the fix (no hang, no silent retry loop).
        started = time.monotonic()
        info = broker.status()
        with pytest.raises(probe.BrokerUnavailable, match=FIX_HINT):
            broker.resolve(start=False)
        assert time.monotonic() - started < 5
        assert info["running"] is False and FIX_HINT.search(info["error"]), info
        # ... and a client on the dead broker fails within its bootstrap timeout instead of hanging.
        started = time.monotonic()
        with pytest.raises(probe.BrokerUnavailable):
            partitions_for(kafka, topic)
        assert time.monotonic() - started < 15

        # The lesson's consumer stops within its timeout (it cannot commit or leave the group of
        # a dead broker, so it is killed at the timeout), having processed only what it got before.
        started = time.monotonic()
        consumer.stop(timeout=5)
        assert time.monotonic() - started < 20 and not consumer.alive
    finally:
        if consumer.alive:
            consumer.kill()
    offsets = sorted(r["offset"] for r in consumer.processed())
    assert 20 <= at_kill <= len(offsets) < len(produced), (at_kill, len(offsets))
    assert offsets == list(range(len(offsets))), "the consumer skipped or repeated an event before the kill"

    # connect() starts a fresh broker; it is memory-only, so the old topic is gone, and a
    # new round trip through a consumer group delivers every event exactly once.
    fresh = broker.connect(quiet=True)
    assert fresh.kind == "embedded" and fresh.pid != kafka.pid and fresh.bootstrap_servers != kafka.bootstrap_servers
    assert partitions_for(fresh, topic) == []
    topic2 = fresh.create_topic(prefix="fault-kill-after", partitions=2)
    sent = _produce(fresh, topic2, 30)
    got = _consume_all(fresh, topic2, len(sent), group_id=unique_name("fault-kill-after"))
    assert sorted(got) == sorted(sent)


# --------------------------------------------------------- 2. 9092 is not Kafka

class _NotKafka:
    """A TCP server on 127.0.0.1:9092 that answers every connection with garbage."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(broker.DOCKER_ADDRESS)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="not-kafka-9092", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nthis is not Kafka\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def not_kafka_on_9092():
    answer = probe.probe(*broker.DOCKER_ADDRESS, timeout=1.0)
    if answer == "kafka":
        pytest.skip("a real Kafka holds 127.0.0.1:9092")
    try:
        server = _NotKafka()
    except OSError:
        if answer == "not-kafka":  # something else already holds 9092 and is not Kafka: same situation
            yield None
            return
        pytest.skip("127.0.0.1:9092 cannot be bound and does not answer")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow  # starts a broker of its own (through the doctor)
def test_port_9092_held_by_something_that_is_not_kafka(private_state, not_kafka_on_9092):
    assert probe.probe(*broker.DOCKER_ADDRESS) == "not-kafka"

    # The doctor explains what holds 9092 and still passes on the embedded broker.
    result = subprocess.run([sys.executable, "-m", "helpers", "doctor"], cwd=ROOT, capture_output=True,
                            text=True, timeout=90, env=_env(**{embedded.ENV_STATE_DIR: str(private_state)}))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "embedded broker" in out, out
    assert "9092" in out and re.search(r"not[- ]kafka", out, re.IGNORECASE), \
        f"doctor must say that 127.0.0.1:9092 answers but is not Kafka (probe 'not-kafka'):\n{out}"

    # connect() uses the embedded broker, and events go round trip through it.
    kafka = broker.connect(quiet=True)
    assert kafka.kind == "embedded" and kafka.bootstrap_servers != "127.0.0.1:9092"
    topic = kafka.create_topic(prefix="fault-9092")
    sent = _produce(kafka, topic, 20)
    assert sorted(_consume_all(kafka, topic, len(sent))) == sorted(sent)
    if not_kafka_on_9092 is not None:
        assert not_kafka_on_9092.connections >= 1  # the probes really asked our impostor


# ------------------------------------------------------ 3. two notebooks at once

GROUP_NOTEBOOK = """\
import json, time
import helpers

kafka = helpers.connect(quiet=True)
topic = kafka.create_topic(prefix="collide", partitions=2)
group = helpers.unique_name("collide-group")
producer = kafka.producer()
for i in range(40):
    producer.send(topic, key=str(i).encode(), value=f"{topic}/{i}".encode())
producer.flush()
producer.close()
consumer = kafka.consumer(topic, group_id=group)
seen = []
deadline = time.monotonic() + 60
while len(seen) < 40 and time.monotonic() < deadline:
    for records in consumer.poll(timeout_ms=300).values():
        seen += [r.value.decode() for r in records]
    consumer.commit()
consumer.close()
print(json.dumps({"topic": topic, "group": group, "bootstrap": kafka.bootstrap_servers, "values": seen}))
"""


def _stdout_json(notebook: Path) -> dict:
    nb = nbformat.read(notebook, as_version=4)
    for cell in reversed(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                for line in reversed(out["text"].splitlines()):
                    if line.startswith("{"):
                        return json.loads(line)
    raise AssertionError(f"no JSON line printed in {notebook}")


@pytest.mark.slow  # two kernels and a broker of their own (17 s)
def test_two_notebooks_at_once_do_not_collide(private_state, tmp_path):
    from kafka import KafkaAdminClient

    from helpers.kafka import lag

    group_nb = tmp_path / "group.ipynb"
    nbformat.write(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(GROUP_NOTEBOOK)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}), group_nb)
    runs = [("welcome-a", WELCOME), ("welcome-b", WELCOME), ("group-a", group_nb), ("group-b", group_nb)]
    env = _env(**{embedded.ENV_STATE_DIR: str(private_state), "COURSE_TIME_SCALE": "0.1"})
    procs = {}
    for name, source in runs:  # all four at once, racing to start the one shared broker
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "papermill", str(source), str(tmp_path / f"{name}.ipynb"), "-k", "python3",
             "--cwd", str(source.parent), "--no-progress-bar"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {}
    try:
        for name, proc in procs.items():
            outputs[name] = proc.communicate(timeout=240)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} failed:\n{outputs[name][-3000:]}"

    # One broker for all four kernels (the state-file lock), never two.
    assert len(_brokers_in(private_state)) == 1
    kafka = broker.connect(quiet=True)

    # Groups: each run consumed exactly its own 40 events through its own group and committed them.
    a, b = _stdout_json(tmp_path / "group-a.ipynb"), _stdout_json(tmp_path / "group-b.ipynb")
    assert a["bootstrap"] == b["bootstrap"] == kafka.bootstrap_servers
    assert a["topic"] != b["topic"] and a["group"] != b["group"]
    for run in (a, b):
        assert sorted(run["values"]) == sorted(f"{run['topic']}/{i}" for i in range(40)), "events crossed runs"
        assert sum(v or 0 for v in lag.committed(kafka, run["topic"], run["group"]).values()) == 40

    # Lesson 0 twice: each kernel made its own topic(s) (names carry the kernel's pid),
    # and each kernel's topics hold the same events as the other's: nothing landed twice.
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers, api_version=(2, 2))
    try:
        topics = [t for t in admin.list_topics() if not t.startswith(("collide-", "doctor-", "_"))]
    finally:
        admin.close()
    by_kernel: dict[str, list[tuple[str, int]]] = {}
    for t in topics:
        prefix, _hhmmss, _token, pid, _n = t.rsplit("-", 4)  # helpers.unique_name's layout
        by_kernel.setdefault(pid, []).append((prefix, sum(lag.end_offsets(kafka, t).values())))
    assert len(by_kernel) == 2, f"expected the topics of two lesson-0 kernels, got {topics}"
    first, second = (sorted(v) for v in by_kernel.values())
    assert first == second and sum(n for _, n in first) >= 1, by_kernel


# -------------------------------------------------- 4. kernel restart mid-lesson

CONSUME_CODE = """\
import json, os, time
import helpers
kafka = helpers.connect(quiet=True)
consumer = kafka.consumer({topic!r}, group_id={group!r}, max_poll_records=10)
processed, first = 0, None
deadline = time.monotonic() + 90
while processed < {until} and time.monotonic() < deadline:
    for records in consumer.poll(timeout_ms=300).values():
        with open({report!r}, "a") as report:
            for r in records:
                first = r.offset if first is None else first
                report.write(f"{{os.getpid()}} {{r.offset}}\\n")
                processed += 1
    consumer.commit()
print(json.dumps({{"pid": os.getpid(), "processed": processed, "first": first}}))
"""


def _execute(kc, code: str, timeout: float = 120) -> dict:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def test_kernel_restart_resumes_from_the_committed_offset(kafka, tmp_path):
    from jupyter_client import KernelManager

    from helpers.kafka import lag
    from helpers.kafka.clients import unique_name

    topic = kafka.create_topic(prefix="fault-restart")
    group = unique_name("fault-restart")
    produced = _produce(kafka, topic, 100)
    report = tmp_path / "processed.txt"
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(ROOT / "lessons"), env=_env())
    kc = km.blocking_client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        before = _execute(kc, CONSUME_CODE.format(topic=topic, group=group, until=40, report=str(report)))
        assert 40 <= before["processed"] < 100 and before["first"] == 0, before
        # Restart mid-lesson: the consumer is still open and a member of the group.
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=60)
        assert lag.committed(kafka, topic, group) == {0: before["processed"]}
        after = _execute(kc, CONSUME_CODE.format(topic=topic, group=group, until=100 - before["processed"],
                                                 report=str(report)))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert after["pid"] != before["pid"], "the kernel was not restarted"
    assert after["first"] == before["processed"], "the restarted consumer did not resume at the committed offset"
    lines = [line.split() for line in report.read_text().splitlines()]
    offsets = [int(o) for _, o in lines]
    assert len(offsets) == len(produced) and sorted(offsets) == list(range(len(produced))), \
        "processed total must equal produced, with no gap and no repeat"
    assert {pid for pid, _ in lines} == {str(before["pid"]), str(after["pid"])}
    assert lag.committed(kafka, topic, group) == {0: len(produced)}


# ------------------------------------------- 5. unreachable KAFKA_BOOTSTRAP_SERVERS

UNREACHABLE = "127.0.0.1:1"


def test_unreachable_bootstrap_servers_fail_every_entry_point_fast(private_state, monkeypatch):
    monkeypatch.setenv(probe.ENV_BOOTSTRAP, UNREACHABLE)
    started = time.monotonic()
    with pytest.raises(probe.BrokerUnavailable) as excinfo:
        broker.connect()
    assert time.monotonic() - started < 15
    message = str(excinfo.value)
    assert probe.ENV_BOOTSTRAP in message and UNREACHABLE in message and FIX_HINT.search(message), message

    env = _env(**{probe.ENV_BOOTSTRAP: UNREACHABLE, embedded.ENV_STATE_DIR: str(private_state)})
    for argv in (["doctor"], ["run", str(WELCOME.relative_to(ROOT))]):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "helpers", *argv], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
        out = result.stdout + result.stderr
        assert result.returncode != 0, f"`python -m helpers {' '.join(argv)}` succeeded:\n{out}"
        assert elapsed < 15, f"`python -m helpers {' '.join(argv)}` took {elapsed:.1f} s"
        assert probe.ENV_BOOTSTRAP in out and FIX_HINT.search(out), out
        assert "running lessons/" not in out, "a notebook ran against an unreachable broker"

    # Nothing fell back to an embedded broker behind the learner's back.
    assert embedded.read_state() is None and _brokers_in(private_state) == []
