"""Consumer services you can kill, restart, pause and scale: real processes in a real group.

A :class:`ConsumerProcess` is an operating-system process (``python -m
helpers.backlog.pollloop``) that joins a consumer group, processes events at a set rate
and commits its offsets explicitly, either *after* processing (at-least-once: a crash
repeats some events) or *before* (at-most-once: a crash loses some). It can be paused,
resumed, stopped gracefully (it leaves the group at once), killed with a real SIGKILL,
and started again: the new process resumes from the group's committed offset. What it
did is in its report file (:mod:`helpers.backlog.reports`): :func:`count_report` compares it
with the ids the producer got acknowledged.

A :class:`ConsumerGroup` runs N members of one group (scale out and in) and shows which
partitions each member got (:mod:`helpers.backlog.drains` times groups of different sizes).

Every process and group registers with :mod:`helpers.core.lifecycle` (kind "consumer") while
it runs, so ``helpers.stop_all()`` and the kernel's exit stop them. Children never
outlive the notebook anyway: each watches its stdin pipe and its parent pid and exits
when the parent goes away.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import WaitTimeout, progress_bar, wait_until
from ..kafka.clients import TEACHING_CONSUMER, Kafka, partitions_for, unique_name
from ..kafka.lag import committed
from . import pollloop
from .pollloop import COMMIT_STRATEGIES, check_commit
from .reports import Exposure, ReportReader, Tally, batch_risk, count_report, exposure, processed_records

__all__ = [
    "CHILD_MODULE", "COMMIT_STRATEGIES", "SESSION_TIMEOUT_S", "ConsumerGroup", "ConsumerProcess",
    "describe_assignment", "kill_mid_batch", "process_alive", "stop_many", "wait_processed",
]

#: Seconds without a heartbeat after which the broker declares a member dead and hands its
#: partitions on (the teaching settings, clients.TEACHING_CONSUMER). The broker's clock: it does
#: not scale with TIME_SCALE, so durations raced against it derive from it (drains.deadline).
SESSION_TIMEOUT_S: float = TEACHING_CONSUMER["session_timeout_ms"] / 1000
_REPO_ROOT = Path(__file__).resolve().parents[2]  # the child imports helpers from here
#: The module each consumer process runs (``python -m CHILD_MODULE``), named from the module
#: itself: what finds these processes by their command line (tests/test_consumers.py, the
#: orphan check helpers.tooling.orphans that .ci/run calls) reads this, so a move cannot blind it.
CHILD_MODULE: str = pollloop.__name__
_WORKDIR: Path | None = None
_WORKDIR_LOCK = threading.Lock()
_names = itertools.count(1)
#: The exit code of a process ended by ``Popen.kill()``: minus SIGKILL on Linux and macOS; on
#: Windows TerminateProcess's 1 (CPython's ``Popen.terminate``, which ``kill`` is there).
if sys.platform == "win32":
    KILLED_RETURNCODE = 1
else:
    KILLED_RETURNCODE = -signal.SIGKILL


def _workdir() -> Path:
    """A temporary folder for this kernel's reports and logs, removed when it exits."""
    global _WORKDIR
    with _WORKDIR_LOCK:
        if _WORKDIR is None:
            _WORKDIR = Path(tempfile.mkdtemp(prefix="course-consumers-"))
            atexit.register(_remove_workdir, _WORKDIR)
        return _WORKDIR


def _remove_workdir(workdir: Path) -> None:
    """At exit (this runs before lifecycle's own atexit): stop the consumers, then remove the reports."""
    lifecycle.stop_all("consumer")
    shutil.rmtree(workdir, ignore_errors=True)


def _check_rate(name: str, rate: float) -> float:
    return float(check_positive(name, rate))


# ---------------------------------------------------------------- consumer process

