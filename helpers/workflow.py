"""The order workflow as services that talk through events (lessons 4, 5 and 8).

An order is placed (``OrderPlaced`` on the *orders* topic); a payment service consumes
it and publishes ``PaymentProcessed`` (or ``PaymentDeclined``) on the *payments* topic;
a shipping service consumes that and publishes ``OrderShipped`` on the *shipments*
topic. Every follow-up event carries the order event's id as its correlation id
(:meth:`helpers.events.Event.follow`), so whoever placed the order can find its results.

Services are threads inside the kernel, each with its **own** KafkaConsumer in its
**own** consumer group and its own KafkaProducer, exactly what separate processes
would have; a kernel restart takes them down with it. They start and stop with a
context manager (or ``start()``/``stop()``), commit after processing, and
:func:`leftovers` shows that nothing is left running.

What this module measures:

* :func:`measure_publish`: how long ``send()`` takes (fire and forget), how long the broker's
  acknowledgement takes, and how long processing takes (C6);
* :func:`fan_out`: independent consumer groups each read every event (C5);
* :func:`measure_pace`: consumers work at their own pace, the producer is not held up (C7);
* :func:`watch_for` / :class:`ResultWatcher`: watch for the events that result (C8);
* :func:`compare_coupling`: the same orders through a synchronous HTTP chain
  (:mod:`helpers.services`) and through events, side by side: producer throughput and
  the threads and connections held while waiting (C9, C10);
* :func:`stale_reads`: a caller that expects an immediate answer from a read model gets
  wrong answers; one that waits for the result with a deadline answers right or "pending" (C15).

All durations are plain seconds; notebooks multiply them by their ``TIME_SCALE``.
"""
from __future__ import annotations

import atexit
import collections
import itertools
import math
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from . import clients
from .broker import Kafka
from .clients import _closing, unique_name
from .events import Event, EventError, decode, order_placed, publish
from .params import check_int, check_positive

__all__ = [
    "ORDER_PLACED", "PAYMENT_PROCESSED", "PAYMENT_DECLINED", "ORDER_SHIPPED",
    "WorkflowTopics", "create_topics", "correlation_of", "publish_orders",
    "Handled", "EventService", "Recorder", "PaymentService", "ShippingService", "OrderStatusView",
    "Placement", "OrderWorkflow",
    "WatchResult", "ResultWatcher", "watch_for", "OrderTrack", "track_orders",
    "PublishTimings", "measure_publish", "FanOut", "fan_out", "PaceRun", "measure_pace",
    "ResourceSample", "CouplingRun", "compare_coupling",
    "Answer", "StaleReads", "stale_reads",
    "running", "stop_all", "leftovers",
]

ORDER_PLACED = "OrderPlaced"
PAYMENT_PROCESSED = "PaymentProcessed"
PAYMENT_DECLINED = "PaymentDeclined"
ORDER_SHIPPED = "OrderShipped"

#: Seconds to wait for a consumer group join. About 3 s on the embedded broker (Tansu
#: completes a join after about half the session timeout), well under 1 s on Apache Kafka.
JOIN_TIMEOUT = 30.0
POLL_MS = 100  # how long a service's poll() waits for records; also how fast it notices stop()
#: The broker answers a fetch at the latest after this wait even with no new data. The
#: embedded broker does not always answer early when data arrives (a consumer of several
#: topics saw events ~250 ms late with the default 500 ms), so services ask often: events
#: then reach them in tens of milliseconds, on every broker, for a few fetches per second.
FETCH_WAIT_MS = 50
THREAD_PREFIX = "workflow-"


def correlation_of(event: Event) -> str:
    """The id that ties an event to the order it is about: its correlation id, or (for
    the first event of the story, OrderPlaced) its own id."""
    return event.correlation_id or event.event_id


