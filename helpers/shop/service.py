"""The event service: one poll loop behind every service of the event lessons (4, 5, 8).

:class:`EventService` is a thread with its **own** KafkaConsumer (in its own consumer
group) and its own KafkaProducer, exactly what a separate process would have; a kernel
restart takes it down with it. It works on each event it reads, publishes what follows,
commits after processing (at-least-once), and registers with :mod:`helpers.core.lifecycle`
while it runs. The order workflow's services (:mod:`helpers.shop.workflow`), the result
watcher (:mod:`helpers.shop.results`) and :class:`Recorder` are all built on it.

Building another service on it (lab 5's fulfilment, for instance) takes no copy of the
loop: subclass it and override

* :meth:`EventService.handle`: what one event produces, as ``(topic, event)`` pairs;
* :meth:`EventService.delay_for`: how long the work on one event takes (default:
  ``processing_delay``);

and choose ``workers`` (1: one event after the other, like one worker; ``None``: every
event on its own clock, so a slow order does not hold up a quick one) and
``use_group=False`` (read every partition without a consumer group: ready at once,
nothing committed; from the beginning, or with ``from_start=False`` from the end).
``PUBLISHES = False`` for a service that only reads; override :meth:`EventService._keep`
to choose what a service remembers of what it processed.

:func:`wait_processed` waits until several services have processed the same events and
shows a progress bar meanwhile (a long wait never leaves the screen still).
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import progress_bar, wait_until
from ..kafka import clients
from ..kafka.clients import Kafka
from ..kafka.events import Event, EventError, decode, publish

__all__ = [
    "JOIN_TIMEOUT",
    "EventService",
    "Handled",
    "Handler",
    "Recorder",
    "check_label",
    "check_text",
    "check_topics",
    "check_types",
    "correlation_of",
    "wait_processed",
]

#: Seconds to wait for a consumer group join. About 3 s on the embedded broker (Tansu
#: completes a join after about half the session timeout), well under 1 s on Apache Kafka.
JOIN_TIMEOUT = 30.0
POLL_MS = 100  # the longest a service's poll() waits; also how fast it notices stop()
#: The broker answers a fetch at the latest after this wait even with no new data. The
#: embedded broker does not always answer early when data arrives (a consumer of several
#: topics saw events ~250 ms late with the default 500 ms), so services ask often: events
#: then reach them in tens of milliseconds, on every broker, for a few fetches per second.
FETCH_WAIT_MS = 50


# --------------------------------------------------------------------------- argument checks


def check_text(name: str, value: Any) -> str:
    """``value`` if it is a non-empty string, else ValueError naming ``name``."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_label(name: str, value: Any) -> str:
    """A service or group label (it becomes part of a consumer group name)."""
    check_text(name, value)
    if not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError(f"{name} must be letters, digits, '.', '_' or '-', got {value!r}")
    return str(value)


def check_topics(name: str, topics: Any) -> tuple[str, ...]:
    """One topic name or a non-empty list of them, as a tuple."""
    if isinstance(topics, str):
        topics = (topics,)
    if not isinstance(topics, (list, tuple)) or not topics:
        raise ValueError(f"{name} must be a topic name or a non-empty list of them, got {topics!r}")
    return tuple(check_text(name, t) for t in topics)


def check_types(name: str, types: Any) -> tuple[str, ...]:
    """One event type or a non-empty collection of them, as a tuple."""
    if isinstance(types, str):
        types = (types,)
    if not isinstance(types, (list, tuple, set, frozenset)) or not types:
        raise ValueError(f"{name} must be an event type such as 'OrderShipped' or a list of them, got {types!r}")
    return tuple(check_text(name, t) for t in types)


# --------------------------------------------------------------------------- correlation


def correlation_of(event: Event) -> str:
    """The id that ties an event to the order it is about: its correlation id, or (for
    the first event of the story, OrderPlaced) its own id."""
    return event.correlation_id or event.event_id


# --------------------------------------------------------------------------- the poll loop


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
        """The order this event is about (see :func:`correlation_of`)."""
        return correlation_of(self.event)


Handler = Callable[[Event], Iterable[tuple[str, Event]]]


