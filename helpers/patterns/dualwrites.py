"""The order service and the outbox relay, as they run in a process of their own (lesson 9, C16).

Each function below is the whole of one design, as an order service would write it; nothing
in them knows about crashes. :mod:`helpers.patterns.outbox` runs them in worker processes
(:class:`helpers.core.processes.CourseProcess`) and kills those at random moments
(:func:`helpers.core.kills.run_killed`).

* :func:`commit_then_publish`: commit the order, then publish OrderPlaced and wait for the ack.
* :func:`publish_then_commit`: insert the order, publish and wait for the ack, then commit.
* :func:`write_with_outbox`: insert the order and its outbox row in one transaction; no Kafka.
* :func:`relay_batch`: publish the oldest unpublished outbox rows, wait for the acks, then mark
  them published (one transaction). :func:`mark_then_publish` is the typical mistake (mark
  first, publish after), kept so a test can show the comparison catching it.

:func:`serve` is a worker's main: it opens its own sqlite connection and its own producer
(the course's settings, :data:`helpers.kafka.clients.TEACHING_PRODUCER`), says ready, waits
for go, says serving, and places orders ``order-<incarnation>-<n>`` one after the other, at
most ``rate`` per second, until it is killed or stopped. The relay's worker relays until the same.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.processes import Link
from ..kafka import clients, events

if TYPE_CHECKING:
    from kafka import KafkaProducer

__all__ = ["DESIGNS", "PRELOAD", "RELAYS", "SCHEMA", "commit_then_publish", "mark_then_publish", "open_database",
           "pending", "publish_then_commit", "relay_batch", "serve", "write_with_outbox"]

#: The three ways of placing an order, in the order the lesson shows them.
DESIGNS = ("commit-then-publish", "publish-then-commit", "outbox")
ACK_TIMEOUT_S = 10.0
#: Modules the fork server imports once, so a forked order service starts with them loaded.
PRELOAD = ("sqlite3", "json", "kafka", "helpers.kafka.clients", "helpers.kafka.events", __name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, amount REAL NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL, headers TEXT NOT NULL, published_at REAL);
"""


def open_database(path: str | Path) -> sqlite3.Connection:
    """A sqlite connection to the order database at ``path`` (tables created if missing).

    Autocommit mode: transactions are explicit (``BEGIN`` ... ``COMMIT``), so what is in
    one transaction is visible in the code. WAL lets the relay read while orders are written;
    with ``synchronous=NORMAL`` a commit survives a crash of the process (what this lesson
    does to it) without an fsync per commit (FULL would also survive a power cut).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


# --------------------------------------------------------------------------- the designs


def commit_then_publish(db: sqlite3.Connection, producer: KafkaProducer, topic: str, event: events.Event) -> None:
    """Commit the order, then publish its event and wait for the broker's ack."""
    db.execute("BEGIN")
    db.execute("INSERT INTO orders VALUES (?, ?, ?)", (event.key, event.payload["amount"], time.time()))
    db.execute("COMMIT")
    events.publish(producer, topic, event).get(timeout=ACK_TIMEOUT_S)


def publish_then_commit(db: sqlite3.Connection, producer: KafkaProducer, topic: str, event: events.Event) -> None:
    """Insert the order, publish its event and wait for the ack, then commit."""
    db.execute("BEGIN")
    db.execute("INSERT INTO orders VALUES (?, ?, ?)", (event.key, event.payload["amount"], time.time()))
    events.publish(producer, topic, event).get(timeout=ACK_TIMEOUT_S)
    db.execute("COMMIT")


def write_with_outbox(db: sqlite3.Connection, topic: str, event: events.Event) -> None:
    """Insert the order and its outbox row (the event, ready to send) in ONE transaction."""
    db.execute("BEGIN")
    db.execute("INSERT INTO orders VALUES (?, ?, ?)", (event.key, event.payload["amount"], time.time()))
    db.execute("INSERT INTO outbox (event_id, topic, key, value, headers) VALUES (?, ?, ?, ?, ?)",
               (event.event_id, topic, event.key.encode() if event.key else None, events.encode_value(event),
                json.dumps([(k, v.decode()) for k, v in events.headers(event)])))
    db.execute("COMMIT")


