"""Producer and consumer services you can kill, restart, pause and scale.

A :class:`ConsumerProcess` is a real operating-system process (``python -m
helpers.consumers``) that joins a consumer group, processes events at a set rate
and commits its offsets explicitly, either *after* processing (at-least-once: a
crash repeats some events) or *before* (at-most-once: a crash loses some). It
can be paused, resumed, stopped gracefully (it leaves the group at once),
killed with a real SIGKILL, and started again: the new process resumes from the
group's committed offset.

Every process appends one JSON line per processed event (event id, partition,
offset, pid, time) to a report file, flushed per event, so what it did is known
exactly even after a SIGKILL; :func:`count_report` compares a report with the
ids the producer got acknowledged: processed, duplicates, missing.

A :class:`ConsumerGroup` runs N members of one group (scale out and in) and
shows which partitions each member got; :func:`compare_drains` drains the same
backlog with groups of different sizes. :class:`ProducerRunner` publishes at a
rate in a thread and counts sends, acknowledgements and errors.

Children never outlive the notebook: each watches its stdin pipe and its parent
pid and exits when the parent goes away; an ``atexit`` hook stops the rest.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .broker import Kafka
from .params import check_int, check_positive

COMMIT_STRATEGIES = {
    "after": "commit after processing (at-least-once: a crash repeats the uncommitted events)",
    "before": "commit before processing (at-most-once: a crash loses the committed, unprocessed events)",
}

_REPO_ROOT = Path(__file__).resolve().parent.parent
_LIVE: "weakref.WeakSet[ConsumerProcess]" = weakref.WeakSet()
_PRODUCERS: "weakref.WeakSet[ProducerRunner]" = weakref.WeakSet()
_WORKDIR: Path | None = None
_WORKDIR_LOCK = threading.Lock()


def _workdir() -> Path:
    """A temporary folder for this kernel's reports and logs, removed when it exits."""
    global _WORKDIR
    with _WORKDIR_LOCK:
        if _WORKDIR is None:
            _WORKDIR = Path(tempfile.mkdtemp(prefix="course-consumers-"))
            atexit.register(_cleanup, _WORKDIR)
        return _WORKDIR


def _cleanup(workdir: Path) -> None:
    """At exit: stop what still runs, then remove the reports (atexit runs this before stop_all)."""
    stop_all()
    shutil.rmtree(workdir, ignore_errors=True)


def _check_commit(commit: str) -> str:
    if commit not in COMMIT_STRATEGIES:
        raise ValueError(f"commit must be one of {sorted(COMMIT_STRATEGIES)}, got {commit!r}")
    return commit


def _check_rate(name: str, rate: float) -> float:
    return float(check_positive(name, rate))


# ----------------------------------------------------------------------- reports

class _ReportReader:
    """Reads a JSONL report incrementally; a half-written last line waits for the next read."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = b""
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._offset)
                    data = fh.read()
            except FileNotFoundError:
                return list(self._records)
            self._offset += len(data)
            data = self._partial + data
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                if line.strip():
                    self._records.append(json.loads(line))
            return list(self._records)


def read_report(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a report file (processed events and commits), in order."""
    return _ReportReader(Path(path)).read()


