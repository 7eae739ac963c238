"""Watching for the events that result from what you published (lesson 8, claim C8).

A producer of events gets no answer; it can *watch* for the events that follow, matched
by correlation id (every follow-up event carries the id of the event that started the
story, see :func:`helpers.shop.service.correlation_of`). A watch has a deadline, and a
deadline that passes is an answer too: "pending", not yet known, which is not "no".

* :class:`ResultDispatcher`: **the pattern** for a service that waits for results. One
  long-lived consumer per process, started once, reads the result topics from their end
  and hands each result to the request waiting for its correlation id
  (:meth:`ResultWatcher.wait`); it remembers a bounded number of recent results.
* :class:`ResultWatcher`: the same consumer, reading from offset 0 and remembering
  everything (what :func:`watch_for` and the measurements use for one short run);
* :func:`watch_for`: one watch, one answer (:class:`WatchResult`). **Only a demo**: every
  question opens a new consumer (new connections and metadata; with a consumer group, a
  group join of seconds) and scans the topic from offset 0, so each answer costs
  O(topic) reads, and a result older than the topic's retention is gone;
* :func:`track_orders`: place orders and follow each to its outcome (:class:`OrderTrack`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.params import check_int, check_positive
from ..kafka.clients import Kafka
from ..kafka.events import Event
from .service import EventService, Handled, check_text, check_topics, check_types
from .workflow import ORDER_SHIPPED, PAYMENT_DECLINED, PAYMENT_PROCESSED, OrderWorkflow, Placement

__all__ = ["OrderTrack", "ResultDispatcher", "ResultWatcher", "WatchResult", "check_watcher", "track_orders",
           "watch_for"]


@dataclass
class WatchResult:
    """The answer of a watch: ``status`` is "found" (``event`` is the result) or "pending"
    (no such event within the deadline: the answer is "not yet", which is not "no").
    ``seen_at``: time.monotonic() when the watcher read the result (None when pending)."""

    status: str
    correlation_id: str
    types: tuple[str, ...]
    topic: str
    waited_s: float
    event: Event | None = None
    seen_at: float | None = None

    @property
    def found(self) -> bool:
        """True if the result arrived within the deadline."""
        return self.status == "found"

    def __bool__(self) -> bool:
        return self.found

    def __str__(self) -> str:
        if self.event is not None:
            return (f"found {self.event.type} for {self.correlation_id[:8]}… on {self.topic} "
                    f"after {self.waited_s * 1000:.0f} ms")
        return (f"pending: no {' or '.join(self.types)} for {self.correlation_id[:8]}… on {self.topic} within "
                f"{self.waited_s * 1000:.0f} ms (not yet; that is not a no)")


class ResultWatcher(EventService):
    """Watches topics for the events that result from what you published, by correlation id.

    A consumer without a consumer group: it is assigned every partition, so it needs no
    group join and is ready at once. ``from_start=True`` (the default) reads the topics
    from offset 0, so it cannot miss a result that arrived before it started;
    ``from_start=False`` reads only what is published after it started (register the
    watcher before you publish). ``keep``: how many correlation ids' results it remembers
    (None: all; beyond the bound the oldest are forgotten and counted in ``dropped``).
    Use as a context manager; :meth:`wait` answers one question at a time, from any thread.
    """

    KIND = "watcher"
    PUBLISHES = False

    def __init__(self, kafka: Kafka, topics: str | Sequence[str], types: str | Sequence[str] | None = None, *,
                 from_start: bool = True, keep: int | None = None, name: str | None = None):
        names = check_topics("topics", topics)
        if keep is not None:
            check_int("keep", keep)
        self.keep = keep
        self.seen = 0  # results read (remembered or not)
        self.dropped = 0  # correlation ids forgotten because of ``keep``
        label = name or "watch-" + "_".join(t.split("-")[1] if "-" in t else t for t in names)
        super().__init__(kafka, label, names, types=types, workers=None, use_group=False, from_start=from_start)

    def _keep(self, done: Handled) -> None:
        self.seen += 1
        if self.keep is None:
            super()._keep(done)
            return
        self._by_correlation.setdefault(done.correlation_id, []).append(done)
        while len(self._by_correlation) > self.keep:  # forget the oldest story (dicts keep insertion order)
            del self._by_correlation[next(iter(self._by_correlation))]
            self.dropped += 1

    def count(self) -> int:
        """How many results it has read."""
        with self._cond:
            return self.seen

    def remembered(self) -> int:
        """How many correlation ids it holds results for right now."""
        with self._cond:
            return len(self._by_correlation)

    def seen_at(self, correlation_id: str, type: str) -> float | None:
        """time.monotonic() when the watcher read the first event of ``type`` for that id."""
        with self._cond:
            return next((h.t for h in self._by_correlation.get(correlation_id, ()) if h.event.type == type), None)

    def wait(self, correlation_id: str, types: str | Sequence[str] | None = None, *,
             timeout: float = 10.0) -> WatchResult:
        """Wait up to ``timeout`` seconds for an event of ``types`` with that correlation id.
        Returns a WatchResult: "found" with the event, or "pending" (never raises for a
        result that did not come; raises if the watcher itself failed)."""
        check_text("correlation_id", correlation_id)
        wanted = self.types if types is None else frozenset(check_types("types", types))
        check_positive("timeout", timeout, allow_zero=True)
        names = tuple(sorted(wanted or ())) or ("any",)
        t0 = time.monotonic()
        deadline = t0 + timeout
        # A Condition loop, not helpers.core.wait: the watcher's thread notifies on every event it
        # reads, so the answer (and waited_s) is exact rather than rounded up to a poll.
        with self._cond:
            while True:
                for handled in self._by_correlation.get(correlation_id, ()):
                    if wanted is None or handled.event.type in wanted:
                        return WatchResult("found", correlation_id, names, ",".join(self.topics),
                                           time.monotonic() - t0, handled.event, handled.t)
                self._raise_if_failed()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return WatchResult("pending", correlation_id, names, ",".join(self.topics),
                                       time.monotonic() - t0)
                self._cond.wait(min(remaining, 0.5))


class ResultDispatcher(ResultWatcher):
    """The pattern for results: one long-lived consumer that hands each result event to
    the request waiting for its correlation id.

    Start it once, with the service that places orders, and keep it running: it reads the
    result topics **from their end** (no scan of the history, whatever the retention), with
    no consumer group (no join, and every instance of the service sees every result), and
    remembers the results of the last ``keep`` orders, so memory stays bounded. A request
    publishes its event after the dispatcher is ready and calls :meth:`wait` with its
    correlation id and a deadline: "found", or an honest "pending".
    """

    def __init__(self, kafka: Kafka, topics: str | Sequence[str], types: str | Sequence[str] | None = None, *,
                 keep: int = 10_000, name: str = "results-dispatcher"):
        super().__init__(kafka, topics, types, from_start=False, keep=keep, name=name)


def watch_for(kafka: Kafka, topic: str, correlation_id: str, type: str | Sequence[str], *,
              timeout: float = 10.0) -> WatchResult:
    """Watch ``topic`` for an event of ``type`` (or any of several types) that results from
    the event with ``correlation_id``; give up after ``timeout`` seconds (the deadline).

    Returns a :class:`WatchResult`: ``.found`` and ``.event``, or status "pending" when the
    deadline passed first. A deadline passing is an answer ("not yet"), not an exception.
    A demo: it opens a fresh consumer and scans ``topic`` from offset 0 for every
    question. A service uses one long-lived :class:`ResultDispatcher` instead.
    """
    check_text("topic", topic)
    check_text("correlation_id", correlation_id)
    types = check_types("type", type)
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
        if self.payment.event is not None:
            return "declined" if self.payment.event.type == PAYMENT_DECLINED else "paid"
        return "pending"

    def times(self) -> dict[str, float]:
        """Seconds after placing: acknowledged, and each result that was found."""
        out = {"acknowledged": self.acked_s}
        if self.payment.event is not None:
            out[self.payment.event.type] = self.payment.waited_s
        if self.shipment.found:
            out[ORDER_SHIPPED] = self.shipment.waited_s
        return out


def _time_left(p: Placement, deadline: float) -> float:
    return max(0.0, deadline - (time.monotonic() - p.sent_at))


def _since_placed(p: Placement, result: WatchResult) -> float:
    """Seconds from placing the order to the watcher reading the result (or to giving up)."""
    return (result.seen_at if result.seen_at is not None else time.monotonic()) - p.sent_at


def check_watcher(name: str, watcher: ResultWatcher, topics: Sequence[str]) -> ResultWatcher:
    """``watcher`` if it is a running ResultWatcher that reads every topic of ``topics``."""
    if not isinstance(watcher, ResultWatcher):
        raise ValueError(f"{name} must be a ResultWatcher or ResultDispatcher, got {watcher!r}")
    missing = set(topics) - set(watcher.topics)
    if missing:
        raise ValueError(f"{name} must read {sorted(missing)} too (it reads {list(watcher.topics)})")
    if not watcher.running:
        raise ValueError(f"{name} is not running: start it first (results.ResultDispatcher(...).start())")
    return watcher


def track_orders(wf: OrderWorkflow, amounts: Sequence[float], *, deadline: float = 10.0,
                 watcher: ResultWatcher | None = None) -> list[OrderTrack]:
    """Place one order per amount (without waiting for anything but the ack), then watch
    the payments and shipments topics for what follows from each, until ``deadline``
    seconds after it was placed. Declined orders are never shipped: their shipment stays
    "pending" when the deadline passes. ``watcher``: a running :class:`ResultDispatcher`
    (or watcher) on both topics to ask; by default one is started for this call."""
    if not isinstance(amounts, (list, tuple)) or not amounts:
        raise ValueError(f"amounts must be a non-empty list of numbers, got {amounts!r}")
    for a in amounts:
        check_positive("amounts", a, allow_zero=True)
    check_positive("deadline", deadline)
    wf.wait_ready()
    topics = [wf.topics.payments, wf.topics.shipments]
    if watcher is not None:
        return _track(wf, check_watcher("watcher", watcher, topics), amounts, deadline)
    with ResultWatcher(wf.kafka, topics) as own:
        return _track(wf, own, amounts, deadline)


def _track(wf: OrderWorkflow, watcher: ResultWatcher, amounts: Sequence[float], deadline: float) -> list[OrderTrack]:
    watcher.wait_ready()
    placed = [wf.place_order(amount=a) for a in amounts]
    tracks = []
    for p in placed:
        pay = watcher.wait(p.correlation_id, (PAYMENT_PROCESSED, PAYMENT_DECLINED), timeout=_time_left(p, deadline))
        pay.waited_s = _since_placed(p, pay)
        ship = watcher.wait(p.correlation_id, ORDER_SHIPPED, timeout=_time_left(p, deadline))
        ship.waited_s = _since_placed(p, ship)
        tracks.append(OrderTrack(p.order_id, p.event.payload["amount"], p.correlation_id, p.ack_s or 0.0, pay, ship))
    return tracks
