"""Lab 6, the outbox and idempotency: the learner writes ``learner_fix.py`` (the outbox write, the
relay and a durable idempotent consumer) and each check judges it by behaviour under crashes.

A check first calls the learner's functions calmly in this process, where a plain mistake gets a
plain answer (nothing committed, a row published twice, an id kept in memory); then it runs their
code as a real service in processes of its own (:mod:`.crashes`), kills it ``kills`` times at
random moments drawn from a printed seed, restarts it each time, and compares what survived: the
orders with the outbox rows, the orders with the topic, the topic with the payments. Only the
outcome decides, never the source code. The lab's capstone (lab 7) loads the same file.
"""
from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..kafka import clients
from ..kafka.clients import Kafka, read_topic
from ..patterns.fix import connect as open_db
from ..patterns.fix import load as load_fix
from . import crashes
from .feedback import Fail, Todo, check
from .fixfile import FIX_FILE, LEARNER_TIMEOUT_S, call, event_ids, life_failed, load, prepare, seed_of, timed
from .roles import ORDERS_TABLE, PAYMENTS_TABLE, charge, order, write_order

#: Kills per check. Each "lucky timing" design of tests/test_lab6.py loses something in at least 20 % (payments),
#: 35 % (relay) or 38 % (orders) of single kills (estimated from runs of 4 kills at 40 seeds); these counts leave
#: each of them a chance below one in a million to pass (and 20 seeds of each were all rejected).
OUTBOX_KILLS, RELAY_KILLS, CONSUMER_KILLS = 40, 36, 64
ORDERS_PER_LIFE = 150  # task 1: orders each orders-service life places
ROWS_PER_LIFE = 20     # task 2: outbox rows waiting when each relay life starts
RELAY_LIMIT = 5        # task 2: the relay's batch (``limit``)
EVENTS_PER_LIFE = 30   # task 3: events added to the topic before each consumer life
BATCH = 10             # task 3: records per poll; the consumer commits after each batch
DUPLICATE_EVERY = 5    # task 3: every 5th event is on the topic twice, as a relay's repeat
#: Task 2's slow acknowledgement: the producer holds a record this long before sending it, so a relay
#: that marks its row without waiting for the ack returns while the event is still in the producer.
SLOW_ACK_MS = 1000
#: Lives run before the kills: the first starts cold (connections, metadata), the second is timed.
CALM_LIVES = 2
ONE_TRANSACTION = ("Do both in ONE transaction: `with db:` around both statements commits them together at the "
                   "end of the block, or rolls both back if anything in it raises.")


def _kills(kills: int) -> int:
    if isinstance(kills, bool) or not isinstance(kills, int) or kills < 2:
        raise ValueError(f"kills must be a whole number, 2 or more, got {kills!r}")
    return kills


def _crash_lives(lab: crashes.CrashLab, role: str, service: str, config: Callable[[int], dict[str, Any]],
                 before: Callable[[int], object], seed: int,
                 kills: int) -> tuple[list[crashes.Kill], list[crashes.Life]]:
    print(f"Running your code as the {service}, killed {kills} times at random moments (seed {seed}) ...")
    return crashes.run_lives(lab, role, config, seed=seed, kills=kills, before=before, calm=CALM_LIVES,
                             timeout=LEARNER_TIMEOUT_S, failed=lambda life: life_failed(life, service),
                             desc=f"killing the {service}")


def _of(part: int, whole: int, noun: str, verb: str = "was") -> str:
    """'1 of the 117 orders ... was' / '3 of the 117 orders ... were' (the verb agrees with ``part``)."""
    plural = {"was": "were", "has": "have"}
    return f"{part} of the {whole} {noun} {verb if part == 1 else plural.get(verb, verb)}"