def _check_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _check_label(name: str, value: Any) -> str:
    """A service or group label: it becomes part of a consumer group name."""
    _check_name(name, value)
    if not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError(f"{name} must be letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _check_topics(name: str, topics: Any) -> tuple[str, ...]:
    if isinstance(topics, str):
        topics = (topics,)
    if not isinstance(topics, (list, tuple)) or not topics:
        raise ValueError(f"{name} must be a topic name or a non-empty list of them, got {topics!r}")
    return tuple(_check_name(name, t) for t in topics)


def _check_types(name: str, types: Any) -> tuple[str, ...]:
    if isinstance(types, str):
        types = (types,)
    if not isinstance(types, (list, tuple, set, frozenset)) or not types:
        raise ValueError(f"{name} must be an event type such as 'OrderShipped' or a list of them, got {types!r}")
    return tuple(_check_name(name, t) for t in types)


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class WorkflowTopics:
    """The three topics of the order workflow."""

    orders: str
    payments: str
    shipments: str

    def all(self) -> tuple[str, str, str]:
        return (self.orders, self.payments, self.shipments)


def create_topics(kafka: Kafka, partitions: int = 1, *, prefix: str = "shop") -> WorkflowTopics:
    """Create fresh orders, payments and shipments topics (unique names) with ``partitions`` each."""
    check_int("partitions", partitions)
    _check_name("prefix", prefix)
    return WorkflowTopics(*(clients.create_topic(kafka, None, partitions, prefix=f"{prefix}-{kind}")
                            for kind in ("orders", "payments", "shipments")))


def publish_orders(kafka: Kafka, topic: str, n: int, *, amount: float = 20.0,
                   prefix: str = "order") -> list[Event]:
    """Publish ``n`` OrderPlaced events with a producer of its own; return them once the
    broker has acknowledged every one."""
    check_int("n", n)
    _check_name("topic", topic)
    check_positive("amount", amount, allow_zero=True)
    events = [order_placed(f"{prefix}-{i + 1}", amount + i) for i in range(n)]
    with _closing(clients.producer(kafka)) as producer:
        futures = [publish(producer, topic, e) for e in events]
        for f in futures:
            f.get(timeout=30)
    return events


# --------------------------------------------------------------------------- services

_RUNNING: set["EventService"] = set()
_RUNNING_LOCK = threading.Lock()


@dataclass(frozen=True)
class Handled:
    """One event a service finished processing (``t``: time.monotonic() when done)."""

    t: float
    event: Event
    outputs: tuple[Event, ...]
    partition: int
    offset: int

    @property
    def correlation_id(self) -> str:
        return correlation_of(self.event)


Handler = Callable[[Event], Iterable[tuple[str, Event]]]


class EventService:
    """A service: a thread with its own consumer (its own group) and its own producer.

    For every event of ``types`` (all types if None) on ``topics`` it waits
    ``processing_delay`` seconds (the work: a payment provider, a warehouse system...),
    calls ``handler(event)`` and publishes the (topic, event) pairs it returns. Offsets
    are committed after processing (at-least-once). ``handled`` lists what it processed.
    ``processing_delay`` can be changed while it runs.
    """

    def __init__(self, kafka: Kafka, name: str, topics: str | Sequence[str], handler: Handler | None = None, *,
                 group_id: str | None = None, processing_delay: float = 0.0,
                 types: str | Sequence[str] | None = None):
        self.kafka = kafka
        self.name = _check_label("name", name)
        self.topics = _check_topics("topics", topics)
        if handler is not None and not callable(handler):
            raise ValueError(f"handler must be callable or None, got {handler!r}")
        self.handler = handler
        self.group_id = group_id if group_id is not None else unique_name(name)
        _check_name("group_id", self.group_id)
        self.types = None if types is None else frozenset(_check_types("types", types))
        self.processing_delay = processing_delay
        self.handled: list[Handled] = []
        self.skipped = 0  # records that are not course events
        self.error: BaseException | None = None
        self._by_correlation: dict[str, Handled] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- settings
    @property
    def processing_delay(self) -> float:
        return self._processing_delay

    @processing_delay.setter
    def processing_delay(self, seconds: float) -> None:
        self._processing_delay = check_positive("processing_delay", seconds, allow_zero=True)

    # ---- lifecycle
    def start(self) -> "EventService":
        """Start the thread; the group join happens in it (see :meth:`wait_ready`)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._ready.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}{self.name}", daemon=True)
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float = JOIN_TIMEOUT) -> "EventService":
        """Wait until the group has given this service its partitions (about 3 s on the
        embedded broker); raise if it failed or took longer than ``timeout``."""
        check_positive("timeout", timeout)
        self._ready.wait(timeout)
        if self.error is not None:
            raise RuntimeError(f"service {self.name} failed: {type(self.error).__name__}: {self.error}") from self.error
        if not self._ready.is_set():
            raise TimeoutError(f"service {self.name} did not join group {self.group_id} within {timeout:g} s")
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop processing (an event being processed is abandoned, not committed), close the
        consumer (the group rebalances at once) and the producer, and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def __enter__(self) -> "EventService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- results
    def count(self) -> int:
        with self._cond:
            return len(self.handled)

    def result_for(self, correlation_id: str) -> Handled | None:
        """What this service did with the event of that order (None: not yet)."""
        with self._cond:
            return self._by_correlation.get(correlation_id)

    def wait_for(self, correlation_ids: Iterable[str], timeout: float) -> list[Handled]:
        """Wait until this service has processed an event of each correlation id; return them
        in the same order. TimeoutError says how many are still missing."""
        check_positive("timeout", timeout)
        wanted = list(correlation_ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = [c for c in wanted if c not in self._by_correlation]
                if not missing:
                    return [self._by_correlation[c] for c in wanted]
                if self.error is not None:
                    raise RuntimeError(f"service {self.name} failed: {self.error}") from self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"service {self.name} processed {len(wanted) - len(missing)} of "
                                       f"{len(wanted)} events within {timeout:g} s")
                self._cond.wait(min(remaining, 0.5))

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("running" if self.running else "stopped")
        return (f"<{type(self).__name__} {self.name} {state}, group {self.group_id}, "
                f"{self.count()} processed, delay {self.processing_delay * 1000:.0f} ms>")

    # ---- the thread
    def _run(self) -> None:
        consumer = producer = None
        try:
            consumer = clients.consumer(self.kafka, *self.topics, group_id=self.group_id,
                                        fetch_max_wait_ms=FETCH_WAIT_MS)
            if self.handler is not None:
                producer = clients.producer(self.kafka)
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=POLL_MS)
                if not self._ready.is_set() and consumer.assignment():
                    self._ready.set()
                done: dict[TopicPartition, OffsetAndMetadata] = {}
                for tp, records in batches.items():
                    for record in records:
                        if self._stop.is_set() or not self._process(record, producer):
                            break
                        done[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                if done:
                    if producer is not None:
                        producer.flush(timeout=10)  # the results are stored before we commit
                    consumer.commit(done)
        except Exception as exc:  # noqa: BLE001 - reported by wait_ready()/wait_for()
            self.error = exc
            self._ready.set()
            with self._cond:
                self._cond.notify_all()
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:  # noqa: BLE001 - closing a broken client must not mask the error
                    pass
            if producer is not None:
                try:
                    producer.close(timeout=5)
                except Exception:  # noqa: BLE001
                    pass

    def _process(self, record: Any, producer: Any) -> bool:
        """Process one record; False if stop() interrupted it (then it is not committed)."""
        try:
            event = decode(record)
        except EventError:
            self.skipped += 1
            return True
        if self.types is not None and event.type not in self.types:
            return True
        delay = self._processing_delay
        if delay > 0 and self._stop.wait(delay):
            return False
        outputs: list[tuple[str, Event]] = list(self.handler(event)) if self.handler is not None else []
        for topic, out in outputs:
            publish(producer, topic, out)
        done = Handled(time.monotonic(), event, tuple(out for _, out in outputs), record.partition, record.offset)
        with self._cond:
            self.handled.append(done)
            self._by_correlation.setdefault(done.correlation_id, done)
            self._cond.notify_all()
        return True


class Recorder(EventService):
    """A consumer that only records what it reads (an analytics or e-mail service)."""

    def __init__(self, kafka: Kafka, topic: str | Sequence[str], name: str = "analytics", *,
                 processing_delay: float = 0.0, group_id: str | None = None):
        super().__init__(kafka, name, topic, None, group_id=group_id, processing_delay=processing_delay)


class PaymentService(EventService):
    """OrderPlaced -> PaymentProcessed (or PaymentDeclined above ``decline_above``)."""

    def __init__(self, kafka: Kafka, topics: WorkflowTopics, *, processing_delay: float = 0.0,
                 decline_above: float | None = None, group_id: str | None = None, name: str = "payments"):
        if decline_above is not None:
            check_positive("decline_above", decline_above, allow_zero=True)
        self.decline_above = decline_above
        self.workflow_topics = topics

        def charge(event: Event) -> list[tuple[str, Event]]:
            amount = event.payload.get("amount", 0)
            data = {"order_id": event.payload.get("order_id"), "amount": amount}
            if self.decline_above is not None and amount > self.decline_above:
                return [(topics.payments, event.follow(PAYMENT_DECLINED, {**data, "reason": "over the card limit"},
                                                       source=name))]
            return [(topics.payments, event.follow(PAYMENT_PROCESSED, data, source=name))]

        super().__init__(kafka, name, topics.orders, charge, group_id=group_id,
                         processing_delay=processing_delay, types=ORDER_PLACED)


class ShippingService(EventService):
    """PaymentProcessed -> OrderShipped (declined orders are not shipped)."""

    def __init__(self, kafka: Kafka, topics: WorkflowTopics, *, processing_delay: float = 0.0,
                 group_id: str | None = None, name: str = "shipping"):
        self.workflow_topics = topics

        def ship(event: Event) -> list[tuple[str, Event]]:
            return [(topics.shipments, event.follow(ORDER_SHIPPED, {"order_id": event.payload.get("order_id")},
                                                    source=name))]

        super().__init__(kafka, name, topics.payments, ship, group_id=group_id,
                         processing_delay=processing_delay, types=PAYMENT_PROCESSED)


#: Order statuses of the read model, in the order they happen ("declined" is final).
STATUS_OF = {ORDER_PLACED: "placed", PAYMENT_PROCESSED: "paid", PAYMENT_DECLINED: "declined",
             ORDER_SHIPPED: "shipped"}
_RANK = {"placed": 1, "paid": 2, "declined": 3, "shipped": 3}


class OrderStatusView(EventService):
    """A read model: the status of every order, built by consuming the workflow's events.

    It is *eventually* consistent: it shows an order only after it has consumed the event,
    a few milliseconds (or, when it lags, much longer) after the producer was acknowledged.
    Statuses only move forward, whichever topic it happens to read first.
    """

    def __init__(self, kafka: Kafka, topics: WorkflowTopics, *, group_id: str | None = None,
                 name: str = "order-status-view"):
        self._status: dict[str, str] = {}

        def apply(event: Event) -> list:
            status = STATUS_OF.get(event.type)
            order_id = event.payload.get("order_id") or event.key
            if status is not None and order_id is not None:
                with self._cond:
                    old = self._status.get(order_id)
                    if old is None or _RANK[status] > _RANK[old]:
                        self._status[order_id] = status
            return []

        super().__init__(kafka, name, topics.all(), apply, group_id=group_id)

    def status(self, order_id: str) -> str | None:
        """What the view says right now (None: it has never heard of that order)."""
        with self._cond:
            return self._status.get(order_id)

    def statuses(self) -> dict[str, str]:
        with self._cond:
            return dict(self._status)

    def wait_for_status(self, order_id: str, statuses: str | Sequence[str], timeout: float) -> str | None:
        """Wait until the view shows one of ``statuses`` for the order; return it, or None
        if it did not within ``timeout`` seconds."""
        _check_name("order_id", order_id)
        wanted = set(_check_types("statuses", statuses))
        check_positive("timeout", timeout, allow_zero=True)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                current = self._status.get(order_id)
                if current in wanted:
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)


def _start_and_wait(services: Sequence[EventService], timeout: float = JOIN_TIMEOUT) -> None:
    """Start every service first, then wait: the group joins happen in parallel."""
    for svc in services:
        svc.start()
    try:
        for svc in services:
            svc.wait_ready(timeout)
    except BaseException:
        for svc in services:
            svc.stop()
        raise


def running() -> list[EventService]:
    """Services of this module that are running now."""
    with _RUNNING_LOCK:
        return [s for s in _RUNNING if s.running]


def stop_all() -> int:
    """Stop every service and watcher this module started; return how many were running."""
    with _RUNNING_LOCK:
        alive = list(_RUNNING)
    for s in alive:
        s.stop()
    return len(alive)


atexit.register(stop_all)

_KAFKA_THREADS = ("kafka-python-producer", "kafka-io", "kafka-coordinator-heartbeat")


def leftovers() -> dict[str, list[str]]:
    """What is still running: services and watchers of this module, their threads, and
    kafka-python client threads of this process. All empty after :func:`stop_all` (if
    nothing else in the process uses Kafka clients)."""
    names = [t.name for t in threading.enumerate()]
    return {"services": sorted(s.name for s in running()),
            "threads": sorted(n for n in names if n.startswith(THREAD_PREFIX)),
            "kafka_threads": sorted(n for n in names if n.startswith(_KAFKA_THREADS))}


# --------------------------------------------------------------------------- the workflow


@dataclass
class Placement:
    """One placed order, as the producer saw it. Times are time.monotonic() values."""

    order_id: str
    event: Event
    sent_at: float  # just before send()
    send_s: float  # how long send() took: handing the event to the producer (fire and forget)
    future: Any = field(repr=False)
    acked_at: float | None = None  # when the broker's acknowledgement arrived
    partition: int | None = None
    offset: int | None = None

    @property
    def correlation_id(self) -> str:
        return correlation_of(self.event)

    @property
    def ack_s(self) -> float | None:
        """From send() to the broker's acknowledgement (None until it arrived)."""
        return None if self.acked_at is None else self.acked_at - self.sent_at

    def ack(self, timeout: float = 30.0) -> "Placement":
        """Wait for the broker's acknowledgement (never for processing)."""
        metadata = self.future.get(timeout=timeout)
        if self.acked_at is None:  # the callback normally set it, in the producer's I/O thread
            self.acked_at = time.monotonic()
        self.partition, self.offset = metadata.partition, metadata.offset
        return self


class OrderWorkflow:
    """Orders -> payments -> shipping, through Kafka. Use as a context manager.

    ``payment_delay`` / ``shipping_delay``: seconds each service works per event
    (change them later with ``wf.payment.processing_delay = ...``). ``decline_above``:
    payments above it are declined. ``view=True`` adds an :class:`OrderStatusView`;
    ``extras`` maps names to processing delays of extra :class:`Recorder` services on the
    orders topic (e.g. ``{"analytics": 0.0}``). ``start(wait=False)`` lets the group joins
    run in the background while the notebook does something else.
    """

    def __init__(self, kafka: Kafka, *, payment_delay: float = 0.0, shipping_delay: float = 0.0,
                 decline_above: float | None = None, partitions: int = 1, view: bool = False,
                 extras: dict[str, float] | None = None, topics: WorkflowTopics | None = None):
        check_positive("payment_delay", payment_delay, allow_zero=True)
        check_positive("shipping_delay", shipping_delay, allow_zero=True)
        check_int("partitions", partitions)
        extras = dict(extras or {})
        for label, delay in extras.items():
            _check_label("extras", label)
            check_positive(f"extras[{label!r}]", delay, allow_zero=True)
        if topics is not None and not isinstance(topics, WorkflowTopics):
            raise ValueError(f"topics must be a WorkflowTopics (see create_topics), got {topics!r}")
        self.kafka = kafka
        self._partitions = partitions
        self._own_topics = topics is None  # fresh topics on every start(), so a restart has no backlog
        self._want_view = bool(view)
        self._extras_spec = extras
        self._payment_delay, self._shipping_delay, self._decline_above = payment_delay, shipping_delay, decline_above
        if decline_above is not None:
            check_positive("decline_above", decline_above, allow_zero=True)
        self.topics = topics
        self.payment: PaymentService | None = None
        self.shipping: ShippingService | None = None
        self.view: OrderStatusView | None = None
        self.extras: dict[str, Recorder] = {}
        self.producer = None
        self.placements: list[Placement] = []
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def services(self) -> list[EventService]:
        return [s for s in (self.payment, self.shipping, self.view, *self.extras.values()) if s is not None]

    def start(self, wait: bool = True) -> "OrderWorkflow":
        """Create the topics (fresh ones on every start, unless given), start every service
        and the producer. Starting a stopped workflow again works (new groups, new topics)."""
        if self.producer is not None:
            return self
        try:
            if self._own_topics:
                self.topics = create_topics(self.kafka, self._partitions)
            self.payment = PaymentService(self.kafka, self.topics, processing_delay=self._payment_delay,
                                          decline_above=self._decline_above)
            self.shipping = ShippingService(self.kafka, self.topics, processing_delay=self._shipping_delay)
            if self._want_view:
                self.view = OrderStatusView(self.kafka, self.topics)
            self.extras = {label: Recorder(self.kafka, self.topics.orders, label, processing_delay=delay)
                           for label, delay in self._extras_spec.items()}
            for svc in self.services:
                svc.start()
            self.producer = clients.producer(self.kafka)
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = JOIN_TIMEOUT) -> "OrderWorkflow":
        """Wait until every service has joined its group."""
        for svc in self.services:
            svc.wait_ready(timeout)
        return self

    @property
    def ready(self) -> bool:
        return self.producer is not None and all(s.ready for s in self.services)

    def stop(self) -> None:
        """Stop every service (together) and close the producer."""
        for svc in self.services:
            svc._stop.set()  # signal all first: they wind down in parallel
        for svc in self.services:
            svc.stop()
        if self.producer is not None:
            self.producer.close(timeout=5)
            self.producer = None

    def __enter__(self) -> "OrderWorkflow":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def next_order_id(self) -> str:
        with self._lock:
            return f"order-{next(self._counter)}"

    def place_order(self, order_id: str | None = None, amount: float = 20.0, *, wait_ack: bool = True) -> Placement:
        """Publish OrderPlaced: fire and forget, then (``wait_ack``) wait for the broker's
        acknowledgement. Never waits for payment or shipping."""
        if self.producer is None:
            raise RuntimeError("the workflow is not started: use `with OrderWorkflow(kafka) as wf:` or wf.start()")
        order_id = order_id if order_id is not None else self.next_order_id()
        _check_name("order_id", order_id)
        event = order_placed(order_id, amount)
        sent_at = time.perf_counter(), time.monotonic()
        future = publish(self.producer, self.topics.orders, event)
        send_s = time.perf_counter() - sent_at[0]
        placement = Placement(order_id, event, sent_at[1], send_s, future)

        def acked(metadata: Any) -> None:
            placement.acked_at = time.monotonic()
            placement.partition, placement.offset = metadata.partition, metadata.offset

        future.add_callback(acked)
        with self._lock:
            self.placements.append(placement)
        if wait_ack:
            placement.ack()
        return placement

    def __repr__(self) -> str:
        names = ", ".join(repr(s) for s in self.services)
        return f"<OrderWorkflow {self.topics} [{names}]>"


