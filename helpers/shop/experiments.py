"""The measurements of lessons 4 and 8 on the order workflow: each claim, measured.

* :func:`ack_baseline`: how long the broker's acknowledgement takes on this machine, now
  (the baseline a demo's processing delay is derived from);
* :func:`measure_publish`: how long ``send()`` takes (fire and forget), how long the
  broker's acknowledgement takes, and how long processing takes (C6);
* :func:`fan_out`: independent consumer groups each read every event (C5);
* :func:`measure_pace`: consumers work at their own pace, the producer is not held up (C7);
* :func:`stale_reads`: a caller that expects an immediate answer from a read model gets
  wrong answers; one that waits for the result with a deadline answers right or
  "pending" (C15).

Lesson 5's side-by-side of a synchronous chain and events is :mod:`helpers.shop.coupling`.
All durations are plain seconds; notebooks multiply them by their ``TIME_SCALE``. Each
measurement that waits for processing shows a progress bar while it waits
(``progress=False`` turns it off, as the interactive experiments do), and each result has
a ``table()``: the numbers behind its figure.
"""
from __future__ import annotations

import collections
import contextlib
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core.lifecycle import PLOTLY_WARM_UP_THREAD
from ..core.params import check_int, check_positive
from ..core.wait import progress_bar
from ..kafka import clients
from ..kafka.clients import Kafka
from ..kafka.events import Event
from .results import ResultWatcher, WatchResult, check_watcher
from .service import EventService, Recorder, check_label, check_text, wait_processed
from .workflow import PAYMENT_DECLINED, PAYMENT_PROCESSED, OrderStatusView, OrderWorkflow, Placement

__all__ = [
    "ACK_MARGIN",
    "Answer",
    "FanOut",
    "PaceRun",
    "PublishTimings",
    "StaleReads",
    "ack_baseline",
    "fan_out",
    "measure_pace",
    "measure_publish",
    "stale_reads",
]


# --------------------------------------------------------------------------- C6: publish vs process

#: A demo that plays processing against the broker's ack keeps the work per event at least
#: this many times the measured ack (the C6 check needs 3x; the rest absorbs a busy machine).
ACK_MARGIN = 10.0