class _Work:
    """Events read but not yet processed: when each is due, and which offsets may be committed.

    With ``workers`` (an int) events queue for that many workers, each busy for the event's
    delay; with None every event is due its delay after it was read. Offsets are committed
    per partition up to the first one still open, so nothing unprocessed is ever committed.
    """

    def __init__(self, workers: int | None) -> None:
        self._free = [0.0] * workers if workers else []  # when each worker is next free
        self._due: list[tuple[float, int, TopicPartition, Any, Event]] = []
        self._seq = itertools.count()
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def read(self, tp: TopicPartition, offset: int) -> None:
        """A record was read: its offset is open until it is finished."""
        self._open.setdefault(tp, set()).add(offset)

    def schedule(self, tp: TopicPartition, record: Any, event: Event, delay: float, now: float) -> None:
        """Queue the work on ``event``: due after ``delay`` s of a free worker's time."""
        if self._free:
            due = max(now, heapq.heappop(self._free)) + delay
            heapq.heappush(self._free, due)
        else:
            due = now + delay
        heapq.heappush(self._due, (due, next(self._seq), tp, record, event))

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """The record at ``offset`` is done (processed or not for this service)."""
        self._open[tp].discard(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def poll_ms(self, longest: int) -> int:
        """How long the next poll may wait: until the next event is due, at most ``longest``."""
        if not self._due:
            return longest
        return max(0, min(longest, math.ceil((self._due[0][0] - time.monotonic()) * 1000)))

    def due(self, now: float) -> Iterable[tuple[TopicPartition, Any, Event]]:
        """The events whose work is done by ``now``, in the order they are due."""
        while self._due and self._due[0][0] <= now:
            _, _, tp, record, event = heapq.heappop(self._due)
            yield tp, record, event

    def committable(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """New commit positions: per partition, the first offset still open (or past the last done)."""
        out = {}
        for tp, nxt in self._next.items():
            position = min(self._open[tp]) if self._open.get(tp) else nxt
            if position > self._committed.get(tp, -1):
                out[tp] = OffsetAndMetadata(position, "", -1)
                self._committed[tp] = position
        return out


class EventService(lifecycle.CourseThread):
    """A service: a thread with its own consumer (its own group) and its own producer.

    For every event of ``types`` (all types if None) on ``topics`` it works
    :meth:`delay_for` seconds (``processing_delay``, changeable while it runs: a payment
    provider, a warehouse system...), then publishes what :meth:`handle` returns (by
    default ``handler(event)``: ``(topic, event)`` pairs). ``workers`` events are worked on
    at once (None: no limit). Offsets are committed after processing (at-least-once);
    ``use_group=False`` reads every partition with no group instead: from the beginning,
    or from the end with ``from_start=False`` (what was published before it started is
    skipped). ``handled`` lists what it processed (see :meth:`_keep`).
    """

    KIND: ClassVar[str] = "event-service"  # its kind in helpers.core.lifecycle
    PUBLISHES: ClassVar[bool] = True  # False: no producer (a service that only reads)

    def __init__(self, kafka: Kafka, name: str, topics: str | Sequence[str], handler: Handler | None = None, *,
                 group_id: str | None = None, processing_delay: float = 0.0,
                 types: str | Sequence[str] | None = None, workers: int | None = 1, use_group: bool = True,
                 from_start: bool = True):
        super().__init__()
        self.kafka = kafka
        self.name = check_label("name", name)
        self.topics = check_topics("topics", topics)
        if handler is not None and not callable(handler):
            raise ValueError(f"handler must be callable or None, got {handler!r}")
        self.handler = handler
        if workers is not None:
            check_int("workers", workers)
        self.workers = workers
        self.use_group = bool(use_group)
        if not self.use_group and group_id is not None:
            raise ValueError(f"group_id must be None when use_group=False, got {group_id!r}")
        if self.use_group and not from_start:
            raise ValueError("from_start=False needs use_group=False (a group starts at its committed offsets)")
        self.from_start = bool(from_start)
        self.group_id = (group_id if group_id is not None else clients.unique_name(name)) if self.use_group else None
        if self.group_id is not None:
            check_text("group_id", self.group_id)
        self.types = None if types is None else frozenset(check_types("types", types))
        self.processing_delay = processing_delay
        self.handled: list[Handled] = []
        self.skipped = 0  # records that are not course events
        self._by_correlation: dict[str, list[Handled]] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()

    # ---- what a subclass overrides
    def handle(self, event: Event) -> Iterable[tuple[str, Event]]:
        """What processing ``event`` produces: (topic, event) pairs to publish."""
        return self.handler(event) if self.handler is not None else ()

    def delay_for(self, event: Event) -> float:
        """Seconds of work on ``event`` (called when it is read)."""
        return self._processing_delay

    # ---- settings
    @property
    def processing_delay(self) -> float:
        """Seconds of work per event (the default of :meth:`delay_for`)."""
        return self._processing_delay

    @processing_delay.setter
    def processing_delay(self, seconds: float) -> None:
        """Change the work per event (ValueError unless a finite number >= 0)."""
        self._processing_delay = check_positive("processing_delay", seconds, allow_zero=True)

    # ---- lifecycle
    def start(self) -> Self:
        """Start the thread; the group join happens in it (see :meth:`wait_ready`)."""
        if not self.running:
            self._ready.clear()
            self.error = None
        return super().start()

    def wait_ready(self, timeout: float = JOIN_TIMEOUT) -> Self:
        """Wait until the service has its partitions (a group join: about 3 s on the
        embedded broker); raise if it failed or took longer than ``timeout``."""
        check_positive("timeout", timeout)
        self._ready.wait(timeout)
        self._raise_if_failed()
        if not self._ready.is_set():
            raise TimeoutError(f"service {self.name} did not join group {self.group_id} within {timeout:g} s")
        return self

    @property
    def ready(self) -> bool:
        """True once it has its partitions (and has not failed)."""
        return self._ready.is_set() and self.error is None

    # stop(), signal_stop() and running: helpers.core.lifecycle.CourseThread. Stopping abandons the
    # events being worked on (not committed) and closes the consumer (the group rebalances at
    # once) and the producer.

    # ---- results
    def count(self) -> int:
        """How many events it has processed."""
        with self._cond:
            return len(self.handled)

    def result_for(self, correlation_id: str) -> Handled | None:
        """What this service did with the (first) event of that order (None: not yet)."""
        with self._cond:
            found = self._by_correlation.get(correlation_id)
            return found[0] if found else None

    def wait_for(self, correlation_ids: Iterable[str], timeout: float) -> list[Handled]:
        """Wait until this service has processed an event of each correlation id; return them
        in the same order. TimeoutError says how many are still missing."""
        check_positive("timeout", timeout)
        wanted = list(correlation_ids)
        deadline = time.monotonic() + timeout
        # A Condition loop, not helpers.core.wait: the thread notifies on every processed event,
        # so the caller wakes at once (a poll would add its interval to measured times).
        with self._cond:
            while True:
                missing = [c for c in wanted if c not in self._by_correlation]
                if not missing:
                    return [self._by_correlation[c][0] for c in wanted]
                self._raise_if_failed()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"service {self.name} processed {len(wanted) - len(missing)} of "
                                       f"{len(wanted)} events within {timeout:g} s")
                self._cond.wait(min(remaining, 0.5))

    def _keep(self, done: Handled) -> None:
        """Remember one processed event (called with the service's lock held): by default in
        :attr:`handled` and by correlation id, for :meth:`wait_for` and :meth:`result_for`."""
        self.handled.append(done)
        self._by_correlation.setdefault(done.correlation_id, []).append(done)

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"{self.name} failed: {type(self.error).__name__}: {self.error}") from self.error

    def __repr__(self) -> str:
        state = "ready" if self.ready else ("running" if self.running else "stopped")
        group = f"group {self.group_id}" if self.use_group else "no group"
        return (f"<{type(self).__name__} {self.name} {state}, {group}, "
                f"{self.count()} processed, delay {self.processing_delay * 1000:.0f} ms>")

    # ---- the thread
    def _open_consumer(self) -> KafkaConsumer:
        if self.use_group:
            return clients.consumer(self.kafka, *self.topics, group_id=self.group_id, fetch_max_wait_ms=FETCH_WAIT_MS)
        consumer = clients.consumer(self.kafka, group_id=None, fetch_max_wait_ms=FETCH_WAIT_MS)
        try:
            _assign_all(consumer, self.topics, from_start=self.from_start)
        except BaseException:
            _close_quietly(consumer)
            raise
        self._ready.set()  # no group to join
        return consumer

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        producer: KafkaProducer | None = None
        try:
            consumer = self._open_consumer()
            producer = clients.producer(self.kafka) if self.PUBLISHES else None
            work = _Work(self.workers)
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=work.poll_ms(POLL_MS))
                if not self._ready.is_set() and consumer.assignment():
                    self._ready.set()
                for tp, records in batches.items():
                    for record in records:
                        self._take(work, tp, record)
                if self._process_due(work, producer) and self.use_group:
                    commits = work.committable()
                    if commits:
                        if producer is not None:
                            producer.flush(timeout=10)  # the results are stored before we commit
                        consumer.commit(commits)
        except Exception as exc:  # noqa: BLE001 - reported by wait_ready()/wait_for()
            self.error = exc
            self._ready.set()
            with self._cond:
                self._cond.notify_all()
        finally:
            for client in (consumer, producer):
                if client is not None:
                    _close_quietly(client)

    def _take(self, work: _Work, tp: TopicPartition, record: Any) -> None:
        """Read one record: schedule its work, or finish it at once if it is not for us."""
        work.read(tp, record.offset)
        try:
            event = decode(record)
        except EventError:
            self.skipped += 1
            work.finish(tp, record.offset)
            return
        if self.types is not None and event.type not in self.types:
            work.finish(tp, record.offset)
            return
        delay = check_positive(f"{type(self).__name__}.delay_for()", self.delay_for(event), allow_zero=True)
        work.schedule(tp, record, event, delay, time.monotonic())

    def _process_due(self, work: _Work, producer: KafkaProducer | None) -> bool:
        """Handle every event whose work is done; True if any offset moved on."""
        moved = False
        for tp, record, event in work.due(time.monotonic()):
            if self._stop.is_set():
                break  # abandoned, never committed
            outputs = list(self.handle(event))
            if outputs:
                if producer is None:
                    raise RuntimeError(f"{type(self).__name__} has PUBLISHES = False but handle() returned events")
                for topic, out in outputs:
                    publish(producer, topic, out)
            done = Handled(time.monotonic(), event, tuple(out for _, out in outputs), record.partition, record.offset)
            with self._cond:
                self._keep(done)
                self._cond.notify_all()
            work.finish(tp, record.offset)
            moved = True
        return moved


