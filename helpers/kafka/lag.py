"""End offsets and consumer lag that are right on every broker, sampled fast.

Tansu (the embedded broker) answers ListOffsets LATEST with the first offset of the
newest stored batch plus one, so ``KafkaConsumer.end_offsets`` and ``seek_to_end`` are
wrong after any batched produce. The fetch response's high watermark is right on Tansu
and on Apache Kafka alike, so end offsets here come from a fetch.

A :class:`LagReader` keeps its two clients open: a consumer with every partition
assigned (its fetches carry the high watermarks) and an admin client (one OffsetFetch
request gives the group's committed offsets). A sample then costs two round trips
instead of two new clients, so :class:`LagMonitor` samples many times a second
(:meth:`LagMonitor.rate` says how many). :func:`end_offsets`, :func:`committed`,
:func:`lag` and :func:`total_lag` are the one-shot versions. :func:`trend` fits how fast
a sampled lag grew or fell over a stretch of time (:class:`Trend`).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from ..core import lifecycle
from ..core.params import check_positive
from ..core.wait import wait_until
from .clients import Kafka, admin, consumer


class LagReader:
    """End offsets of ``topic`` and committed offsets of ``group_id``, over clients kept open.

    ``open()`` (or ``with``) connects; :meth:`end_offsets`, :meth:`committed` and
    :meth:`lag` then cost one or two round trips each; :meth:`close` closes the clients.
    Not thread-safe: one reader per thread (a :class:`LagMonitor` locks its own).
    """

    def __init__(self, kafka: Kafka, topic: str, group_id: str | None = None):
        if not topic or not isinstance(topic, str):
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        self.kafka, self.topic, self.group_id = kafka, topic, group_id
        self._consumer: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None
        self._tps: list[TopicPartition] = []
        self._marks: dict[TopicPartition, int] = {}  # the last high watermarks read

    def open(self) -> LagReader:
        """Connect the reading consumer: every partition assigned, positioned near the end."""
        if self._consumer is not None:
            return self
        # Small fetches: the reader wants the high watermark, not the records.
        c = consumer(self.kafka, max_partition_fetch_bytes=1024, fetch_max_bytes=64 * 1024)
        try:
            partitions = sorted(c.partitions_for_topic(self.topic) or [])
            if not partitions:
                raise ValueError(f"topic {self.topic!r} does not exist")
            self._tps = [TopicPartition(self.topic, p) for p in partitions]
            c.assign(self._tps)
            # A lower bound on Tansu, exact on Kafka: fetching from here is always valid.
            for tp, offset in c.end_offsets(self._tps).items():
                c.seek(tp, offset)
        except BaseException:
            c.close()
            raise
        self._consumer = c
        return self

    def end_offsets(self, timeout: float = 10.0) -> dict[int, int]:
        """The true end offset (high watermark) of every partition, from a fetch sent now."""
        c = self.open()._consumer
        assert c is not None  # open() set it
        proof: set[TopicPartition] = set()
        for tp in self._tps:
            last = self._marks.get(tp, 0)
            if last < 1:
                continue  # first read, or an empty partition: any answer will do
            # Seek just below the known end, away from the current position (where a fetch
            # sent earlier may still be in flight, and would be accepted): only a fetch sent
            # now answers there, and its answer holds that record, which proves it is fresh.
            target = last - 1 if last - 1 != c.position(tp) or last < 2 else last - 2
            c.seek(tp, target)
            proof.add(tp)
        answered: set[TopicPartition] = set()

        def fresh() -> bool:
            answered.update(c.poll(timeout_ms=20))  # the records are dropped: only the watermarks count
            return proof <= answered and all(c.highwater(tp) is not None for tp in self._tps)

        wait_until(fresh, timeout, f"the high watermarks of {self.topic!r}", interval=0.001)
        self._marks = {tp: c.highwater(tp) for tp in self._tps}
        return {tp.partition: mark for tp, mark in self._marks.items()}

    def committed(self, group_id: str | None = None) -> dict[int, int | None]:
        """The group's committed offset per partition (None where it never committed).

        One OffsetFetch request through the admin client (works on Tansu with the admin's
        pinned api_version, and on Apache Kafka).
        """
        group = group_id or self.group_id
        if not group:
            raise ValueError("group_id must name the consumer group, got None")
        self.open()
        if self._admin is None:
            self._admin = admin(self.kafka)
        offsets = self._admin.list_group_offsets({group: self._tps}).get(group, {})
        found = {tp.partition: meta.offset for tp, meta in offsets.items()}
        return {tp.partition: (found[tp.partition] if found.get(tp.partition, -1) >= 0 else None)
                for tp in self._tps}

    def lag(self, timeout: float = 10.0) -> dict[int, int]:
        """Unconsumed messages per partition: high watermark minus the committed offset.

        The committed offsets are read first: the high watermark read after them can
        only be larger, so the lag is never negative.
        """
        done = self.committed()
        ends = self.end_offsets(timeout)
        return {p: end - (done.get(p) or 0) for p, end in ends.items()}

    def close(self) -> None:
        """Close both clients (idempotent)."""
        for client in (self._consumer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):  # closing a client of a dead broker
                    client.close()
        self._consumer = self._admin = None

    def __enter__(self) -> LagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def end_offsets(kafka: Kafka, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """The true end offset (high watermark) of every partition of ``topic``."""
    with LagReader(kafka, topic) as reader:
        return reader.end_offsets(timeout)


def committed(kafka: Kafka, topic: str, group_id: str) -> dict[int, int | None]:
    """The group's committed offset per partition (None where it never committed)."""
    with LagReader(kafka, topic, group_id) as reader:
        return reader.committed()