# --------------------------------------------------------------------------- watching for results (C8)


@dataclass
class WatchResult:
    """The answer of a watch: ``status`` is "found" (``event`` is the result) or "pending"
    (no such event within the deadline: the answer is "not yet", which is not "no")."""

    status: str
    correlation_id: str
    types: tuple[str, ...]
    topic: str
    waited_s: float
    event: Event | None = None

    @property
    def found(self) -> bool:
        return self.status == "found"

    def __bool__(self) -> bool:
        return self.found

    def __str__(self) -> str:
        wanted = " or ".join(self.types)
        if self.found:
            return (f"found {self.event.type} for {self.correlation_id[:8]}… on {self.topic} "
                    f"after {self.waited_s * 1000:.0f} ms")
        return (f"pending: no {wanted} for {self.correlation_id[:8]}… on {self.topic} within "
                f"{self.waited_s * 1000:.0f} ms (not yet; that is not a no)")


class ResultWatcher:
    """Watches topics for the events that result from what you published, by correlation id.

    A plain consumer without a consumer group: it is assigned every partition and reads
    from the start of the topic (or from ``from_offsets``), so it needs no group join and
    cannot miss a result that arrived before it started. Use as a context manager;
    :meth:`wait` answers one question at a time.
    """

    def __init__(self, kafka: Kafka, topics: str | Sequence[str], types: str | Sequence[str] | None = None, *,
                 from_offsets: dict[tuple[str, int], int] | None = None):
        self.kafka = kafka
        self.topics = _check_topics("topics", topics)
        self.types = None if types is None else frozenset(_check_types("types", types))
        self.from_offsets = dict(from_offsets or {})
        self.name = f"watch-{'+'.join(t.split('-')[1] if '-' in t else t for t in self.topics)}"
        self.error: BaseException | None = None
        self._seen: dict[str, list[tuple[float, Event]]] = collections.defaultdict(list)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "ResultWatcher":
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{THREAD_PREFIX}{self.name}", daemon=True)
        with _RUNNING_LOCK:
            _RUNNING.add(self)  # type: ignore[arg-type]
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with _RUNNING_LOCK:
            _RUNNING.discard(self)  # type: ignore[arg-type]

    def __enter__(self) -> "ResultWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        consumer = None
        try:
            consumer = clients.consumer(self.kafka, group_id=None, fetch_max_wait_ms=FETCH_WAIT_MS)
            partitions = []
            for topic in self.topics:
                found = consumer.partitions_for_topic(topic)
                if not found:
                    raise ValueError(f"topic {topic!r} does not exist")
                partitions += [TopicPartition(topic, p) for p in sorted(found)]
            consumer.assign(partitions)
            for tp in partitions:
                start = self.from_offsets.get((tp.topic, tp.partition))
                if start is not None:
                    consumer.seek(tp, start)
                # else: auto_offset_reset='earliest' (no group, so nothing committed): from the start
            self._ready.set()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=POLL_MS).values():
                    for record in records:
                        try:
                            event = decode(record)
                        except EventError:
                            continue
                        if self.types is not None and event.type not in self.types:
                            continue
                        with self._cond:
                            self._seen[correlation_of(event)].append((time.monotonic(), event))
                            self._cond.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported by wait()
            self.error = exc
            with self._cond:
                self._cond.notify_all()
        finally:
            self._ready.set()
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:  # noqa: BLE001
                    pass

    def seen_at(self, correlation_id: str, type: str) -> float | None:  # noqa: A002
        """time.monotonic() when the watcher read the first event of ``type`` for that id."""
        with self._cond:
            return next((t for t, e in self._seen.get(correlation_id, ()) if e.type == type), None)

    def wait(self, correlation_id: str, types: str | Sequence[str] | None = None, *,
             timeout: float = 10.0) -> WatchResult:
        """Wait up to ``timeout`` seconds for an event of ``types`` with that correlation id.
        Returns a WatchResult: "found" with the event, or "pending" (never raises for a
        result that did not come; raises if the watcher itself failed)."""
        _check_name("correlation_id", correlation_id)
        wanted = self.types if types is None else frozenset(_check_types("types", types))
        check_positive("timeout", timeout, allow_zero=True)
        t0 = time.monotonic()
        deadline = t0 + timeout
        with self._cond:
            while True:
                for _, event in self._seen.get(correlation_id, ()):
                    if wanted is None or event.type in wanted:
                        return WatchResult("found", correlation_id, tuple(sorted(wanted or ())) or ("any",),
                                           ",".join(self.topics), time.monotonic() - t0, event)
                if self.error is not None:
                    raise RuntimeError(f"the watcher failed: {self.error}") from self.error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return WatchResult("pending", correlation_id, tuple(sorted(wanted or ())) or ("any",),
                                       ",".join(self.topics), time.monotonic() - t0)
                self._cond.wait(min(remaining, 0.5))