def _assign_all(consumer: KafkaConsumer, topics: Sequence[str], *, from_start: bool) -> None:
    """Assign every partition of ``topics`` (no group) and seek to the beginning or the end.

    :func:`helpers.kafka.clients.read_from_start` does this for one topic; a service may read
    several, and ``assign`` replaces the assignment, so all partitions go in one call.
    The end comes from ListOffsets: exact on Apache Kafka, a lower bound on the embedded
    broker (see :mod:`helpers.kafka.lag`), so a few older records may be read: never a newer
    one skipped.
    """
    partitions = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            raise ValueError(f"topic {topic!r} does not exist")
        partitions += [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    if from_start:
        consumer.seek_to_beginning(*partitions)
        return
    for tp, offset in consumer.end_offsets(partitions).items():
        consumer.seek(tp, offset)


def _close_quietly(client: KafkaConsumer | KafkaProducer) -> None:
    with contextlib.suppress(Exception):  # closing a broken client must not mask its error
        if isinstance(client, KafkaConsumer):
            client.close(autocommit=False)
        else:
            client.close(timeout=5)


# --------------------------------------------------------------------------- waiting, in view


def wait_processed(services: dict[str, EventService], correlation_ids: Sequence[str], timeout: float, *,
                   progress: str | None = None) -> dict[str, list[Handled]]:
    """Wait until every service has processed an event of each correlation id; return, per
    service name, what it did with each (in the order of ``correlation_ids``). ``progress``
    labels a bar counting the events processed meanwhile. TimeoutError names who is short."""
    check_positive("timeout", timeout)
    if not services or not all(isinstance(s, EventService) for s in services.values()):
        raise ValueError("services must map names to EventServices")
    wanted = list(correlation_ids)

    def short() -> dict[str, int]:
        return {name: sum(1 for c in wanted if svc.result_for(c) is None) for name, svc in services.items()}

    bar = progress_bar(len(wanted) * len(services), progress) if progress else None

    def update(_: float = 0.0) -> None:
        if bar is not None and (now := len(wanted) * len(services) - sum(short().values())) != bar.n:
            bar.n = now
            bar.refresh()

    try:
        wait_until(lambda: not any(short().values()) or any(s.error for s in services.values()), timeout,
                   "the services to process every event", strict=False, on_poll=update)
        update()
        for svc in services.values():
            svc._raise_if_failed()
        missing = {name: n for name, n in short().items() if n}
        if missing:
            raise TimeoutError(f"not processed within {timeout:g} s: "
                               + ", ".join(f"{name} {n} of {len(wanted)}" for name, n in missing.items()))
        return {name: [h for c in wanted if (h := svc.result_for(c)) is not None] for name, svc in services.items()}
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------- the simplest service


class Recorder(EventService):
    """A consumer that only records what it reads (an analytics or e-mail service)."""

    PUBLISHES = False

    def __init__(self, kafka: Kafka, topic: str | Sequence[str], name: str = "analytics", *,
                 processing_delay: float = 0.0, group_id: str | None = None):
        super().__init__(kafka, name, topic, None, group_id=group_id, processing_delay=processing_delay)