class ConsumerProcess(lifecycle.Managed):
    """One consumer service in its own OS process, member of ``group_id`` on ``topic``.

    ``rate`` is the processing speed in events/s (each event takes 1/rate s of work);
    ``commit`` is 'after' (at-least-once) or 'before' (at-most-once); offsets are
    committed every ``batch_size`` events (one poll). ``start()`` launches a process,
    ``kill()`` SIGKILLs it, ``start()`` again launches a new one that resumes from
    the committed offset. Every processed event is one line in ``report_path``.
    Several stop in parallel with :func:`stop_many` (``signal_stop`` each, then ``stop``).
    """

    def __init__(self, kafka: Kafka, topic: str, group_id: str, *, rate: float = 100.0,
                 commit: str = "after", batch_size: int = 10, name: str | None = None,
                 report_path: str | os.PathLike[str] | None = None, paused: bool = False):
        if not topic or not isinstance(topic, str):
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if not group_id or not isinstance(group_id, str):
            raise ValueError(f"group_id must be a non-empty string, got {group_id!r}")
        self.kafka = kafka
        self.topic = topic
        self.group_id = group_id
        self.rate = _check_rate("rate", rate)
        self.commit = check_commit(commit)
        self.batch_size = check_int("batch_size", batch_size)
        self.name = name or f"consumer-{next(_names)}"
        if not all(c.isalnum() or c in "._-" for c in self.name):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-', got {self.name!r}")
        self.report_path = Path(report_path) if report_path else _workdir() / f"{group_id}.{self.name}.jsonl"
        self.log_path = self.report_path.with_suffix(".log")
        self._start_paused = bool(paused)
        self._reader = ReportReader(self.report_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._asked_to_stop: subprocess.Popen[bytes] | None = None  # the process signal_stop() asked
        self._status_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.assignment: list[int] | None = None  # None while not a settled member
        self.leader: bool | None = None  # computed the group's assignment in the last rebalance
        self.paused = bool(paused)
        self.pids: list[int] = []  # one per start()
        self.history: list[dict[str, Any]] = []  # status messages from the children

    # -- lifecycle
    def start(self, *, paused: bool | None = None) -> Self:
        """Launch a new process (after a kill or stop: it resumes from the committed offset)."""
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if paused is not None:
            self._start_paused = bool(paused)
        config = {
            "bootstrap_servers": self.kafka.bootstrap_servers, "kind": self.kafka.kind,
            "client_config": self.kafka.client_config, "topic": self.topic, "group_id": self.group_id,
            "rate": self.rate, "commit": self.commit, "batch_size": self.batch_size, "name": self.name,
            "report": str(self.report_path), "paused": self._start_paused,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE], cwd=str(_REPO_ROOT), env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, close_fds=True,
            )
        with self._lock:
            self._proc = proc
            self.assignment = None
            self.paused = self._start_paused
            self.pids.append(proc.pid)
        lifecycle.unregister(self)  # a process that died by itself may still be listed
        lifecycle.register(self, "consumer", f"{self.name} of {self.group_id} (pid {proc.pid})")
        # The settings travel over the pipe, not the command line (ps would show secrets).
        self._send(json.dumps(config))
        self._status_thread = threading.Thread(target=self._read_status, args=(proc,), daemon=True,
                                               name=f"{lifecycle.THREAD_PREFIX}{self.name}-status")
        self._status_thread.start()
        return self

    def _read_status(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        try:
            for raw in proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if not self._on_status(proc, msg):
                    break
        except (OSError, ValueError):
            pass
        finally:
            proc.stdout.close()
        proc.wait()
        with self._lock:
            if proc is self._proc:
                self.assignment = None

    def _on_status(self, proc: subprocess.Popen[bytes], msg: dict[str, Any]) -> bool:
        """Apply one status line of ``proc``; False once ``proc`` is no longer the current process."""
        with self._lock:
            if proc is not self._proc:
                return False
            self.history.append(msg)
            kind = msg.get("type")
            if kind == "assigned":
                self.assignment = sorted(msg["partitions"])
                self.leader = msg.get("leader")
            elif kind in ("revoked", "stopped"):
                self.assignment = None
            elif kind in ("paused", "resumed"):
                self.paused = kind == "paused"
        return True

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise RuntimeError(f"{self.name} is not running")
        try:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise RuntimeError(f"{self.name} is not running") from None

    @property
    def pid(self) -> int | None:
        """The pid of the latest process (None before the first start)."""
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        """True while the latest process runs."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The latest process's exit code (None while it runs)."""
        return self._proc.poll() if self._proc else None

    def kill(self) -> int:
        """Kill the process (no goodbye, no commit, no leaving the group); return its pid.
        ``Popen.kill()``: SIGKILL on Linux and macOS, TerminateProcess on Windows."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        proc.kill()
        proc.wait(timeout=10)
        self._ended(proc)
        return proc.pid

    def signal_stop(self) -> None:
        """Ask the process to stop gracefully, without waiting (:meth:`stop` waits); once per process."""
        proc = self._proc
        if self.alive and proc is not self._asked_to_stop:
            self._asked_to_stop = proc
            try:
                self._send("stop")
            except RuntimeError:  # it exited meanwhile: nothing to ask
                pass

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop: finish or commit the current batch, leave the group, exit (killed
        after ``timeout`` s)."""
        self.signal_stop()
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            self._ended(proc)
        lifecycle.unregister(self)

    def _ended(self, proc: subprocess.Popen[bytes]) -> None:
        """The process has exited: close our end of its pipes, let its status thread finish, unregister."""
        try:  # stdout belongs to the status thread, which closes it at EOF
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        if self._status_thread is not None and self._status_thread is not threading.current_thread():
            self._status_thread.join(timeout=5)
        with self._lock:
            self.assignment = None
        lifecycle.unregister(self)

    def pause(self, *, wait: bool = True) -> None:
        """Stop processing (stays in the group, keeps its partitions); takes effect between
        batches. ``wait=False`` returns at once (then :meth:`wait_paused`)."""
        self._send("pause")
        if wait:
            self.wait_paused(True)

    def resume(self, *, wait: bool = True) -> None:
        """Process again from where it paused. ``wait=False`` returns at once (then
        :meth:`wait_paused` with ``False``)."""
        self._send("resume")
        if wait:
            self.wait_paused(False)

    def wait_paused(self, paused: bool = True, timeout: float = 10.0) -> None:
        """Wait until the process says it is paused (or, with ``paused=False``, processing again)."""
        self._wait_for(lambda: self.paused == paused, timeout, "pause" if paused else "resume")

    def set_rate(self, rate: float) -> None:
        """Change the processing rate (events/s) of the running process."""
        self.rate = _check_rate("rate", rate)
        self._send(f"rate {self.rate}")

    # -- waiting and reporting
    def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def holds() -> bool:
            if predicate():
                return True
            if not self.alive:
                raise RuntimeError(f"{self.name} exited (code {self.returncode}) while waiting to {what}; "
                                   f"log:\n{self.log_tail()}")
            return False

        wait_until(holds, timeout, f"{self.name} to {what}", interval=0.02)

    def wait_assigned(self, timeout: float = 30.0) -> list[int]:
        """Wait until the group gave this member its partitions (possibly none); return them."""
        self._wait_for(lambda: self.assignment is not None, timeout, "join the group")
        return list(self.assignment or [])

    def records(self) -> list[dict[str, Any]]:
        """Every report line so far (all starts of this consumer)."""
        return self._reader.read()

    def processed(self) -> list[dict[str, Any]]:
        """The processed-event lines so far."""
        return processed_records(self.records())

    def exposure(self) -> Exposure:
        """What a crash right now costs, from the group's committed offsets and the report.

        ``repeated``: processed but not committed (a restart processes them again);
        ``lost``: committed but never processed (a restart skips them). Meant for a
        consumer that is the only member of its group (e.g. just after a kill).
        """
        return exposure(self.records(), committed(self.kafka, self.topic, self.group_id))

    def in_batch(self) -> int:
        """Events of the current batch at risk right now, read from the report alone (0 between batches)."""
        return batch_risk(self.records(), self.commit, self.pid)

    def resume_points(self, pid: int | None = None) -> dict[int, int]:
        """The first offset per partition that process ``pid`` (default: the latest) processed."""
        pid = pid or self.pid
        first: dict[int, int] = {}
        for r in self.processed():
            if r["pid"] == pid and r["offset"] < first.get(r["partition"], 1 << 62):
                first[r["partition"]] = r["offset"]
        return dict(sorted(first.items()))

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the processes' log (their stderr)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return (f"ConsumerProcess({self.name!r}, group={self.group_id!r}, pid={self.pid}, {state}, "
                f"commit={self.commit!r}, rate={self.rate:g}/s, partitions={self.assignment})")

    def __enter__(self) -> Self:
        return self if self.alive else self.start()


