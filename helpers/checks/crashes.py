"""The crash harness of lab 6: run the learner's code in real processes and SIGKILL them at random.

A :class:`CrashLab` starts one warm child process (:mod:`.forkserver`) that forks a worker per
*life*: the orders service, the outbox relay or the payments consumer, running the learner's
``learner_fix.py``. :meth:`CrashLab.life` starts one and, if a :class:`Kill` says so, kills it with
a real SIGKILL (psutil) at one of two kinds of random moment, drawn by :func:`plan` from a seed the
check prints:

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

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import lifecycle
from ..core.wait import progress_bar
from ..kafka.clients import Kafka

_REPO_ROOT = Path(__file__).resolve().parents[2]  # the child imports helpers from here
_tags = itertools.count(1)
_ENDS = ("done", "error", "exited")


class HarnessError(RuntimeError):
    """The harness itself failed (not the learner's code): the check says it could not run."""


def supported() -> bool:
    """True where the harness runs: POSIX process tools (fork, SIGSTOP, SIGKILL)."""
    return hasattr(os, "fork") and hasattr(signal, "SIGSTOP") and hasattr(signal, "SIGKILL")


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

    @property
    def killed(self) -> bool:
        return self.outcome == "killed"


@dataclass
class _Events:
    by_tag: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)


class CrashLab:
    """The warm child process and its workers (``with CrashLab(kafka) as lab:``); registered with
    the course's lifecycle, so ``helpers.stop_all()`` stops it, and its workers die with it."""

    def __init__(self, kafka: Kafka):
        if not supported():
            raise HarnessError("lab 6's checks kill processes with fork, SIGSTOP and SIGKILL, which this system "
                               "lacks (Windows): run the course in WSL or in its container (docker/)")
        self.kafka = kafka
        self.workdir = Path(tempfile.mkdtemp(prefix="course-lab6-"))
        self.log_path = self.workdir / "harness.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._events = _Events()
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()

    # -- the warm process
    def start(self) -> CrashLab:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "helpers.checks.forkserver"], cwd=str(_REPO_ROOT),
                                          env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                          close_fds=True)
        lifecycle.register(self, "crash-harness", f"lab 6 crash harness (pid {self._proc.pid})")
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"{lifecycle.THREAD_PREFIX}crash-harness")
        self._reader.start()
        self._send({"bootstrap_servers": self.kafka.bootstrap_servers, "client_config": self.kafka.client_config})
        if self._wait("", ("ready",), 30.0) is None:
            self.stop()
            raise HarnessError(f"the crash harness did not start: {self.log_tail()}")
        return self

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise HarnessError(f"the crash harness is not running: {self.log_tail()}")
        with self._send_lock:  # the drill's supervisors share the pipe
            proc.stdin.write((json.dumps(message) + "\n").encode())
            proc.stdin.flush()

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            with self._events.cond:
                self._events.by_tag.setdefault(event.get("tag", ""), []).append(event)
                self._events.cond.notify_all()
        with self._events.cond:
            self._events.by_tag.setdefault("", []).append({"event": "harness-gone"})
            self._events.cond.notify_all()

    def _wait(self, tag: str, kinds: tuple[str, ...], timeout: float) -> dict[str, Any] | None:
        """The first event of ``tag`` of one of ``kinds`` (None after ``timeout`` or if the harness died)."""
        deadline = time.monotonic() + timeout
        with self._events.cond:
            while True:
                for event in self._events.by_tag.get(tag, []):
                    if event.get("event") in kinds:
                        return event
                if any(e.get("event") == "harness-gone" for e in self._events.by_tag.get("", [])):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._events.cond.wait(left)

    def stop(self) -> None:
        """Kill every worker left, end the warm process, remove the temporary files."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                if proc.stdin is not None:
                    proc.stdin.write(b'{"cmd": "quit"}\n')
                    proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if self._reader is not None:
                self._reader.join(timeout=5)
            self._proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        lifecycle.unregister(self)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the harness's log (its workers' stderr)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> CrashLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lives
    def spawn(self, role: str, config: dict[str, Any], kill: Kill | None = None) -> Life:
        """Fork a worker of ``role`` with ``config`` (at once; :meth:`finish` waits for it)."""
        tag = f"life-{next(_tags)}"
        life = Life(tag, role, kill)
        self._send({"cmd": "fork", "tag": tag, "role": role, **config,
                    "freeze_at": int(kill.at) if kill is not None and kill.mode == "op" else None})
        forked = self._wait(tag, ("forked",), 10.0)
        if forked is None:
            raise HarnessError(f"the crash harness did not start a worker: {self.log_tail()}")
        life.pid = forked["pid"]
        return life

    def working(self, life: Life, timeout: float) -> dict[str, Any]:
        """The worker's "working" event (its ``t`` is when the learner's code started), or the
        event that ended it first."""
        started = self._wait(life.tag, ("working",) + _ENDS, timeout)
        if started is None:
            self.kill(life)
            raise HarnessError(f"a {life.role} worker did not get going within {timeout:.0f} s: {self.log_tail()}")
        return started

    def ended(self, life: Life) -> bool:
        """True once the worker said it is done or failed, or died."""
        return self._wait(life.tag, _ENDS, 0.0) is not None

    def kill(self, life: Life) -> None:
        """A real SIGKILL (psutil): no goodbye, no flush, no commit."""
        import psutil

        if life.pid is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(life.pid).kill()
        life.outcome = "killed"

    def life(self, role: str, config: dict[str, Any], kill: Kill | None = None, *, timeout: float = 30.0) -> Life:
        """Run one worker of ``role`` with ``config`` until it finishes, fails, or ``kill`` kills it."""
        life = self.spawn(role, config, kill)
        started = self.working(life, timeout)
        if started["event"] == "working" and kill is not None:
            if kill.mode == "time":
                time.sleep(max(0.0, started["t"] + kill.at - time.monotonic()))
                if not self.ended(life):
                    self.kill(life)
            elif self._wait(life.tag, ("freeze",) + _ENDS, timeout) is not None and self._event(life.tag, "freeze"):
                self._wait_stopped(life.pid)
                self.kill(life)
        return self.finish(life, timeout)

    def finish(self, life: Life, timeout: float = 30.0) -> Life:
        """Wait for the worker to end (killing it if it hangs past ``timeout``); fill in how it ended."""
        tag = life.tag
        if not life.killed and self._wait(tag, _ENDS, timeout) is None:  # a hang: the learner's code never returned
            self.kill(life)
            life.outcome, life.note = "error", f"did not finish within {timeout:.0f} s"
            life.error = {"learner": True, "type": "hang", "function": life.role, "message": life.note}
        self._wait(tag, ("exited",), 10.0)
        if life.killed or life.outcome == "error":
            return life
        done, error = self._event(tag, "done"), self._event(tag, "error")
        if error is not None:
            life.outcome, life.error = "error", error
            if not error.get("learner", True):
                raise HarnessError(f"the crash harness failed: {error.get('type')}: {error.get('message')}\n"
                                   f"{error.get('trace', '')}")
        elif done is not None:
            started = self._event(tag, "working") or done
            life.ops, life.units, life.seconds = done["ops"], done["units"], done["t"] - started["t"]
        else:
            exited = self._event(tag, "exited") or {}
            raise HarnessError(f"a {life.role} worker died by itself (signal {exited.get('signal')}): "
                               f"{self.log_tail()}")
        return life

    def _event(self, tag: str, kind: str) -> dict[str, Any] | None:
        with self._events.cond:
            return next((e for e in self._events.by_tag.get(tag, []) if e.get("event") == kind), None)

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
