"""Producing orders: a steady producer in a thread, and backlogs made at once.

:class:`ProducerRunner` publishes OrderPlaced events at a set rate in a background
thread and counts what it sent, what the broker acknowledged and the errors: the
numbers that show the producer never notices a consumer going away (claim C11).
:func:`produce_backlog` and :func:`make_backlog` publish a pile of events as fast as
possible (the backlog a consumer group then drains).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Self

from kafka import KafkaProducer

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import pace
from ..kafka.clients import Kafka
from ..kafka.events import Event, order_placed, publish


def default_event(i: int) -> Event:
    """The i-th OrderPlaced of this process, with an order id unique across runs."""
    return order_placed(f"order-{os.getpid()}-{time.monotonic_ns() % 10**9:09d}-{i}", 10.0 + i % 90)


class ProducerRunner(lifecycle.CourseThread):
    """Publishes OrderPlaced events to ``topic`` at ``rate`` events/s in a thread.

    Counts what it ``sent``, what the broker ``acked`` and the ``errors``; the
    acknowledged event ids are in ``acked_ids``. ``count`` stops it after that many.
    While it runs it is registered with :mod:`helpers.core.lifecycle` (kind "producer");
    the thread and ``with`` are :class:`~helpers.core.lifecycle.CourseThread`'s, the steady
    rate is :func:`helpers.core.wait.pace`'s.
    """

    KIND: ClassVar[str] = "producer"

    def __init__(self, kafka: Kafka, topic: str, rate: float, *, count: int | None = None,
                 make_event: Callable[[int], Event] | None = None):
        super().__init__()
        self.kafka = kafka
        self.topic = topic
        self.rate = float(check_positive("rate", rate))
        self.count = None if count is None else check_int("count", count)
        self.name = f"producer-{topic}"
        self._make_event = make_event or default_event
        self.sent = 0
        self.acked = 0
        self.errors = 0
        self.error_messages: list[str] = []
        self.acked_ids: list[str] = []
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self.started_at: float | None = None

    @property
    def label(self) -> str:
        """What helpers.leftovers() lists it as."""
        return f"producer to {self.topic} at {self.rate:g}/s"

    def start(self) -> Self:
        """Open the producer and start publishing (a runner starts once)."""
        if self._thread is not None:
            raise RuntimeError("a ProducerRunner starts once; make a new one")
        self._producer = self.kafka.producer()
        self.started_at = time.monotonic()
        return super().start()

    def _run(self) -> None:
        producer = self._producer
        assert producer is not None  # start() opened it
        moments = pace(lambda: self.rate, self._stop)
        for i, _ in zip(itertools.count() if self.count is None else range(self.count), moments):
            event = self._make_event(i)
            try:
                future = publish(producer, self.topic, event)
            except Exception as exc:  # noqa: BLE001 - counted and shown, the loop goes on
                self._error(exc)
                continue
            with self._lock:
                self.sent += 1
            future.add_callback(self._acked, event.event_id)
            future.add_errback(self._error)

    def _acked(self, event_id: str, _metadata: Any) -> None:
        with self._lock:
            self.acked += 1
            self.acked_ids.append(event_id)

    def _error(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            if len(self.error_messages) < 10:
                self.error_messages.append(f"{type(exc).__name__}: {exc}")

    def stats(self) -> dict[str, Any]:
        """Sent, acked, errors and in-flight counts right now."""
        with self._lock:
            return {"sent": self.sent, "acked": self.acked, "errors": self.errors,
                    "in_flight": self.sent - self.acked - self.errors}

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait until ``count`` events were sent and acknowledged (or failed)."""
        if self.count is None:
            raise ValueError("count is None: this producer runs until stop()")
        if self._thread is None:
            return False
        self._thread.join(timeout)
        if self.running:
            return False
        if self._producer is not None:
            self._producer.flush(timeout=timeout)
        return True

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop sending, wait for the outstanding acknowledgements, close; return the stats."""
        super().stop(timeout)
        if self._producer is not None:
            try:
                self._producer.flush(timeout=timeout)
            finally:
                self._producer.close(timeout=5)
                self._producer = None
        return self.stats()


def produce_backlog(kafka: Kafka, topic: str, count: int) -> list[str]:
    """Publish ``count`` OrderPlaced events as fast as possible; return the acknowledged ids."""
    check_int("count", count)
    producer = kafka.producer()
    try:
        events = [default_event(i) for i in range(count)]
        futures = [publish(producer, topic, e) for e in events]
        producer.flush(timeout=60)
        return [e.event_id for e, f in zip(events, futures) if f.get(timeout=30)]
    finally:
        producer.close(timeout=5)


def make_backlog(kafka: Kafka, count: int, *, partitions: int = 3, prefix: str = "backlog") -> tuple[str, list[str]]:
    """A new topic with ``partitions`` partitions holding ``count`` events; return (topic, ids)."""
    check_int("count", count)
    check_int("partitions", partitions)
    topic = kafka.create_topic(partitions=partitions, prefix=prefix)
    return topic, produce_backlog(kafka, topic, count)
