"""The capstone's service processes, from the notebook's side: start, kill, revive, pause, crash.

A :class:`ServiceProcess` is one service of the twin shop (:func:`helpers.capstone.workers.main`
runs in it), one :class:`helpers.core.processes.CourseProcess` after another: forked by the fork
server, which imported the workers' module once (:data:`helpers.capstone.workers.PRELOAD`), so
starting or restarting a service takes milliseconds, not an interpreter start and its imports,
however busy the machine. A kill is abrupt (psutil: SIGKILL): requests in flight die with the
process (their callers get a reset), an event service neither commits nor leaves its group (the
group waits out its session timeout before a newcomer gets the partitions). A pause suspends the
whole process (psutil), as a stop-the-world collector freezes every thread. A crash is a kill and
the restart a supervisor does at once.

Every process ends when its pipe to the kernel closes (when the kernel stops it, exits or dies),
and ignores SIGINT: the notebook's interrupt stops the cell, not the shop (both from
:mod:`helpers.core.processes`).
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from ..core.processes import CourseProcess, tail
from ..core.wait import wait_until
from . import workers

__all__ = ["START_TIMEOUT_S", "ServiceProcess"]

#: How long a process may take to be ready (an event service: its group join, ~3 s on the embedded broker).
START_TIMEOUT_S = 30.0


def _ready(child: CourseProcess) -> bool:
    """Running, and its latest word is ``ready`` (an event service says ``revoked`` in a rebalance)."""
    latest = child.latest("ready", "revoked")
    return child.alive and latest is not None and latest["type"] == "ready"


class ServiceProcess:
    """One service of the twin shop, as a process (see the module's doc).

    ``config`` is the service's settings (:mod:`helpers.capstone.workers`: its ``role``, its
    database, its callee or its topics...). ``start()`` starts it (``wait``: until it is ready:
    listening, or in its group with partitions); :meth:`kill`, :meth:`revive`, :meth:`crash`,
    :meth:`suspend`, :meth:`resume` and :meth:`command` act on the running process; ``stop()``
    ends it. Each process registers with :mod:`helpers.core.lifecycle` while it runs.
    """

    def __init__(self, name: str, config: dict[str, Any], folder: Path):
        self.name = name
        self.config = dict(config)
        self.log = folder / f"{name.replace(' ', '-')}.log"
        self.current: CourseProcess | None = None
        self._lock = threading.RLock()  # one start at a time: a revive never races another
        self.pids: list[int] = []
        self.kills = 0

    # ---- lifecycle
    def start(self, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Start the service with its settings (same port and database as before, if it ran);
        ``wait`` until it is ready. A service already running is left as it is."""
        with self._lock:
            if self.current is not None and self.current.alive:
                return self
            child = CourseProcess(workers.main, {**self.config, "port": self.port}, f"capstone {self.name}",
                                  preload=workers.PRELOAD, log=self.log).start()
            self.current = child
            assert child.pid is not None
            self.pids.append(child.pid)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Wait until the running process is ready; RuntimeError with its log if it failed."""
        child = self.current
        if child is None:
            raise RuntimeError(f"{self.name} is not running")
        wait_until(lambda: _ready(child) or child.ended.is_set() or child.count("error") > 0, timeout,
                   f"{self.name} to be ready", interval=0.01)
        if not _ready(child):
            errors = "; ".join(str(m.get("error")) for m in child.said("error"))
            raise RuntimeError(f"{self.name} failed: {errors or 'it ended'}. {self.log_tail()}")
        return self

    @property
    def port(self) -> int | None:
        """The HTTP port (kept across restarts; None for an event service)."""
        child = self.current
        said = child.latest("ready") if child is not None else None
        return (said or {}).get("port") or self.config.get("port")

    @property
    def down(self) -> bool:
        """Killed and not started again."""
        return self.current is None

    @property
    def pid(self) -> int | None:
        """The running process's pid (None when down)."""
        child = self.current
        return child.pid if child is not None and child.alive else None

    @property
    def ready(self) -> bool:
        """Running and ready (listening, or in its group with partitions)."""
        child = self.current
        return child is not None and _ready(child)

    @property
    def suspended(self) -> bool:
        """True while the running process is frozen."""
        child = self.current
        return child is not None and child.suspended

    @property
    def errors(self) -> list[str]:
        """What the running process reported as errors."""
        child = self.current
        return [str(m.get("error")) for m in child.said("error")] if child is not None else []

    def said(self, kind: str) -> list[dict[str, Any]]:
        """The latest messages of one kind from the running process (e.g. ``relay-error``)."""
        child = self.current
        return child.said(kind) if child is not None else []

    # ---- faults
    def kill(self) -> float:
        """Kill the running process abruptly; return when (time.monotonic()). It is reaped before
        this returns: the port and the group member are free to come back."""
        with self._lock:
            child = self.current
            if child is None or not child.alive:
                raise RuntimeError(f"{self.name} is not running")
            if self.port:
                self.config["port"] = self.port
            self.current = None
            self.kills += 1
            return child.kill()

    def revive(self, *, wait: bool = False, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Start the service again (same port, same database, same group); no-op if it runs."""
        return self.start(wait=wait, timeout=timeout)

    def crash(self) -> float:
        """A crash and the restart its supervisor does at once; return when it died (time.monotonic())."""
        with self._lock:
            at = self.kill()
            self.revive(wait=False)
        return at

    def suspend(self) -> None:
        """Freeze the whole process: it neither runs nor answers until :meth:`resume`."""
        child = self.current
        if child is not None:
            child.suspend()

    def resume(self) -> None:
        """Let a frozen process go on."""
        child = self.current
        if child is not None:
            child.resume()

    def command(self, message: dict[str, Any], *, wait: float = 0.0) -> None:
        """Change the running service (``{"slow": s}``, ``{"fix": bool}``); remembered for restarts.
        ``wait``: seconds to wait for the service to say it applied the change."""
        self.config.update(message)
        child = self.current
        if child is None or not child.alive:
            return
        before = child.count("applied")
        with contextlib.suppress(RuntimeError):
            child.send("command", **message)
        if wait > 0:
            wait_until(lambda: child.count("applied") > before or not child.alive, wait,
                       f"{self.name} to apply {message}", interval=0.005, strict=False)

    def stop(self) -> None:
        """End the service's process (and wait for what it left to reap)."""
        with self._lock:
            child, self.current = self.current, None
        if child is not None:
            child.kill()

    def log_tail(self, lines: int = 8) -> str:
        """The end of the service's log (its tracebacks), for an error message."""
        text = " | ".join(tail(self.log, lines).splitlines())
        return f"log: {text}" if text else ""

    def __repr__(self) -> str:
        state = "suspended" if self.suspended else "ready" if self.ready else "down"
        port = f" on port {self.port}" if self.port else ""
        return f"<ServiceProcess {self.name} {state}{port}, pid {self.pid}>"
