"""Dual writes and the transactional outbox (lesson 9, claim C16).

An order service that writes its database and then publishes an event does two things
that cannot be one: a crash between them leaves the database and the topic telling
different stories.

* :class:`DualWriteOrderService` does the two steps one after the other, in either
  order: ``"commit-then-publish"`` *loses* the event of a committed order when it
  crashes between them; ``"publish-then-commit"`` *invents* the event of an order the
  database rolled back.
* :class:`OutboxOrderService` writes the order and an **outbox row** (the event, ready to
  send) in the same sqlite transaction: both or neither. :class:`OutboxRelay`, a thread,
  publishes the unpublished rows in order and marks them; a relay that crashes after
  publishing and before marking publishes that row again (at-least-once: duplicates,
  never a loss), so consumers must be idempotent (:mod:`helpers.patterns.idempotency`).

A :class:`CrashPlan` (fixed by a seed) makes a step raise :class:`SimulatedCrash`; the
service drops its sqlite connection (rolling back what was not committed, as a dying
process would) and starts again. :func:`run_dual_write` counts the database against the
topic (:class:`DualWriteRun`), :func:`compare_designs` runs the designs under the same
crash points, :func:`dual_write_figure` and :func:`experiment` show them, and
:func:`read_topic` reads a whole topic back.
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import lifecycle, style
from ..core.params import check_int, check_positive, check_probability
from ..core.wait import wait_until
from ..kafka import clients, events

if TYPE_CHECKING:  # the handle moves between modules during the restructuring; only a type here
    import plotly.graph_objects as go
    from kafka import KafkaProducer

    from ..core.live import LiveExperiment
    from ..kafka.clients import Kafka

__all__ = [
    "DESIGNS",
    "CrashPlan",
    "DualWriteOrderService",
    "DualWriteRun",
    "OutboxOrderService",
    "OutboxRelay",
    "SimulatedCrash",
    "compare_designs",
    "dual_write_figure",
    "experiment",
    "open_database",
    "read_topic",
    "run_dual_write",
]


lifecycle.warm_up_plotly()  # the lesson's first figure cell need not wait for plotly's renderers

#: The three ways of placing an order, in the order the lesson shows them.
DESIGNS = ("commit-then-publish", "publish-then-commit", "outbox")
ACK_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, amount REAL NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, headers TEXT NOT NULL, published_at REAL);
"""


# --------------------------------------------------------------------------- crashes


class SimulatedCrash(RuntimeError):
    """The process 'dies' here: whatever it had not committed or sent is gone."""


@dataclass(frozen=True)
class CrashPlan:
    """Which steps crash: each (point, index) crashes with probability ``rate``, fixed by ``seed``.

    The same plan gives the same crashes to every design, so they can be compared.
    """

    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        check_probability("rate", self.rate)
        check_int("seed", self.seed, minimum=0)

    def hits(self, point: str, index: int) -> bool:
        """True if the step ``point`` of the ``index``-th order (or row) crashes."""
        return random.Random(f"{self.seed}/{point}/{index}").random() < self.rate

    def crash(self, point: str, index: int) -> None:
        """Raise :class:`SimulatedCrash` if :meth:`hits` says so."""
        if self.hits(point, index):
            raise SimulatedCrash(f"crash at {point!r} (#{index})")


NO_CRASHES = CrashPlan(0.0)


# --------------------------------------------------------------------------- the database


