"""Crashes at random moments: real processes, killed abruptly (lesson 9, claim C16).

A crash that a script places at a named step proves only where the script put it. Here the
code under test runs in an **operating-system process of its own** (its own sqlite
connection, its own Kafka producer), and the notebook kills it with psutil's
``Process.kill()`` (SIGKILL on Linux and macOS, TerminateProcess on Windows) at moments
drawn from a seeded random generator. Where each kill lands is up to the clock: what the
process had committed, sent or buffered at that instant is all that counts afterwards.

* :class:`KillPlan`: ``kills`` lifetimes drawn uniformly between ``low`` and ``high``
  seconds from ``seed`` (printed, so a run can be repeated).
* :class:`Worker`: one process running a module-level ``target(conn, config)``. The
  target reports ``"ready"`` over the pipe ``conn`` once set up, waits for ``"go"``, says
  ``"serving"`` as it starts its first unit of work, then works until it is killed or told
  ``"stop"`` (:func:`stop_requested`). A lifetime counts from ``"serving"``, so a process that
  the machine is slow to wake up does not spend its lifetime before its first order. It never
  outlives the notebook: :func:`orphaned` tells a target whose parent went away to exit.
* :func:`run_killed`: start a worker, let it work for each lifetime of the plan and kill
  it, with **warm spares** started meanwhile, so the next one takes over at once (a
  process and its Kafka client take tens to hundreds of ms to start; only the lifetimes are
  random, never where a kill lands in the code).

Processes come from a ``forkserver`` (Linux, macOS) that imports kafka-python once: a new
worker is a fork of it, ready in tens of milliseconds. Windows has no fork: ``spawn``
starts each worker from scratch, which is slower and changes nothing else. Every worker
registers with :mod:`helpers.core.lifecycle` (kind ``"process"``) while it runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import wait_until

__all__ = ["KillPlan", "KilledRun", "Worker", "orphaned", "process_context", "run_killed", "stop_requested",
           "warm_up"]

#: Modules the fork server imports once, so a forked worker starts with them loaded.
PRELOAD = ["sqlite3", "json", "kafka", "helpers.kafka.clients", "helpers.kafka.events",
           "helpers.patterns.dualwrites"]
READY_TIMEOUT_S = 20.0
_CONTEXT: list[Any] = []
_CONTEXT_LOCK = threading.Lock()


def process_context() -> Any:
    """The multiprocessing context workers start from: ``forkserver`` where the platform
    has it (kafka-python imported once, in the server), else ``spawn``."""
    with _CONTEXT_LOCK:
        if not _CONTEXT:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(PRELOAD)
            _CONTEXT.append(ctx)
        return _CONTEXT[0]


def warm_up() -> threading.Thread:
    """Start the fork server in the background (it imports kafka-python: about a second), so the
    first worker of a lesson does not wait for it. Returns the thread; it ends by itself."""
    def start() -> None:
        ctx = process_context()
        if ctx.get_start_method() == "forkserver":
            with contextlib.suppress(Exception):  # only an optimisation; the first worker starts it anyway
                from multiprocessing import forkserver
                forkserver.ensure_running()

    thread = threading.Thread(target=start, name=f"{lifecycle.THREAD_PREFIX}forkserver-warm-up", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- inside a worker


def orphaned(parent_pid: int) -> bool:
    """True if the notebook's process that started this worker is gone (the worker should exit).

    (With a fork server the worker's parent is the server, so it asks after the notebook's pid.)"""
    import psutil

    return not psutil.pid_exists(parent_pid)


def stop_requested(conn: Connection) -> bool:
    """True if the notebook said ``"stop"`` or closed its end of the pipe (a worker's check
    between two units of work; never blocks)."""
    try:
        return bool(conn.poll()) and conn.recv() == "stop"
    except (EOFError, OSError):
        return True


# --------------------------------------------------------------------------- the notebook's side


@dataclass(frozen=True)
class KillPlan:
    """``kills`` lifetimes, each drawn uniformly from [``low``, ``high``] s by ``seed``, then
    multiplied by ``scale`` (see :meth:`scaled`)."""

    kills: int
    seed: int = 7
    low: float = 0.05
    high: float = 0.25
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_int("kills", self.kills, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_positive("low", self.low)
        check_positive("high", self.high)
        check_positive("scale", self.scale)
        if self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}), got {self.high}")

    def lifetimes(self) -> list[float]:
        """How long each worker runs before it is killed, in order (the same for the same seed)."""
        rng = random.Random(self.seed)
        return [rng.uniform(self.low, self.high) * self.scale for _ in range(self.kills)]

    def scaled(self, factor: float) -> KillPlan:
        """The same plan (same seed, same draws) with every lifetime ``factor`` times as long:
        on a machine where the work is slower, each life still holds as much work."""
        return dataclasses.replace(self, scale=check_positive("factor", factor))

    def __str__(self) -> str:
        low, high = self.low * self.scale * 1000, self.high * self.scale * 1000
        return f"seed {self.seed}: {self.kills} kills, each after {low:.0f}-{high:.0f} ms"


class Worker:
    """One OS process running ``target(conn, config)`` (a module-level function).

    :meth:`start` launches it; :meth:`wait_ready` waits for its ``"ready"``; :meth:`go` lets
    it work; :meth:`kill` kills it at once (psutil's ``Process.kill()``); :meth:`stop` asks it
    to finish what it is doing and exit (and kills it if it does not within ``timeout``).
    """

    KIND = "process"

    def __init__(self, target: Callable[[Connection, dict[str, Any]], Any], config: dict[str, Any], name: str):
        if not callable(target):
            raise ValueError(f"target must be a module-level function, got {target!r}")
        if not isinstance(config, dict):
            raise ValueError(f"config must be a dict, got {config!r}")
        self.target, self.config, self.name = target, config, name
        self.process: Any = None
        self.conn: Connection | None = None
        self.ready = False
        self.pid: int | None = None
        self.exitcode: int | None = None
        self.failure: str | None = None          # what the worker reported before it died, if it failed
        self.started_at: float | None = None   # time.monotonic() when it said "serving"

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        try:
            return self.process is not None and self.process.is_alive()
        except ValueError:  # closed: it has exited
            return False

    def start(self) -> Worker:
        """Launch the process (it sets up, says ready, and waits for :meth:`go`)."""
        ctx = process_context()
        parent, child = ctx.Pipe()
        config = {**self.config, "parent_pid": os.getpid()}
        self.process = ctx.Process(target=self.target, args=(child, config), name=self.name, daemon=True)
        self.process.start()
        self.pid = self.process.pid
        child.close()
        self.conn = parent
        lifecycle.register(self, self.KIND, f"{self.name} (pid {self.process.pid})")
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Worker:
        """Wait for the worker's ``"ready"``; RuntimeError with its message if it failed instead."""
        if self.ready:
            return self
        if self.conn is None:
            raise RuntimeError(f"{self.name} was not started")
        if not self.conn.poll(timeout):
            self.kill()
            raise RuntimeError(f"{self.name} did not get ready within {timeout:.0f} s")
        try:
            message = self.conn.recv()
        except EOFError:
            self.process.join(1)
            code = self.process.exitcode
            self.kill()
            raise RuntimeError(f"{self.name} exited before it was ready (exit code {code})") from None
        if message != "ready":
            self.kill()
            raise RuntimeError(f"{self.name} failed to start: {message}")
        self.ready = True
        return self

    def go(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Let the (ready) worker work, and wait until it says ``"serving"``: that moment is
        :attr:`started_at`. RuntimeError with its message if it failed instead."""
        self.wait_ready()
        assert self.conn is not None
        self.conn.send("go")
        message = self.conn.recv() if self.conn.poll(timeout) else f"no word within {timeout:.0f} s"
        if message != "serving":
            self.kill()
            raise RuntimeError(f"{self.name} did not start serving: {message}")
        self.started_at = time.monotonic()

    def kill(self) -> None:
        """Kill the process now (SIGKILL / TerminateProcess), wait for it, close the pipe."""
        import psutil

        self._collect()
        if self.alive and self.pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                psutil.Process(self.pid).kill()
            self.process.join(5)
        self._close()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finish and exit; kill it if it has not within ``timeout`` s."""
        if self.conn is not None and self.alive:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send("stop")
            self.process.join(timeout)
        self.kill()

    def _collect(self) -> None:
        """Read what the worker said and nobody read yet: a failure it reported before dying."""
        with contextlib.suppress(EOFError, OSError, ValueError):
            while self.conn is not None and self.conn.poll():
                message = self.conn.recv()
                if isinstance(message, str) and message not in ("ready", "serving"):
                    self.failure = message

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        if self.process is not None and not self.alive:
            with contextlib.suppress(ValueError):
                self.exitcode = self.process.exitcode
                self.process.close()
        lifecycle.unregister(self)


@dataclass
class KilledRun:
    """What :func:`run_killed` did: each worker's pid, and how long it ran before its kill."""

    plan: KillPlan
    pids: list[int] = field(default_factory=list)
    lived: list[float] = field(default_factory=list)   # measured: go() to kill, s

    def moments(self) -> str:
        """The kill moments, as printed: "120, 87, 240 ms" (each after its worker said serving)."""
        return ", ".join(f"{s * 1000:.0f}" for s in self.lived) + " ms"


def run_killed(start_worker: Callable[[int], Worker], plan: KillPlan, *, spares: int = 2,
               stretch: Callable[[], float] | None = None,
               on_kill: Callable[[int, float], object] | None = None) -> KilledRun:
    """For each lifetime of ``plan``: a worker (``start_worker(n)``, n = 1, 2, ...) works and is
    killed after it. ``spares`` next workers are started ahead while the current one works, so
    one takes over at once. ``stretch()``, asked before each life starts (never during it),
    multiplies that lifetime (a machine that has become slower gets longer lives).
    ``on_kill(n, lived)`` runs after each kill (a progress bar, a pace estimate). RuntimeError
    if a worker reported a failure before its kill."""
    if not isinstance(plan, KillPlan):
        raise ValueError(f"plan must be a KillPlan, got {plan!r}")
    check_int("spares", spares)
    run = KilledRun(plan)
    lifetimes = plan.lifetimes()
    waiting: list[Worker] = []
    started = 0

    def top_up() -> None:
        nonlocal started
        while len(waiting) < spares and started < len(lifetimes):
            started += 1
            waiting.append(start_worker(started))

    try:
        top_up()
        for n, lifetime in enumerate(lifetimes, start=1):
            current = waiting.pop(0)
            if stretch is not None:
                lifetime *= check_positive("stretch()", stretch())
            current.go()
            top_up()
            time.sleep(max(0.0, lifetime - (time.monotonic() - (current.started_at or 0.0))))
            killed_at = time.monotonic()
            current.kill()
            if current.failure is not None:
                raise RuntimeError(f"{current.name} failed while it worked: {current.failure}")
            run.lived.append(killed_at - (current.started_at or 0.0))
            run.pids.append(current.pid or 0)
            if on_kill is not None:
                on_kill(n, run.lived[-1])
    finally:
        for spare in waiting:
            spare.kill()
    return run


def wait_all_exited(workers: Sequence[Worker], timeout: float = 10.0) -> None:
    """Wait until none of ``workers`` runs any more (WaitTimeout naming them otherwise)."""
    wait_until(lambda: not any(w.alive for w in workers), timeout,
               f"workers {[w.name for w in workers]} to exit", interval=0.02)
