"""Poison messages and the dead-letter topic (lesson 9, claim C18).

A consumer must not skip a record it failed to process (that would lose it), so it
retries. A record that can never be processed, a **poison message** (malformed JSON, a
field of the wrong type), is retried forever, and every record behind it in its
partition waits: the partition's lag grows while the other partitions flow.

* :func:`parse_order`: the handler of the demo: a strict reader of OrderPlaced records
  that raises :class:`~helpers.kafka.events.EventError` saying what is wrong and where.
* :class:`RetryingConsumer`: reads every partition of a topic; a record that fails is
  retried after a back-off (the consumer seeks back to it and pauses only that
  partition, so the others go on); after ``max_attempts`` it is published to a
  **dead-letter topic** with the error in its headers, and the partition moves on.
  ``max_attempts=None`` retries forever. Its offsets are committed to ``group_id``.
* :func:`poison_run` publishes orders at a steady rate with one poison message among
  them and samples every partition's lag (:class:`PoisonRun`); :func:`poison_figure`
  draws it; :func:`read_dead_letters` reads the dead-letter topic back.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self

from kafka.structs import OffsetAndMetadata

from ..core import lifecycle, style
from ..core.params import check_int, check_positive
from ..core.wait import wait_until
from ..kafka import clients, events
from ..kafka.clients import read_topic

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from kafka import KafkaConsumer, KafkaProducer

    from ..kafka.clients import Kafka

__all__ = [
    "POISON",
    "DeadLetter",
    "LagRun",
    "PoisonRun",
    "RetryingConsumer",
    "dead_letter_headers",
    "parse_order",
    "poison_figure",
    "poison_run",
    "read_dead_letters",
]

#: The poison message of the demo: an OrderPlaced cut off in the middle (not valid JSON).
POISON = b'{"type":"OrderPlaced","payload":{"order_id":"order-13","amount":'
#: Header names on a dead-lettered record (besides the original record's own headers).
DLQ_HEADERS = ("dlq_error", "dlq_error_type", "dlq_attempts", "dlq_topic", "dlq_partition", "dlq_offset")


def _where(record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def parse_order(record: Any) -> events.Event:
    """The OrderPlaced event in ``record``, or :class:`~helpers.kafka.events.EventError` naming what
    is wrong and where (topic[partition]@offset)."""
    try:
        event = events.decode(record)
    except events.EventError as exc:
        raise events.EventError(f"{_where(record)}: {exc}") from None
    if event.type != "OrderPlaced":
        raise events.EventError(f"{_where(record)}: expected an OrderPlaced event, got {event.type}")
    amount = event.payload.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
        raise events.EventError(f"{_where(record)}: OrderPlaced.amount must be a number >= 0, got {amount!r}")
    return event


@dataclass(frozen=True)
class DeadLetter:
    """A record given up on: where it was, what it held, and why it failed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error: str
    error_type: str
    attempts: int

    def __str__(self) -> str:
        return (f"{self.topic}[{self.partition}]@{self.offset} after {self.attempts} attempts: "
                f"{self.error_type}: {self.error}")


def dead_letter_headers(record: Any, error: BaseException, attempts: int) -> list[tuple[str, bytes]]:
    """The original record's headers plus the error, its type, the attempts and where it came from."""
    check_int("attempts", attempts)
    extra = [("dlq_error", str(error).encode()), ("dlq_error_type", type(error).__name__.encode()),
             ("dlq_attempts", str(attempts).encode()), ("dlq_topic", record.topic.encode()),
             ("dlq_partition", str(record.partition).encode()), ("dlq_offset", str(record.offset).encode())]
    return [*(record.headers or []), *extra]


def read_dead_letters(kafka: Kafka, topic: str, timeout: float = 15.0) -> list[DeadLetter]:
    """Every record of the dead-letter ``topic``, with the error read back from its headers."""
    out = []
    for record in read_topic(kafka, topic, timeout):
        h = {k: v.decode() for k, v in (record.headers or [])}
        missing = [name for name in DLQ_HEADERS if name not in h]
        if missing:
            raise ValueError(f"{_where(record)} is not a dead letter: headers {missing} are missing")
        out.append(DeadLetter(h["dlq_topic"], int(h["dlq_partition"]), int(h["dlq_offset"]), record.key,
                              record.value, h["dlq_error"], h["dlq_error_type"], int(h["dlq_attempts"])))
    return out


