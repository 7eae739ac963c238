"""The crash harness of lab 6: run the learner's code in real processes and SIGKILL them at random.

A :class:`CrashLab` runs each *life* of a check in a process of its own
(:class:`helpers.core.processes.CourseProcess`, forked by the fork server that imported
kafka-python and :mod:`.roles` once): the orders service, the outbox relay or the payments
consumer, running the learner's ``learner_fix.py``. :meth:`CrashLab.life` starts one and, if a
:class:`Kill` says so, kills it with a real SIGKILL (psutil) at one of two kinds of random moment,
drawn by :func:`plan` from a seed the check prints:

* ``time``: a random time into the work, uniform over how long a calm life of the same code worked;
* ``op``: just before a random operation of the learner's code (a SQL statement on the check's
  connection, or a ``send``/``flush`` on its producer), uniform over the operations a calm life
  made. The worker stops itself there with SIGSTOP (all its threads at once, the producer's sender
  included) and the check SIGKILLs it.

Why both: a crash window that lasts long but holds few operations (a batch waiting in the
producer for its acknowledgement) is found by the first kind; one that is a single operation
wide but takes no time (between two commits) by the second. Neither depends on where the check
thinks the learner's windows are: the draw is uniform over the code's own run.
"""
from __future__ import annotations

import itertools
import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from ..core import lifecycle, processes
from ..core.processes import CourseProcess
from ..core.wait import progress_bar
from ..kafka.clients import Kafka
from . import roles

_tags = itertools.count(1)
_ENDS = ("done", "error")


class HarnessError(RuntimeError):
    """The harness itself failed (not the learner's code): the check says it could not run."""


def supported() -> bool:
    """True where the harness runs: a worker can stop itself just before an operation (SIGSTOP)."""
    return hasattr(signal, "SIGSTOP")


@dataclass(frozen=True)
class Kill:
    """When to kill one life: ``mode`` "time" (``at`` seconds into the work) or "op" (just before
    operation number ``at`` of the learner's code)."""

    mode: str
    at: float

    def __str__(self) -> str:
        if self.mode == "time":
            return f"at {self.at * 1000:.1f} ms into the work"
        return f"just before operation #{int(self.at)}"


