"""The consumer service's own process, and the poll-process-commit loop it runs.

:func:`consume_batches` is the loop of every consumer service in the course: poll a
batch, process each record, commit the batch's offsets *after* processing
(at-least-once) or *before* (at-most-once). The consumer processes of
:mod:`helpers.backlog.consumers` run it here, in ``python -m helpers.backlog.pollloop``; lab 3's
crash drill runs the same loop in the notebook's process, acting out the crash with
:class:`Crash`.

The child reads its settings as one JSON line on stdin (never the command line, where
``ps`` would show secrets), then commands (``stop``, ``pause``, ``resume``,
``rate N``); it writes status lines (JSON) on stdout and one report line per processed
event and per commit, flushed at once, so the report survives a SIGKILL. It dies with
its parent: at EOF on stdin (the parent closed the pipe or died) or when its parent
pid changes, it stops within 3 s.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from ..core.lifecycle import THREAD_PREFIX
from ..kafka.clients import Kafka, consumer
from ..kafka.events import EventError, decode

COMMIT_STRATEGIES = {
    "after": "commit after processing (at-least-once: a crash repeats the uncommitted events)",
    "before": "commit before processing (at-most-once: a crash loses the committed, unprocessed events)",
}

#: Seconds a child whose parent went away gets for a graceful close before it exits regardless.
ORPHAN_GRACE_S = 3.0


class Crash(Exception):
    """Raised by a handler to act out a crash: the loop ends at once and commits nothing more."""


def check_commit(commit: str) -> str:
    """Return ``commit`` if it is 'after' or 'before'; ValueError naming ``commit`` otherwise."""
    if commit not in COMMIT_STRATEGIES:
        raise ValueError(f"commit must be one of {sorted(COMMIT_STRATEGIES)}, got {commit!r}")
    return commit


def consume_batches(consumer: KafkaConsumer, handle: Callable[[Any], object], *, commit: str = "after",
                    batch_size: int = 10, stopping: Callable[[], bool] = lambda: False,
                    idle: Callable[[], bool] | None = None,
                    on_commit: Callable[[dict[TopicPartition, int], int], object] | None = None,
                    on_commit_failed: Callable[[Exception], object] | None = None,
                    on_poll: Callable[[list[Any]], object] | None = None,
                    poll_ms: int = 100) -> int:
    """Poll, process, commit until ``stopping()``; return how many records were handled.

    Each poll takes at most ``batch_size`` records. With ``commit="after"`` the batch's
    offsets are committed once its records are handled (a crash repeats the uncommitted
    ones); with ``"before"`` they are committed first (a crash loses the committed,
    unhandled ones), and a batch whose commit failed is left to the partition's next
    owner. ``handle(record)`` processes one record; raising :class:`Crash` ends the loop
    at once, without another commit (the exception propagates). A graceful stop
    (``stopping()`` turning true) with "after" commits what was handled and leaves the
    rest. ``idle()``, if given, runs first in every round; True skips the round (a
    paused consumer that keeps polling to stay in its group). ``on_commit(offsets,
    events)`` and ``on_commit_failed(error)`` report commits. ``on_poll(batch)`` sees each
    non-empty batch as polled, before anything is committed or handled: lab 3's crash drill
    uses it to crash at the worst moment of a whole batch.
    """
    check_commit(commit)
    handled = 0

    def do_commit(ends: dict[TopicPartition, int], events: int) -> bool:
        try:
            consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in ends.items()})
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance: the partition's next owner re-reads
            if on_commit_failed is not None:
                on_commit_failed(exc)
            return False
        if on_commit is not None:
            on_commit(ends, events)
        return True

    while not stopping():
        if idle is not None and idle():
            continue
        polled = consumer.poll(timeout_ms=poll_ms, max_records=batch_size)
        batch = [r for records in polled.values() for r in records]
        if not batch:
            continue
        if on_poll is not None:
            on_poll(batch)
        if commit == "before" and not do_commit(_ends(batch), len(batch)):
            continue  # not committed: not ours to process (at-most-once)
        done: list[Any] = []
        for record in batch:
            if commit == "after" and stopping():
                break  # graceful stop: commit what was processed, leave the rest
            handle(record)  # Crash propagates: nothing more is committed
            done.append(record)
        handled += len(done)
        if commit == "after" and done:
            do_commit(_ends(done), len(done))
    return handled


def _ends(records: list[Any]) -> dict[TopicPartition, int]:
    """The offset to commit per partition: one past the last record of each."""
    return {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}


# ------------------------------------------------------------------ child process

class _Child:
    """The state of one consumer process: settings, commands, status line writer."""

    def __init__(self, config: dict[str, Any], status: IO[str]):
        self.config = config
        self.status = status
        self.status_lock = threading.Lock()
        self.stop = threading.Event()
        self.gone = threading.Event()  # the parent went away: stop at once
        self.paused = bool(config["paused"])
        self.rate = float(config["rate"])
        self.parent = os.getppid()

    def say(self, kind: str, **data: Any) -> None:
        """One status line to the parent; a closed pipe is ignored (the parent is gone)."""
        with self.status_lock:
            try:
                self.status.write(json.dumps({"type": kind, "t": time.time(), **data}) + "\n")
                self.status.flush()
            except (BrokenPipeError, ValueError):
                pass

    def read_commands(self) -> None:
        """Commands from the parent, one per line on stdin; EOF means the parent is gone."""
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stop":
                self.stop.set()
            elif cmd in ("pause", "resume"):
                self.paused = cmd == "pause"
            elif cmd.startswith("rate "):
                self.rate = float(cmd.split()[1])
        self.gone.set()
        self.stop.set()

    def watch_parent(self) -> None:
        """Stop when the parent pid changes (the parent died); then exit after a grace period."""
        while not self.stop.wait(0.5):
            if os.getppid() != self.parent:
                self.gone.set()
                self.stop.set()
        if self.gone.is_set():
            time.sleep(ORPHAN_GRACE_S)  # a graceful close gets this long, then the process ends regardless
            os._exit(0)


def main() -> None:  # pragma: no cover - runs in the child process
    """The consumer process: settings then commands on stdin, status on stdout, report to a file."""
    config = json.loads(sys.stdin.readline() or "null")
    if not config:
        return
    status = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # anything printed goes to the log, never into the status pipe
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        level=os.environ.get("COURSE_CONSUMER_LOG_LEVEL", "WARNING").upper())
    child = _Child(config, status)
    threading.Thread(target=child.read_commands, name=f"{THREAD_PREFIX}commands", daemon=True).start()
    threading.Thread(target=child.watch_parent, name=f"{THREAD_PREFIX}parent-watch", daemon=True).start()
    kafka = Kafka(config["bootstrap_servers"], config["kind"], config["client_config"])
    c = consumer(kafka, group_id=config["group_id"], max_poll_records=config["batch_size"])
    pid, name = os.getpid(), config["name"]

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            child.say("revoked", partitions=[tp.partition for tp in revoked])

        def on_partitions_assigned(self, assigned: Any) -> None:
            if child.paused and assigned:
                c.pause(*assigned)  # before any fetch: a paused start processes nothing
            leader = getattr(getattr(c, "_coordinator", None), "_is_leader", None)
            child.say("assigned", partitions=[tp.partition for tp in assigned], leader=leader)

    c.subscribe([config["topic"]], listener=Listener())
    child.say("started", pid=pid)
    report = open(config["report"], "a", encoding="utf-8")
    was_paused = child.paused
    if was_paused:
        child.say("paused")
    next_at = time.monotonic()

    def write(line: dict[str, Any]) -> None:
        report.write(json.dumps({**line, "pid": pid, "member": name, "t": time.time()}) + "\n")
        report.flush()  # per line: the report survives a SIGKILL

    def idle() -> bool:
        nonlocal was_paused
        if child.paused != was_paused:
            was_paused = child.paused
            if was_paused:
                c.pause(*c.assignment())
            else:
                c.resume(*c.paused())
            child.say("paused" if was_paused else "resumed")
        if was_paused:
            c.pause(*c.assignment())  # a rebalance may have added partitions
            c.poll(timeout_ms=100)  # keeps taking part in rebalances
        return was_paused

    def process(r: Any) -> None:
        nonlocal next_at
        next_at = max(next_at, time.monotonic()) + 1.0 / child.rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the "work" of processing one event
        try:
            event = decode(r)
            event_id, occurred = event.event_id, event.occurred_at
        except EventError:
            event_id, occurred = f"{r.topic}/{r.partition}/{r.offset}", None
        write({"kind": "processed", "event_id": event_id, "key": r.key.decode(errors="replace") if r.key else None,
               "partition": r.partition, "offset": r.offset, "occurred_at": occurred})

    try:
        consume_batches(
            c, process, commit=config["commit"], batch_size=config["batch_size"], stopping=child.stop.is_set,
            idle=idle,
            on_commit=lambda ends, events: write({"kind": "committed", "events": events,
                                                  "offsets": {str(tp.partition): o for tp, o in ends.items()}}),
            on_commit_failed=lambda exc: child.say("commit_failed", error=f"{type(exc).__name__}: {exc}"))
    finally:
        report.close()
        child.say("stopped", pid=pid)
        try:
            c.close(timeout_ms=1000 if child.gone.is_set() else 2000)
        except Exception:  # noqa: BLE001 - leaving anyway
            pass


if __name__ == "__main__":
    main()