def lag(kafka: Kafka, topic: str, group_id: str) -> dict[int, int]:
    """Unconsumed messages per partition: high watermark minus the committed offset."""
    with LagReader(kafka, topic, group_id) as reader:
        return reader.lag()


def total_lag(kafka: Kafka, topic: str, group_id: str) -> int:
    """Sum of :func:`lag` over all partitions."""
    return sum(lag(kafka, topic, group_id).values())


@dataclass(frozen=True)
class Trend:
    """How a sampled lag moved between ``start`` and ``end`` (seconds on the sampler's clock)."""

    label: str
    start: float
    end: float
    slope: float      # events per second, least squares: > 0 the lag grows, < 0 it falls
    first: int        # the lag at the first sample of the stretch ...
    last: int         # ... and at the last
    peak: int
    samples: int
    mean_t: float = 0.0  # the fitted line passes through the samples' mean time ...
    mean_lag: float = 0.0  # ... and mean lag

    def fitted(self, t: float) -> float:
        """The fitted line's lag at time ``t``."""
        return self.mean_lag + self.slope * (t - self.mean_t)

    def __str__(self) -> str:
        verb = "grew" if self.slope > 0 else "fell"
        return (f"{self.label}: lag {verb} {abs(self.slope):.1f} events/s over {self.end - self.start:.1f} s "
                f"({self.first} -> {self.last}, {self.samples} samples)")


def trend(times: list[float], totals: list[int], start: float, end: float, label: str = "lag") -> Trend:
    """The least-squares slope of ``totals`` over ``times`` within [start, end] (events/s).

    ValueError naming ``times`` when fewer than 2 samples fall in the stretch.
    """
    points = [(t, v) for t, v in zip(times, totals, strict=True) if start <= t <= end]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        raise ValueError(f"times must hold at least 2 samples between {start:.2f} and {end:.2f} s, "
                         f"got {len(points)}")
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    slope = (sum((t - mean_t) * (v - mean_v) for t, v in points) / sum((t - mean_t) ** 2 for t, _ in points))
    return Trend(label, points[0][0], points[-1][0], slope, points[0][1], points[-1][1],
                 max(v for _, v in points), len(points), mean_t, mean_v)


@dataclass
class LagSample:
    """One partition's lag at one moment."""

    t: float  # seconds since the monitor started
    partition: int
    lag: int


@dataclass(eq=False)  # a running thing: equal only to itself (and hashable, for lifecycle)
class LagMonitor(lifecycle.CourseThread):
    """Samples a group's lag every ``interval`` seconds in a background thread.

    Use as a context manager (or ``start()``/``stop()``); ``samples`` holds LagSample
    rows, ``series()`` gives (times, total lag) for plotting, ``on_sample`` (optional)
    is called after each round. While it runs it keeps one :class:`LagReader` open and
    is registered with :mod:`helpers.core.lifecycle` (kind "lag-monitor"); ``stop()`` closes it.
    The thread (``start``, ``signal_stop``, ``stop``, ``running``, ``with``) is a
    :class:`~helpers.core.lifecycle.CourseThread`.
    """

    KIND: ClassVar[str] = "lag-monitor"

    kafka: Kafka
    topic: str
    group_id: str
    interval: float = 0.1
    on_sample: Callable[[LagMonitor], object] | None = None
    samples: list[LagSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive("interval", self.interval)
        super().__init__()
        self.name = f"lag-{self.group_id}"
        self._reader: LagReader | None = None
        self._lock = threading.Lock()  # one sample at a time on the reader
        self._t0 = 0.0
        self.failures = 0  # samples that failed (a broker hiccup); the next round retries

    @property
    def label(self) -> str:
        """What helpers.leftovers() lists it as."""
        return f"lag of {self.group_id} on {self.topic}"

    def start(self) -> Self:
        """Open the reader and sample in a background thread until :meth:`stop`."""
        if self.running:
            return self
        self._reader = LagReader(self.kafka, self.topic, self.group_id).open()
        self._t0 = time.monotonic()
        return super().start()

    def sample(self) -> dict[int, int]:
        """Take one sample now (also what the thread does each interval)."""
        with self._lock:
            now = time.monotonic() - self._t0
            current = self._reader.lag(timeout=5.0) if self._reader else lag(self.kafka, self.topic, self.group_id)
        self.samples.extend(LagSample(now, p, v) for p, v in current.items())
        if self.on_sample is not None:
            self.on_sample(self)
        return current

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a broker hiccup must not kill the monitor; the next round retries
                self.failures += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling, close the reader's clients, leave the lifecycle registry (idempotent)."""
        super().stop(timeout)
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def rate(self) -> float:
        """Sampling rounds per second so far (0 before two rounds)."""
        times = self.series()[0]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def series(self) -> tuple[list[float], list[int]]:
        """(times, total lag) with one point per sampling round."""
        rounds: dict[float, int] = {}
        for s in list(self.samples):
            rounds[s.t] = rounds.get(s.t, 0) + s.lag
        times = sorted(rounds)
        return times, [rounds[t] for t in times]
