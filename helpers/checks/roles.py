"""The services lab 6's checks run the learner's code as, in the processes they kill.

Each *life* of a crash check is a :class:`helpers.core.processes.CourseProcess` (forked by the
fork server, which imported kafka-python and this module once: :data:`PRELOAD`) running
:func:`work`: it loads the learner's module from its file and runs their code as one of three
services:

* ``writer``: the orders service, placing orders with ``save_with_outbox``;
* ``relay``: the outbox relay, calling ``relay`` until the outbox is empty;
* ``consumer``: the payments service, a plain kafka-python poll loop that calls ``process_once``
  for each record and commits the offsets after each batch (at-least-once), up to an offset
  (``until``) or until nothing new came for ``idle_s``.

What a worker says (:meth:`helpers.core.processes.Link.say`): ``working`` (the learner's code is
about to run: a kill at a random time counts from its ``t``), ``freeze`` (the worker stops itself
with SIGSTOP just before the operation the check drew; the check then kills it), ``done`` (with
the operations and units of work) and ``error`` (with ``details``: whether the learner's code
failed, which function, what and where). The Kafka settings travel in the process's config
(pickled to the fork server, never on a command line where ``ps`` would show secrets).

An **operation** is anything the learner's code does that a crash can fall between: each SQL
statement it runs on the check's connection (sqlite3's trace callback: BEGIN and COMMIT too, and
the statements of the ``write``/``apply`` callbacks it calls) and each ``send`` or ``flush`` on
the producer it was given. Stopping itself needs SIGSTOP, which Windows lacks: there
:class:`helpers.checks.crashes.CrashLab` says so before anything starts (Linux, macOS or WSL).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ..core.processes import Link
from ..kafka.clients import TEACHING_CONSUMER, TEACHING_PRODUCER
from ..kafka.events import Event, decode, encode_value
from ..patterns.fix import connect as open_db
from ..patterns.fix import load as load_fix

#: The orders table of the check's orders service (``write(db)`` inserts one row) and the payments
#: table of its payments service (``apply(db)`` inserts one row: no unique key, so an effect
#: applied twice shows as two rows).
ORDERS_TABLE = "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, amount REAL NOT NULL)"
PAYMENTS_TABLE = "CREATE TABLE IF NOT EXISTS payments (event_id TEXT NOT NULL, amount REAL NOT NULL)"
#: A worker that is never killed ends by itself after this long (no orphan outlives a broken check).
MAX_LIFE_S = 60.0
#: What the fork server imports once, so a life starts with it loaded.
PRELOAD = ("sqlite3", "kafka", "helpers.patterns.fix", __name__)
STAMP = "2024-01-01T00:00:00.000000+00:00"  # every check event's occurred_at: values are reproducible


def order(index: int, run: str) -> tuple[str, str, bytes, bytes, float]:
    """(order_id, event_id, key, value, amount) of order ``index``: the same in every process."""
    order_id = f"order-{run}-{index:05d}"
    amount = round(1 + (index * 37 % 9900) / 100, 2)
    event = Event("OrderPlaced", {"order_id": order_id, "amount": amount}, key=order_id, source="orders",
                  event_id=f"evt-{run}-{index:05d}", occurred_at=STAMP)
    return order_id, event.event_id, order_id.encode(), encode_value(event), amount


def write_order(order_id: str, amount: float) -> Callable[[sqlite3.Connection], None]:
    """The orders service's own change, as ``save_with_outbox`` receives it: INSERT the order."""
    def write(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO orders (order_id, amount) VALUES (?, ?)", (order_id, amount))
    return write


def charge(event_id: str, amount: float) -> Callable[[sqlite3.Connection], None]:
    """The payments service's effect, as ``process_once`` receives it: INSERT the payment."""
    def apply(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO payments (event_id, amount) VALUES (?, ?)", (event_id, amount))
    return apply


def where(exc: BaseException, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The innermost line of ``path`` in ``exc``'s traceback: {"line": n, "code": "..."} (or {})."""
    target = os.path.realpath(path)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.realpath(f.filename) == target]
    if not frames:
        return {}
    return {"line": frames[-1].lineno, "code": (frames[-1].line or "").strip()[:200]}


# =========================================================================== the worker


class LearnerFailed(Exception):
    """The learner's function raised: ``info`` says which, what and where."""

    def __init__(self, info: dict[str, Any]):
        super().__init__(info.get("message", ""))
        self.info = info


class Ops:
    """Counts the learner's operations while their code runs; freezes the process before op ``freeze_at``."""

    def __init__(self, link: Link, freeze_at: int | None):
        self.link, self.freeze_at = link, freeze_at
        self.count = 0
        self.inside = False

    def tick(self, what: str) -> None:
        if not self.inside:
            return
        self.count += 1
        if self.freeze_at is not None and self.count >= self.freeze_at:
            self.link.say("freeze", pid=os.getpid(), op=self.count, what=what[:120])
            if hasattr(signal, "SIGSTOP"):
                os.kill(os.getpid(), signal.SIGSTOP)  # every thread stops here, the producer's sender too
            else:  # no SIGSTOP (Windows, where CrashLab refuses to start): this thread waits for the kill
                threading.Event().wait()

    @contextlib.contextmanager
    def learner(self) -> Iterator[None]:
        self.inside = True
        try:
            yield
        finally:
            self.inside = False


class WatchedProducer(KafkaProducer):
    """A KafkaProducer whose ``send`` and ``flush`` count as operations of the learner's code."""

    ops: Ops | None = None

    def send(self, *args: Any, **kwargs: Any) -> Any:
        if self.ops is not None:
            self.ops.tick("producer.send")
        return super().send(*args, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        if self.ops is not None:
            self.ops.tick("producer.flush")
        super().flush(timeout)


def _call(fix: ModuleType, path: str, name: str, *args: Any, **kwargs: Any) -> Any:
    fn = getattr(fix, name, None)
    if not callable(fn):
        raise LearnerFailed({"function": name, "type": "missing", "message": f"no function {name}"})
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the learner's code raised: reported as feedback
        raise LearnerFailed({"function": name, "type": type(exc).__name__, "message": str(exc)[:500],
                             "todo": isinstance(exc, NotImplementedError), **where(exc, path)}) from None


def _writer(cmd: dict[str, Any], fix: ModuleType, db: sqlite3.Connection, ops: Ops) -> int:
    path, run, topic, pause = cmd["path"], cmd["run"], cmd["topic"], float(cmd.get("pause_s", 0.0))
    placed = 0
    ops.link.say("working")
    for index in range(cmd["start"], cmd["start"] + cmd["count"]):
        order_id, event_id, key, value, amount = order(index, run)
        with ops.learner():
            _call(fix, path, "save_with_outbox", db, write_order(order_id, amount), topic, key, value, event_id)
        placed += 1
        if pause:
            time.sleep(pause)
    return placed


def _relay(cmd: dict[str, Any], fix: ModuleType, db: sqlite3.Connection, ops: Ops, kafka: dict[str, Any]) -> int:
    producer = WatchedProducer(bootstrap_servers=kafka["bootstrap_servers"],
                               **{**kafka["client_config"], **TEACHING_PRODUCER})
    producer.ops = ops
    published, idle_s, idle_since = 0, float(cmd.get("idle_s", 0.0)), None
    ops.link.say("working")
    while True:
        with ops.learner():
            n = _call(fix, cmd["path"], "relay", db, producer, limit=cmd["limit"])
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise LearnerFailed({"function": "relay", "type": "return", "message": f"relay returned {n!r}"})
        published += n
        if n:
            idle_since = None
            continue
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since >= idle_s:
            break
        time.sleep(0.01)
    producer.close(timeout=5)
    return published


def _consumer(cmd: dict[str, Any], fix: ModuleType, db: sqlite3.Connection, ops: Ops, kafka: dict[str, Any]) -> int:
    consumer = KafkaConsumer(bootstrap_servers=kafka["bootstrap_servers"], group_id=cmd["group"],
                             **{**kafka["client_config"], **TEACHING_CONSUMER, "max_poll_records": cmd["batch"]})
    tp = TopicPartition(cmd["topic"], 0)
    consumer.assign([tp])  # no group join to wait for; the offsets are still the group's
    consumer.position(tp)  # resumes from the committed offset (the earliest when none)
    until, handled = cmd.get("until"), 0
    idle_s, last = float(cmd.get("idle_s", 0.0)), time.monotonic()
    ops.link.say("working")
    while until is None or consumer.position(tp) < until:
        records = consumer.poll(timeout_ms=100).get(tp, [])
        for record in records:
            event = decode(record)
            with ops.learner():
                _call(fix, cmd["path"], "process_once", db, event.event_id,
                      charge(event.event_id, float(event.payload["amount"])))
            handled += 1
        if records:
            consumer.commit()  # after the batch: a kill before this line repeats the batch
            last = time.monotonic()
        elif until is None and time.monotonic() - last >= idle_s:
            break  # nothing new for idle_s: this life ends (the drill's supervisor starts another)
    consumer.close(autocommit=False)
    return handled


ROLES: dict[str, Callable[..., int]] = {"writer": _writer, "relay": _relay, "consumer": _consumer}


def work(link: Link, cmd: dict[str, Any]) -> None:  # pragma: no cover - runs in the killed process
    """One worker's life: load the module, run the role, say how it went (``done`` or ``error``).
    ``cmd``: the role, the learner's file (``path``), the database (``db``), ``freeze_at`` (the
    operation to stop before, or None), the role's own settings and ``kafka`` (the client settings)."""
    ops = Ops(link, cmd.get("freeze_at"))
    try:
        try:
            fix = load_fix(cmd["path"])
        except Exception as exc:  # noqa: BLE001 - a module that does not import is feedback
            raise LearnerFailed({"function": None, "type": type(exc).__name__, "message": str(exc)[:500],
                                 **where(exc, cmd["path"])}) from None
        db = open_db(cmd["db"])
        db.set_trace_callback(ops.tick)
        role = cmd["role"]
        extra = (cmd["kafka"],) if role in ("relay", "consumer") else ()
        units = ROLES[role](cmd, fix, db, ops, *extra)
        link.say("done", ops=ops.count, units=units)
    except LearnerFailed as failed:
        details = {"learner": True, "ops": ops.count, **failed.info}
        link.say("error", error=f"{details.get('type')}: {details.get('message')}", details=details)
    except Exception as exc:  # noqa: BLE001 - the harness broke: the check says it could not run
        details = {"learner": False, "type": type(exc).__name__, "message": str(exc)[:500],
                   "trace": traceback.format_exc()[-1500:]}
        link.say("error", error=f"{details['type']}: {details['message']}", details=details)