def relay_batch(db: sqlite3.Connection, producer: KafkaProducer, batch: int = 50) -> int:
    """Publish up to ``batch`` unpublished outbox rows, oldest first; once the broker has
    acknowledged them all, mark them published (one transaction). Returns how many rows.

    A crash after the acks and before the mark publishes them again next time: duplicates,
    never a loss (at-least-once)."""
    rows = db.execute("SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL "
                      "ORDER BY id LIMIT ?", (batch,)).fetchall()
    futures = [producer.send(topic, key=key, value=value, headers=[(k, v.encode()) for k, v in json.loads(hs)])
               for _, topic, key, value, hs in rows]
    for future in futures:
        future.get(timeout=ACK_TIMEOUT_S)
    if rows:
        db.execute("BEGIN")
        db.executemany("UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), r[0]) for r in rows])
        db.execute("COMMIT")
    return len(rows)


def mark_then_publish(db: sqlite3.Connection, producer: KafkaProducer, batch: int = 50) -> int:
    """A relay's typical mistake, kept to show what the comparison catches: it marks the rows
    published first (one transaction) and publishes them afterwards. A crash between the two
    loses those events: marked, never sent. Returns how many rows."""
    rows = db.execute("SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL "
                      "ORDER BY id LIMIT ?", (batch,)).fetchall()
    if rows:
        db.execute("BEGIN")
        db.executemany("UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), r[0]) for r in rows])
        db.execute("COMMIT")
    futures = [producer.send(topic, key=key, value=value, headers=[(k, v.encode()) for k, v in json.loads(hs)])
               for _, topic, key, value, hs in rows]
    for future in futures:
        future.get(timeout=ACK_TIMEOUT_S)
    return len(rows)


#: How a relay worker relays: the right way round, or the mistake.
RELAYS = {"relay": relay_batch, "relay-mark-first": mark_then_publish}


def pending(db: sqlite3.Connection) -> int:
    """Outbox rows not yet marked published."""
    return int(db.execute("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone()[0])


# --------------------------------------------------------------------------- a worker's main


def serve(link: Link, config: dict[str, Any]) -> None:
    """A worker's main, run by :class:`helpers.core.processes.CourseProcess` (see the module
    docstring). ``config``: ``role`` (a design, or a relay of :data:`RELAYS`), ``db``, ``topic``,
    ``status_topic`` (where a process with a producer announces ``ServiceStarted`` before it says
    ready), ``incarnation``, ``rate``, ``batch``, ``bootstrap_servers``, ``kind``, ``client_config``.
    A failure reaches the notebook as the process's ``error``."""
    producer: KafkaProducer | None = None
    role = config["role"]
    db = open_database(config["db"])
    try:
        if role != "outbox":
            kafka = clients.Kafka(config["bootstrap_servers"], config["kind"], config.get("client_config") or {})
            producer = clients.producer(kafka)
            producer.partitions_for(config["topic"])  # metadata now, not in the middle of the first order
            # A service says it is up (and so opens its connection to the broker before its first order).
            started = events.Event("ServiceStarted", {"role": role, "incarnation": config["incarnation"]},
                                   key=role, source="orders")
            announced = events.publish(producer, config["status_topic"], started)
            producer.flush(timeout=ACK_TIMEOUT_S)  # now, not after linger_ms
            announced.get(timeout=ACK_TIMEOUT_S)
        link.ready()
        if link.wait_go() is None:
            return
        if role in RELAYS:
            _relay(link, db, producer, RELAYS[role], int(config.get("batch", 50)))
        else:
            _place_orders(link, db, producer, config)
    finally:
        if producer is not None:
            with contextlib.suppress(Exception):
                producer.close(timeout=5)
        db.close()


def _place_orders(link: Link, db: sqlite3.Connection, producer: KafkaProducer | None,
                  config: dict[str, Any]) -> None:
    role, topic, interval = config["role"], config["topic"], 1.0 / float(config.get("rate", 400))
    n, next_at = 0, time.monotonic()
    link.say("serving")
    while not link.stopping:
        n += 1
        order_id = f"order-{config['incarnation']:03d}-{n:05d}"
        event = events.order_placed(order_id, float(10 + n % 90))
        if role == "commit-then-publish":
            assert producer is not None
            commit_then_publish(db, producer, topic, event)
        elif role == "publish-then-commit":
            assert producer is not None
            publish_then_commit(db, producer, topic, event)
        else:
            write_with_outbox(db, topic, event)
        next_at += interval                       # customers' orders arrive at most `rate` per second
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic())


def _relay(link: Link, db: sqlite3.Connection, producer: KafkaProducer | None,
           relay: Callable[[sqlite3.Connection, KafkaProducer, int], int], batch: int) -> None:
    assert producer is not None
    link.say("serving")
    while not link.stopping:
        if relay(db, producer, batch) == 0:
            time.sleep(0.005)