def processed_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the 'processed' lines of a report (commit lines dropped)."""
    return [r for r in records if r.get("kind") == "processed"]


@dataclass(frozen=True)
class Tally:
    """What a report says against what the producer got acknowledged."""

    produced: int
    processed: int  # processed lines, repeats included
    unique: int  # distinct produced events processed at least once
    duplicates: int  # processed lines beyond the first for an event
    missing: int  # produced events never processed
    unexpected: int  # processed events the producer list does not know
    missing_ids: tuple[str, ...] = ()
    duplicate_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (f"produced {self.produced}, processed {self.processed} "
                f"({self.unique} unique), duplicates {self.duplicates}, missing {self.missing}")


def count_report(produced_ids: Iterable[str], records: Iterable[dict[str, Any]]) -> Tally:
    """Count a report against the produced event ids: unique, duplicates and missing."""
    produced = list(produced_ids)
    wanted = set(produced)
    seen = Counter(r["event_id"] for r in processed_records(records))
    unique = wanted & set(seen)
    dup_ids = tuple(sorted(i for i, n in seen.items() if n > 1))
    return Tally(
        produced=len(wanted),
        processed=sum(seen.values()),
        unique=len(unique),
        duplicates=sum(n - 1 for n in seen.values()),
        missing=len(wanted - unique),
        unexpected=len(set(seen) - wanted),
        missing_ids=tuple(sorted(wanted - unique)),
        duplicate_ids=dup_ids,
    )


# ---------------------------------------------------------------- consumer process

class ConsumerProcess:
    """One consumer service in its own OS process, member of ``group_id`` on ``topic``.

    ``rate`` is the processing speed in events/s (each event takes 1/rate s of work);
    ``commit`` is 'after' (at-least-once) or 'before' (at-most-once); offsets are
    committed every ``batch_size`` events (one poll). ``start()`` launches a process,
    ``kill()`` SIGKILLs it, ``start()`` again launches a new one that resumes from
    the committed offset. Every processed event is one line in ``report_path``.
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
        self.commit = _check_commit(commit)
        self.batch_size = check_int("batch_size", batch_size)
        self.name = name or f"consumer-{next(_names)}"
        if not all(c.isalnum() or c in "._-" for c in self.name):
            raise ValueError(f"name must be letters, digits, '.', '_' or '-', got {self.name!r}")
        self.report_path = Path(report_path) if report_path else _workdir() / f"{group_id}.{self.name}.jsonl"
        self.log_path = self.report_path.with_suffix(".log")
        self._start_paused = bool(paused)
        self._reader = _ReportReader(self.report_path)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Condition()
        self.assignment: list[int] | None = None  # None while not a settled member
        self.leader: bool | None = None  # computed the group's assignment in the last rebalance
        self.paused = bool(paused)
        self.pids: list[int] = []  # one per start()
        self.history: list[dict[str, Any]] = []  # status messages from the children

    # -- lifecycle
    def start(self, *, paused: bool | None = None) -> "ConsumerProcess":
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
                [sys.executable, "-m", "helpers.consumers", "child"], cwd=str(_REPO_ROOT), env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, close_fds=True,
            )
        with self._lock:
            self._proc = proc
            self.assignment = None
            self.paused = self._start_paused
            self.pids.append(proc.pid)
        # The settings travel over the pipe, not the command line (ps would show secrets).
        self._send(json.dumps(config))
        threading.Thread(target=self._read_status, args=(proc,), name=f"{self.name}-status", daemon=True).start()
        _LIVE.add(self)
        return self

    def _read_status(self, proc: subprocess.Popen) -> None:
        try:
            self._read_status_lines(proc)
        except (OSError, ValueError):
            pass
        finally:
            proc.stdout.close()  # type: ignore[union-attr]
        proc.wait()
        with self._lock:
            if proc is self._proc:
                self.assignment = None
            self._lock.notify_all()

    def _read_status_lines(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                if proc is not self._proc:
                    break
                self.history.append(msg)
                kind = msg.get("type")
                if kind == "assigned":
                    self.assignment = sorted(msg["partitions"])
                    self.leader = msg.get("leader")
                elif kind in ("revoked", "stopped"):
                    self.assignment = None
                elif kind in ("paused", "resumed"):
                    self.paused = kind == "paused"
                self._lock.notify_all()

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        try:
            proc.stdin.write((line + "\n").encode())  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            raise RuntimeError(f"{self.name} is not running") from None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def kill(self) -> int:
        """SIGKILL the process (no goodbye, no commit, no leaving the group); return its pid."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.name} is not running")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self._close_pipes(proc)
        with self._lock:
            self.assignment = None
            self._lock.notify_all()
        return proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop: finish or commit the current batch, leave the group, exit."""
        self._request_stop()
        self._finish_stop(timeout)

    def _request_stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._send("stop")
            except RuntimeError:
                pass

    def _finish_stop(self, timeout: float = 15.0) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        self._close_pipes(proc)
        with self._lock:
            self.assignment = None
            self._lock.notify_all()

    @staticmethod
    def _close_pipes(proc: subprocess.Popen) -> None:
        try:  # stdout belongs to the status thread, which closes it at EOF
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass

    def pause(self) -> None:
        """Stop processing (stays in the group, keeps its partitions); takes effect between batches."""
        self._send("pause")
        self._wait_for(lambda: self.paused, 10, "pause")

    def resume(self) -> None:
        """Process again from where it paused."""
        self._send("resume")
        self._wait_for(lambda: not self.paused, 10, "resume")

    def set_rate(self, rate: float) -> None:
        """Change the processing rate (events/s) of the running process."""
        self.rate = _check_rate("rate", rate)
        self._send(f"rate {self.rate}")

    # -- waiting and reporting
    def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited (code {self.returncode}) while waiting to {what}; "
                                       f"log:\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name} did not {what} within {timeout} s")
                self._lock.wait(min(left, 0.2))

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

    def exposure(self) -> "Exposure":
        """What a crash right now costs, from the group's committed offsets and the report.

        ``repeated``: processed but not committed (a restart processes them again);
        ``lost``: committed but never processed (a restart skips them). Meant for a
        consumer that is the only member of its group (e.g. just after a kill).
        """
        from .lag import committed

        offsets = committed(self.kafka, self.topic, self.group_id)
        done = {(r["partition"], r["offset"]) for r in self.processed()}
        repeated = sum(1 for p, o in done if o >= (offsets.get(p) or 0))
        lost = sum(1 for p, c in offsets.items() for o in range(c or 0) if (p, o) not in done)
        return Exposure(repeated=repeated, lost=lost, committed={p: c or 0 for p, c in offsets.items()})

    def in_batch(self) -> int:
        """Events of the current batch at risk right now, read from the report alone (0 between batches)."""
        return _batch_risk(self.records(), self.commit, self.pid)

    def resume_points(self, pid: int | None = None) -> dict[int, int]:
        """The first offset per partition that process ``pid`` (default: the latest) processed."""
        pid = pid or self.pid
        first: dict[int, int] = {}
        for r in self.processed():
            if r["pid"] == pid and r["offset"] < first.get(r["partition"], 1 << 62):
                first[r["partition"]] = r["offset"]
        return dict(sorted(first.items()))

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return (f"ConsumerProcess({self.name!r}, group={self.group_id!r}, pid={self.pid}, {state}, "
                f"commit={self.commit!r}, rate={self.rate:g}/s, partitions={self.assignment})")

    def __enter__(self) -> "ConsumerProcess":
        return self if self.alive else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_names = iter(range(1, 1 << 62))