def watch_for(kafka: Kafka, topic: str, correlation_id: str, type: str | Sequence[str], *,  # noqa: A002
              timeout: float = 10.0) -> WatchResult:
    """Watch ``topic`` for an event of ``type`` (or any of several types) that results from
    the event with ``correlation_id``; give up after ``timeout`` seconds (the deadline).

    Returns a :class:`WatchResult`: ``.found`` and ``.event``, or status "pending" when the
    deadline passed first. A deadline passing is an answer ("not yet"), not an exception.
    """
    _check_name("topic", topic)
    _check_name("correlation_id", correlation_id)
    types = _check_types("type", type)
    check_positive("timeout", timeout)
    t0 = time.monotonic()
    with ResultWatcher(kafka, topic, types) as watcher:
        result = watcher.wait(correlation_id, timeout=max(0.0, timeout - (time.monotonic() - t0)))
    result.waited_s = time.monotonic() - t0
    return result


@dataclass
class OrderTrack:
    """What the producer learned about one order by watching (seconds since it was placed)."""

    order_id: str
    amount: float
    correlation_id: str
    acked_s: float
    payment: WatchResult
    shipment: WatchResult

    @property
    def outcome(self) -> str:
        """"shipped", "declined", "paid" (shipping pending) or "pending"."""
        if self.shipment.found:
            return "shipped"
        if self.payment.found:
            return "declined" if self.payment.event.type == PAYMENT_DECLINED else "paid"
        return "pending"

    def times(self) -> dict[str, float]:
        """Seconds after placing: acknowledged, and each result that was found."""
        out = {"acknowledged": self.acked_s}
        if self.payment.found:
            out[self.payment.event.type] = self.payment.waited_s
        if self.shipment.found:
            out[ORDER_SHIPPED] = self.shipment.waited_s
        return out