def ack_baseline(kafka: Kafka, n: int = 8) -> float:
    """Seconds from ``send()`` to the broker's acknowledgement on this machine, now: the lower
    quartile of ``n`` records sent one at a time, each acknowledged before the next, with the
    course's producer settings, to a fresh topic (one warm-up record first). The lower
    quartile is the machine's usual ack, not a moment when another thread held the CPU."""
    check_int("n", n, minimum=4)
    # A background import holds the interpreter lock for seconds; acks measured meanwhile would
    # measure it, not the broker. Let it finish first.
    for thread in threading.enumerate():
        if thread.name == PLOTLY_WARM_UP_THREAD:
            thread.join(timeout=30)
    topic = clients.create_topic(kafka, prefix="ack-baseline")
    acks = []
    with contextlib.closing(clients.producer(kafka)) as producer:
        producer.send(topic, b"warm-up").get(timeout=30)  # metadata and connection, not counted
        for _ in range(n):
            t0 = time.perf_counter()
            producer.send(topic, b"ack?").get(timeout=30)
            acks.append(time.perf_counter() - t0)
    return statistics.quantiles(acks, n=4)[0]



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
        """How many orders were placed."""
        return len(self.send_s)

    @property
    def send_p50(self) -> float:
        """Median seconds send() took."""
        return _median(self.send_s)

    @property
    def ack_p50(self) -> float:
        """Median seconds from send() to the broker's ack."""
        return _median(self.ack_s)

    @property
    def processed_p50(self) -> float:
        """Median seconds from send() until processed."""
        return _median(self.processed_s)

    def rows(self) -> list[tuple[str, float, float]]:
        """(what, median, max) in seconds."""
        return [("send() returned", self.send_p50, max(self.send_s)),
                ("broker acknowledged", self.ack_p50, max(self.ack_s)),
                ("payment processed", self.processed_p50, max(self.processed_s))]

    def table(self) -> str:
        """The numbers behind :func:`helpers.shop.eventplots.publish_figure`: per order, in ms after send()."""
        lines = [f"{'order':8} {'send() returned':>16} {'acknowledged':>13} {'processed':>10}"]
        for i, (send, ack, done) in enumerate(zip(self.send_s, self.ack_s, self.processed_s)):
            lines.append(f"{i + 1:<8} {send * 1000:16.3f} {ack * 1000:13.2f} {done * 1000:10.0f}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The measurement in a few lines of text."""
        lines = [f"{self.n} orders, payment takes {self.processing_delay * 1000:.0f} ms per order"]
        for what, p50, worst in self.rows():
            lines.append(f"  {what:22} median {p50 * 1000:9.2f} ms   worst {worst * 1000:9.2f} ms")
        lines.append(f"  producer done after {self.publish_total_s * 1000:.0f} ms; "
                     f"processing done after {self.processing_total_s * 1000:.0f} ms")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def measure_publish(wf: OrderWorkflow, n: int = 10, *, amount: float = 20.0,
                    timeout: float | None = None, progress: bool = True) -> PublishTimings:
    """Place ``n`` orders one after the other, each waiting for the broker's ack only; then
    wait until the payment service has processed them all (a progress bar meanwhile,
    unless ``progress=False``) and report the three times."""
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
    handled = wait_processed({"payments": wf.payment}, [p.correlation_id for p in placements], wait,
                             progress="orders processed by payments" if progress else None)["payments"]
    return PublishTimings(
        processing_delay=delay,
        send_s=[p.send_s for p in placements],
        ack_s=[p.ack_s or 0.0 for p in placements],
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
        """Event ids that group ``label`` did not read."""
        return set(self.published) - set(self.received[label])

    @property
    def complete(self) -> bool:
        """True if every group read every published event."""
        return all(not self.missing(label) for label in self.received)

    def table(self) -> str:
        """The numbers behind :func:`helpers.shop.eventplots.fan_out_figure`: who read which event."""
        lines = [f"{'group':12} " + " ".join(f"{'event ' + str(i + 1):>8}" for i in range(len(self.published)))]
        for label, ids in self.received.items():
            got = set(ids)
            lines.append(f"{label:12} " + " ".join(f"{'read' if e in got else 'MISSING':>8}" for e in self.published))
        return "\n".join(lines)

    def summary(self) -> str:
        """The measurement in a few lines of text."""
        lines = [f"{len(self.published)} events published before any consumer existed"]
        for label, ids in self.received.items():
            lines.append(f"  {label:12} group {self.groups[label]:40} read {len(set(ids)):3} of "
                         f"{len(self.published)} ({len(self.missing(label))} missing) in {self.seconds[label]:.1f} s")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def fan_out(kafka: Kafka, topic: str, published: Sequence[Event],
            labels: Sequence[str] = ("payments", "analytics", "emails"), *, timeout: float = 60.0,
            join_timeout: float | None = None) -> FanOut:
    """Start one consumer per label, each in its own group, on ``topic``; wait until each
    has read every event of ``published``; stop them and say who read what.

    ``timeout`` counts from the start, group joins included; with ``join_timeout``, the
    groups first join (each within ``join_timeout`` s) and ``timeout`` counts only the reads."""
    check_text("topic", topic)
    if not isinstance(labels, (list, tuple)) or not labels:
        raise ValueError(f"labels must be a non-empty list of names, got {labels!r}")
    for label in labels:
        check_label("labels", label)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    if not published or not all(isinstance(e, Event) for e in published):
        raise ValueError("published must be a non-empty list of Events (see publish_orders)")
    check_positive("timeout", timeout)
    if join_timeout is not None:
        check_positive("join_timeout", join_timeout)
    ids = [e.event_id for e in published]
    readers = [Recorder(kafka, topic, label) for label in labels]
    start = time.monotonic()
    seconds: dict[str, float] = {}
    try:
        for r in readers:
            r.start()
        reads_from = start
        if join_timeout is not None:
            for r in readers:
                r.wait_ready(join_timeout)
            reads_from = time.monotonic()
        for r in readers:
            handled = r.wait_for(ids, max(0.1, timeout - (time.monotonic() - reads_from)))
            seconds[r.name] = max(h.t for h in handled) - start
    finally:
        for r in readers:
            r.signal_stop()
        for r in readers:
            r.stop()
    return FanOut(ids, {r.name: [h.event.event_id for h in r.handled] for r in readers},
                  {r.name: str(r.group_id) for r in readers}, seconds)


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
        """Per consumer: seconds until it had processed every order."""
        return {label: max(times) for label, times in self.processed.items()}

    def table(self) -> str:
        """The numbers behind :func:`helpers.shop.eventplots.pace_figure`: when each had done a
        quarter, half, three quarters and all of the orders (ms after the first send())."""
        marks = [max(1, round(self.n * q)) for q in (0.25, 0.5, 0.75, 1.0)]
        lines = [f"{'':34} " + " ".join(f"{f'{k} done':>10}" for k in marks)]
        for label, times in [("producer (acknowledged)", self.acked), *self.processed.items()]:
            lines.append(f"{label:34} " + " ".join(f"{times[k - 1] * 1000:10.0f}" for k in marks))
        return "\n".join(lines)

    def summary(self) -> str:
        """The measurement in a few lines of text."""
        lines = [f"{self.n} orders: producer done (all acknowledged) after {self.producer_s * 1000:8.1f} ms"]
        for label, done in self.done_s.items():
            lines.append(f"  {label:10} ({self.delays[label] * 1000:4.0f} ms per event) done after "
                         f"{done * 1000:8.1f} ms")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def measure_pace(wf: OrderWorkflow, n: int = 20, *, watch: dict[str, EventService] | None = None,
                 timeout: float | None = None, progress: bool = True) -> PaceRun:
    """Publish ``n`` orders as fast as the producer can (send all, then wait for the acks),
    then wait until every watched service has processed them, each at its own pace (a
    progress bar meanwhile, unless ``progress=False``). ``watch`` defaults to payments,
    shipping and the workflow's extra services."""
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
    handled = wait_processed(watch, ids, wait, progress="events processed by the consumers" if progress else None)
    processed = {label: sorted(h.t - start for h in done) for label, done in handled.items()}
    return PaceRun(n, producer_s, sorted((p.acked_at or math.nan) - start for p in placements), processed,
                   {label: svc.processing_delay for label, svc in watch.items()})


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
        """Right, wrong and pending answers of the naive caller."""
        return self._counts(self.naive)

    @property
    def corrected_counts(self) -> dict[str, int]:
        """Right, wrong and pending answers of the caller that waits for the result."""
        return self._counts(self.corrected)

    @property
    def stale(self) -> int:
        """Naive reads that did not yet show the payment's outcome (stale state)."""
        return sum(1 for a in self.naive if a.seen not in ("paid", "declined", "shipped"))

    def table(self) -> str:
        """The numbers behind :func:`helpers.shop.eventplots.stale_figure`: each caller's answers."""
        lines = [f"{'caller':44} {'right':>6} {'wrong':>6} {'pending':>8}"]
        for label, c in ((f"naive (reads the view after {self.read_after * 1000:.0f} ms)", self.naive_counts),
                         (f"waits for the result (deadline {self.deadline * 1000:.0f} ms)", self.corrected_counts)):
            lines.append(f"{label:44} {c['right']:6} {c['wrong']:6} {c['pending']:8}")
        return "\n".join(lines)

    def summary(self) -> str:
        """Both callers' answers in a few lines of text."""
        n, c = self.naive_counts, self.corrected_counts
        seen = collections.Counter(str(a.seen) for a in self.naive)
        return "\n".join([
            f"{len(self.naive)} orders per caller; payment takes {self.payment_delay * 1000:.0f} ms per order",
            (f"  naive caller (reads the view {self.read_after * 1000:.0f} ms after placing): "
             f"{n['wrong']} wrong, {n['right']} right; the view showed {dict(seen)}"),
            (f"  corrected caller (waits for the result, deadline {self.deadline * 1000:.0f} ms): "
             f"{c['wrong']} wrong, {c['right']} right, {c['pending']} 'pending'"),
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


def _amounts(n: int, decline_every: int, limit: float | None) -> list[float]:
    """Order amounts: every ``decline_every``-th one over the card ``limit``, the others under it."""
    under = 20.0 if limit is None else min(20.0, limit)
    over = (limit or 0.0) + 100.0
    return [over if decline_every and (i + 1) % decline_every == 0 else under for i in range(n)]


def _ask_the_view(wf: OrderWorkflow, view: OrderStatusView, amounts: Sequence[float], read_after: float,
                  tick: Callable[[], object]) -> list[tuple[Placement, str | None, float]]:
    """The naive caller: place, sleep ``read_after`` (on purpose), read the view, answer."""
    rows = []
    for amount in amounts:
        p = wf.place_order(amount=amount)
        if read_after:
            time.sleep(read_after)
        rows.append((p, view.status(p.order_id), time.monotonic() - p.sent_at))
        tick()
    return rows


def _wait_for_results(wf: OrderWorkflow, watcher: ResultWatcher, amounts: Sequence[float], deadline: float,
                      tick: Callable[[], object]) -> list[tuple[Placement, WatchResult, float]]:
    """The corrected caller: place, then watch for the payment's result until ``deadline``."""
    rows = []
    for amount in amounts:
        p = wf.place_order(amount=amount)
        remaining = max(0.0, deadline - (time.monotonic() - p.sent_at))
        result = watcher.wait(p.correlation_id, (PAYMENT_PROCESSED, PAYMENT_DECLINED), timeout=remaining)
        rows.append((p, result, time.monotonic() - p.sent_at))
        tick()
    return rows


def stale_reads(wf: OrderWorkflow, n: int = 10, *, read_after: float = 0.0, deadline: float = 5.0,
                decline_every: int = 0, settle_timeout: float | None = None,
                watcher: ResultWatcher | None = None, progress: bool = True) -> StaleReads:
    """Ask "is order X paid?" right after placing each of ``n`` orders, two ways.

    Naive: place the order, wait ``read_after`` seconds, read the workflow's
    :class:`~helpers.shop.workflow.OrderStatusView` and answer from whatever it shows.
    Corrected: place the order, then wait for the PaymentProcessed/PaymentDeclined event
    that results (a :class:`~helpers.shop.results.ResultWatcher`), at most ``deadline`` seconds
    after placing; if it has not come, answer "pending". Every ``decline_every``-th order
    (0: none) is over the card limit. The truth is what the payment service eventually
    did. Between the two callers it waits until the payment service has processed the
    naive caller's orders. ``watcher``: a running :class:`~helpers.shop.results.ResultDispatcher`
    on the payments topic for the corrected caller to ask (by default one is started for
    this call). ``progress``: a bar of the questions answered.
    """
    check_int("n", n)
    check_positive("read_after", read_after, allow_zero=True)
    check_positive("deadline", deadline, allow_zero=True)
    check_int("decline_every", decline_every, minimum=0)
    if settle_timeout is not None:
        check_positive("settle_timeout", settle_timeout)
    view = wf.view
    if view is None:
        raise ValueError("stale_reads needs a workflow with a read model: OrderWorkflow(kafka, view=True)")
    if decline_every and wf.payment.decline_above is None:
        raise ValueError("decline_every needs a workflow with decline_above set")
    if watcher is not None:
        check_watcher("watcher", watcher, [wf.topics.payments])
    wf.wait_ready()
    amounts = _amounts(n, decline_every, wf.payment.decline_above)
    bar = progress_bar(2 * n, "questions answered", unit="answer") if progress else None
    tick = bar.update if bar is not None else (lambda: None)
    try:
        naive_rows = _ask_the_view(wf, view, amounts, read_after, tick)
        # Let the payment service finish the naive caller's orders first, so that both callers
        # meet the same conditions (no queue in front of them).
        settle = settle_timeout if settle_timeout is not None else 30.0 + 3 * n * wf.payment.processing_delay
        wf.payment.wait_for([p.correlation_id for p, *_ in naive_rows], settle)
        if watcher is not None:
            corrected_rows = _wait_for_results(wf, watcher, amounts, deadline, tick)
        else:
            with ResultWatcher(wf.kafka, wf.topics.payments, (PAYMENT_PROCESSED, PAYMENT_DECLINED)) as own:
                corrected_rows = _wait_for_results(wf, own, amounts, deadline, tick)
        everyone = [row[0] for row in naive_rows] + [row[0] for row in corrected_rows]
        outcome = {h.correlation_id: h.outputs[0].type
                   for h in wf.payment.wait_for([p.correlation_id for p in everyone], settle)}
    finally:
        if bar is not None:
            bar.close()

    def truth(p: Placement) -> str:
        return "paid" if outcome[p.correlation_id] == PAYMENT_PROCESSED else "declined"

    naive = [Answer(p.order_id, seen, _naive_answer(seen), truth(p), waited) for p, seen, waited in naive_rows]
    corrected = []
    for p, result, waited in corrected_rows:
        if result.event is not None:
            answer = "paid" if result.event.type == PAYMENT_PROCESSED else "declined"
            corrected.append(Answer(p.order_id, result.event.type, answer, truth(p), waited))
        else:
            corrected.append(Answer(p.order_id, None, "pending", truth(p), waited))
    return StaleReads(naive, corrected, read_after, deadline, wf.payment.processing_delay)