@dataclass(frozen=True)
class Exposure:
    """Events a crash repeats (processed, not committed) or loses (committed, not processed)."""

    repeated: int
    lost: int
    committed: dict[int, int]

    def __str__(self) -> str:
        return f"{self.repeated} processed but not committed, {self.lost} committed but not processed"


def _batch_risk(records: list[dict[str, Any]], commit: str, pid: int | None) -> int:
    """Processed-not-committed ('after') or committed-not-processed ('before') in the current batch."""
    since, last_commit = 0, None
    for r in reversed(records):
        if r.get("pid") != pid:
            continue
        if r["kind"] == "committed":
            last_commit = r
            break
        since += 1
    if commit == "after":
        return since
    return (last_commit["events"] - since) if last_commit else 0


def kill_mid_batch(*consumers: ConsumerProcess, at_least: int = 1, timeout: float = 10.0) -> dict[str, int]:
    """SIGKILL the consumers at a moment when each is in the middle of a batch.

    That is the moment a crash costs something: with commit-after some processed
    events are not committed yet, with commit-before some committed events are not
    processed yet. Waits (at most ``timeout`` s, then kills anyway) until each has at
    least ``at_least`` such events. Returns the killed pid of each consumer by name.
    """
    if not consumers:
        raise ValueError("consumers must name at least one ConsumerProcess")
    check_int("at_least", at_least)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(c.in_batch() >= at_least for c in consumers):
            break
        time.sleep(0.002)
    return {c.name: c.kill() for c in consumers}


def stop_many(processes: Iterable[ConsumerProcess], timeout: float = 15.0) -> None:
    """Stop several consumer processes gracefully, in parallel."""
    processes = list(processes)
    for p in processes:
        p._request_stop()
    for p in processes:
        p._finish_stop(timeout)