# --------------------------------------------------------------------------- the consumer


class RetryingConsumer(lifecycle.CourseThread):
    """Processes every partition of ``topic`` with ``handler(record)``; retries, then dead-letters.

    A failing record is retried after ``backoff`` seconds: the consumer seeks back to it
    and pauses that partition only, so the other partitions keep flowing. After
    ``max_attempts`` failed attempts the record goes to ``dead_letter_topic`` (its headers
    say why) and the partition moves on; ``max_attempts=None`` retries forever and the
    partition never moves again. The consumer is assigned every partition (no group join)
    and commits its offsets to ``group_id`` after each poll.

    ``processed``, ``positions`` (next offset to handle) and ``attempts`` are per
    partition; ``dead_letters`` lists what it gave up on; ``failures`` every failed attempt.
    """

    KIND = "consumer"

    def __init__(self, kafka: Kafka, topic: str, handler: Callable[[Any], Any] = parse_order, *,
                 group_id: str | None = None, max_attempts: int | None = 3, backoff: float = 0.05,
                 dead_letter_topic: str | None = None):
        if not callable(handler):
            raise ValueError(f"handler must be callable, got {handler!r}")
        if max_attempts is not None:
            check_int("max_attempts", max_attempts)
            if dead_letter_topic is None:
                raise ValueError("dead_letter_topic must name a topic when max_attempts is set")
        super().__init__()
        self.kafka, self.topic, self.handler = kafka, topic, handler
        self.group_id = group_id or clients.unique_name("retrying")
        self.max_attempts = max_attempts
        self.backoff = check_positive("backoff", backoff, allow_zero=True)
        self.dead_letter_topic = dead_letter_topic
        self.name = f"retrying-{topic}"
        self.processed: dict[int, int] = {}
        self.positions: dict[int, int] = {}
        self.attempts: dict[tuple[int, int], int] = {}
        self.failures: list[str] = []
        self.failed_at: list[float] = []        # time.monotonic() of every failed attempt
        self.dead_lettered_at: list[float] = []  # ... of every record sent to the dead-letter topic
        self.dead_letters: list[DeadLetter] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()

    def start(self, timeout: float = 15.0) -> Self:
        """Start the thread (registered with helpers.core.lifecycle) and wait until it is assigned."""
        super().start()
        if not self._ready.wait(timeout) or self.error is not None:
            self.stop()
            raise RuntimeError(f"the retrying consumer did not start: {self.error}")
        return self

    @property
    def alive(self) -> bool:
        """True while the thread runs (a poison message never kills it)."""
        return self.running

    def snapshot(self) -> tuple[dict[int, int], dict[int, int], int]:
        """(positions, processed per partition, dead letters) at this instant."""
        with self._lock:
            return dict(self.positions), dict(self.processed), len(self.dead_letters)

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        producer: KafkaProducer | None = None
        try:
            consumer = clients.consumer(self.kafka, group_id=self.group_id, max_poll_records=50)
            tps = clients.read_from_start(consumer, self.topic)
            producer = clients.producer(self.kafka) if self.dead_letter_topic else None
            with self._lock:
                for tp in tps:
                    self.positions[tp.partition] = 0
                    self.processed[tp.partition] = 0
            self._ready.set()
            paused: dict[Any, float] = {}
            while not self._stop.is_set():
                now = time.monotonic()
                for tp in [tp for tp, until in paused.items() if until <= now]:
                    consumer.resume(tp)
                    del paused[tp]
                commits: dict[Any, OffsetAndMetadata] = {}
                for tp, records in consumer.poll(timeout_ms=20).items():
                    for record in records:
                        if not self._handle(consumer, producer, tp, record, paused):
                            break  # retry later: the rest of this partition's batch waits too
                        commits[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
                if commits:
                    consumer.commit(commits)
        except Exception as exc:  # noqa: BLE001 - reported by start() and poison_run()
            self.error = exc
            self._ready.set()
        finally:
            for client in (consumer, producer):
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close(**({"autocommit": False} if client is consumer else {"timeout": 5}))

    def _handle(self, consumer: Any, producer: Any, tp: Any, record: Any, paused: dict[Any, float]) -> bool:
        """Handle one record; False if it failed and will be retried."""
        try:
            self.handler(record)
        except Exception as exc:  # noqa: BLE001 - any failure of the handler is a failed attempt
            key = (record.partition, record.offset)
            n = self.attempts[key] = self.attempts.get(key, 0) + 1
            self.failures.append(f"attempt {n}: {type(exc).__name__}: {exc}")
            self.failed_at.append(time.monotonic())
            if self.max_attempts is None or n < self.max_attempts:
                consumer.seek(tp, record.offset)
                consumer.pause(tp)
                paused[tp] = time.monotonic() + self.backoff
                return False
            headers = dead_letter_headers(record, exc, n)
            producer.send(self.dead_letter_topic, key=record.key, value=record.value,
                          headers=headers).get(timeout=10)  # stored before the offset moves on
            letter = DeadLetter(record.topic, record.partition, record.offset, record.key, record.value,
                                str(exc), type(exc).__name__, n)
            with self._lock:
                self.dead_letters.append(letter)
                self.dead_lettered_at.append(time.monotonic())
                self.positions[record.partition] = record.offset + 1
            return True
        with self._lock:
            self.processed[record.partition] = self.processed.get(record.partition, 0) + 1
            self.positions[record.partition] = record.offset + 1
        return True


# --------------------------------------------------------------------------- one run


@dataclass
class PoisonRun:
    """Orders published at a steady rate with one poison message; every partition's lag sampled."""

    policy: str
    max_attempts: int | None
    watch_s: float
    poison_partition: int
    poison_offset: int
    poisoned_at: float                       # seconds into the run when the poison was stored
    produced: dict[int, int]                 # records stored per partition (the poison included)
    produced_after_poison: dict[int, int]    # ... of them stored after the poison
    processed: dict[int, int]
    processed_at_poison: dict[int, int]
    positions: dict[int, int]                # the consumer's next offset per partition at the end
    dead_letters: list[DeadLetter]
    attempts: int                            # failed attempts on the poison message
    samples: list[tuple[float, dict[int, int]]]  # (seconds into the run, lag per partition)
    dead_letter_topic: str | None
    alive: bool                              # the consumer was still running at the end
    last_error: str                          # the last failed attempt, as the consumer saw it
    handled: list[tuple[float, dict[int, int]]] = field(default_factory=list)  # (s into the run, processed so far)
    retry_window: tuple[float, float] | None = None  # s into the run: first failed attempt, dead letter (or the end)

    @property
    def marks(self) -> list[tuple[float, str]]:
        """Moments a figure marks: the poison stored, and its dead letter."""
        out = [(self.poisoned_at, "poison")]
        if self.retry_window is not None and self.dead_letters:
            out.append((self.retry_window[1], "dead-lettered"))
        return out

    @property
    def progress_during_retries(self) -> dict[int, int]:
        """Records processed per partition while the poison was being retried: between the first
        and the last sample taken after its first failed attempt and before its dead letter."""
        if self.retry_window is None or not self.handled:
            return {}

        start, end = self.retry_window
        inside = [h for s, h in self.handled if start <= s <= end]
        if len(inside) < 2:  # no two samples within the window: nothing measured
            return dict.fromkeys(sorted(self.produced), 0)
        first, last = inside[0], inside[-1]
        return {p: last.get(p, 0) - first.get(p, 0) for p in sorted(self.produced)}

    @property
    def lag_end(self) -> dict[int, int]:
        """Each partition's lag at the last sample."""
        return self.samples[-1][1] if self.samples else {}

    @property
    def others(self) -> list[int]:
        """The partitions without the poison."""
        return [p for p in sorted(self.produced) if p != self.poison_partition]

    @property
    def progress_after_poison(self) -> dict[int, int]:
        """Records each other partition processed after the poison was stored; for the poisoned
        partition, the records behind the poison that were processed."""
        out = {p: self.processed.get(p, 0) - self.processed_at_poison.get(p, 0) for p in self.others}
        out[self.poison_partition] = max(0, self.positions.get(self.poison_partition, 0) - self.poison_offset - 1)
        return dict(sorted(out.items()))

    @property
    def stuck_at_poison(self) -> bool:
        """True if the consumer never got past the poison in its partition."""
        return self.positions.get(self.poison_partition, 0) <= self.poison_offset

    @property
    def accounted(self) -> int:
        """Processed plus dead-lettered: what the consumer settled."""
        return sum(self.processed.values()) + len(self.dead_letters)

    @property
    def total_produced(self) -> int:
        """Every record stored in the topic."""
        return sum(self.produced.values())

    def __str__(self) -> str:
        lag = ", ".join(f"p{p} {v}" for p, v in sorted(self.lag_end.items()))
        moved = ", ".join(f"p{p} {v}" for p, v in self.progress_after_poison.items())
        return (f"{self.policy}: poison at p{self.poison_partition}@{self.poison_offset}, {self.attempts} attempts; "
                f"processed after it: {moved}; lag at the end: {lag}; {sum(self.processed.values())} processed + "
                f"{len(self.dead_letters)} dead-lettered of {self.total_produced} produced")


def poison_run(kafka: Kafka, *, max_attempts: int | None, watch: float = 3.0, backoff: float = 0.1,
               rate: float = 30.0, partitions: int = 3, poison_partition: int = 1,
               catch_up: float = 15.0) -> PoisonRun:
    """Publish orders at ``rate`` per second for ``watch`` seconds, the poison message a quarter
    of the way in (to ``poison_partition``), while a :class:`RetryingConsumer` with
    ``max_attempts`` (None: forever) and ``backoff`` processes them; sample each partition's
    lag (end offset minus the consumer's position) 30 times per ``watch``.

    With a dead-letter policy it then waits (at most ``catch_up`` s) until everything is
    processed or dead-lettered. Everything started is stopped before it returns.
    """
    check_positive("watch", watch)
    check_positive("rate", rate)
    check_positive("catch_up", catch_up)
    check_int("partitions", partitions, minimum=2)
    check_int("poison_partition", poison_partition, minimum=0)
    if poison_partition >= partitions:
        raise ValueError(f"poison_partition must be below partitions ({partitions}), got {poison_partition}")
    if max_attempts is not None and max_attempts * backoff >= watch / 2:
        raise ValueError(f"max_attempts x backoff ({max_attempts} x {backoff:.3f} s) must stay under half of "
                         f"watch ({watch:.2f} s), or the partition cannot catch up within the run")
    topic = clients.create_topic(kafka, partitions=partitions, prefix="orders")
    dlq = clients.create_topic(kafka, prefix="orders-dlq") if max_attempts is not None else None
    policy = "retry forever" if max_attempts is None else f"dead-letter after {max_attempts} attempts"
    worker = RetryingConsumer(kafka, topic, group_id=clients.unique_name("orders-retrying"),
                              max_attempts=max_attempts, backoff=backoff, dead_letter_topic=dlq)
    lock = threading.Lock()
    ends = {p: 0 for p in range(partitions)}
    poison: dict[str, Any] = {}

    def stored(metadata: Any) -> None:
        with lock:
            ends[metadata.partition] = max(ends[metadata.partition], metadata.offset + 1)

    samples: list[tuple[float, dict[int, int]]] = []
    worker.start()
    producer: KafkaProducer | None = None
    t0 = time.monotonic()

    handled: list[tuple[float, dict[int, int]]] = []

    def sample(lag: bool = True) -> None:
        positions, processed, _ = worker.snapshot()
        now = time.monotonic() - t0
        if lag:
            with lock:
                samples.append((now, {p: ends[p] - positions.get(p, 0) for p in ends}))
        handled.append((now, processed))

    try:
        producer = clients.producer(kafka)
        t0 = time.monotonic()
        interval, every = 1.0 / rate, watch / 30
        sent, next_sample = 0, 0.0
        while (now := time.monotonic() - t0) < watch:
            if not poison and now >= watch / 4:
                md = producer.send(topic, partition=poison_partition, key=b"order-poison", value=POISON,
                                   headers=[("event_type", b"OrderPlaced")]).get(timeout=10)
                with lock:
                    ends[md.partition] = max(ends[md.partition], md.offset + 1)
                    poison.update(offset=md.offset, at=time.monotonic() - t0, processed=worker.snapshot()[1],
                                  ends=dict(ends))
            if now >= sent * interval:
                order = events.order_placed(f"order-{sent}", float(10 + sent % 50))
                events.publish(producer, topic, order).add_callback(stored)
                sent += 1
            if now >= next_sample:
                sample()
                next_sample += every
            else:
                sample(lag=False)  # what was processed when, finely: progress_during_retries reads it
            time.sleep(min(interval, every) / 4)
        producer.flush(timeout=10)
        if max_attempts is not None:
            def settled() -> bool:
                positions, _, _ = worker.snapshot()
                with lock:
                    return all(positions.get(p, 0) >= ends[p] for p in ends)
            wait_until(settled, catch_up, "the consumer to process or dead-letter every record",
                       interval=every, on_poll=lambda _t: sample(), strict=False)
        sample()
        if worker.error is not None:
            raise RuntimeError(f"the retrying consumer failed: {worker.error}") from worker.error
        alive = worker.alive
    finally:
        worker.stop()
        if producer is not None:
            producer.close(timeout=5)
    positions, processed, _ = worker.snapshot()
    key = (poison_partition, poison["offset"])
    after_poison = {p: ends[p] - poison["ends"][p] for p in ends}
    window = None
    if worker.failed_at:
        until = worker.dead_lettered_at[0] if worker.dead_lettered_at else t0 + samples[-1][0]
        window = (worker.failed_at[0] - t0, until - t0)
    return PoisonRun(policy, max_attempts, watch, poison_partition, poison["offset"], poison["at"], dict(ends),
                     after_poison, processed, poison["processed"], positions, list(worker.dead_letters),
                     worker.attempts.get(key, 0), samples, dlq, alive, worker.failures[-1] if worker.failures else "",
                     handled, window)


# --------------------------------------------------------------------------- figure


class LagRun(Protocol):
    """What :func:`poison_figure` draws: a :class:`PoisonRun` or a
    :class:`helpers.patterns.stalls.InlineRun`."""

    policy: str
    poison_partition: int
    produced: dict[int, int]
    samples: list[tuple[float, dict[int, int]]]

    @property
    def marks(self) -> list[tuple[float, str]]: ...


def poison_figure(runs: Sequence[LagRun], title: str | None = None) -> go.Figure:
    """Lag per partition over time, one panel per run; dotted lines mark its moments (the poison,
    a rebalance, a dead letter), each labelled."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not runs:
        raise ValueError("runs must hold at least one PoisonRun")
    fig = make_subplots(rows=1, cols=len(runs), shared_yaxes=True, subplot_titles=[r.policy for r in runs])
    for col, run in enumerate(runs, start=1):
        times = [t for t, _ in run.samples]
        for p in sorted(run.produced):
            look = style.series(p)
            label = f"partition {p}" + (" (poison)" if p == run.poison_partition else "")
            fig.add_trace(go.Scatter(x=times, y=[lag.get(p, 0) for _, lag in run.samples], name=label,
                                     mode="lines+markers", legendgroup=label, showlegend=col == 1,
                                     line={"color": look["color"], "dash": look["dash"]},
                                     marker={"symbol": look["symbol"], "size": 6}), row=1, col=col)
        for i, (t, label) in enumerate(run.marks):
            fig.add_vline(x=t, line={"color": style.color("mark"), "dash": style.dash("mark")},
                          annotation_text=label, annotation_position="top right" if i % 2 == 0 else "bottom right",
                          row=1, col=col)
        fig.update_xaxes(title_text="seconds", row=1, col=col)
    fig.update_yaxes(title_text="lag (records waiting)", row=1, col=1)
    fig.update_layout(**style.layout(title or "One poison message: lag per partition"))
    return fig

