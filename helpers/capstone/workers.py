"""The capstone's services, each a process of its own.

Every service of both builds of the shop runs in its own process, so that a kill is a real
SIGKILL (in-flight requests die with the process, an event service neither commits nor leaves
its group), a pause is a real stop of the whole process (psutil suspend, like a stop-the-world
collector), and a crash lands wherever the process happens to be. Each service keeps its own
sqlite database: what it did is recorded there, and the capstone counts from those records,
never from what the customer was told.

The roles (``ROLES``):

* ``sync-orders``: HTTP. Writes the order (``pending``), calls payments and waits, then marks
  the order ``accepted`` or ``rejected`` and answers the customer;
* ``sync-payments``: HTTP. Works, records the charge, calls shipping and waits, answers;
* ``sync-shipping``: HTTP. Works, records the shipment, answers;
* ``event-orders``: HTTP. Without the fix: writes the order (``pending``), publishes
  ``OrderPlaced`` and waits for the broker's acknowledgement, then marks it ``accepted`` (or
  ``rejected`` when no acknowledgement came in time) and answers. With the fix: the order and
  its outbox row in one transaction (``save_with_outbox``), answered at once; a relay thread
  publishes the outbox (``relay``);
* ``event-payments`` / ``event-shipping``: a consumer in its group. For each event: work,
  record the charge (the shipment), publish what follows; commit after the batch
  (at-least-once). With the fix the record goes through ``process_once`` (a redelivered event
  is skipped, and what follows it is published again, with the same id).

Each process is forked from a server that imported this module once (:data:`PRELOAD`;
:mod:`helpers.capstone.processes`), so a restart takes milliseconds, not an interpreter start.
:func:`main` runs in a :class:`helpers.core.processes.CourseProcess` and talks to the capstone
through its :class:`~helpers.core.processes.Link`: it says ``ready`` (with its ``port`` for an HTTP
service; for an event service once its partitions are assigned, and ``revoked`` when a rebalance
takes them); ``command`` messages change it while it runs (``slow``: seconds, ``fix``: bool), and it
says ``applied``. When the pipe closes (the capstone stopped it, or the kernel died) it exits at
once: it never outlives the kernel.
"""
from __future__ import annotations

import http.client
import json
import os
import sqlite3
import threading
import time
import types
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from kafka import ConsumerRebalanceListener, KafkaProducer

from ..core.processes import Link
from ..kafka import clients
from ..kafka.clients import Kafka
from ..kafka.events import Event, decode, encode_value
from ..patterns import fix
from ..services.chain import CourseServer, JsonHandler

__all__ = ["HTTP_ROLES", "PRELOAD", "ROLES", "SCHEMA", "call", "connect", "load_fix", "main"]

#: What the fork server imports once, so a service process starts with it loaded.
PRELOAD = (__name__,)

ROLES = ("sync-orders", "sync-payments", "sync-shipping", "event-orders", "event-payments", "event-shipping")
HTTP_ROLES = ROLES[:4]