def wait_processed(sources: Iterable[Any], expected: Iterable[str] | int, timeout: float = 60.0,
                   poll: float = 0.05) -> float:
    """Wait until ``sources`` (ConsumerProcess or ConsumerGroup) processed the expected events.

    ``expected`` is the produced ids (each must be processed at least once) or a count of
    distinct events. Returns the wall-clock time (time.time()) of the last needed event.
    """
    sources = list(sources)
    ids = None if isinstance(expected, int) else set(expected)
    need = expected if isinstance(expected, int) else len(ids)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while True:
        first_seen: dict[str, float] = {}
        for src in sources:
            for r in src.processed():
                eid = r["event_id"]
                if (ids is None or eid in ids) and (eid not in first_seen or r["t"] < first_seen[eid]):
                    first_seen[eid] = r["t"]
        if len(first_seen) >= need:
            return max(first_seen.values()) if first_seen else time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"processed {len(first_seen)} of {need} events within {timeout} s")
        time.sleep(poll)


# -------------------------------------------------------------------- the group

class ConsumerGroup:
    """N :class:`ConsumerProcess` members of one consumer group; scale out and in.

    ``assignment()`` shows which partitions each member got: with more members than
    partitions, some get none and sit idle.
    """

    def __init__(self, kafka: Kafka, topic: str, members: int = 1, *, group_id: str | None = None,
                 rate: float = 100.0, commit: str = "after", batch_size: int = 10, paused: bool = False,
                 prefix: str = "group"):
        from .clients import unique_name

        self.kafka = kafka
        self.topic = topic
        self.size = check_int("members", members)
        self.rate = _check_rate("rate", rate)
        self.commit = _check_commit(commit)
        self.batch_size = check_int("batch_size", batch_size)
        self.group_id = group_id or unique_name(prefix)
        self._paused = bool(paused)
        self.members: list[ConsumerProcess] = []
        self._partitions: list[int] | None = None
        self._counter = 0

    @property
    def partitions(self) -> list[int]:
        if self._partitions is None:
            from .clients import partitions_for

            self._partitions = partitions_for(self.kafka, self.topic)
        return self._partitions

    def _new_member(self) -> ConsumerProcess:
        self._counter += 1
        return ConsumerProcess(self.kafka, self.topic, self.group_id, rate=self.rate, commit=self.commit,
                               batch_size=self.batch_size, name=f"member-{self._counter}", paused=self._paused)

    def start(self) -> "ConsumerGroup":
        """Start ``members`` processes (all at once: they join in one rebalance)."""
        self.scale(self.size)
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
        flat = [p for ps in parts for p in ps]  # type: ignore[union-attr]
        return sorted(flat) == self.partitions

    def wait_assigned(self, timeout: float = 40.0, stable: float = 0.3) -> dict[str, list[int]]:
        """Wait until the group's rebalance has settled (see :meth:`settled`); return the assignment."""
        deadline = time.monotonic() + timeout
        settled_since = None
        while True:
            for m in self.members:
                if m.pids and not m.alive and m.returncode not in (0, None, -signal.SIGKILL):
                    raise RuntimeError(f"{m.name} exited with code {m.returncode}; log:\n{m.log_tail()}")
            if self.settled():
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= stable:
                    return self.assignment()  # type: ignore[return-value]
            else:
                settled_since = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {self.group_id} did not settle within {timeout} s: {self.assignment()}")
            time.sleep(0.05)

    def pause(self) -> None:
        self._paused = True
        for m in self.running:
            m.pause()

    def resume(self) -> None:
        self._paused = False
        for m in self.running:
            m._send("resume")  # all at once, then wait
        for m in self.running:
            m._wait_for(lambda m=m: not m.paused, 10, "resume")

    def processed(self) -> list[dict[str, Any]]:
        """Processed-event lines of every member that ever ran."""
        return [r for m in self.members for r in m.processed()]

    def count(self, produced_ids: Iterable[str]) -> Tally:
        return count_report(produced_ids, self.processed())

    def stop(self) -> None:
        """Stop every member gracefully (each leaves the group), all at once."""
        stop_many(self.members[::-1])

    def __enter__(self) -> "ConsumerGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.group_id!r}, running={len(self.running)}, assignment={self.assignment()})"


