"""Duplicates and the idempotent consumer (lesson 9, claim C17).

At-least-once delivery means a consumer that processed events and crashed before it
committed their offsets gets them again: the new consumer of the group starts at the
committed offset. A handler that just applies each event's effect applies those twice.

* :class:`Ledger`: customer balances in a sqlite file; a ``PaymentProcessed`` event adds
  its amount to its customer's balance. :meth:`Ledger.apply_naive` applies every delivery;
  :meth:`Ledger.apply_idempotent` goes through :func:`helpers.patterns.fix.process_once` (the
  course's fix, which labs 6 and 7 use too), which records the event id in a
  ``processed_events`` table **in the same transaction** as the effect, so a repeated id is
  recognised and skipped, and a crash between the two is impossible.
* :class:`CrashingConsumer`: a consumer-group member (a thread) that processes a batch,
  commits explicitly after it, and crashes once while processing (after ``crash_after``
  deliveries): it closes without committing, and a new consumer joins the same group and
  carries on from the committed offset. Nothing is sent twice by the course: every
  duplicate is a **redelivery by the broker** of what was processed and not committed.
* :class:`HandlerComparison` (or :func:`compare_handlers`) runs a naive and an idempotent
  handler side by side over the same payments, crashing both after the same number of
  deliveries, drawn at random from a seed (printed), and returns a :class:`DuplicateRun`
  for each. It can run again (a fresh topic, groups and ledgers each time).
"""
from __future__ import annotations

import contextlib
import queue
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import lifecycle, style
from ..core.params import check_int, check_positive
from ..kafka import clients, events
from . import fix

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..kafka.clients import Kafka

__all__ = [
    "HANDLERS",
    "PAYMENT_PROCESSED",
    "ConsumerCrash",
    "CrashingConsumer",
    "DuplicateRun",
    "HandlerComparison",
    "Ledger",
    "balances_figure",
    "compare_handlers",
    "draw_crash_point",
    "expected_balances",
    "payment_events",
]

PAYMENT_PROCESSED = "PaymentProcessed"
HANDLERS = ("naive", "idempotent")
JOIN_TIMEOUT_S = 30.0

class ConsumerCrash(RuntimeError):
    """The consumer 'dies' here: it closes without committing what it processed."""


def draw_crash_point(n_events: int, seed: int) -> int:
    """After how many deliveries the consumer crashes: uniform in 1 .. ``n_events`` - 1, fixed by ``seed``."""
    check_int("n_events", n_events, minimum=2)
    check_int("seed", seed, minimum=0)
    return random.Random(f"consumer-crash/{seed}").randint(1, n_events - 1)


LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS balances (customer TEXT PRIMARY KEY, balance REAL NOT NULL);
CREATE TABLE IF NOT EXISTS processed_events (event_id TEXT PRIMARY KEY, processed_at REAL NOT NULL);
"""


# --------------------------------------------------------------------------- the effect


class Ledger:
    """Customer balances in a sqlite file (a temporary one unless ``path`` is given)."""

    def __init__(self, path: str | Path | None = None):
        self._tmp = None if path is not None else Path(tempfile.mkdtemp(prefix="course-ledger-"))
        self.path = Path(path) if path is not None else self._tmp / "ledger.db"  # type: ignore[operator]
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=10.0, check_same_thread=False)
        # Durable across a crash of the process (what the lesson injects), without an fsync per commit.
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(LEDGER_SCHEMA)

    @staticmethod
    def _payment(event: events.Event) -> tuple[str, float]:
        if event.type != PAYMENT_PROCESSED:
            raise events.EventError(f"the ledger applies {PAYMENT_PROCESSED} events, got {event.type}")
        customer, amount = event.payload.get("customer"), event.payload.get("amount")
        if not isinstance(customer, str) or isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise events.EventError(f"{PAYMENT_PROCESSED} needs a customer and a numeric amount, got {event.payload}")
        return customer, float(amount)

    @staticmethod
    def _add(conn: sqlite3.Connection, customer: str, amount: float) -> None:
        conn.execute("INSERT INTO balances VALUES (?, ?) ON CONFLICT(customer) DO UPDATE SET balance = balance + ?",
                     (customer, amount, amount))

    def apply_naive(self, event: events.Event) -> bool:
        """Add the payment to the balance, whatever happened before (always True)."""
        customer, amount = self._payment(event)
        with self._lock:
            self._add(self.conn, customer, amount)
        return True

    def apply_idempotent(self, event: events.Event) -> bool:
        """Add the payment once per event id (:func:`helpers.patterns.fix.process_once`); False for a duplicate."""
        customer, amount = self._payment(event)
        with self._lock:
            return fix.process_once(self.conn, event.event_id, lambda c: self._add(c, customer, amount))

    def balances(self) -> dict[str, float]:
        """Customer -> balance, as stored."""
        with self._lock:
            return dict(self.conn.execute("SELECT customer, balance FROM balances ORDER BY customer").fetchall())

    def close(self) -> None:
        """Close the database (and remove it if it was temporary)."""
        with self._lock:
            self.conn.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the events


def payment_events(n: int, customers: Sequence[str] = ("ada", "bob", "cy"), *, seed: int = 3) -> list[events.Event]:
    """``n`` PaymentProcessed events with amounts from 10 to 90, keyed by customer."""
    check_int("n", n)
    if not customers or not all(isinstance(c, str) and c for c in customers):
        raise ValueError(f"customers must be non-empty names, got {customers!r}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        customer = customers[i % len(customers)]
        payload = {"order_id": f"order-{seed}-{i}", "customer": customer, "amount": float(rng.randrange(10, 91))}
        out.append(events.Event(PAYMENT_PROCESSED, payload, key=customer, source="payments"))
    return out


def expected_balances(published: Sequence[events.Event]) -> dict[str, float]:
    """What each balance must be: every payment counted once."""
    out: dict[str, float] = {}
    for e in published:
        out[e.payload["customer"]] = out.get(e.payload["customer"], 0.0) + float(e.payload["amount"])
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- the consumer


class CrashingConsumer(lifecycle.CourseThread):
    """A consumer-group member that crashes once mid-batch, and the member that replaces it.

    It polls up to ``batch_size`` records, applies each with ``handler`` ("naive" or
    "idempotent"), and commits the batch's offsets explicitly after processing. After
    ``crash_after`` deliveries (``None``: never) it crashes: the consumer is closed without
    committing, with the records processed since the last commit (``exposure``) on the
    books. A new consumer then joins the same group and starts at the committed offsets.
    (A clean close lets the group rebalance at once; a killed process would make the new
    member wait for the session timeout first, as lesson 6 showed.)
    It stops once every id in ``expected_ids`` was delivered and committed.
    """

    KIND = "consumer"

    def __init__(self, kafka: Kafka, topic: str, ledger: Ledger, expected_ids: set[str], *,
                 handler: str = "naive", group_id: str | None = None, batch_size: int = 10,
                 crash_after: int | None = 15, process_s: float = 0.0,
                 log: Callable[[str], Any] | None = None):
        if handler not in HANDLERS:
            raise ValueError(f"handler must be one of {HANDLERS}, got {handler!r}")
        if not expected_ids:
            raise ValueError("expected_ids must name the events to wait for")
        super().__init__()
        self.kafka, self.topic, self.ledger, self.handler = kafka, topic, ledger, handler
        self.expected_ids = set(expected_ids)
        self.group_id = group_id or clients.unique_name(f"ledger-{handler}")
        self.batch_size = check_int("batch_size", batch_size)
        self.crash_after = None if crash_after is None else check_int("crash_after", crash_after)
        self.process_s = check_positive("process_s", process_s, allow_zero=True)
        self.log = log or (lambda _line: None)
        self.name = f"{handler}-ledger"
        self.delivered = 0
        self.applied = 0
        self.skipped = 0
        self.crashes = 0
        self.exposure: list[events.Event] = []  # processed, not committed, at the crash
        self.joins: list[float] = []           # seconds each consumer took to get its partitions
        self.seen: set[str] = set()
        self.finished = threading.Event()

    def _apply(self, event: events.Event) -> bool:
        if self.process_s:
            time.sleep(self.process_s)
        return self.ledger.apply_naive(event) if self.handler == "naive" else self.ledger.apply_idempotent(event)

    def _run(self) -> None:
        try:
            incarnation = 0
            while not self._stop.is_set() and not self.finished.is_set():
                incarnation += 1
                self._incarnation(incarnation)
        except Exception as exc:  # noqa: BLE001 - reported by compare_handlers()
            self.error = exc
        finally:
            self.finished.set()

    def _incarnation(self, number: int) -> None:
        consumer = clients.consumer(self.kafka, self.topic, group_id=self.group_id,
                                    max_poll_records=self.batch_size)
        uncommitted: list[events.Event] = []
        started, joined = time.monotonic(), False
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=100)
                if not joined and consumer.assignment():
                    joined = True
                    self.joins.append(time.monotonic() - started)
                    self.log(f"{self.handler}: consumer #{number} joined its group after {self.joins[-1]:.1f} s")
                elif not joined and time.monotonic() - started > JOIN_TIMEOUT_S:
                    raise TimeoutError(f"consumer #{number} got no partitions within {JOIN_TIMEOUT_S:.0f} s")
                for records in batches.values():
                    for record in records:
                        event = events.decode(record)
                        if self._apply(event):
                            self.applied += 1
                        else:
                            self.skipped += 1
                        self.delivered += 1
                        self.seen.add(event.event_id)
                        uncommitted.append(event)
                        if number == 1 and self.crash_after is not None and self.delivered == self.crash_after:
                            raise ConsumerCrash(f"crash after {self.delivered} deliveries")
                if uncommitted:
                    consumer.commit()  # the positions after the records just processed
                    uncommitted = []
                if self.expected_ids <= self.seen and not uncommitted:
                    self.finished.set()
                    return
        except ConsumerCrash:
            self.crashes += 1
            self.exposure = list(uncommitted)
            self.log(f"{self.handler}: CRASH after {self.delivered} events, {len(uncommitted)} of them "
                     "processed but not committed; a new consumer joins the group")
        finally:
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False)  # never commits on the way out: a crash is a crash


@dataclass
class DuplicateRun:
    """One handler after one crash: deliveries, effects and balances, counted."""

    handler: str
    produced: int
    delivered: int
    applied: int
    skipped: int
    crashes: int
    exposure: list[events.Event] = field(repr=False)
    balances: dict[str, float]
    expected: dict[str, float]
    joins: list[float]

    @property
    def redelivered(self) -> int:
        """Deliveries beyond one per event."""
        return self.delivered - self.produced

    @property
    def exposed_amount(self) -> float:
        """The sum of the payments processed but not committed at the crash."""
        return sum(float(e.payload["amount"]) for e in self.exposure)

    @property
    def excess(self) -> float:
        """How much more the balances hold than the payments add up to."""
        return sum(self.balances.values()) - sum(self.expected.values())

    @property
    def wrong_accounts(self) -> list[str]:
        """Customers whose balance differs from the truth."""
        names = sorted(set(self.balances) | set(self.expected))
        return [n for n in names if abs(self.balances.get(n, 0.0) - self.expected.get(n, 0.0)) > 1e-6]

    def __str__(self) -> str:
        return (f"{self.handler:10} {self.produced} payments, {self.crashes} crash with {len(self.exposure)} "
                f"uncommitted -> {self.delivered} deliveries ({self.redelivered} redelivered), "
                f"{self.applied} applied, {self.skipped} skipped; balances off by {self.excess:+.0f} "
                f"({len(self.wrong_accounts)} of {len(self.expected)} accounts wrong)")


class HandlerComparison:
    """The naive and the idempotent ledger consumers, side by side over one payments topic.

    :meth:`start` creates the topic and starts one :class:`CrashingConsumer` per handler,
    each in its own group; they join in the background (about 3 s on the embedded broker),
    so start early and :meth:`run` later. :meth:`run` publishes ``n_events`` payments, waits
    until both consumers processed them all (each crashing once after ``crash_after``
    deliveries; by default a number drawn by :func:`draw_crash_point` from ``crash_seed``) and
    returns handler -> :class:`DuplicateRun`. Registered with helpers.core.lifecycle until it
    stops. Run it again and it starts afresh (new topic, groups and ledgers; a new join).
    """

    KIND = "consumer"

    def __init__(self, kafka: Kafka, n_events: int = 30, *, customers: Sequence[str] = ("ada", "bob", "cy"),
                 partitions: int = 3, batch_size: int = 10, crash_after: int | None = None,
                 process_s: float = 0.0, seed: int = 3, crash_seed: int = 7):
        self.kafka = kafka
        self.n_events = check_int("n_events", n_events, minimum=2)
        self.batch_size = check_int("batch_size", batch_size)
        self.crash_seed = check_int("crash_seed", crash_seed, minimum=0)
        self.crash_after = (draw_crash_point(n_events, crash_seed) if crash_after is None
                            else check_int("crash_after", crash_after))
        if self.crash_after >= n_events:
            raise ValueError(f"crash_after must be below n_events ({n_events}) so the crash happens, "
                             f"got {self.crash_after}")
        self.partitions = check_int("partitions", partitions)
        self.process_s = check_positive("process_s", process_s, allow_zero=True)
        self.customers, self.seed = tuple(customers), seed
        self.published = payment_events(n_events, customers, seed=seed)
        self.name = "ledger-handlers"
        self.topic = ""
        self.ledgers: dict[str, Ledger] = {}
        self.workers: dict[str, CrashingConsumer] = {}
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self) -> HandlerComparison:
        """Create the topic and start both consumers (they join their groups in the background)."""
        if any(w.running or not w.finished.is_set() for w in self.workers.values()):
            return self  # started and not run yet
        if self.workers:  # it ran before: start afresh
            self.workers, self.ledgers = {}, {}
            self.published = payment_events(self.n_events, self.customers, seed=self.seed)
        self.topic = clients.create_topic(self.kafka, partitions=self.partitions, prefix="payments")
        lifecycle.register(self, self.KIND, self.name)
        ids = {e.event_id for e in self.published}
        for h in HANDLERS:
            self.ledgers[h] = Ledger()
            self.workers[h] = CrashingConsumer(self.kafka, self.topic, self.ledgers[h], ids, handler=h,
                                               batch_size=self.batch_size, crash_after=self.crash_after,
                                               process_s=self.process_s, log=self._lines.put).start()
        return self

    def stop(self) -> None:
        """Stop both consumers and close (and remove) their ledgers; unregister."""
        for w in self.workers.values():
            w.stop()
        for ledger in self.ledgers.values():
            ledger.close()
        lifecycle.unregister(self)

    def run(self, timeout: float = 60.0, log: Callable[[str], Any] | None = print) -> dict[str, DuplicateRun]:
        """Publish the payments, wait (at most ``timeout`` s) until both consumers are done and
        count. ``log`` gets each join and crash as it happens. Stops everything before returning."""
        check_positive("timeout", timeout)
        self.start()
        if log is not None:
            log(f"both consumers crash after {self.crash_after} deliveries (drawn from crash seed {self.crash_seed}), "
                f"batches of {self.batch_size}, a commit after each batch")
        try:
            producer = clients.producer(self.kafka)
            try:
                for future in [events.publish(producer, self.topic, e) for e in self.published]:
                    future.get(timeout=10)
            finally:
                producer.close(timeout=5)
            deadline = time.monotonic() + timeout
            workers = self.workers
            while not all(w.finished.is_set() for w in workers.values()) and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    line = self._lines.get(timeout=0.1)
                    if log is not None:
                        log(line)
            while log is not None and not self._lines.empty():
                log(self._lines.get())
            for h, w in workers.items():
                if w.error is not None:
                    raise RuntimeError(f"the {h} consumer failed: {w.error}") from w.error
                if not w.finished.is_set():
                    raise TimeoutError(f"the {h} consumer did not finish within {timeout:.0f} s "
                                       f"({len(w.seen)} of {self.n_events} events seen)")
            expected = expected_balances(self.published)
            return {h: DuplicateRun(h, self.n_events, w.delivered, w.applied, w.skipped, w.crashes, w.exposure,
                                    self.ledgers[h].balances(), expected, w.joins) for h, w in workers.items()}
        finally:
            self.stop()


def compare_handlers(kafka: Kafka, n_events: int = 30, *, customers: Sequence[str] = ("ada", "bob", "cy"),
                     partitions: int = 3, batch_size: int = 10, crash_after: int | None = None,
                     process_s: float = 0.0, seed: int = 3, crash_seed: int = 7, timeout: float = 60.0,
                     log: Callable[[str], Any] | None = print) -> dict[str, DuplicateRun]:
    """:meth:`HandlerComparison.run` on a comparison started for it (see :class:`HandlerComparison`)."""
    return HandlerComparison(kafka, n_events, customers=customers, partitions=partitions, batch_size=batch_size,
                             crash_after=crash_after, process_s=process_s, seed=seed,
                             crash_seed=crash_seed).start().run(timeout, log)


def balances_figure(runs: dict[str, DuplicateRun], title: str | None = None) -> go.Figure:
    """Bars per customer: the true balance and what each handler stored (patterns and
    labels carry the meaning as well as colour)."""
    import plotly.graph_objects as go

    if not runs:
        raise ValueError("runs must hold at least one DuplicateRun")
    first = next(iter(runs.values()))
    customers = sorted(first.expected)
    fig = go.Figure()
    fig.add_bar(name="truth: every payment once", x=customers, y=[first.expected[c] for c in customers],
                marker={"color": style.color("formula"), "pattern": {"shape": ""}},
                text=[f"{first.expected[c]:.0f}" for c in customers], textposition="outside")
    looks = {"naive": ("failed", "x"), "idempotent": ("ok", "/")}
    for name, run in runs.items():
        role, pattern = looks.get(name, ("neutral", "."))
        values = [run.balances.get(c, 0.0) for c in customers]
        fig.add_bar(name=f"{name} handler", x=customers, y=values, text=[f"{v:.0f}" for v in values],
                    textposition="outside", marker={"color": style.color(role), "pattern": {"shape": pattern}})
    fig.update_layout(**style.layout(title or f"Balances after a crash that left {len(first.exposure)} payments "
                                     "uncommitted"), barmode="group", yaxis_title="balance", xaxis_title="customer")
    return fig