def _sample(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (" ..." if len(items) > n else "")


# =========================================================================== task 1: save_with_outbox


def _calm_outbox(fix: ModuleType, workdir: Path) -> None:
    path = workdir / "calm-orders.db"
    db, other = open_db(path), open_db(path)
    with contextlib.closing(db), contextlib.closing(other):
        call(fix, "setup", db)  # a first start of the service; prepare's setup is a second: the tables exist
        prepare(fix, db, ORDERS_TABLE)
        order_id, event_id, key, value, amount = order(1, "calm")
        call(fix, "save_with_outbox", db, write_order(order_id, amount), "orders", key, value, event_id)
        try:
            rows = other.execute("SELECT topic, key, value, published_at FROM outbox WHERE event_id = ?",
                                 (event_id,)).fetchall()
        except sqlite3.Error as exc:
            raise Fail(f"the check cannot read the outbox table that `setup` creates: {exc}.",
                       "Keep `setup` as the first cell wrote it: the checks read its outbox table.") from None
        saved = other.execute("SELECT COUNT(*) FROM orders WHERE order_id = ?", (order_id,)).fetchone()[0]
        if not saved and not rows:
            raise Fail("after `save_with_outbox` returned, another connection sees neither the order nor its outbox "
                       "row: nothing was committed (a crash now would lose both, and the caller thinks it is saved).",
                       "End the transaction before returning: `with db:` around both writes commits them.")
        if not rows:
            raise Fail("the order was committed but no outbox row was: its event would never be published.",
                       "INSERT INTO outbox (event_id, topic, key, value) VALUES (...) in the same transaction as "
                       "`write(db)`. " + ONE_TRANSACTION)
        if not saved:
            raise Fail("the outbox row was committed but the order was not: an event for an order that does not exist.",
                       "Call `write(db)` (it inserts the order) in the same transaction as the outbox row.")
        if len(rows) > 1:
            raise Fail(f"one call wrote {len(rows)} outbox rows for one event.", "Insert exactly one row per call.")
        if rows[0][:3] != ("orders", key, value):
            raise Fail(f"the outbox row holds topic={rows[0][0]!r}, key={rows[0][1]!r:.40}, value={rows[0][2]!r:.60}; "
                       f"expected the topic, key and value given to `save_with_outbox` ('orders', {key!r:.40}, ...).",
                       "Store the arguments as they are: the relay publishes exactly what the row holds.")
        if rows[0][3] is not None:
            raise Fail("the new outbox row is marked published already (published_at is set).",
                       "Leave published_at NULL: only the relay marks a row, once the broker acknowledged it.")
        _failed_write(fix, db, other, order_id, amount, key, value)


def _failed_write(fix: ModuleType, db: sqlite3.Connection, other: sqlite3.Connection, order_id: str,
                  amount: float, key: bytes, value: bytes) -> None:
    """``write(db)`` fails (the order id exists): the outbox row must not be committed, the error must come out."""
    raised = None
    try:
        fix.save_with_outbox(db, write_order(order_id, amount), "orders", key, value, "evt-calm-duplicate")
    except NotImplementedError:
        raise Todo("`save_with_outbox` still has the TODO stub") from None
    except Exception as exc:  # noqa: BLE001 - the learner may raise anything; raising is what is asked
        raised = exc
    invented = other.execute("SELECT COUNT(*) FROM outbox WHERE event_id = 'evt-calm-duplicate'").fetchone()[0]
    if invented:
        raise Fail("when `write(db)` failed (the order id already existed), your `save_with_outbox` still committed "
                   "the outbox row: an event for an order that was never saved (an invented event).",
                   ONE_TRANSACTION)
    if db.in_transaction:
        db.rollback()
        raise Fail("when `write(db)` failed, your `save_with_outbox` left the transaction open: the next call on this "
                   "connection would continue it, and it holds the database's write lock meanwhile.",
                   "Roll back on failure: `with db:` does it for you (it commits on success, rolls back on an error).")
    if raised is None:
        raise Fail("when `write(db)` failed (the order id already existed), your `save_with_outbox` returned as if the "
                   "order was saved: the orders service would tell the customer yes.",
                   "Let the error reach the caller: do not catch it (`with db:` rolls back and re-raises).")


@check(6, "outbox")
def check_lab6_outbox(kafka: Kafka, path: str | Path = FIX_FILE, *, seed: int | None = None,
                      kills: int = OUTBOX_KILLS) -> str:
    """``save_with_outbox`` writes the order and its outbox row in one transaction: the orders service
    killed ``kills`` times at random moments leaves no order without its row and no row without its order."""
    fix = load(path, "setup", "save_with_outbox")
    seed, kills = seed_of(seed), _kills(kills)
    with tempfile.TemporaryDirectory(prefix="course-lab6-") as calm:
        _calm_outbox(fix, Path(calm))
    with crashes.CrashLab(kafka) as lab:
        db_path = lab.workdir / "orders.db"
        with contextlib.closing(open_db(db_path)) as db:
            prepare(fix, db, ORDERS_TABLE)
            run = f"s{seed}"
            plan, lives = _crash_lives(
                lab, "writer", "orders service",
                lambda n: {"path": str(Path(path).resolve()), "db": str(db_path), "run": run, "topic": "orders",
                           "start": n * ORDERS_PER_LIFE, "count": ORDERS_PER_LIFE},
                lambda n: None, seed, kills)
            orders = {oid for (oid,) in db.execute("SELECT order_id FROM orders")}
            rows = Counter(eid for (eid,) in db.execute("SELECT event_id FROM outbox"))

    def index(name: str) -> int:
        return int(name.rsplit("-", 1)[1])

    def killed_in(name: str) -> str:
        life = lives[index(name) // ORDERS_PER_LIFE]
        return f"its service {life.kill}" if life.kill else "a calm run"

    lost = sorted(o for o in orders if order(index(o), run)[1] not in rows)
    invented = sorted(e for e in rows if order(index(e), run)[0] not in orders)
    if lost:
        raise Fail(f"{_of(len(lost), len(orders), 'orders in the database', 'has')} no outbox row: their events are "
                   f"lost for good. The order and its outbox row were committed in two transactions, and a kill fell "
                   f"between them (seed {seed}: e.g. {lost[0]}, killed {killed_in(lost[0])}).", ONE_TRANSACTION,
                   lost=len(lost))
    if invented:
        raise Fail(f"{_of(len(invented), sum(rows.values()), 'outbox rows', 'has')} no order in the database: their "
                   f"events would announce orders that do not exist. The outbox row was committed before the order, "
                   f"in a transaction of its own, and a kill fell between them (seed {seed}: e.g. {invented[0]}, "
                   f"killed {killed_in(invented[0])}).",
                   ONE_TRANSACTION, invented=len(invented))
    return (f"your orders service was {crashes.describe(plan, lives)}, seed {seed}: {len(orders)} orders were "
            f"committed, each with exactly one outbox row, and no outbox row without its order.")


# =========================================================================== task 2: relay


def _pending(db: sqlite3.Connection, event_id: str) -> bool:
    """True while the outbox row of ``event_id`` exists and is not marked published."""
    row = db.execute("SELECT published_at FROM outbox WHERE event_id = ?", (event_id,)).fetchone()
    return row is not None and row[0] is None


def _calm_relay(kafka: Kafka, fix: ModuleType, workdir: Path) -> None:
    path = workdir / "calm-relay.db"
    topic = kafka.create_topic(prefix="lab6-calm")
    try:
        with contextlib.closing(open_db(path)) as db, contextlib.closing(clients.producer(kafka)) as producer:
            prepare(fix, db, ORDERS_TABLE)
            events = [order(i, "calm") for i in range(5)]
            for order_id, event_id, key, value, amount in events:
                call(fix, "save_with_outbox", db, write_order(order_id, amount), topic, key, value, event_id)
            expected = [e[1] for e in events]
            for attempt, (limit, want) in enumerate(((3, 3), (3, 2), (3, 0)), 1):
                published = timed(fix, "relay", db, producer, limit=limit)
                if isinstance(published, bool) or not isinstance(published, int):
                    raise Fail(f"`relay` returned {published!r}; it must return how many rows it published.",
                               "Return a whole number, e.g. `return len(rows)`.")
                records = read_topic(kafka, topic)
                ids = event_ids(records)
                if ids and len(ids) != len(set(ids)):
                    raise Fail("your relay published rows again on its next call: it never marked them published.",
                               "After the broker acknowledged a row's event, mark the row: "
                               "UPDATE outbox SET published_at = ? WHERE id = ? (and commit).")
                done = 3 if attempt == 1 else 5
                if ids != expected[:done] or published != want:
                    _wrong_batch(attempt, limit, ids, expected, done, published, want)
                if any(r.key != e[2] for r, e in zip(records, events)):
                    raise Fail("your relay published an event without its key (or with another one).",
                               "Send each row with its key: `producer.send(topic, key=key, value=value)`.")
    finally:
        clients.delete_topic(kafka, topic)
    _slow_ack(kafka, fix, workdir)


def _wrong_batch(call: int, limit: int, ids: list[str], expected: list[str], done: int, published: Any,
                 want: int) -> None:
    where_now = f"after call {call} of `relay(db, producer, limit={limit})` on 5 waiting rows"
    if sorted(ids) == sorted(expected[:done]) and ids != expected[:done]:
        raise Fail(f"{where_now}, the topic holds the right events in the wrong order.",
                   "Publish the oldest rows first (ORDER BY id) and wait for each acknowledgement in that order.")
    if len(ids) > done:
        raise Fail(f"{where_now}, the topic holds {len(ids)} events: your relay published more than `limit` rows.",
                   "Take at most `limit` rows: SELECT ... ORDER BY id LIMIT ?.")
    if len(ids) < done:
        raise Fail(f"{where_now}, the topic holds {len(ids)} events, {done} expected"
                   + (": it published nothing" if not ids else "") + ".",
                   "Select the unpublished rows (WHERE published_at IS NULL ORDER BY id LIMIT ?) and send each.")
    if set(ids) != set(expected[:done]):
        raise Fail(f"{where_now}, the topic holds other events than the oldest {done}.",
                   "Publish the oldest unpublished rows first: ORDER BY id.")
    raise Fail(f"{where_now}, `relay` returned {published}, but it published {want} rows.",
               "Return how many rows this call published.")


def _slow_ack(kafka: Kafka, fix: ModuleType, workdir: Path) -> None:
    """With a producer that holds each record SLOW_ACK_MS before sending it, the relay must not return
    (with the row marked) before the broker acknowledged the event."""
    path = workdir / "calm-slow.db"
    topic = kafka.create_topic(prefix="lab6-slow")
    try:
        with contextlib.closing(open_db(path)) as db, contextlib.closing(open_db(path)) as other, \
                contextlib.closing(clients.producer(kafka, linger_ms=SLOW_ACK_MS)) as slow:
            prepare(fix, db, ORDERS_TABLE)
            order_id, event_id, key, value, amount = order(9, "slow")
            call(fix, "save_with_outbox", db, write_order(order_id, amount), topic, key, value, event_id)
            timed(fix, "relay", db, slow, limit=10)
            marked, arrived = not _pending(other, event_id), bool(read_topic(kafka, topic))
            if marked and not arrived:
                raise Fail("your relay marked the row published (or deleted it) while its event was still waiting in "
                           "the producer, not yet acknowledged by the broker: a crash now loses the event for good. "
                           "(The check's producer held the record a second before sending it, as a busy producer "
                           "batching records does.)",
                           "`producer.send(...)` only hands the record to the producer: wait for the broker's "
                           "acknowledgement, `.get(timeout=10)` on what send returns, before you mark the row.")
    finally:
        clients.delete_topic(kafka, topic)


@check(6, "relay")
def check_lab6_relay(kafka: Kafka, path: str | Path = FIX_FILE, *, seed: int | None = None,
                     kills: int = RELAY_KILLS) -> str:
    """``relay`` publishes the oldest unpublished rows and marks each only after the broker's ack: the
    relay killed ``kills`` times mid-batch loses no event and invents none (some are published twice)."""
    fix = load(path, "setup", "save_with_outbox", "relay")
    seed, kills = seed_of(seed), _kills(kills)
    with tempfile.TemporaryDirectory(prefix="course-lab6-") as calm:
        _calm_relay(kafka, fix, Path(calm))
    topic = kafka.create_topic(prefix="lab6-orders")
    written: list[tuple[str, str, bytes, bytes, float]] = []
    try:
        with crashes.CrashLab(kafka) as lab:
            db_path = lab.workdir / "orders.db"
            with contextlib.closing(open_db(db_path)) as db:
                prepare(fix, db, ORDERS_TABLE)

                def top_up(n: int) -> None:
                    """Before each life: as many new orders as it takes to have ROWS_PER_LIFE rows waiting."""
                    waiting = db.execute("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]
                    for _ in range(max(0, ROWS_PER_LIFE - waiting)):
                        row = order(len(written), f"s{seed}")
                        call(fix, "save_with_outbox", db, write_order(row[0], row[4]), topic, row[2], row[3], row[1])
                        written.append(row)

                config = {"path": str(Path(path).resolve()), "db": str(db_path), "limit": RELAY_LIMIT}
                plan, lives = _crash_lives(lab, "relay", "outbox relay", lambda n: config, top_up, seed, kills)
                last = lab.life("relay", config, timeout=LEARNER_TIMEOUT_S)  # the restarted relay empties the outbox
                if last.error:
                    raise life_failed(last, "outbox relay")
                records = read_topic(kafka, topic)
                ids = event_ids(records)
                expected = [row[1] for row in written]
                lost = [e for e in expected if e not in set(ids)]
                pending = [e for e in lost if _pending(db, e)]
    finally:
        clients.delete_topic(kafka, topic)
    invented = sorted(set(ids) - set(expected))
    if lost and len(pending) < len(lost):
        gone = len(lost) - len(pending)
        raise Fail(f"{_of(gone, len(expected), 'events')} never published although your relay had marked their rows "
                   f"published (or deleted them): it marked a row before the broker acknowledged its event, and a "
                   f"kill in between lost it (seed {seed}: e.g. {_sample([e for e in lost if e not in pending])}).",
                   "Send, wait for the acknowledgement (`.get(timeout=10)`), and only then mark the row and commit. "
                   "A kill between the ack and the mark publishes that row again after the restart: a duplicate, "
                   "never a loss.", lost=gone)
    if lost:
        raise Fail(f"{len(lost)} rows were still unpublished after your relay last returned 0 (seed {seed}: e.g. "
                   f"{_sample(lost)}).", "Select every unpublished row, oldest first: WHERE published_at IS NULL "
                   "ORDER BY id LIMIT ?; return 0 only when there was none.", lost=len(lost))
    if invented:
        raise Fail(f"the topic holds {len(invented)} events that are not in the outbox (e.g. {_sample(invented)}).",
                   "Publish each outbox row's own topic, key and value, unchanged.")
    firsts = list(dict.fromkeys(ids))
    if firsts != expected:
        raise Fail(f"after the kills the events reached the topic out of order (seed {seed}).",
                   "Publish oldest first (ORDER BY id), one batch after another, each acknowledged before the next.")
    repeats = len(ids) - len(firsts)
    return (f"your relay was {crashes.describe(plan, lives)}, seed {seed}: all {len(expected)} events reached the "
            f"topic in order, none lost, none invented; {repeats} were published twice (a kill between the ack and "
            f"the mark: at-least-once, which task 3's consumer absorbs).")


# =========================================================================== task 3: process_once


def _payments(db: sqlite3.Connection, event_id: str) -> int:
    return int(db.execute("SELECT COUNT(*) FROM payments WHERE event_id = ?", (event_id,)).fetchone()[0])


def _calm_consumer(fix: ModuleType, path: str | Path, workdir: Path) -> None:
    db_path = workdir / "calm-payments.db"
    db, other = open_db(db_path), open_db(db_path)
    with contextlib.closing(db), contextlib.closing(other):
        prepare(fix, db, PAYMENTS_TABLE)
        first = call(fix, "process_once", db, "evt-calm-1", charge("evt-calm-1", 10.0))
        if _payments(other, "evt-calm-1") != 1:
            seen_here = _payments(db, "evt-calm-1")
            raise Fail("after `process_once` returned on a new event, another connection sees "
                       + ("no payment: the effect was applied but never committed." if seen_here else
                          "no payment: `apply(db)` was not called."),
                       "Call `apply(db)` and record the id inside `with db:`, which commits both at its end.")
        if first is not True:
            raise Fail(f"`process_once` returned {first!r} for a new event; it must return True when it applied it.",
                       "Return True after applying the effect, False when you skipped a known event id.")
        again = call(fix, "process_once", db, "evt-calm-1", charge("evt-calm-1", 10.0))
        if _payments(other, "evt-calm-1") != 1:
            raise Fail("the same event delivered twice to the same running process was charged twice: your "
                       "`process_once` does not skip an event id it has already processed.",
                       "Record each processed id (INSERT INTO processed) and look it up first: skip it if it is there.")
        if again is not False:
            raise Fail(f"`process_once` returned {again!r} for an event it skipped; return False then.",
                       "Return False when the id was already recorded.")
        restarted = load_fix(path)
        with contextlib.closing(open_db(db_path)) as fresh:
            call(restarted, "process_once", fresh, "evt-calm-1", charge("evt-calm-1", 10.0))
        if _payments(other, "evt-calm-1") != 1:
            raise Fail("after a restart (the module loaded again, a new connection), the event was charged again: "
                       "your record of processed ids lives in memory, and a crash wipes it, as in lab 3.",
                       "Keep the processed ids in the database (the `processed` table), written in the same "
                       "transaction as the effect.")
        _failed_effect(fix, db, other)


def _failed_effect(fix: ModuleType, db: sqlite3.Connection, other: sqlite3.Connection) -> None:
    def refused(conn: sqlite3.Connection) -> None:
        charge("evt-calm-2", 20.0)(conn)
        raise RuntimeError("the card was declined")

    raised = None
    try:
        fix.process_once(db, "evt-calm-2", refused)
    except NotImplementedError:
        raise Todo("`process_once` still has the TODO stub") from None
    except Exception as exc:  # noqa: BLE001 - raising anything is what is asked
        raised = exc
    if db.in_transaction:
        db.rollback()
        raise Fail("when `apply(db)` raised, your `process_once` left the transaction open (half an effect in it).",
                   "Roll back on failure: `with db:` does it (it commits on success, rolls back on an error).")
    if _payments(other, "evt-calm-2"):
        raise Fail("when `apply(db)` raised halfway, your `process_once` still committed what it had written.",
                   "Run the effect and the record in `with db:`: an error rolls both back.")
    if raised is None:
        raise Fail("when `apply(db)` raised, your `process_once` returned normally: the consumer would commit the "
                   "offset and the payment would never happen.", "Let the error reach the caller (do not catch it).")
    retried = call(fix, "process_once", db, "evt-calm-2", charge("evt-calm-2", 20.0))
    if _payments(other, "evt-calm-2") != 1 or retried is not True:
        raise Fail("after `apply(db)` failed once, the retry of the same event was skipped: your `process_once` "
                   "recorded the id although the effect had failed, so the payment never happens.",
                   "Record the id in the same transaction as the effect, so both roll back together.")


@check(6, "consumer")
def check_lab6_consumer(kafka: Kafka, path: str | Path = FIX_FILE, *, seed: int | None = None,
                        kills: int = CONSUMER_KILLS) -> str:
    """``process_once`` applies each event once, durably: the payments consumer (it commits its offsets
    after each batch) killed ``kills`` times before its commit charges every event exactly once."""
    fix = load(path, "setup", "process_once")
    seed, kills = seed_of(seed), _kills(kills)
    with tempfile.TemporaryDirectory(prefix="course-lab6-") as calm:
        _calm_consumer(fix, path, Path(calm))
    topic, group = kafka.create_topic(prefix="lab6-payments"), clients.unique_name("lab6-payments")
    produced: list[str] = []
    try:
        with crashes.CrashLab(kafka) as lab, contextlib.closing(clients.producer(kafka)) as producer:
            db_path = lab.workdir / "payments.db"
            with contextlib.closing(open_db(db_path)) as db:
                prepare(fix, db, PAYMENTS_TABLE)
                ids: list[str] = []

                def top_up(n: int) -> None:
                    for _ in range(EVENTS_PER_LIFE):
                        _, event_id, key, value, _amount = order(len(ids), f"s{seed}")
                        repeat = [value] if len(ids) % DUPLICATE_EVERY == 0 else []
                        for v in [value, *repeat]:
                            producer.send(topic, key=key, value=v)
                            produced.append(event_id)
                        ids.append(event_id)
                    producer.flush(timeout=10)

                def config(n: int) -> dict[str, Any]:
                    return {"path": str(Path(path).resolve()), "db": str(db_path), "topic": topic, "group": group,
                            "batch": BATCH, "until": len(produced)}

                plan, lives = _crash_lives(lab, "consumer", "payments consumer", config, top_up, seed, kills)
                last = lab.life("consumer", config(len(lives)), timeout=LEARNER_TIMEOUT_S)
                if last.error:
                    raise life_failed(last, "payments consumer")
                counts = Counter(e for (e,) in db.execute("SELECT event_id FROM payments"))
                missing = [e for e in ids if not counts[e]]
                recorded = [e for e in missing if call(fix, "process_once", db, e, charge(e, 1.0)) is False]
    finally:
        clients.delete_topic(kafka, topic)
    twice = sorted(e for e, n in counts.items() if n > 1)
    if recorded:
        raise Fail(f"{_of(len(recorded), len(ids), 'events')} never charged, yet recorded as processed: you recorded "
                   f"the id before applying the effect, in a transaction of its own, and a kill fell between them; "
                   f"the redelivered event was then skipped (seed {seed}: e.g. {_sample(recorded)}).",
                   ONE_TRANSACTION, missing=len(recorded))
    if missing:
        raise Fail(f"{_of(len(missing), len(ids), 'events')} never charged (seed {seed}: e.g. {_sample(missing)}).",
                   "Apply the effect of every new event id; skip only ids already recorded.", missing=len(missing))
    if twice:
        raise Fail(f"{_of(len(twice), len(ids), 'events')} charged twice after the kills: the effect and the record of "
                   f"its id were committed in two transactions, and a kill fell between them; the batch came again "
                   f"(its offsets not yet committed) and the id was not recorded (seed {seed}: e.g. {_sample(twice)}).",
                   ONE_TRANSACTION, twice=len(twice))
    repeats = len(produced) - len(ids)
    return (f"your payments consumer was {crashes.describe(plan, lives)}, before committing its batch, seed {seed}: "
            f"{len(ids)} events ({repeats} of them twice on the topic, and every batch cut by a kill delivered again) "
            f"were each charged exactly once.")