@dataclass
class DrainResult:
    """How long a group of ``consumers`` members took to drain ``events`` events."""

    consumers: int
    seconds: float
    events: int
    rate: float
    assignment: dict[str, list[int]]
    duplicates: int = 0

    @property
    def idle(self) -> list[str]:
        return [m for m, parts in self.assignment.items() if not parts]

    @property
    def throughput(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        busy = self.consumers - len(self.idle)
        return (f"{self.consumers} consumer(s) ({busy} busy, {len(self.idle)} idle): "
                f"{self.events} events in {self.seconds:.2f} s = {self.throughput:.0f} events/s")


def start_drain_groups(kafka: Kafka, topic: str, sizes: Iterable[int], *, rate: float = 100.0,
                       batch_size: int = 10) -> list[ConsumerGroup]:
    """Start one fresh, paused group per size on ``topic``: they join now, drain later.

    Pass them to :func:`compare_drains` (``groups=``), which resumes and times them.
    """
    sizes = [check_int("consumers", n) for n in sizes]
    if not sizes:
        raise ValueError("sizes must name at least one group size")
    _check_rate("rate", rate)
    groups = [ConsumerGroup(kafka, topic, n, rate=rate, batch_size=batch_size, paused=True, prefix="drain")
              for n in sizes]
    try:
        for g in groups:
            g.start()
    except BaseException:
        stop_many([m for g in groups for m in g.members])
        raise
    return groups


def compare_drains(kafka: Kafka, topic: str, sizes: Iterable[int], expected: Iterable[str] | int, *,
                   rate: float = 100.0, batch_size: int = 10, timeout: float = 120.0,
                   groups: list[ConsumerGroup] | None = None) -> list[DrainResult]:
    """Drain the same backlog once per group size, each with a fresh group, and time it.

    All groups start paused and join at once (joining takes seconds on any broker and
    is not what we measure); then each group in turn is resumed and timed from the
    resume to its last needed event. ``groups`` (from :func:`start_drain_groups`) skips
    the start: they may have joined while something else ran. All are stopped at the end.
    """
    sizes = [check_int("consumers", n) for n in sizes]
    if not sizes:
        raise ValueError("sizes must name at least one group size")
    _check_rate("rate", rate)
    if not isinstance(expected, int):
        expected = list(expected)
    if groups is None:
        groups = start_drain_groups(kafka, topic, sizes, rate=rate, batch_size=batch_size)
    elif [g.size for g in groups] != sizes or any(g.topic != topic for g in groups):
        raise ValueError(f"groups must be {len(sizes)} groups of sizes {sizes} on {topic!r}")
    results = []
    try:
        assignments = [g.wait_assigned(timeout=timeout) for g in groups]
        for g, assignment in zip(groups, assignments):
            t0 = time.time()
            g.resume()
            t_end = wait_processed([g], expected, timeout=timeout)
            records = g.processed()
            ids = [r["event_id"] for r in records] if isinstance(expected, int) else expected
            tally = count_report(ids, records)
            results.append(DrainResult(consumers=g.size, seconds=max(t_end - t0, 1e-6),
                                       events=tally.unique, rate=g.rate, assignment=assignment,
                                       duplicates=tally.duplicates))
            g.pause()  # drained: stays idle until all are stopped together
    finally:
        stop_many([m for g in groups for m in g.members])
    return results


def measure_drain(kafka: Kafka, topic: str, consumers: int, expected: Iterable[str] | int, *,
                  rate: float = 100.0, batch_size: int = 10, timeout: float = 120.0) -> DrainResult:
    """Drain ``topic`` from the start with a fresh group of ``consumers`` members; time it."""
    return compare_drains(kafka, topic, [consumers], expected, rate=rate, batch_size=batch_size,
                          timeout=timeout)[0]


# --------------------------------------------------------------------- producer

class ProducerRunner:
    """Publishes OrderPlaced events to ``topic`` at ``rate`` events/s in a thread.

    Counts what it ``sent``, what the broker ``acked`` and the ``errors``; the
    acknowledged event ids are in ``acked_ids``. ``count`` stops it after that many.
    """

    def __init__(self, kafka: Kafka, topic: str, rate: float, *, count: int | None = None,
                 make_event: Callable[[int], Any] | None = None):
        self.kafka = kafka
        self.topic = topic
        self.rate = _check_rate("rate", rate)
        self.count = None if count is None else check_int("count", count)
        self._make_event = make_event or _default_event
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.error_messages: list[str] = []
        self.acked_ids: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = None
        self.started_at: float | None = None

    def start(self) -> "ProducerRunner":
        if self._thread is not None:
            raise RuntimeError("a ProducerRunner starts once; make a new one")
        self._producer = self.kafka.producer()
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"producer-{self.topic}", daemon=True)
        self._thread.start()
        _PRODUCERS.add(self)
        return self

    def _run(self) -> None:
        from .events import publish

        interval = 1.0 / self.rate
        next_at = time.monotonic()
        i = 0
        try:
            while not self._stop.is_set() and (self.count is None or i < self.count):
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + interval, time.monotonic() - 1.0)  # catch up at most 1 s
                event = self._make_event(i)
                i += 1
                try:
                    future = publish(self._producer, self.topic, event)
                except Exception as exc:  # noqa: BLE001 - counted and shown, the loop goes on
                    self._error(exc)
                    continue
                with self._lock:
                    self.sent += 1
                future.add_callback(self._acked, event.event_id)
                future.add_errback(self._error)
        finally:
            self._done.set()

    def _acked(self, event_id: str, _metadata: Any) -> None:
        with self._lock:
            self.acked += 1
            self.acked_ids.append(event_id)

    def _error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            if len(self.error_messages) < 10:
                self.error_messages.append(f"{type(exc).__name__}: {exc}")

    def stats(self) -> dict[str, Any]:
        """Sent, acked, errors and in-flight counts right now."""
        with self._lock:
            return {"sent": self.sent, "acked": self.acked, "errors": self.errors,
                    "in_flight": self.sent - self.acked - self.errors}

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait until ``count`` events were sent and acknowledged (or failed)."""
        if self.count is None:
            raise ValueError("count is None: this producer runs until stop()")
        if not self._done.wait(timeout):
            return False
        if self._producer is not None:
            self._producer.flush(timeout=timeout)
        return True

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop sending, wait for the outstanding acknowledgements, close; return the stats."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout)
            finally:
                self._producer.close(timeout=5)
                self._producer = None
        return self.stats()

    def __enter__(self) -> "ProducerRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _default_event(i: int):
    from .events import order_placed

    return order_placed(f"order-{os.getpid()}-{time.monotonic_ns() % 10**9:09d}-{i}", 10.0 + i % 90)


def produce_backlog(kafka: Kafka, topic: str, count: int) -> list[str]:
    """Publish ``count`` OrderPlaced events as fast as possible; return the acknowledged ids."""
    from .events import publish

    check_int("count", count)
    producer = kafka.producer()
    try:
        events = [_default_event(i) for i in range(count)]
        futures = [publish(producer, topic, e) for e in events]
        producer.flush(timeout=60)
        return [e.event_id for e, f in zip(events, futures) if f.get(timeout=30)]
    finally:
        producer.close(timeout=5)


def make_backlog(kafka: Kafka, count: int, *, partitions: int = 3, prefix: str = "backlog") -> tuple[str, list[str]]:
    """A new topic with ``partitions`` partitions holding ``count`` events; return (topic, ids)."""
    check_int("count", count)
    check_int("partitions", partitions)
    topic = kafka.create_topic(partitions=partitions, prefix=prefix)
    return topic, produce_backlog(kafka, topic, count)


def describe_assignment(assignment: dict[str, list[int] | None]) -> str:
    """One line per member: its partitions, or 'idle' when it got none."""
    lines = []
    for name, parts in assignment.items():
        shown = "joining..." if parts is None else ("idle (no partition)" if not parts else
                                                     "partition " + ", ".join(map(str, parts)))
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


def process_alive(pid: int) -> bool:
    """True if an operating-system process ``pid`` exists and is not a zombie."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_all() -> None:
    """Stop every producer thread and kill every consumer process this kernel still runs."""
    for runner in list(_PRODUCERS):
        try:
            runner.stop(timeout=2)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    for proc in list(_LIVE):
        if proc.alive:
            try:
                proc.kill()
            except RuntimeError:
                pass