def _time_left(p: Placement, deadline: float) -> float:
    return max(0.0, deadline - (time.monotonic() - p.sent_at))


def _since_placed(watcher: ResultWatcher, p: Placement, result: WatchResult) -> float:
    """Seconds from placing the order to the watcher reading the result (or to giving up)."""
    if result.found:
        return watcher.seen_at(p.correlation_id, result.event.type) - p.sent_at
    return time.monotonic() - p.sent_at


def track_orders(wf: OrderWorkflow, amounts: Sequence[float], *, deadline: float = 10.0) -> list[OrderTrack]:
    """Place one order per amount (without waiting for anything but the ack), then watch
    the payments and shipments topics for what follows from each, until ``deadline``
    seconds after it was placed. Declined orders are never shipped: their shipment stays
    "pending" when the deadline passes."""
    if not isinstance(amounts, (list, tuple)) or not amounts:
        raise ValueError(f"amounts must be a non-empty list of numbers, got {amounts!r}")
    for a in amounts:
        check_positive("amounts", a, allow_zero=True)
    check_positive("deadline", deadline)
    wf.wait_ready()
    with ResultWatcher(wf.kafka, [wf.topics.payments, wf.topics.shipments]) as watcher:
        placed = [wf.place_order(amount=a) for a in amounts]
        tracks = []
        for p in placed:
            pay = watcher.wait(p.correlation_id, (PAYMENT_PROCESSED, PAYMENT_DECLINED),
                               timeout=_time_left(p, deadline))
            pay.waited_s = _since_placed(watcher, p, pay)
            ship = watcher.wait(p.correlation_id, ORDER_SHIPPED, timeout=_time_left(p, deadline))
            ship.waited_s = _since_placed(watcher, p, ship)
            tracks.append(OrderTrack(p.order_id, p.event.payload["amount"], p.correlation_id,
                                     p.ack_s or 0.0, pay, ship))
    return tracks


# --------------------------------------------------------------------------- C6: publish vs process


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class PublishTimings:
    """What publishing cost the producer, and how long processing took (seconds)."""

    processing_delay: float  # the payment service's work per event
    send_s: list[float]  # send(): hand the event to the producer, fire and forget
    ack_s: list[float]  # send() until the broker's acknowledgement
    processed_s: list[float]  # send() until the payment service had processed it
    publish_total_s: float  # publishing all of them, waiting for every acknowledgement
    processing_total_s: float  # from the first send() until the last one was processed

    @property
    def n(self) -> int:
        return len(self.send_s)

    @property
    def send_p50(self) -> float:
        return _median(self.send_s)

    @property
    def ack_p50(self) -> float:
        return _median(self.ack_s)

    @property
    def processed_p50(self) -> float:
        return _median(self.processed_s)

    def rows(self) -> list[tuple[str, float, float]]:
        """(what, median, max) in seconds."""
        return [("send() returned", self.send_p50, max(self.send_s)),
                ("broker acknowledged", self.ack_p50, max(self.ack_s)),
                ("payment processed", self.processed_p50, max(self.processed_s))]

    def summary(self) -> str:
        lines = [f"{self.n} orders, payment takes {self.processing_delay * 1000:.0f} ms per order"]
        for what, p50, worst in self.rows():
            lines.append(f"  {what:22} median {p50 * 1000:9.2f} ms   worst {worst * 1000:9.2f} ms")
        lines.append(f"  producer done after {self.publish_total_s * 1000:.0f} ms; "
                     f"processing done after {self.processing_total_s * 1000:.0f} ms")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def measure_publish(wf: OrderWorkflow, n: int = 10, *, amount: float = 20.0,
                    timeout: float | None = None) -> PublishTimings:
    """Place ``n`` orders one after the other, each waiting for the broker's ack only; then
    wait until the payment service has processed them all and report the three times."""
    check_int("n", n)
    check_positive("amount", amount, allow_zero=True)
    if timeout is not None:
        check_positive("timeout", timeout)
    wf.wait_ready()
    delay = wf.payment.processing_delay
    start = time.monotonic()
    placements = [wf.place_order(amount=amount) for _ in range(n)]
    publish_total = time.monotonic() - start
    wait = timeout if timeout is not None else 30.0 + 3 * n * delay
    handled = wf.payment.wait_for([p.correlation_id for p in placements], wait)
    return PublishTimings(
        processing_delay=delay,
        send_s=[p.send_s for p in placements],
        ack_s=[p.ack_s for p in placements],
        processed_s=[h.t - p.sent_at for p, h in zip(placements, handled)],
        publish_total_s=publish_total,
        processing_total_s=max(h.t for h in handled) - start,
    )


# --------------------------------------------------------------------------- C5: fan-out