def plan(seed: int, kills: int, busy_s: float, ops: int) -> list[Kill]:
    """``kills`` random moments, half at random times within ``busy_s`` and half just before a random
    one of ``ops`` operations (all times when a calm life made no operation), in a seeded random order."""
    if isinstance(kills, bool) or not isinstance(kills, int) or kills < 1:
        raise ValueError(f"kills must be a whole number, 1 or more, got {kills!r}")
    rng = random.Random(seed)
    modes = ["time", "op"] * (kills // 2) + (["time"] if kills % 2 else [])
    rng.shuffle(modes)
    out = []
    for mode in modes:
        if mode == "op" and ops >= 1:
            out.append(Kill("op", rng.randint(1, ops)))
        else:
            out.append(Kill("time", rng.uniform(0.0, max(busy_s, 0.001))))
    return out


@dataclass
class Life:
    """One worker's life: how it ended ("killed", "finished" or "error"), what it did and said."""

    tag: str
    role: str
    kill: Kill | None
    pid: int | None = None
    outcome: str = "finished"
    ops: int | None = None  # operations of the learner's code (a finished life reports them)
    units: int | None = None  # orders placed, rows published or records handled
    seconds: float | None = None  # from "working" to "done" (a finished life)
    error: dict[str, Any] | None = None
    note: str = ""
    signal: int | None = None  # the signal that ended the process (SIGKILL for a kill), if one did

    @property
    def killed(self) -> bool:
        return self.outcome == "killed"


class CrashLab(lifecycle.Managed):
    """Lab 6's crash harness (``with CrashLab(kafka) as lab:``): a process per life, from the fork
    server; registered with the course's lifecycle, so ``helpers.stop_all()`` stops it, and every
    life still running dies with it."""

    KIND = "crash-harness"

    def __init__(self, kafka: Kafka):
        if not supported():
            raise HarnessError("lab 6's checks kill processes with fork, SIGSTOP and SIGKILL, which this system "
                               "lacks (Windows): run the course in WSL or in its container (docker/)")
        self.kafka = kafka
        self.workdir = Path(tempfile.mkdtemp(prefix="course-lab6-"))
        self.log_path = self.workdir / "harness.log"
        self._lives: dict[str, CourseProcess] = {}
        self._lock = threading.Lock()  # the drill's supervisors start lives side by side

    def start(self) -> Self:
        """Start the fork server the lives come from (in the background), and register."""
        processes.warm_up(roles.PRELOAD)
        lifecycle.register(self, self.KIND, f"lab 6 crash harness ({self.workdir.name})")
        return self

    def stop(self) -> None:
        """Kill every life still running and remove the temporary files."""
        with self._lock:
            lives, self._lives = list(self._lives.values()), {}
        for proc in lives:
            proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
        lifecycle.unregister(self)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the harness's log (its workers' stderr)."""
        return processes.tail(self.log_path, lines)

    def _process(self, life: Life) -> CourseProcess:
        with self._lock:
            return self._lives[life.tag]

    # -- lives
    def spawn(self, role: str, config: dict[str, Any], kill: Kill | None = None) -> Life:
        """Start a worker of ``role`` with ``config`` (at once; :meth:`finish` waits for it)."""
        tag = f"life-{next(_tags)}"
        life = Life(tag, role, kill)
        cmd = {"role": role, **config, "freeze_at": int(kill.at) if kill is not None and kill.mode == "op" else None,
               "kafka": {"bootstrap_servers": self.kafka.bootstrap_servers,
                         "client_config": self.kafka.client_config}}
        proc = CourseProcess(roles.work, cmd, f"lab 6 {role} ({tag})", preload=roles.PRELOAD, log=self.log_path,
                             max_life=roles.MAX_LIFE_S)
        try:
            proc.start()
        except Exception as exc:
            raise HarnessError(f"the crash harness did not start a worker: {exc}. {self.log_tail()}") from exc
        with self._lock:
            self._lives[tag] = proc
        life.pid = proc.pid
        return life

    def working(self, life: Life, timeout: float) -> dict[str, Any]:
        """The worker's "working" message (its ``t`` is when the learner's code started), or the
        one that ended it first ("exited" if it died without a word)."""
        proc = self._process(life)
        started = proc.wait_for("working", *_ENDS, timeout=timeout)
        if started is None and not proc.ended.is_set():
            self.kill(life)
            raise HarnessError(f"a {life.role} worker did not get going within {timeout:.0f} s: {self.log_tail()}")
        return started or {"type": "exited"}

    def ended(self, life: Life) -> bool:
        """True once the worker said it is done or failed, or died."""
        proc = self._process(life)
        return proc.ended.is_set() or any(proc.first(kind) is not None for kind in _ENDS)

    def kill(self, life: Life) -> None:
        """A real SIGKILL (psutil): no goodbye, no flush, no commit."""
        processes.kill(life.pid)
        life.outcome = "killed"

    def life(self, role: str, config: dict[str, Any], kill: Kill | None = None, *, timeout: float = 30.0) -> Life:
        """Run one worker of ``role`` with ``config`` until it finishes, fails, or ``kill`` kills it."""
        life = self.spawn(role, config, kill)
        started = self.working(life, timeout)
        if started["type"] == "working" and kill is not None:
            if kill.mode == "time":
                time.sleep(max(0.0, started["t"] + kill.at - time.monotonic()))
                if not self.ended(life):
                    self.kill(life)
            else:
                heard = self._process(life).wait_for("freeze", *_ENDS, timeout=timeout)
                if heard is not None and heard["type"] == "freeze":
                    self._wait_stopped(life.pid)
                    self.kill(life)
        return self.finish(life, timeout)

    def finish(self, life: Life, timeout: float = 30.0) -> Life:
        """Wait for the worker to end (killing it if it hangs past ``timeout``); fill in how it ended."""
        proc = self._process(life)
        if not life.killed and proc.wait_for(*_ENDS, timeout=timeout) is None and not proc.ended.is_set():
            self.kill(life)  # a hang: the learner's code never returned
            life.outcome, life.note = "error", f"did not finish within {timeout:.0f} s"
            life.error = {"learner": True, "type": "hang", "function": life.role, "message": life.note}
        proc.join(10)
        proc.kill()  # reaped (a no-op kill if it ended), its last words read, unregistered
        with self._lock:
            self._lives.pop(life.tag, None)
        life.signal = -proc.exitcode if proc.exitcode is not None and proc.exitcode < 0 else None
        if life.killed or life.outcome == "error":
            return life
        done, error = proc.first("done"), proc.first("error")
        if error is not None:
            details = error.get("details") or {"learner": False, "type": "error", "message": error.get("error")}
            life.outcome, life.error = "error", details
            if not details.get("learner", True):
                raise HarnessError(f"the crash harness failed: {details.get('type')}: {details.get('message')}\n"
                                   f"{details.get('trace', '')}")
        elif done is not None:
            started = proc.first("working") or done
            life.ops, life.units, life.seconds = done["ops"], done["units"], done["t"] - started["t"]
        else:
            raise HarnessError(f"a {life.role} worker died by itself (signal {life.signal}, exit code "
                               f"{proc.exitcode}): {self.log_tail()}")
        return life

    @staticmethod
    def _wait_stopped(pid: int | None, timeout: float = 5.0) -> None:
        """Until the worker that froze itself is stopped (or gone)."""
        import psutil

        deadline = time.monotonic() + timeout
        while pid is not None and time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(0.0005)


def run_lives(lab: CrashLab, role: str, config: Callable[[int], dict[str, Any]], *, seed: int, kills: int,
              before: Callable[[int], object] = lambda n: None, calm: int = 2, timeout: float = 30.0,
              failed: Callable[[Life], Exception] | None = None,
              desc: str = "lives") -> tuple[list[Kill], list[Life]]:
    """``calm`` lives without a kill (the first starts cold: connections, metadata; the last, warm, says how
    long the code works and how many operations it makes), then one life per kill of :func:`plan`. Life ``n``
    runs with ``config(n)`` after ``before(n)``; a life whose learner code failed raises ``failed(life)``.
    Returns the plan and every life in order (life ``n`` is ``lives[n]``), with a progress bar meanwhile."""
    bar = progress_bar(kills + calm, desc, unit="life")
    lives: list[Life] = []

    def live(kill: Kill | None) -> Life:
        before(len(lives))
        life = lab.life(role, config(len(lives)), kill, timeout=timeout)
        if life.error and failed is not None:
            raise failed(life)
        lives.append(life)
        bar.update(1)
        return life

    try:
        warm = [live(None) for _ in range(calm)]
        busy = min(life.seconds or 0.0 for life in warm)
        kill_plan = plan(seed, kills, busy, warm[-1].ops or 0)
        for kill in kill_plan:
            live(kill)
    finally:
        bar.close()
    return kill_plan, lives


def describe(kill_plan: list[Kill], lives: list[Life]) -> str:
    """'killed 38 times (of 40 kills drawn: 20 at a random time ..., 20 just before ...; 2 came after ...)'."""
    killed = sum(life.killed for life in lives)
    times = sum(k.mode == "time" for k in kill_plan)
    late = f"; {len(kill_plan) - killed} came after the work was done" if killed < len(kill_plan) else ""
    return (f"killed {killed} times (of {len(kill_plan)} kills drawn: {times} at a random time into the work, "
            f"{len(kill_plan) - times} just before a random operation of your code{late})")