atexit.register(stop_all)


# ------------------------------------------------------------------ child side

def _child_main() -> None:  # pragma: no cover - runs in the child process
    """The consumer process: reads settings then commands on stdin, status on stdout."""
    config = json.loads(sys.stdin.readline() or "null")
    if not config:
        return
    status = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # anything printed goes to the log, never into the status pipe
    import logging

    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        level=os.environ.get("COURSE_CONSUMER_LOG_LEVEL", "WARNING").upper())
    status_lock = threading.Lock()
    parent = os.getppid()

    def say(kind: str, **data: Any) -> None:
        with status_lock:
            try:
                status.write(json.dumps({"type": kind, "t": time.time(), **data}) + "\n")
                status.flush()
            except (BrokenPipeError, ValueError):
                pass

    from kafka import ConsumerRebalanceListener, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from . import clients
    from .events import EventError, decode

    stop = threading.Event()
    gone = threading.Event()  # the parent went away: stop at once
    state = {"paused": bool(config["paused"]), "rate": float(config["rate"])}

    def commands() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stop":
                stop.set()
            elif cmd == "pause":
                state["paused"] = True
            elif cmd == "resume":
                state["paused"] = False
            elif cmd.startswith("rate "):
                state["rate"] = float(cmd.split()[1])
        gone.set()  # EOF: the parent closed the pipe or died
        stop.set()

    threading.Thread(target=commands, daemon=True).start()

    def watchdog() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                gone.set()
                stop.set()
            time.sleep(0.5)
        if gone.is_set():
            time.sleep(3)  # a graceful close gets 3 s, then the process ends regardless
            os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()

    kafka = Kafka(config["bootstrap_servers"], config["kind"], config["client_config"])
    consumer = clients.consumer(kafka, group_id=config["group_id"], max_poll_records=config["batch_size"])
    pid, name, commit_mode = os.getpid(), config["name"], config["commit"]

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            say("revoked", partitions=[tp.partition for tp in revoked])

        def on_partitions_assigned(self, assigned):
            if state["paused"] and assigned:
                consumer.pause(*assigned)  # before any fetch: a paused start processes nothing
            leader = getattr(getattr(consumer, "_coordinator", None), "_is_leader", None)
            say("assigned", partitions=[tp.partition for tp in assigned], leader=leader)

    consumer.subscribe([config["topic"]], listener=Listener())
    say("started", pid=pid)
    report = open(config["report"], "a", encoding="utf-8")
    is_paused = state["paused"]
    if is_paused:
        say("paused")

    def do_commit(batch_end: dict[Any, int], events: int) -> bool:
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in batch_end.items()}
        try:
            consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance: the next owner re-reads
            say("commit_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        report.write(json.dumps({"kind": "committed", "offsets": {str(tp.partition): o for tp, o in batch_end.items()},
                                 "events": events, "pid": pid, "member": name, "t": time.time()}) + "\n")
        report.flush()
        return True

    next_at = time.monotonic()
    try:
        while not stop.is_set():
            if state["paused"] != is_paused:
                is_paused = state["paused"]
                if is_paused:
                    consumer.pause(*consumer.assignment())
                else:
                    consumer.resume(*consumer.paused())
                say("paused" if is_paused else "resumed")
            if is_paused:
                consumer.pause(*consumer.assignment())  # a rebalance may have added partitions
                consumer.poll(timeout_ms=100)  # keeps taking part in rebalances
                continue
            polled = consumer.poll(timeout_ms=100, max_records=config["batch_size"])
            batch = [r for records in polled.values() for r in records]
            if not batch:
                continue
            batch_end = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in batch}
            if commit_mode == "before" and not do_commit(batch_end, len(batch)):
                continue  # not committed: not ours to process (at-most-once)
            done: dict[Any, int] = {}
            processed_now = 0
            for r in batch:
                if stop.is_set() and commit_mode == "after":
                    break  # graceful stop: commit what was processed, leave the rest
                next_at = max(next_at, time.monotonic()) + 1.0 / state["rate"]
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the "work" of processing one event
                try:
                    event = decode(r)
                    event_id, occurred = event.event_id, event.occurred_at
                except EventError:
                    event_id, occurred = f"{r.topic}/{r.partition}/{r.offset}", None
                report.write(json.dumps({
                    "kind": "processed", "event_id": event_id,
                    "key": r.key.decode(errors="replace") if r.key else None,
                    "partition": r.partition, "offset": r.offset, "pid": pid, "member": name,
                    "t": time.time(), "occurred_at": occurred,
                }) + "\n")
                report.flush()  # per event: the report survives a SIGKILL
                done[TopicPartition(r.topic, r.partition)] = r.offset + 1
                processed_now += 1
            if commit_mode == "after" and done:
                do_commit(done, processed_now)
    finally:
        report.close()
        say("stopped", pid=pid)
        try:
            consumer.close(timeout_ms=2000) if not gone.is_set() else consumer.close(timeout_ms=1000)
        except TypeError:  # older kafka-python: close() without timeout
            consumer.close()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    _child_main()
