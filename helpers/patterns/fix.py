"""The course's reference fix: an outbox relay and a durable idempotent consumer, in sqlite3 and kafka-python.

Lab 6 has the learner write the same four functions in ``labs/learner_fix.py`` (the contract:
``setup``, ``save_with_outbox``, ``relay``, ``process_once``); the capstone (lab 7) loads the
learner's file as the switch "with the fix" on its event side and falls back to this module,
labelled "the course's reference fix", when the file is absent or does not import. Lab 6's
checks run this module too: it must pass them.

* :func:`save_with_outbox`: the service's own change and one **outbox row** for its event, in
  ONE transaction: both or neither (lesson 9, C16). Nothing is published here.
* :func:`relay`: publish the unpublished rows, oldest first, and mark each one published only
  after the broker acknowledged it. Killed at any moment it loses nothing: a row sent and not
  yet marked is sent again next time (at-least-once, so consumers must be idempotent).
* :func:`process_once`: an event's effect and the record of its id in ONE transaction (C17:
  lesson 9's idempotent ledger, :class:`helpers.patterns.idempotency.Ledger`, applies its
  payments through it): a redelivered event is recognised and skipped, and a crash leaves both
  or neither.

Every function takes the caller's sqlite3 connection, in autocommit mode
(``isolation_level=None``) or Python's default mode, with no transaction open: each function
opens and ends its own. This module imports only sqlite3 and kafka-python, like the learner's.
:func:`connect` opens a database as the contract gives it to these functions, and :func:`load`
imports a module of this contract from its file (the learner's): lab 6's checks and the
capstone's services both use them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import time
import types
from collections.abc import Callable, Iterator

from kafka import KafkaProducer

__all__ = ["ACK_TIMEOUT_S", "LABEL", "SCHEMA", "connect", "load", "process_once", "relay", "save_with_outbox",
           "setup"]

#: How the capstone names this implementation in every table and figure.
LABEL = "the course's reference fix"
#: How long the relay waits for the broker's acknowledgement of one row.
ACK_TIMEOUT_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the order rows are published in
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    published_at REAL                      -- NULL until the broker acknowledged it
);
CREATE TABLE IF NOT EXISTS processed_events (event_id TEXT PRIMARY KEY, processed_at REAL NOT NULL);
"""


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taken at once (``BEGIN IMMEDIATE``): committed if the block ends,
    rolled back if it raises (and by sqlite itself if the process dies inside it)."""
    if not isinstance(db, sqlite3.Connection):
        raise ValueError(f"db must be a sqlite3.Connection, got {db!r}")
    if db.in_transaction:
        raise ValueError("db has a transaction open: commit or roll it back first (each function opens its own)")
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def setup(db: sqlite3.Connection) -> None:
    """Create the fix's tables if they do not exist (the outbox, the processed event ids)."""
    if not isinstance(db, sqlite3.Connection):
        raise ValueError(f"db must be a sqlite3.Connection, got {db!r}")
    db.executescript(SCHEMA)


def save_with_outbox(db: sqlite3.Connection, write: Callable[[sqlite3.Connection], None],
                     topic: str, key: bytes, value: bytes, event_id: str) -> None:
    """Run ``write(db)`` (the service's own change, e.g. INSERT the order) and add one outbox row
    for the event (topic, key, value, event_id) in ONE transaction: both or neither."""
    if not callable(write):
        raise ValueError(f"write must be a function of the connection, got {write!r}")
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"topic must be a topic name, got {topic!r}")
    if not isinstance(event_id, str) or not event_id:
        raise ValueError(f"event_id must be a non-empty string, got {event_id!r}")
    if not isinstance(value, bytes) or (key is not None and not isinstance(key, bytes)):
        raise ValueError("key and value must be bytes (key may be None)")
    with _transaction(db):
        write(db)
        db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                   (event_id, topic, key, value))


def relay(db: sqlite3.Connection, producer: KafkaProducer, *, limit: int = 100) -> int:
    """Publish up to ``limit`` unpublished outbox rows, oldest first, each to its topic with its
    key; mark a row published only after the broker acknowledged it (``.get(timeout)``). Return
    how many were published. Killed at any moment, it loses nothing (a row may be sent twice).

    A row the broker does not acknowledge in time raises (``KafkaTimeoutError``) and stays
    unpublished: the next call sends it again, after the rows before it."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                      (limit,)).fetchall()
    for row_id, topic, key, value in rows:
        producer.send(topic, key=key, value=value).get(timeout=ACK_TIMEOUT_S)  # acknowledged, then marked
        with _transaction(db):
            db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
    return len(rows)


def process_once(db: sqlite3.Connection, event_id: str, apply: Callable[[sqlite3.Connection], None]) -> bool:
    """Apply an event's effect at most once, durably: in ONE transaction, skip if ``event_id`` is
    recorded; otherwise run ``apply(db)`` (the effect, e.g. INSERT the charge) and record the id.
    Return True if the effect was applied now. Killed at any moment, the effect and the record are
    both there or both absent."""
    if not isinstance(event_id, str) or not event_id:
        raise ValueError(f"event_id must be a non-empty string, got {event_id!r}")
    if not callable(apply):
        raise ValueError(f"apply must be a function of the connection, got {apply!r}")
    with _transaction(db):
        seen = db.execute("SELECT 1 FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
        if seen:
            return False
        apply(db)
        db.execute("INSERT INTO processed_events VALUES (?, ?)", (event_id, time.time()))
    return True


def load(path: str | os.PathLike[str]) -> types.ModuleType:
    """A module of this contract from its file (the learner's ``learner_fix.py``), imported afresh:
    nothing is cached in ``sys.modules``, so each call runs the file as it is now. What the file
    raises comes out."""
    spec = importlib.util.spec_from_file_location("learner_fix", str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def connect(path: str | os.PathLike[str], *, autocommit: bool = False) -> sqlite3.Connection:
    """A connection to a service's database as the contract gives it (FIX_INTERFACE): Python's default
    transaction handling (an implicit BEGIN before INSERT/UPDATE/DELETE; ``db.commit()`` or ``with
    db:`` ends it: in autocommit mode a learner's ``with db:`` would commit each statement on its own,
    and an order could be committed without its outbox row); WAL, so another process may read while
    it writes; ``synchronous=NORMAL``: a commit survives the process being killed, which is the
    failure here, without an fsync per commit. Any thread may use it. ``autocommit=True``: each
    statement commits on its own unless a ``BEGIN`` opens a transaction (a service's own statements)."""
    db = sqlite3.connect(str(path), isolation_level=None if autocommit else "DEFERRED", timeout=10.0,
                         check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db