def kill_mid_batch(*consumers: ConsumerProcess, at_least: int = 1, timeout: float = 10.0) -> dict[str, int]:
    """Kill the consumers (:meth:`ConsumerProcess.kill`) at a moment when each is in the middle of a batch.

    That is the moment a crash costs something: with commit-after some processed
    events are not committed yet, with commit-before some committed events are not
    processed yet. Waits (at most ``timeout`` s, then kills anyway) until each has at
    least ``at_least`` such events. Returns the killed pid of each consumer by name.
    """
    if not consumers:
        raise ValueError("consumers must name at least one ConsumerProcess")
    check_int("at_least", at_least)
    wait_until(lambda: all(c.in_batch() >= at_least for c in consumers), timeout,
               "every consumer to be mid-batch", interval=0.002, strict=False)
    return {c.name: c.kill() for c in consumers}


def stop_many(processes: Iterable[ConsumerProcess], timeout: float = 15.0) -> None:
    """Stop several consumer processes gracefully, in parallel (each at most ``timeout`` s)."""
    lifecycle.stop_together(processes, timeout)


def wait_processed(sources: Iterable[Any], expected: Iterable[str] | int, timeout: float = 60.0,
                   poll: float = 0.05, *, progress: str | None = None) -> float:
    """Wait until ``sources`` (ConsumerProcess or ConsumerGroup) processed the expected events.

    ``expected`` is the produced ids (each must be processed at least once) or a count of
    distinct events. Returns the wall-clock time (time.time()) of the last needed event.
    ``progress`` labels a ``tqdm.auto`` bar of the events processed so far (redrawn at most
    twice a second), so a long wait never leaves the screen still.
    """
    sources = list(sources)
    ids = None if isinstance(expected, int) else set(expected)
    need = expected if isinstance(expected, int) else len(ids or ())
    first_seen: dict[str, float] = {}
    bar = progress_bar(need, progress) if progress else None
    shown = [0.0]

    def advance(elapsed: float) -> None:
        if bar is not None and elapsed - shown[0] >= 0.5:
            shown[0] = elapsed
            bar.update(min(len(first_seen), need) - bar.n)

    def enough() -> bool:
        first_seen.clear()
        for src in sources:
            for r in src.processed():
                eid = r["event_id"]
                if (ids is None or eid in ids) and (eid not in first_seen or r["t"] < first_seen[eid]):
                    first_seen[eid] = r["t"]
        return len(first_seen) >= need

    try:
        if not wait_until(enough, timeout, f"{need} processed events", interval=poll, strict=False, on_poll=advance):
            raise WaitTimeout(f"processed {len(first_seen)} of {need} events within {timeout:.1f} s")
    finally:
        if bar is not None:
            bar.update(min(len(first_seen), need) - bar.n)
            bar.close()
    return max(first_seen.values()) if first_seen else time.time()