@dataclass
class FanOut:
    """Which events each consumer group received."""

    published: list[str]  # event ids, in publishing order
    received: dict[str, list[str]]  # label -> event ids, in the order that group read them
    groups: dict[str, str]  # label -> consumer group id
    seconds: dict[str, float]  # label -> seconds until it had read them all

    def missing(self, label: str) -> set[str]:
        return set(self.published) - set(self.received[label])

    @property
    def complete(self) -> bool:
        """True if every group read every published event."""
        return all(not self.missing(label) for label in self.received)

    def summary(self) -> str:
        lines = [f"{len(self.published)} events published before any consumer existed"]
        for label, ids in self.received.items():
            lines.append(f"  {label:12} group {self.groups[label]:40} read {len(set(ids)):3} of "
                         f"{len(self.published)} ({len(self.missing(label))} missing) in {self.seconds[label]:.1f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def fan_out(kafka: Kafka, topic: str, published: Sequence[Event], labels: Sequence[str] = ("payments", "analytics", "emails"),
            *, timeout: float = 60.0) -> FanOut:
    """Start one consumer per label, each in its own group, on ``topic``; wait until each
    has read every event of ``published``; stop them and say who read what."""
    _check_name("topic", topic)
    if not isinstance(labels, (list, tuple)) or not labels:
        raise ValueError(f"labels must be a non-empty list of names, got {labels!r}")
    for label in labels:
        _check_label("labels", label)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    if not published or not all(isinstance(e, Event) for e in published):
        raise ValueError("published must be a non-empty list of Events (see publish_orders)")
    check_positive("timeout", timeout)
    ids = [e.event_id for e in published]
    readers = [Recorder(kafka, topic, label) for label in labels]
    start = time.monotonic()
    seconds: dict[str, float] = {}
    try:
        for r in readers:
            r.start()
        for r in readers:
            handled = r.wait_for(ids, max(0.1, timeout - (time.monotonic() - start)))
            seconds[r.name] = max(h.t for h in handled) - start
    finally:
        for r in readers:
            r._stop.set()
        for r in readers:
            r.stop()
    return FanOut(ids, {r.name: [h.event.event_id for h in r.handled] for r in readers},
                  {r.name: r.group_id for r in readers}, seconds)


# --------------------------------------------------------------------------- C7: own pace


@dataclass
class PaceRun:
    """When the producer and each consumer were done with the same ``n`` orders.
    Times are seconds since the first send()."""

    n: int
    producer_s: float  # every order acknowledged by the broker
    acked: list[float]  # when each acknowledgement came
    processed: dict[str, list[float]]  # consumer -> when it finished each order (sorted)
    delays: dict[str, float]  # consumer -> its processing delay per event

    @property
    def done_s(self) -> dict[str, float]:
        return {label: max(times) for label, times in self.processed.items()}

    def summary(self) -> str:
        lines = [f"{self.n} orders: producer done (all acknowledged) after {self.producer_s * 1000:8.1f} ms"]
        for label, done in self.done_s.items():
            lines.append(f"  {label:10} ({self.delays[label] * 1000:4.0f} ms per event) done after "
                         f"{done * 1000:8.1f} ms")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def measure_pace(wf: OrderWorkflow, n: int = 20, *, watch: dict[str, EventService] | None = None,
                 timeout: float | None = None) -> PaceRun:
    """Publish ``n`` orders as fast as the producer can (send all, then wait for the acks),
    then wait until every watched service has processed them, each at its own pace.
    ``watch`` defaults to payments, shipping and the workflow's extra services."""
    check_int("n", n)
    if timeout is not None:
        check_positive("timeout", timeout)
    wf.wait_ready()
    watch = watch if watch is not None else {"payments": wf.payment, "shipping": wf.shipping, **wf.extras}
    if not watch or not all(isinstance(s, EventService) for s in watch.values()):
        raise ValueError("watch must map names to services of the workflow")
    start = time.monotonic()
    placements = [wf.place_order(wait_ack=False) for _ in range(n)]
    for p in placements:
        p.ack()
    producer_s = time.monotonic() - start
    ids = [p.correlation_id for p in placements]
    total_delay = sum(s.processing_delay for s in watch.values())
    wait = timeout if timeout is not None else 30.0 + 3 * n * total_delay
    processed = {}
    for label, svc in watch.items():
        processed[label] = sorted(h.t - start for h in svc.wait_for(ids, wait))
    return PaceRun(n, producer_s, sorted(p.acked_at - start for p in placements), processed,
                   {label: svc.processing_delay for label, svc in watch.items()})


# --------------------------------------------------------------------------- C9, C10: temporal coupling


@dataclass(frozen=True)
class ResourceSample:
    """Resources held at one moment (``t``: seconds since both producers started)."""

    t: float
    sync_threads: int  # threads blocked in a call or holding a worker in the HTTP chain
    sync_connections: int  # established TCP connections to the chain's services (from the OS)
    events_threads: int  # producer threads busy publishing or waiting for an ack
    events_pending: int  # produce requests not yet acknowledged by the broker


def _integral(samples: Sequence[ResourceSample], attr: str) -> float:
    """Resource-seconds: the area under a sampled curve (left Riemann sum)."""
    return sum(getattr(a, attr) * (b.t - a.t) for a, b in zip(samples, samples[1:]))


@dataclass
class CouplingRun:
    """The same orders placed through a synchronous chain and through events, at once."""

    n_orders: int
    workers: int  # client threads of the synchronous producer
    payment_delay: float
    shipping_delay: float
    sync_s: float  # until the last synchronous order was answered
    events_s: float  # until the last event was acknowledged by the broker
    sync_ok: int
    events_ok: int
    sync_thread_s: float  # thread-seconds held by the sync side (clients waiting + service workers)
    events_thread_s: float  # thread-seconds held by the events producer
    samples: list[ResourceSample]
    events_window: tuple[float, float] = (0.0, 0.0)  # when the events producer started and was done
    events_requests: list[tuple[float, float]] = field(default_factory=list)  # (send, ack) per order
    consumers_done_s: float | None = None  # when payments and shipping had processed every event

    @property
    def sync_throughput(self) -> float:
        return self.sync_ok / self.sync_s if self.sync_s > 0 else math.nan

    @property
    def events_throughput(self) -> float:
        return self.events_ok / self.events_s if self.events_s > 0 else math.nan

    @property
    def ratio(self) -> float:
        """Events throughput / synchronous throughput (orders per second)."""
        return self.events_throughput / self.sync_throughput

    @property
    def sync_thread_s_per_order(self) -> float:
        return self.sync_thread_s / self.n_orders

    @property
    def events_thread_s_per_order(self) -> float:
        return self.events_thread_s / self.n_orders

    def events_curve(self) -> tuple[list[float], list[int], list[int]]:
        """The events side exactly, as step points: (times, producer threads busy, sends
        awaiting their ack), from the producer's own send and ack timestamps."""
        start, end = self.events_window
        edges = sorted({start, end, *(t for pair in self.events_requests for t in pair)})
        threads = [int(start <= t < end) for t in edges]
        pending = [sum(1 for a, b in self.events_requests if a <= t < b) for t in edges]
        return edges, threads, pending

    @property
    def peak(self) -> dict[str, int]:
        """The most held at once: sync from the samples, events from the exact curve."""
        _, threads, pending = self.events_curve()
        return {"sync_threads": max((s.sync_threads for s in self.samples), default=0),
                "sync_connections": max((s.sync_connections for s in self.samples), default=0),
                "events_threads": max(threads, default=0), "events_pending": max(pending, default=0)}

    @property
    def connection_s(self) -> dict[str, float]:
        """Connection-seconds held by the synchronous side (sampled from the OS) and
        request-seconds the events producer spent awaiting acks (exact)."""
        return {"sync": _integral(self.samples, "sync_connections"),
                "events": sum(b - a for a, b in self.events_requests)}

    def summary(self) -> str:
        peak = self.peak
        lines = [
            f"{self.n_orders} orders; payment {self.payment_delay * 1000:.0f} ms + shipping "
            f"{self.shipping_delay * 1000:.0f} ms of work each",
            f"  synchronous ({self.workers} client threads): {self.sync_ok} answered in {self.sync_s:7.3f} s "
            f"= {self.sync_throughput:8.1f} orders/s",
            f"  events (1 producer thread):   {self.events_ok} acknowledged in {self.events_s:7.3f} s "
            f"= {self.events_throughput:8.1f} orders/s",
            f"  throughput ratio events / synchronous: {self.ratio:.1f}x",
            f"  threads held per order: synchronous {self.sync_thread_s_per_order * 1000:7.1f} ms, "
            f"events {self.events_thread_s_per_order * 1000:6.2f} ms",
            f"  peak: synchronous {peak['sync_threads']} threads / {peak['sync_connections']} connections; "
            f"events {peak['events_threads']} thread / {peak['events_pending']} unacknowledged sends",
        ]
        if self.consumers_done_s is not None:
            lines.append(f"  the event consumers finished processing after {self.consumers_done_s:.3f} s, "
                         "at their own pace")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _established_to(ports: set[int]) -> int:
    """Established TCP connections whose local port is one of ``ports`` (the server ends of
    connections to our services), as the OS reports them. Linux: /proc/self/net/tcp with
    one regular expression (the file lists every socket of the machine, thousands on a
    busy one, so a Python loop over it would itself slow the run); elsewhere: psutil."""
    try:
        with open("/proc/self/net/tcp", "rb") as fh:
            table = fh.read()
    except OSError:
        return _established_psutil(ports)
    if not ports:
        return 0
    # "sl: 0100007F:1F90 0100007F:D2A4 01 ...": local 127.0.0.1:port, remote, state 01 = ESTABLISHED
    wanted = b"|".join(b"%04X" % p for p in sorted(ports))
    return len(re.findall(rb":\s+[0-9A-F]{8}:(?:" + wanted + rb") [0-9A-F]{8}:[0-9A-F]{4} 01 ", table))


