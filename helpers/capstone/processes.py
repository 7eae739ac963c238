"""The capstone's service processes, from the notebook's side: start, kill, revive, pause, crash.

A :class:`ServiceProcess` is one service of the twin shop (:func:`helpers.capstone.workers.main`
runs in it). Its processes are forked by ``multiprocessing``'s fork server, which imported the
workers' module once (:func:`forkserver`): starting or restarting a service takes milliseconds,
not an interpreter start and its imports, however busy the machine. A kill is ``SIGKILL``:
requests in flight die with the process (their callers get a reset), an event service neither
commits nor leaves its group (the group waits out its session timeout before a newcomer gets
the partitions). A pause suspends the whole process (psutil), as a stop-the-world collector
freezes every thread. A crash is a kill and the restart a supervisor does at once.

Every process ends when its pipe to the kernel closes: when the kernel stops it, exits or dies. It
ignores SIGINT: the notebook's interrupt (which Jupyter sends to the kernel's whole process group)
stops the cell, not the shop.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from ..core import lifecycle
from ..core.wait import wait_until
from . import workers

__all__ = ["START_TIMEOUT_S", "ServiceProcess", "forkserver"]

#: How long a process may take to be ready (an event service: its group join, ~3 s on the embedded broker).
START_TIMEOUT_S = 30.0
_CONTEXT: list[BaseContext] = []


def forkserver() -> BaseContext:
    """The ``multiprocessing`` context the capstone's services start from: a fork server (started
    on first use, once per kernel) that imported :mod:`helpers.capstone.workers` beforehand."""
    if not _CONTEXT:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["helpers.capstone.workers"])
        _CONTEXT.append(ctx)
    return _CONTEXT[0]


class _Child(lifecycle.CourseThread):
    """One process of a service, and the thread that reads what it says (ready, its port, errors)."""

    KIND = "process-reader"

    def __init__(self, name: str, config: dict[str, Any], log: Path):
        super().__init__()
        self.name = f"capstone-{name.replace(' ', '-')}"
        ctx = forkserver()
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=workers.main, args=(theirs, str(log)), name=f"capstone {name}",  # type: ignore[attr-defined]
                                daemon=True)
        self.proc.start()
        theirs.close()
        self._send_lock = threading.Lock()
        self.ready = threading.Event()
        self.ended = threading.Event()
        self.port: int | None = None
        self.errors: list[str] = []
        self.applied: list[dict[str, Any]] = []
        self.said: list[dict[str, Any]] = []
        self.send(config)
        self.start()

    @property
    def pid(self) -> int:
        pid = self.proc.pid
        assert pid is not None  # started
        return pid

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self.conn.recv()
                kind = msg.get("type")
                if kind == "ready":
                    self.port = msg.get("port", self.port)
                    self.ready.set()
                elif kind == "revoked":
                    self.ready.clear()
                elif kind == "error":
                    self.errors.append(str(msg.get("error")))
                elif kind == "applied":
                    self.applied.append(msg)
                else:
                    self.said.append(msg)
                    del self.said[:-50]  # the latest only
        except (EOFError, OSError, ValueError):
            pass  # the process ended (or the pipe was closed): nothing more to read
        finally:
            self.ready.clear()
            self.ended.set()

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                raise RuntimeError("the process has ended") from None

    def end(self) -> None:
        """Kill the process (if it still runs), close the pipe, wait for the reading thread."""
        if self.proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()  # the reader's recv() ends
        self.stop(timeout=10)


class ServiceProcess:
    """One service of the twin shop, as a process (see the module's doc).

    ``config`` is the service's settings (:mod:`helpers.capstone.workers`: its ``role``, its
    database, its callee or its topics...). ``start()`` starts it (``wait``: until it is ready:
    listening, or in its group with partitions); :meth:`kill`, :meth:`revive`, :meth:`crash`,
    :meth:`suspend`, :meth:`resume` and :meth:`command` act on the running process; ``stop()``
    ends it.
    """

    def __init__(self, name: str, config: dict[str, Any], folder: Path):
        self.name = name
        self.config = dict(config)
        self.log = folder / f"{name.replace(' ', '-')}.log"
        self.current: _Child | None = None
        self._lock = threading.RLock()  # one start at a time: a revive never races another
        self.pids: list[int] = []
        self.kills = 0
        self.suspended = False

    # ---- lifecycle
    def start(self, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Start the service with its settings (same port and database as before, if it ran);
        ``wait`` until it is ready. A service already running is left as it is."""
        with self._lock:
            if self.current is not None and self.current.alive:
                return self
            child = _Child(self.name, {**self.config, "port": self.port}, self.log)
            self.current = child
            self.pids.append(child.pid)
        lifecycle.register(self, "process", f"capstone {self.name}")
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Wait until the running process is ready; RuntimeError with its log if it failed."""
        child = self.current
        if child is None:
            raise RuntimeError(f"{self.name} is not running")
        wait_until(lambda: child.ready.is_set() or child.ended.is_set() or child.errors, timeout,
                   f"{self.name} to be ready", interval=0.01)
        if not child.ready.is_set():
            raise RuntimeError(f"{self.name} failed: {'; '.join(child.errors) or 'it ended'}. {self.log_tail()}")
        return self

    @property
    def port(self) -> int | None:
        """The HTTP port (kept across restarts; None for an event service)."""
        child = self.current
        return child.port if child is not None and child.port else self.config.get("port")

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
        return child is not None and child.alive and child.ready.is_set()

    @property
    def errors(self) -> list[str]:
        """What the running process reported as errors."""
        return list(self.current.errors) if self.current is not None else []

    def said(self, kind: str) -> list[dict[str, Any]]:
        """The latest messages of one kind from the running process (e.g. ``relay-error``)."""
        child = self.current
        return [m for m in (child.said if child is not None else []) if m.get("type") == kind]

    # ---- faults
    def kill(self) -> float:
        """SIGKILL the running process; return when (time.monotonic())."""
        with self._lock:
            child = self.current
            if child is None or not child.alive:
                raise RuntimeError(f"{self.name} is not running")
            if child.port:
                self.config["port"] = child.port
            self.resume()  # a suspended process dies all the same; the flag must not outlive it
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            at = time.monotonic()
            self.kills += 1
            self.current = None
            child.end()  # reaped: a few milliseconds, then the port and the group member are free to come back
        return at

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
        """Freeze the whole process (SIGSTOP): it neither runs nor answers until :meth:`resume`."""
        import psutil

        child = self.current
        if child is not None and child.alive and not self.suspended:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(child.pid).suspend()
            self.suspended = True

    def resume(self) -> None:
        """Let a frozen process go on."""
        import psutil

        child = self.current
        if self.suspended and child is not None:
            with contextlib.suppress(psutil.NoSuchProcess, ValueError):
                psutil.Process(child.pid).resume()
        self.suspended = False

    def command(self, message: dict[str, Any], *, wait: float = 0.0) -> None:
        """Change the running service (``{"slow": s}``, ``{"fix": bool}``); remembered for restarts.
        ``wait``: seconds to wait for the service to say it applied the change."""
        self.config.update(message)
        child = self.current
        if child is None or not child.alive:
            return
        before = len(child.applied)
        with contextlib.suppress(RuntimeError):
            child.send(message)
        if wait > 0:
            wait_until(lambda: len(child.applied) > before or not child.alive, wait,
                       f"{self.name} to apply {message}", interval=0.005, strict=False)

    def stop(self) -> None:
        """End the service's process (and wait for what it left to reap)."""
        self.resume()
        with self._lock:
            child, self.current = self.current, None
        if child is not None:
            child.end()
        lifecycle.unregister(self)

    def log_tail(self, lines: int = 8) -> str:
        """The end of the service's log (its tracebacks), for an error message."""
        try:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ("log: " + " | ".join(tail)) if tail else ""

    def __repr__(self) -> str:
        state = "suspended" if self.suspended else "ready" if self.ready else "down"
        port = f" on port {self.port}" if self.port else ""
        return f"<ServiceProcess {self.name} {state}{port}, pid {self.pid}>"
