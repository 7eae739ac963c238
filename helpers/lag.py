"""End offsets and consumer lag that are right on every broker.

Tansu (the embedded broker) answers ListOffsets LATEST with the first offset of the
newest stored batch plus one, so ``KafkaConsumer.end_offsets`` and ``seek_to_end`` are
wrong after any batched produce. The fetch response's high watermark is right on Tansu
and on Apache Kafka alike, so end offsets here come from a fetch: assign, seek to
the (possibly low) reported end, poll once, read ``consumer.highwater``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from kafka import TopicPartition

from .broker import Kafka
from .clients import _closing, consumer
from .params import check_positive


def end_offsets(kafka: Kafka, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """The true end offset (high watermark) of every partition of ``topic``."""
    with _closing(consumer(kafka, max_partition_fetch_bytes=1024, fetch_max_bytes=64 * 1024)) as c:
        partitions = c.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        c.assign(tps)
        # A lower bound on Tansu, exact on Kafka: fetching from here is always valid.
        for tp, offset in c.end_offsets(tps).items():
            c.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c.poll(timeout_ms=100)
            marks = {tp.partition: c.highwater(tp) for tp in tps}
            if all(v is not None for v in marks.values()):
                return marks
        raise TimeoutError(f"no high watermark for {topic!r} within {timeout} s")


def committed(kafka: Kafka, topic: str, group_id: str) -> dict[int, int | None]:
    """The group's committed offset per partition (None where it never committed)."""
    with _closing(consumer(kafka, group_id=group_id)) as c:
        partitions = sorted(c.partitions_for_topic(topic) or [])
        return {p: c.committed(TopicPartition(topic, p)) for p in partitions}


def lag(kafka: Kafka, topic: str, group_id: str) -> dict[int, int]:
    """Unconsumed messages per partition: high watermark minus the committed offset."""
    ends = end_offsets(kafka, topic)
    done = committed(kafka, topic, group_id)
    return {p: end - (done.get(p) or 0) for p, end in ends.items()}


def total_lag(kafka: Kafka, topic: str, group_id: str) -> int:
    """Sum of :func:`lag` over all partitions."""
    return sum(lag(kafka, topic, group_id).values())


@dataclass
class LagSample:
    t: float  # seconds since the monitor started
    partition: int
    lag: int


@dataclass
class LagMonitor:
    """Samples a group's lag every ``interval`` seconds in a background thread.

    Use as a context manager; ``samples`` holds LagSample rows, ``series()`` gives
    (times, total lag) for plotting, ``on_sample`` (optional) is called after each round.
    """

    kafka: Kafka
    topic: str
    group_id: str
    interval: float = 0.5
    on_sample: object = None
    samples: list[LagSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive("interval", self.interval)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def start(self) -> "LagMonitor":
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"lag-{self.group_id}", daemon=True)
        self._thread.start()
        return self

    def sample(self) -> dict[int, int]:
        """Take one sample now (also what the thread does each interval)."""
        now = time.monotonic() - self._t0
        current = lag(self.kafka, self.topic, self.group_id)
        self.samples.extend(LagSample(now, p, v) for p, v in current.items())
        if callable(self.on_sample):
            self.on_sample(self)
        return current

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception:  # a broker hiccup must not kill the monitor; the next round retries
                pass
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def series(self) -> tuple[list[float], list[int]]:
        """(times, total lag) with one point per sampling round."""
        rounds: dict[float, int] = {}
        for s in self.samples:
            rounds[s.t] = rounds.get(s.t, 0) + s.lag
        times = sorted(rounds)
        return times, [rounds[t] for t in times]

    def __enter__(self) -> "LagMonitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