def _established_psutil(ports: set[int]) -> int:
    import psutil

    proc = psutil.Process()
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in ports)


def compare_coupling(wf: OrderWorkflow, n_orders: int = 20, *, workers: int = 4,
                     payment_delay: float | None = None, shipping_delay: float | None = None,
                     sample_every: float = 0.02, wait_processed: bool = True,
                     timeout: float | None = None) -> CouplingRun:
    """Place ``n_orders`` orders two ways at the same time and sample the resources held.

    Synchronous: ``workers`` client threads call an HTTP chain orders -> payments ->
    shipping (:mod:`helpers.services`, real servers on 127.0.0.1) and wait for the answer.
    Events: one producer thread publishes OrderPlaced to the workflow (send all, then wait
    for the broker's acks) and is done; the workflow's payment and shipping services
    (same delays) process them at their own pace. Every ``sample_every`` seconds a
    sampler records threads and connections held on each side.
    """
    from . import services

    check_int("n_orders", n_orders)
    check_int("workers", workers)
    if workers > 64:
        raise ValueError(f"workers must be <= 64, got {workers!r}")
    check_positive("sample_every", sample_every)
    if timeout is not None:
        check_positive("timeout", timeout)
    wf.wait_ready()
    pay = wf.payment.processing_delay if payment_delay is None else check_positive("payment_delay", payment_delay,
                                                                                    allow_zero=True)
    ship = wf.shipping.processing_delay if shipping_delay is None else check_positive("shipping_delay",
                                                                                       shipping_delay, allow_zero=True)
    wf.payment.processing_delay, wf.shipping.processing_delay = pay, ship
    chain_timeout = 30.0 + 10 * (pay + ship)
    shipping_svc = services.Service("shipping", None, latency=ship, timeout=chain_timeout)
    payment_svc = services.Service("payments", shipping_svc, latency=pay, timeout=chain_timeout)
    orders_svc = services.Service("orders", payment_svc, latency=0.0, timeout=chain_timeout)
    chain = [orders_svc, payment_svc, shipping_svc]

    state = {"clients_waiting": 0}
    lock = threading.Lock()
    sync_samples: list[tuple[float, int, int]] = []
    stop_sampling = threading.Event()
    go_signal = threading.Event()
    results: dict[str, Any] = {}
    t0_box: list[float] = []

    def sync_call():
        with lock:
            state["clients_waiting"] += 1
        try:
            return services.call(orders_svc, timeout=chain_timeout)
        finally:
            with lock:
                state["clients_waiting"] -= 1

    def sync_side():
        go_signal.wait()
        started = time.monotonic()
        results["sync"] = services.measure(orders_svc, n_orders, workers, call_fn=sync_call)
        results["sync_s"] = time.monotonic() - started

    def events_side():
        go_signal.wait()
        started = time.monotonic()
        placements = [wf.place_order(wait_ack=False) for _ in range(n_orders)]
        for p in placements:
            p.ack()
        ended = time.monotonic()
        results["events_window"] = (started, ended)
        results["placements"] = placements

    def sampler():
        ports = {svc.port for svc in chain}
        go_signal.wait()
        while True:
            with lock:
                clients_waiting = state["clients_waiting"]
            sync_samples.append((time.monotonic() - t0_box[0], clients_waiting + sum(svc.in_flight for svc in chain),
                                 _established_to(ports)))
            if stop_sampling.wait(sample_every):
                return

    try:
        for svc in reversed(chain):
            svc.start()
        threads = [threading.Thread(target=fn, name=f"{THREAD_PREFIX}{label}", daemon=True)
                   for label, fn in (("sync-load", sync_side), ("events-producer", events_side),
                                     ("sampler", sampler))]
        for t in threads:
            t.start()
        t0_box.append(time.monotonic())
        go_signal.set()
        limit = timeout if timeout is not None else 60.0 + 3 * n_orders * (pay + ship)
        for t in threads[:2]:
            t.join(limit)
            if t.is_alive():
                raise TimeoutError(f"compare_coupling: {t.name} did not finish within {limit:g} s")
        stop_sampling.set()
        threads[2].join(5)
    finally:
        go_signal.set()
        stop_sampling.set()
        for svc in chain:
            svc.stop()
    sync = results["sync"]
    placements = results["placements"]
    t0 = t0_box[0]
    window = (results["events_window"][0] - t0, results["events_window"][1] - t0)
    requests = [(p.sent_at - t0, (p.acked_at if p.acked_at is not None else results["events_window"][1]) - t0)
                for p in placements]
    # The events side is over in milliseconds, faster than any sampler: its curve is exact,
    # from the producer's own timestamps (send, ack), evaluated at the sampling times too.
    samples = [ResourceSample(t, threads, conns, int(window[0] <= t < window[1]),
                              sum(1 for a, b in requests if a <= t < b))
               for t, threads, conns in sync_samples]
    # Thread-seconds, exactly: every client thread waits for its whole call; every service
    # holds a worker thread for its part of it (its hop, including waiting downstream).
    sync_thread_s = sum(r.latency for r in sync.results) + sum(h.latency for r in sync.results for h in r.trace)
    consumers_done = None
    if wait_processed:
        ids = [p.correlation_id for p in placements]
        wait = 30.0 + 3 * n_orders * (pay + ship)
        last = wf.shipping.wait_for(ids, wait) + wf.payment.wait_for(ids, wait)
        consumers_done = max(h.t for h in last) - t0_box[0]
    return CouplingRun(
        n_orders=n_orders, workers=workers, payment_delay=pay, shipping_delay=ship,
        sync_s=results["sync_s"], events_s=window[1] - window[0], sync_ok=sync.ok_count,
        events_ok=sum(1 for p in placements if p.acked_at is not None),
        sync_thread_s=sync_thread_s, events_thread_s=window[1] - window[0], samples=samples,
        events_window=window, events_requests=requests, consumers_done_s=consumers_done,
    )