def process_alive(pid: int) -> bool:
    """True if an operating-system process ``pid`` exists and is not a zombie."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def describe_assignment(assignment: dict[str, list[int] | None]) -> str:
    """One line per member: its partitions, or 'idle' when it got none."""
    lines = []
    for name, parts in assignment.items():
        shown = "joining..." if parts is None else ("idle (no partition)" if not parts else
                                                     "partition " + ", ".join(map(str, parts)))
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


# -------------------------------------------------------------------- the group

class ConsumerGroup(lifecycle.Managed):
    """N :class:`ConsumerProcess` members of one consumer group; scale out and in.

    ``assignment()`` shows which partitions each member got: with more members than
    partitions, some get none and sit idle.
    """

    def __init__(self, kafka: Kafka, topic: str, members: int = 1, *, group_id: str | None = None,
                 rate: float = 100.0, commit: str = "after", batch_size: int = 10, paused: bool = False,
                 prefix: str = "group"):
        self.kafka = kafka
        self.topic = topic
        self.size = check_int("members", members)
        self.rate = _check_rate("rate", rate)
        self.commit = check_commit(commit)
        self.batch_size = check_int("batch_size", batch_size)
        self.group_id = group_id or unique_name(prefix)
        self._paused = bool(paused)
        self.members: list[ConsumerProcess] = []
        self._partitions: list[int] | None = None
        self._counter = 0

    @property
    def partitions(self) -> list[int]:
        """The topic's partition ids (read once)."""
        if self._partitions is None:
            self._partitions = partitions_for(self.kafka, self.topic)
        return self._partitions

    def _new_member(self) -> ConsumerProcess:
        self._counter += 1
        return ConsumerProcess(self.kafka, self.topic, self.group_id, rate=self.rate, commit=self.commit,
                               batch_size=self.batch_size, name=f"member-{self._counter}", paused=self._paused)

    def start(self) -> Self:
        """Start ``members`` processes (all at once: they join in one rebalance)."""
        self.scale(self.size)
        # Registered after its members: lifecycle stops newest first, so the group stops them all at once.
        lifecycle.register(self, "consumer", f"group {self.group_id}")
        return self

    def scale(self, members: int) -> list[ConsumerProcess]:
        """Grow or shrink to ``members`` running processes (newest stop first); return them.

        Shrinking keeps the group's leader running: on the embedded broker (Tansu) a group
        whose leader leaves while other members stay never completes its next rebalance
        (the others wait for the departed leader's assignment). Apache Kafka copes either way.
        """
        check_int("members", members)
        running = [m for m in self.members if m.alive]
        while len(running) < members:
            m = self._new_member().start()
            self.members.append(m)
            running.append(m)
        if len(running) > members:
            keep_first = sorted(running, key=lambda m: not m.leader)  # the leader first, then oldest
            stop_many([m for m in running if m not in keep_first[:members]][::-1])
        self.size = members
        return [m for m in self.members if m.alive]

    @property
    def running(self) -> list[ConsumerProcess]:
        """The members whose process runs now."""
        return [m for m in self.members if m.alive]

    def assignment(self) -> dict[str, list[int] | None]:
        """Member name -> its partitions ([] = idle, None = not settled yet)."""
        return {m.name: (list(m.assignment) if m.assignment is not None else None) for m in self.running}

    def idle_members(self) -> list[str]:
        """Members that got no partition (more members than partitions)."""
        return [name for name, parts in self.assignment().items() if parts == []]

    def settled(self) -> bool:
        """Every running member has an assignment and together they cover each partition once."""
        parts = list(self.assignment().values())
        if not parts or any(p is None for p in parts):
            return False
        return sorted(p for ps in parts for p in ps or ()) == self.partitions

    def wait_assigned(self, timeout: float = 40.0, stable: float = 0.3) -> dict[str, list[int]]:
        """Wait until the group's rebalance has settled for ``stable`` s (see :meth:`settled`);
        return the assignment."""
        since: list[float] = []  # when it last became settled

        def settled_long_enough() -> bool:
            for m in self.members:
                if m.pids and not m.alive and m.returncode not in (0, None, KILLED_RETURNCODE):
                    raise RuntimeError(f"{m.name} exited with code {m.returncode}; log:\n{m.log_tail()}")
            if not self.settled():
                since.clear()
                return False
            since[:] = since or [time.monotonic()]
            return time.monotonic() - since[0] >= stable

        if not wait_until(settled_long_enough, timeout, f"group {self.group_id} to settle", strict=False):
            raise WaitTimeout(f"group {self.group_id} did not settle within {timeout} s: {self.assignment()}")
        return {name: parts or [] for name, parts in self.assignment().items()}

    def pause(self) -> None:
        """Pause every running member, all at once (they stay in the group)."""
        self._set_paused(True)

    def resume(self) -> None:
        """Resume every running member, all at once."""
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        members = self.running
        for m in members:  # all at once, then wait for each
            (m.pause if paused else m.resume)(wait=False)
        for m in members:
            m.wait_paused(paused)

    def processed(self) -> list[dict[str, Any]]:
        """Processed-event lines of every member that ever ran."""
        return [r for m in self.members for r in m.processed()]

    def count(self, produced_ids: Iterable[str]) -> Tally:
        """The group's reports counted against the produced ids."""
        return count_report(produced_ids, self.processed())

    def signal_stop(self) -> None:
        """Ask every member to stop, without waiting (several groups stop at once with
        :func:`helpers.core.lifecycle.stop_together`)."""
        for m in self.members[::-1]:
            m.signal_stop()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every member gracefully (each leaves the group), all at once."""
        stop_many(self.members[::-1], timeout)
        lifecycle.unregister(self)

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.group_id!r}, running={len(self.running)}, assignment={self.assignment()})"