#: Every service's own records; each uses its table (orders, charges or shipments).
SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (run TEXT NOT NULL, number INTEGER NOT NULL, status TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (run, number));
CREATE TABLE IF NOT EXISTS charges (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL,
    number INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shipments (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL,
    number INTEGER NOT NULL, at REAL NOT NULL);
"""

ORDER_PLACED, PAYMENT_PROCESSED, ORDER_SHIPPED = "OrderPlaced", "PaymentProcessed", "OrderShipped"


def connect(path: str, *, autocommit: bool = True) -> sqlite3.Connection:
    """A connection to a service's database (:func:`helpers.patterns.fix.connect`): autocommit for the
    service's own statements (its transactions are explicit); the fix's functions get
    ``autocommit=False``, Python's default transaction handling, as lab 6 gives them."""
    return fix.connect(path, autocommit=autocommit)


def load_fix(path: str | None) -> types.ModuleType:
    """The learner's fix from ``path`` (imported from that file, nothing cached), or the course's
    reference fix when ``path`` is None."""
    return fix if path is None else fix.load(path)


# --------------------------------------------------------------------------- the process


class Worker:
    """One service process: its settings, its database, what it says to the capstone."""

    def __init__(self, config: dict[str, Any], link: Link):
        self.config = config
        self.role: str = config["role"]
        self.link = link
        self.slow = float(config.get("slow", 0.0))
        self.hop = float(config.get("hop", 0.0))
        self.use_fix = bool(config.get("fix", False))
        self.fix: types.ModuleType | None = None
        self._local = threading.local()
        db = self.db()
        db.executescript(SCHEMA)
        if self.role.startswith("event-"):
            self.fix = load_fix(config.get("fix_path"))
            self.fix.setup(self.fix_db())

    def db(self) -> sqlite3.Connection:
        """This thread's connection to the service's database."""
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = self._local.db = connect(self.config["db"])
        return cast(sqlite3.Connection, conn)

    def fix_db(self) -> sqlite3.Connection:
        """This thread's connection for the fix's functions (Python's default transaction handling)."""
        conn = getattr(self._local, "fix_db", None)
        if conn is None:
            conn = self._local.fix_db = connect(self.config["db"], autocommit=False)
        return cast(sqlite3.Connection, conn)

    def say(self, kind: str, **data: Any) -> None:
        """One status line to the capstone (a closed pipe is ignored: the capstone is gone)."""
        self.link.say(kind, **data)

    def work(self) -> None:
        """The service's own work on one order (``hop`` seconds, plus any slowdown)."""
        seconds = self.hop + self.slow
        if seconds > 0:
            time.sleep(seconds)

    def apply(self, command: dict[str, Any]) -> None:
        """A change while running: ``slow`` (extra seconds of work) or ``fix`` (on or off)."""
        if "slow" in command:
            self.slow = float(command["slow"])
        if "fix" in command:
            self.use_fix = bool(command["fix"])
        self.say("applied", **command)

    def kafka(self) -> Kafka:
        k = self.config["kafka"]
        return Kafka(k["bootstrap_servers"], k["kind"], k.get("client_config") or {})


# --------------------------------------------------------------------------- HTTP services


class _Handler(JsonHandler):
    server_version = "capstone/1"

    def do_GET(self) -> None:  # the name http.server dispatches a GET to
        worker: HttpWorker = cast(Any, self.server).worker
        query = parse_qs(urlsplit(self.path).query)
        try:
            run, number = query["run"][0], int(query["n"][0])
        except (KeyError, ValueError, IndexError):
            self.answer(400, json.dumps({"error": "a request needs ?run=...&n=..."}).encode())
            return
        status, body = worker.serve(run, number)
        self.answer(status, json.dumps(body).encode())


def _bind(port: int) -> CourseServer:
    """Listen on ``port`` (0: a free one). The process that had it may still be dying (a kill takes
    a few milliseconds to close its sockets): retry for two seconds."""
    deadline = time.monotonic() + 2.0
    while True:
        try:
            return CourseServer(("127.0.0.1", port), _Handler)
        except OSError:
            if port == 0 or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def call(port: int, run: str, number: int, timeout: float) -> tuple[bool, str]:
    """GET the service on ``port`` for order ``number`` of ``run``; (answered 200, error in words)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", f"/?run={run}&n={number}")
        response = conn.getresponse()
        body = response.read()
        if response.status == 200:
            return True, ""
        try:
            error = json.loads(body).get("error", "")
        except ValueError:
            error = ""
        return False, f"{response.status}: {error}"
    except ConnectionRefusedError:
        return False, "refused (nothing listening)"
    except TimeoutError:
        return False, f"no answer within {timeout:.2f} s"
    except (ConnectionError, http.client.HTTPException, OSError) as exc:
        return False, f"connection lost ({type(exc).__name__})"
    finally:
        conn.close()


class HttpWorker(Worker):
    """An HTTP service: a bounded pool of ``workers`` threads serves the orders."""

    def __init__(self, config: dict[str, Any], link: Link):
        super().__init__(config, link)
        self.pool = threading.BoundedSemaphore(int(config.get("workers", 3)))
        self.timeout = float(config["timeout"])  # how long it waits for its callee, and for a free worker
        self.producer: KafkaProducer | None = None
        self._server: CourseServer | None = None

    def start(self) -> None:
        if self.role == "event-orders":
            if self.use_fix or self.fix is not None:
                threading.Thread(target=self._relay, name="relay", daemon=True).start()
            # The course's producer settings (acks=all, linger 5 ms): this service waits for each
            # acknowledgement before it answers, as an order service that must not lie would.
            self.producer = clients.producer(self.kafka())
        server = _bind(int(self.config.get("port") or 0))
        cast(Any, server).worker = self
        self._server = server
        self.say("ready", port=server.server_address[1], pid=os.getpid())
        server.serve_forever(poll_interval=0.05)

    def serve(self, run: str, number: int) -> tuple[int, dict[str, Any]]:
        if not self.pool.acquire(timeout=self.timeout):
            return 503, {"error": f"{self.role} overloaded (no free worker within {self.timeout:.2f} s)"}
        try:
            return getattr(self, "_" + self.role.replace("-", "_"))(run, number)
        except Exception as exc:  # noqa: BLE001 - a failing service answers 500 and says why
            return 500, {"error": f"{self.role} failed: {type(exc).__name__}: {exc}"[:300]}
        finally:
            self.pool.release()

    def _record(self, table: str, run: str, number: int) -> None:
        self.db().execute(f"INSERT INTO {table} (run, number, at) VALUES (?, ?, ?)", (run, number, time.time()))

    def _set_status(self, run: str, number: int, status: str) -> None:
        self.db().execute("UPDATE orders SET status = ? WHERE run = ? AND number = ?", (status, run, number))

    # ---- the synchronous side
    def _sync_orders(self, run: str, number: int) -> tuple[int, dict[str, Any]]:
        self.db().execute("INSERT INTO orders VALUES (?, ?, 'pending', ?)", (run, number, time.time()))
        ok, error = call(int(self.config["downstream"]), run, number, self.timeout)
        self._set_status(run, number, "accepted" if ok else "rejected")
        return (200, {"status": "accepted"}) if ok else (502, {"error": f"payments: {error}"})

    def _sync_payments(self, run: str, number: int) -> tuple[int, dict[str, Any]]:
        self.work()
        self._record("charges", run, number)
        ok, error = call(int(self.config["downstream"]), run, number, self.timeout)
        return (200, {"status": "paid"}) if ok else (502, {"error": f"shipping: {error}"})

    def _sync_shipping(self, run: str, number: int) -> tuple[int, dict[str, Any]]:
        self.work()
        self._record("shipments", run, number)
        return 200, {"status": "shipped"}

    # ---- the event side's front door
    def _event_orders(self, run: str, number: int) -> tuple[int, dict[str, Any]]:
        event = _order_placed(run, number)
        topic, key, value = self.config["topic"], event.key.encode() if event.key else None, encode_value(event)
        if self.use_fix and self.fix is not None:
            def write(db: sqlite3.Connection) -> None:
                db.execute("INSERT INTO orders VALUES (?, ?, 'accepted', ?)", (run, number, time.time()))

            self.fix.save_with_outbox(self.fix_db(), write, topic, key, value, event.event_id)
            return 200, {"status": "accepted"}
        self.db().execute("INSERT INTO orders VALUES (?, ?, 'pending', ?)", (run, number, time.time()))
        assert self.producer is not None
        try:
            self.producer.send(topic, key=key, value=value).get(timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - no acknowledgement in time: the customer hears no
            self._set_status(run, number, "rejected")
            return 503, {"error": f"not acknowledged by the broker ({type(exc).__name__})"}
        self._set_status(run, number, "accepted")
        return 200, {"status": "accepted"}

    def _relay(self) -> None:
        """The outbox relay: publish what the outbox holds, again and again (the fix's ``relay``)."""
        assert self.fix is not None
        db = connect(self.config["db"], autocommit=False)
        producer = clients.producer(self.kafka(), linger_ms=0)  # one row, one acknowledgement
        while True:
            try:
                moved = self.fix.relay(db, producer, limit=100)
            except Exception as exc:  # noqa: BLE001 - the broker away, say: the rows wait for the next round
                self.say("relay-error", error=f"{type(exc).__name__}: {exc}"[:200])
                moved = 0
                time.sleep(0.2)
            if not moved:
                time.sleep(0.01)


def _order_placed(run: str, number: int) -> Event:
    order_id = f"{run}-{number}"
    return Event(ORDER_PLACED, {"order_id": order_id, "run": run, "number": number, "amount": 20.0 + number % 7},
                 key=order_id, source="orders")


# --------------------------------------------------------------------------- event services


class ConsumerWorker(Worker):
    """An event service: a consumer in its group, work per event, commit after the batch."""

    def start(self) -> None:
        cfg = self.config
        session_ms = int(cfg.get("session_ms", 6000))  # heartbeats three times a session, at least
        consumer = clients.consumer(self.kafka(), group_id=cfg["group"], max_poll_records=100, fetch_max_wait_ms=50,
                                    session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 6))
        producer = clients.producer(self.kafka())
        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                worker.say("revoked", partitions=[tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                if assigned:
                    worker.say("ready", pid=os.getpid(), partitions=[tp.partition for tp in assigned])

        consumer.subscribe([cfg["topic"]], listener=Listener())
        table, follows, out = (("charges", PAYMENT_PROCESSED, cfg["out"]) if self.role == "event-payments"
                               else ("shipments", ORDER_SHIPPED, cfg["out"]))
        while True:
            polled = consumer.poll(timeout_ms=100)
            records = [r for batch in polled.values() for r in batch]
            for record in records:
                self.handle(record, table, follows, out, producer)
            if records:
                producer.flush(timeout=30)  # what follows is stored before the offsets move on
                consumer.commit()

    def handle(self, record: Any, table: str, follows: str, out: str, producer: KafkaProducer) -> None:
        try:
            event = decode(record)
        except ValueError:
            return  # not a course event: not this service's business
        run, number = event.payload["run"], int(event.payload["number"])
        self.work()

        def record_it(db: sqlite3.Connection) -> None:
            db.execute(f"INSERT INTO {table} (run, number, at) VALUES (?, ?, ?)", (run, number, time.time()))

        if self.use_fix and self.fix is not None:
            self.fix.process_once(self.fix_db(), event.event_id, record_it)
        else:
            record_it(self.db())
        # What follows carries an id made from this event's: published again for a redelivered
        # event, it is the same event, and an idempotent consumer downstream skips it.
        after = Event(follows, dict(event.payload), key=event.key, source=self.role.split("-")[1],
                      correlation_id=event.correlation_id or event.event_id, event_id=f"{event.event_id}.{follows}")
        producer.send(out, key=record.key, value=encode_value(after))


# --------------------------------------------------------------------------- main


def main(link: Link, config: dict[str, Any]) -> None:  # pragma: no cover - runs in the service's process
    """Run the role of ``config`` until the capstone closes the pipe (anything printed, and any
    traceback, goes to the process's log; an error is said to the capstone)."""
    role = config.get("role")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    worker = HttpWorker(config, link) if role in HTTP_ROLES else ConsumerWorker(config, link)
    link.on_command(lambda _kind, command: worker.apply(command))
    worker.start()