# --------------------------------------------------------------------------- C15: stale reads


@dataclass(frozen=True)
class Answer:
    """One caller's answer to "is order X paid?" next to the truth."""

    order_id: str
    seen: str | None  # what the read model showed (naive caller) or the result found (corrected)
    answer: str  # "paid", "not paid", "no such order", "declined" or "pending"
    truth: str  # "paid" or "declined": what eventually happened
    waited_s: float  # how long the caller took to answer

    @property
    def wrong(self) -> bool:
        """An answer that contradicts what happened. "pending" is never wrong: it is honest."""
        if self.answer == "pending":
            return False
        if self.truth == "paid":
            return self.answer != "paid"
        return self.answer == "paid" or self.answer == "no such order"


@dataclass
class StaleReads:
    """Answers of a naive caller (reads the view right after placing) and of a corrected
    caller (waits for the payment result up to a deadline, else answers "pending")."""

    naive: list[Answer]
    corrected: list[Answer]
    read_after: float
    deadline: float
    payment_delay: float

    @staticmethod
    def _counts(answers: Sequence[Answer]) -> dict[str, int]:
        return {"right": sum(1 for a in answers if not a.wrong and a.answer != "pending"),
                "wrong": sum(1 for a in answers if a.wrong),
                "pending": sum(1 for a in answers if a.answer == "pending")}

    @property
    def naive_counts(self) -> dict[str, int]:
        return self._counts(self.naive)

    @property
    def corrected_counts(self) -> dict[str, int]:
        return self._counts(self.corrected)

    @property
    def stale(self) -> int:
        """Naive reads that did not yet show the payment's outcome (stale state)."""
        return sum(1 for a in self.naive if a.seen not in ("paid", "declined", "shipped"))

    def summary(self) -> str:
        n, c = self.naive_counts, self.corrected_counts
        seen = collections.Counter(str(a.seen) for a in self.naive)
        return "\n".join([
            f"{len(self.naive)} orders per caller; payment takes {self.payment_delay * 1000:.0f} ms per order",
            f"  naive caller (reads the view {self.read_after * 1000:.0f} ms after placing): "
            f"{n['wrong']} wrong, {n['right']} right; the view showed {dict(seen)}",
            f"  corrected caller (waits for the result, deadline {self.deadline * 1000:.0f} ms): "
            f"{c['wrong']} wrong, {c['right']} right, {c['pending']} 'pending'",
        ])

    def __str__(self) -> str:
        return self.summary()


def _naive_answer(status: str | None) -> str:
    if status is None:
        return "no such order"
    if status in ("paid", "shipped"):
        return "paid"
    if status == "declined":
        return "declined"
    return "not paid"


def stale_reads(wf: OrderWorkflow, n: int = 10, *, read_after: float = 0.0, deadline: float = 5.0,
                decline_every: int = 0, settle_timeout: float | None = None) -> StaleReads:
    """Ask "is order X paid?" right after placing each of ``n`` orders, two ways.

    Naive: place the order, wait ``read_after`` seconds, read the workflow's
    :class:`OrderStatusView` and answer from whatever it shows. Corrected: place the
    order, then wait for the PaymentProcessed/PaymentDeclined event that results (a
    :class:`ResultWatcher`), at most ``deadline`` seconds after placing; if it has not
    come, answer "pending". Every ``decline_every``-th order (0: none) is over the card
    limit. The truth is what the payment service eventually did. Between the two callers
    it waits until the payment service has processed the naive caller's orders.
    """
    check_int("n", n)
    check_positive("read_after", read_after, allow_zero=True)
    check_positive("deadline", deadline, allow_zero=True)
    check_int("decline_every", decline_every, minimum=0)
    if settle_timeout is not None:
        check_positive("settle_timeout", settle_timeout)
    if wf.view is None:
        raise ValueError("stale_reads needs a workflow with a read model: OrderWorkflow(kafka, view=True)")
    if decline_every and wf.payment.decline_above is None:
        raise ValueError("decline_every needs a workflow with decline_above set")
    wf.wait_ready()
    limit = wf.payment.decline_above

    def amount(i: int) -> float:
        if decline_every and (i + 1) % decline_every == 0:
            return limit + 100.0
        return 20.0 if limit is None else min(20.0, limit)

    naive_rows: list[tuple[Placement, str | None, float]] = []
    for i in range(n):
        p = wf.place_order(amount=amount(i))
        if read_after:
            time.sleep(read_after)
        naive_rows.append((p, wf.view.status(p.order_id), time.monotonic() - p.sent_at))

    # Let the payment service finish the naive caller's orders first, so that both callers
    # meet the same conditions (no queue in front of them).
    settle = settle_timeout if settle_timeout is not None else 30.0 + 3 * n * wf.payment.processing_delay
    wf.payment.wait_for([p.correlation_id for p, *_ in naive_rows], settle)

    corrected_rows: list[tuple[Placement, WatchResult, float]] = []
    with ResultWatcher(wf.kafka, wf.topics.payments, (PAYMENT_PROCESSED, PAYMENT_DECLINED)) as watcher:
        for i in range(n):
            p = wf.place_order(amount=amount(i))
            remaining = max(0.0, deadline - (time.monotonic() - p.sent_at))
            result = watcher.wait(p.correlation_id, timeout=remaining)
            corrected_rows.append((p, result, time.monotonic() - p.sent_at))

    everyone = [row[0] for row in naive_rows] + [row[0] for row in corrected_rows]
    outcome = {h.correlation_id: h.outputs[0].type
               for h in wf.payment.wait_for([p.correlation_id for p in everyone], settle)}

    def truth(p: Placement) -> str:
        return "paid" if outcome[p.correlation_id] == PAYMENT_PROCESSED else "declined"

    naive = [Answer(p.order_id, seen, _naive_answer(seen), truth(p), waited) for p, seen, waited in naive_rows]
    corrected = []
    for p, result, waited in corrected_rows:
        if result.found:
            answer = "paid" if result.event.type == PAYMENT_PROCESSED else "declined"
            corrected.append(Answer(p.order_id, result.event.type, answer, truth(p), waited))
        else:
            corrected.append(Answer(p.order_id, None, "pending", truth(p), waited))
    return StaleReads(naive, corrected, read_after, deadline, wf.payment.processing_delay)