def open_database(path: str | Path) -> sqlite3.Connection:
    """A sqlite connection to the order database at ``path`` (tables created if missing).

    Autocommit mode: transactions are explicit (``BEGIN`` ... ``COMMIT``), so what is in
    one transaction is visible in the code. WAL lets the relay read while orders are written;
    with ``synchronous=NORMAL`` a commit survives a crash of the process (the failure this
    lesson injects) without an fsync per commit (FULL would also survive a power cut).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


class _OrderServiceBase:
    """What both order services share: a database file, a producer, crash-and-restart."""

    KIND = "service"

    def __init__(self, kafka: Kafka, topic: str, db_path: str | Path, *, crashes: CrashPlan = NO_CRASHES):
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a topic name, got {topic!r}")
        if not isinstance(crashes, CrashPlan):
            raise ValueError(f"crashes must be a CrashPlan, got {crashes!r}")
        self.kafka, self.topic, self.db_path, self.crashes = kafka, topic, Path(db_path), crashes
        self.name = f"{type(self).__name__}-{topic}"
        self.conn: sqlite3.Connection | None = open_database(self.db_path)
        lifecycle.register(self, self.KIND, self.name)

    def restart(self) -> None:
        """After a :class:`SimulatedCrash`: drop the connection without committing (sqlite
        rolls the open transaction back, as when a process dies) and open a new one."""
        if self.conn is not None:
            self.conn.close()
        self.conn = open_database(self.db_path)

    def stop(self) -> None:
        """Close the database connection (and any client); unregister."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        lifecycle.unregister(self)

    def _db(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError(f"{self.name} is stopped")
        return self.conn


class DualWriteOrderService(_OrderServiceBase):
    """Places an order in two steps: the database and Kafka, in the order ``design`` says.

    * ``"commit-then-publish"``: commit the order, then publish OrderPlaced. A crash in
      between: the order exists, its event never will (lost).
    * ``"publish-then-commit"``: insert the order, publish and wait for the ack, then
      commit. A crash in between: the event is out, the order rolled back (invented).

    The producer survives a simulated crash here; a real crash would also lose what the
    producer had buffered, which only makes the dual write worse.
    """

    def __init__(self, kafka: Kafka, topic: str, db_path: str | Path, *, design: str = "commit-then-publish",
                 crashes: CrashPlan = NO_CRASHES):
        if design not in DESIGNS[:2]:
            raise ValueError(f"design must be one of {DESIGNS[:2]}, got {design!r}")
        self.design = design
        # linger_ms=0: it waits for each ack, so batching would only add the linger to every order.
        self.producer: KafkaProducer = clients.producer(kafka, linger_ms=0)
        try:
            super().__init__(kafka, topic, db_path, crashes=crashes)
        except BaseException:
            self.producer.close(timeout=5)
            raise

    def place_order(self, index: int, order_id: str, amount: float) -> None:
        """Write and publish one order; raises :class:`SimulatedCrash` where the plan says."""
        db, event = self._db(), events.order_placed(order_id, amount)
        db.execute("BEGIN")
        db.execute("INSERT INTO orders VALUES (?, ?, ?)", (order_id, amount, time.time()))
        if self.design == "commit-then-publish":
            db.execute("COMMIT")
            self.crashes.crash("between", index)            # committed, not yet published
            events.publish(self.producer, self.topic, event).get(timeout=ACK_TIMEOUT_S)
        else:
            events.publish(self.producer, self.topic, event).get(timeout=ACK_TIMEOUT_S)
            self.crashes.crash("between", index)            # published, not yet committed
            db.execute("COMMIT")

    def stop(self) -> None:
        """Close the producer and the database connection."""
        with contextlib.suppress(Exception):
            self.producer.close(timeout=5)
        super().stop()


class OutboxOrderService(_OrderServiceBase):
    """Places an order and records its OrderPlaced event as an outbox row, in ONE transaction.

    It never talks to Kafka: :class:`OutboxRelay` publishes the rows. A crash at the same
    point as the dual write's (between the two writes) rolls both back: no order, no event.
    """

    def place_order(self, index: int, order_id: str, amount: float) -> None:
        """Insert the order and its outbox row, then commit; raises :class:`SimulatedCrash`
        where the plan says (the transaction is then rolled back by :meth:`restart`)."""
        db, event = self._db(), events.order_placed(order_id, amount)
        db.execute("BEGIN")
        db.execute("INSERT INTO orders VALUES (?, ?, ?)", (order_id, amount, time.time()))
        self.crashes.crash("between", index)                # same point: after the order, before the event
        db.execute("INSERT INTO outbox (event_id, topic, key, value, headers) VALUES (?, ?, ?, ?, ?)",
                   (event.event_id, self.topic, event.key.encode() if event.key else None,
                    events.encode_value(event), json.dumps([(k, v.decode()) for k, v in events.headers(event)])))
        db.execute("COMMIT")


class OutboxRelay(lifecycle.CourseThread):
    """A thread that publishes unpublished outbox rows, oldest first, and marks each one.

    For each row: send it, wait for the broker's ack, then mark it published (its own
    commit). ``crashes`` (point ``"relay"``, keyed by row id, first attempt only) makes the
    relay die after the ack and before the mark; it restarts at once, finds the row still
    unpublished and publishes it again: at-least-once. ``published`` counts sends,
    ``crashes_seen`` the crashes survived; ``stop()`` lets it finish the row in hand.
    """

    KIND = "relay"

    def __init__(self, kafka: Kafka, db_path: str | Path, *, interval: float = 0.01,
                 crashes: CrashPlan = NO_CRASHES, batch: int = 100):
        super().__init__()
        self.kafka, self.db_path = kafka, Path(db_path)
        self.interval = check_positive("interval", interval)
        self.batch = check_int("batch", batch)
        if not isinstance(crashes, CrashPlan):
            raise ValueError(f"crashes must be a CrashPlan, got {crashes!r}")
        self.crashes = crashes
        self.name = f"outbox-relay-{self.db_path.stem}"
        self.published = 0
        self.crashes_seen = 0
        self._attempted: set[int] = set()

    def pending(self) -> int:
        """Outbox rows not yet marked published."""
        with contextlib.closing(open_database(self.db_path)) as db:
            return db.execute("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every outbox row is published; raise if the relay failed or ran out of time."""
        def done() -> bool:
            if self.error is not None:
                raise RuntimeError(f"the outbox relay failed: {self.error}") from self.error
            return self.pending() == 0

        wait_until(done, timeout, "the outbox relay to publish every row", interval=0.02)

    def _run(self) -> None:
        producer: KafkaProducer | None = None
        db: sqlite3.Connection | None = None
        try:
            producer = clients.producer(self.kafka, linger_ms=0)  # one row, one ack: nothing to batch
            while not self._stop.is_set():
                if db is None:
                    db = open_database(self.db_path)
                try:
                    moved = self._relay_batch(db, producer)
                except SimulatedCrash:
                    self.crashes_seen += 1
                    db.close()  # the process died: nothing uncommitted survives; the relay restarts
                    db = None
                    continue
                if not moved:
                    self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - reported by drain()
            self.error = exc
        finally:
            if db is not None:
                db.close()
            if producer is not None:
                with contextlib.suppress(Exception):
                    producer.close(timeout=5)

    def _relay_batch(self, db: sqlite3.Connection, producer: KafkaProducer) -> int:
        rows = db.execute("SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL "
                          "ORDER BY id LIMIT ?", (self.batch,)).fetchall()
        for row_id, topic, key, value, headers in rows:
            if self._stop.is_set():
                break
            hs = [(k, v.encode()) for k, v in json.loads(headers)]
            producer.send(topic, key=key, value=value, headers=hs).get(timeout=ACK_TIMEOUT_S)
            self.published += 1
            first = row_id not in self._attempted
            self._attempted.add(row_id)
            if first:
                self.crashes.crash("relay", row_id)     # published, not yet marked
            db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
        return len(rows)


# --------------------------------------------------------------------------- reading back


def read_topic(kafka: Kafka, topic: str, timeout: float = 15.0) -> list[Any]:
    """Every record of ``topic``, partition by partition in log order (kafka-python records).

    A plain consumer with no group reads from the beginning until it reaches each
    partition's high watermark (from the fetch response, right on every broker).
    """
    check_positive("timeout", timeout)
    records: list[Any] = []
    with contextlib.closing(clients.consumer(kafka, group_id=None)) as consumer:
        tps = clients.read_from_start(consumer, topic)

        def caught_up() -> bool:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            marks = [consumer.highwater(tp) for tp in tps]
            return all(m is not None and consumer.position(tp) >= m for tp, m in zip(tps, marks))

        wait_until(caught_up, timeout, f"reading topic {topic!r} to its end", interval=0.001)
    return sorted(records, key=lambda r: (r.partition, r.offset))


# --------------------------------------------------------------------------- one run


@dataclass
class DualWriteRun:
    """One design under one crash plan: the database counted against the topic."""

    design: str
    orders: int                  # orders the shop tried to place
    crashes: int                 # service crashes between the two steps
    relay_crashes: int           # outbox relay crashes between publish and mark
    db_ids: set[str]             # order ids committed in the database
    topic_ids: list[str]         # order ids of the OrderPlaced events on the topic (duplicates kept)
    seconds: float = 0.0
    topic: str = ""

    @property
    def lost(self) -> set[str]:
        """Committed orders whose event never reached the topic."""
        return self.db_ids - set(self.topic_ids)

    @property
    def invented(self) -> set[str]:
        """Events on the topic for orders the database does not have."""
        return set(self.topic_ids) - self.db_ids

    @property
    def duplicates(self) -> int:
        """Events published more than once (at-least-once relaying)."""
        return len(self.topic_ids) - len(set(self.topic_ids))

    def counts(self) -> dict[str, int]:
        """{"lost": ..., "invented": ..., "duplicates": ...}: what the topic got wrong."""
        return {"lost": len(self.lost), "invented": len(self.invented), "duplicates": self.duplicates}

    @property
    def consistent(self) -> bool:
        """True if the topic holds exactly the committed orders (duplicates aside)."""
        return set(self.topic_ids) == self.db_ids

    def __str__(self) -> str:
        extra = f", relay crashes {self.relay_crashes}" if self.design == "outbox" else ""
        return (f"{self.design:20} {self.orders} orders, {self.crashes} crashes between the steps{extra}: "
                f"{len(self.db_ids)} in the database, {len(set(self.topic_ids))} on the topic -> "
                f"lost {len(self.lost)}, invented {len(self.invented)}, duplicates {self.duplicates}")


def run_dual_write(kafka: Kafka, design: str, n_orders: int = 40, *, crash_rate: float = 0.2, seed: int = 7,
                   relay_crash_rate: float | None = None, timeout: float = 30.0) -> DualWriteRun:
    """Place ``n_orders`` orders through ``design`` ("commit-then-publish",
    "publish-then-commit" or "outbox") while crashes hit ``crash_rate`` of them between
    the two steps (the same orders for every design with the same ``seed``).

    The outbox relay crashes after publishing ``relay_crash_rate`` of its rows (default:
    ``crash_rate``). Everything started is stopped; the database file is removed.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    check_int("n_orders", n_orders)
    check_probability("crash_rate", crash_rate)
    if relay_crash_rate is not None:
        check_probability("relay_crash_rate", relay_crash_rate)
    check_positive("timeout", timeout)
    plan = CrashPlan(crash_rate, seed)
    relay_plan = CrashPlan(crash_rate if relay_crash_rate is None else relay_crash_rate, seed + 1)
    topic = clients.create_topic(kafka, prefix=f"orders-{design}")
    workdir = Path(tempfile.mkdtemp(prefix="course-outbox-"))
    started = time.monotonic()
    service: DualWriteOrderService | OutboxOrderService
    relay: OutboxRelay | None = None
    crashes = 0
    try:
        if design == "outbox":
            service = OutboxOrderService(kafka, topic, workdir / "orders.db", crashes=plan)
        else:
            service = DualWriteOrderService(kafka, topic, workdir / "orders.db", design=design, crashes=plan)
        try:
            if design == "outbox":
                relay = OutboxRelay(kafka, workdir / "orders.db", crashes=relay_plan).start()
            for i in range(n_orders):
                try:
                    service.place_order(i, f"order-{seed}-{i}", float(10 + (i * 7) % 90))
                except SimulatedCrash:
                    crashes += 1
                    service.restart()
            if relay is not None:
                relay.drain(timeout)
        finally:
            service.stop()
            if relay is not None:
                relay.stop()
        with contextlib.closing(open_database(workdir / "orders.db")) as db:
            db_ids = {row[0] for row in db.execute("SELECT order_id FROM orders")}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    topic_ids = [events.decode(r).payload["order_id"] for r in read_topic(kafka, topic, timeout)]
    return DualWriteRun(design, n_orders, crashes, relay.crashes_seen if relay else 0, db_ids, topic_ids,
                        time.monotonic() - started, topic)


def compare_designs(kafka: Kafka, n_orders: int = 40, *, crash_rate: float = 0.2, seed: int = 7,
                    designs: Sequence[str] = DESIGNS) -> dict[str, DualWriteRun]:
    """:func:`run_dual_write` for each design, with the same orders and the same crash points."""
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown or not designs:
        raise ValueError(f"designs must be among {DESIGNS}, got {list(designs)!r}")
    return {d: run_dual_write(kafka, d, n_orders, crash_rate=crash_rate, seed=seed) for d in designs}


# --------------------------------------------------------------------------- figures


OUTCOMES = (("lost", "events lost (committed, never published)", "/"),
            ("invented", "events invented (published, rolled back)", "x"),
            ("duplicates", "duplicates (published twice, same order)", "."))


def dual_write_figure(runs: dict[str, DualWriteRun], title: str | None = None) -> go.Figure:
    """Grouped bars: lost, invented and duplicated events per design (patterns and labels
    carry the meaning as well as colour)."""
    import plotly.graph_objects as go

    if not runs:
        raise ValueError("runs must hold at least one DualWriteRun")
    names = list(runs)
    fig = go.Figure()
    for i, (key, label, pattern) in enumerate(OUTCOMES):
        values = [runs[n].counts()[key] for n in names]
        look = style.series(i + 3)
        fig.add_bar(name=label, x=names, y=values, text=values, textposition="outside",
                    marker={"color": look["color"], "pattern": {"shape": pattern}})
    first = runs[names[0]]
    fig.update_layout(**style.layout(title or f"{first.orders} orders, {first.crashes} crashes between the two "
                                     "steps: what the topic got wrong"),
                      barmode="group", yaxis_title="events", xaxis_title="design")
    return fig


def experiment(kafka: Kafka, *, n_orders: int = 30, crash_percent: int = 20, seed: int = 7,
               run_now: bool = True) -> LiveExperiment:
    """Sliders (crash rate, orders) over :func:`compare_designs`; ``rerun(crash_percent=..., orders=...)``
    is what moving them does. ``run_now=False`` waits for the first move (or ``rerun``)."""
    import ipywidgets as ipw

    from ..core.live import LiveExperiment

    check_int("n_orders", n_orders)
    check_int("crash_percent", crash_percent, minimum=0)
    common = {"continuous_update": False, "style": {"description_width": "160px"}, "layout": ipw.Layout(width="460px")}
    controls = {"crash_percent": ipw.IntSlider(value=crash_percent, min=0, max=60, step=5,
                                               description="crashes between steps (%)", **common),
                "orders": ipw.IntSlider(value=n_orders, min=10, max=80, step=10, description="orders", **common)}

    def run(crash_percent: int, orders: int) -> dict[str, DualWriteRun]:
        return compare_designs(kafka, orders, crash_rate=crash_percent / 100, seed=seed)

    def describe(runs: dict[str, DualWriteRun]) -> str:
        return "<br>".join(str(r) for r in runs.values())

    return LiveExperiment(controls, run, dual_write_figure, describe, run_now=run_now)

