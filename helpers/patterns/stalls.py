"""A poison message retried inline: the whole consumer stalls, then the group moves it on (lesson 9, C18).

The plain way to consume: poll a batch, handle each record, commit, poll again. A handler
that fails is retried **in place** (sleep, try again) so nothing is skipped. On a poison
message that never succeeds, the consumer never returns to ``poll()``: every partition it
holds stops, not only the poisoned one, while the other members of its group go on.

Kafka's clients have one more mechanism here (the Java client and kafka-python alike): a
member that does not call ``poll()`` within ``max.poll.interval.ms`` is considered failed.
kafka-python's heartbeat thread then leaves the group on the member's behalf; the group
rebalances and another member gets the partitions, starts at the last committed offset,
meets the same poison message, and stalls in turn.

* :class:`InlineMember`: one such member (a thread with its own consumer); it records its
  assignments, what it processed, and every failed attempt.
* :class:`InlineGroup` starts ``members`` of them in one group (they join in the background:
  start it early), and :meth:`InlineGroup.run` publishes orders at a steady rate with one
  poison message, samples each partition's lag, and stops once the poison has moved to
  another member (or at a deadline). It returns an :class:`InlineRun`, which
  :func:`helpers.patterns.deadletters.poison_figure` draws.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kafka import ConsumerRebalanceListener

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import progress_bar, show_waited, wait_until
from ..kafka import clients, events
from .deadletters import POISON, parse_order

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from ..kafka.clients import Kafka

__all__ = ["InlineGroup", "InlineMember", "InlineRun", "Stall", "poll_settings"]

JOIN_TIMEOUT_S = 30.0
#: What :meth:`InlineGroup.run` waits through, in order (its progress bar counts them).
STAGES = ("poison sent", "a member stuck on it", "its partition moved to another member", "that member stuck too")


def poll_settings(retry_budget: float) -> dict[str, int]:
    """The consumer settings of the demo, derived from the retry budget (seconds a bounded
    inline retry may hold the poll loop): ``max_poll_interval_ms`` is 4 times the budget (a
    bounded retry stays well inside it; a retry without end exceeds it), and the heartbeat
    runs 4 times per interval, so a rebalance is noticed well within it."""
    check_positive("retry_budget", retry_budget)
    interval = max(400, round(4 * retry_budget * 1000))
    return {"max_poll_interval_ms": interval, "heartbeat_interval_ms": max(100, interval // 4)}


class InlineMember(lifecycle.CourseThread, ConsumerRebalanceListener):
    """A group member that retries a failing record inline, ``backoff`` s apart, for ever.

    ``assignments`` lists ``(t, partitions)`` as the group hands them out (``t`` from
    ``time.monotonic()``); ``positions`` is the next offset to handle per partition;
    ``processed`` counts records handled per partition; ``failures`` lists
    ``(t, partition, offset)`` for every failed attempt.
    """

    KIND = "consumer"

    def __init__(self, kafka: Kafka, topic: str, group_id: str, name: str, *, backoff: float,
                 settings: dict[str, int], handler: Callable[[Any], Any] = parse_order):
        super().__init__()
        self.kafka, self.topic, self.group_id, self.name = kafka, topic, group_id, name
        self.backoff = check_positive("backoff", backoff)
        self.settings, self.handler = dict(settings), handler
        self.assignments: list[tuple[float, list[int]]] = []
        self.revocations: list[float] = []
        self.positions: dict[int, int] = {}
        self.processed: dict[int, int] = {}
        self.failures: list[tuple[float, int, int]] = []
        self.polls: list[float] = []             # when it called poll() (the last 50 times)
        self.commit_errors = 0
        self._lock = threading.Lock()

    # ConsumerRebalanceListener: called inside poll(), in this member's thread
    def on_partitions_revoked(self, revoked: Any) -> None:
        """Record when a rebalance took this member's partitions (offsets are committed after
        every batch, so there is nothing to save)."""
        if revoked:
            with self._lock:
                self.revocations.append(time.monotonic())

    def on_partitions_assigned(self, assigned: Any) -> None:
        """Record the partitions the group gave this member."""
        with self._lock:
            self.assignments.append((time.monotonic(), sorted(tp.partition for tp in assigned)))

    @property
    def assignment(self) -> list[int]:
        """The partitions the group gave this member last."""
        with self._lock:
            return self.assignments[-1][1] if self.assignments else []

    def snapshot(self) -> tuple[dict[int, int], dict[int, int]]:
        """(positions, processed per partition) at this instant."""
        with self._lock:
            return dict(self.positions), dict(self.processed)

    def _run(self) -> None:
        consumer = None
        try:
            consumer = clients.consumer(self.kafka, group_id=self.group_id, max_poll_records=20, **self.settings)
            consumer.subscribe([self.topic], listener=self)
            while not self._stop.is_set():
                with self._lock:
                    self.polls = [*self.polls[-49:], time.monotonic()]
                for _tp, records in consumer.poll(timeout_ms=20).items():
                    for record in records:
                        self._handle_inline(record)
                        if self._stop.is_set():
                            return
                try:
                    consumer.commit()
                except Exception:  # noqa: BLE001 - a rebalance under way: the next owner re-reads
                    self.commit_errors += 1
        except Exception as exc:  # noqa: BLE001 - reported by InlineGroup.run()
            self.error = exc
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close(autocommit=False)

    def _handle_inline(self, record: Any) -> None:
        """The plain consumer's retry: try, and on failure sleep and try again, until it works."""
        while not self._stop.is_set():
            try:
                self.handler(record)
            except Exception:  # noqa: BLE001 - any failure of the handler is a failed attempt
                with self._lock:
                    self.failures.append((time.monotonic(), record.partition, record.offset))
                self._stop.wait(self.backoff)
                continue
            with self._lock:
                self.processed[record.partition] = self.processed.get(record.partition, 0) + 1
                self.positions[record.partition] = max(self.positions.get(record.partition, 0), record.offset + 1)
            return


@dataclass
class Stall:
    """One member stuck on the poison: from its first failed attempt until ``until``."""

    member: str
    partitions: list[int]                 # what it held when it met the poison
    since: float                          # s into the run: its first failed attempt
    until: float                          # s into the run: the group began to rebalance (or the run ended)
    progress: dict[int, int]              # records handled per partition meanwhile (by any member)
    lag_growth: dict[int, int]            # lag at ``until`` minus lag at ``since``, per partition
    last_poll: float                      # s into the run: its last call to poll() before it met the poison

    @property
    def without_poll(self) -> float:
        """Seconds from its last poll() to ``until`` (the rebalance, for the first member)."""
        return self.until - self.last_poll

    @property
    def stalled(self) -> list[int]:
        """Partitions it held on which nothing was handled and the lag grew."""
        return [p for p in self.partitions if self.progress.get(p, 0) == 0 and self.lag_growth.get(p, 0) > 0]

    def others(self, partitions: int) -> list[int]:
        """The partitions it did not hold."""
        return [p for p in range(partitions) if p not in self.partitions]


@dataclass
class InlineRun:
    """Orders at a steady rate, one poison message, members retrying it inline; lag sampled."""

    policy: str
    settings: dict[str, int]
    backoff: float
    poison_partition: int
    poison_offset: int
    poisoned_at: float                              # s into the run
    produced: dict[int, int]                        # records stored per partition (poison included)
    samples: list[tuple[float, dict[int, int]]]     # (s into the run, lag per partition)
    stalls: list[Stall] = field(default_factory=list)
    rebalance: tuple[float, float] | None = None    # s into the run: the group stopped; the poison's partition moved
    attempts: dict[str, int] = field(default_factory=dict)   # failed attempts on the poison, per member
    marks: list[tuple[float, str]] = field(default_factory=list)

    @property
    def lag_end(self) -> dict[int, int]:
        """Each partition's lag at the last sample."""
        return self.samples[-1][1] if self.samples else {}

    @property
    def moved(self) -> bool:
        """True if the poison reached a second member after the first was evicted."""
        return len(self.stalls) >= 2

    @property
    def max_poll_interval(self) -> float:
        """The members' max.poll.interval.ms, in seconds."""
        return self.settings["max_poll_interval_ms"] / 1000

    def lag_at(self, t: float) -> dict[int, int]:
        """The lag per partition at the first sample taken at or after ``t`` s into the run."""
        after = [lag for s, lag in self.samples if s >= t]
        return after[0] if after else self.lag_end

    def __str__(self) -> str:
        lines = [f"{self.policy}: poison at p{self.poison_partition}@{self.poison_offset}, "
                 f"{self.poisoned_at:.1f} s in; max.poll.interval.ms = {self.settings['max_poll_interval_ms']}"]
        for s in self.stalls:
            grew = ", ".join(f"p{p} +{g}" for p, g in s.lag_growth.items())
            moved = ", ".join(f"p{p} {n}" for p, n in s.progress.items())
            lines.append(f"  {s.member} holding {s.partitions}: stuck from {s.since:.1f} s to {s.until:.1f} s, "
                         f"{self.attempts.get(s.member, 0)} attempts; handled meanwhile {moved}; lag grew {grew}")
            if s is self.stalls[0] and self.rebalance is not None:
                lines.append(f"  the group rebalanced from {self.rebalance[0]:.1f} s to {self.rebalance[1]:.1f} s: "
                             f"{s.member} had not polled for {s.without_poll:.2f} s (> max.poll.interval.ms), "
                             "its heartbeat thread left the group, and the poison's partition moved")
        return "\n".join(lines)


class InlineGroup:
    """``members`` :class:`InlineMember` threads in one group over a topic of ``partitions``.

    :meth:`start` creates the topic and starts the members (they join in the background,
    about 3 s on the embedded broker); :meth:`run` waits until the group is settled, then
    publishes and measures (see the module docstring) and stops the members. Run it again
    and it starts afresh (a new topic and group; a new join)."""

    def __init__(self, kafka: Kafka, *, members: int = 2, partitions: int = 4, backoff: float = 0.1,
                 settings: dict[str, int] | None = None):
        self.kafka = kafka
        self.members_n = check_int("members", members, minimum=2)
        self.partitions = check_int("partitions", partitions, minimum=members)
        self.backoff = check_positive("backoff", backoff)
        self.settings = settings or poll_settings(3 * backoff)
        self.topic = ""
        self.members: list[InlineMember] = []
        self._used = False

    def start(self) -> InlineGroup:
        """Create the topic and start the members (no-op if they are up and not used yet)."""
        if self.members and not self._used and all(m.running for m in self.members):
            return self
        self.stop()
        self._used = False
        self.topic = clients.create_topic(self.kafka, partitions=self.partitions, prefix="orders-inline")
        group = clients.unique_name("orders-inline")
        self.members = [InlineMember(self.kafka, self.topic, group, f"member-{chr(65 + i)}", backoff=self.backoff,
                                     settings=self.settings).start() for i in range(self.members_n)]
        return self

    def stop(self) -> None:
        """Stop every member (each closes its consumer)."""
        lifecycle.stop_together(self.members)

    def settled(self) -> bool:
        """True when the members' last assignments cover every partition once."""
        got = sorted(p for m in self.members for p in m.assignment)
        return got == list(range(self.partitions)) and all(m.assignment for m in self.members)

    def run(self, *, rate: float = 60.0, lead: float = 0.5, after: float = 1.0, timeout: float = 30.0,
            poison_partition: int = 1) -> InlineRun:
        """Publish orders at ``rate`` per second; ``lead`` s in, the poison to ``poison_partition``;
        sample the lag until the poison has moved to another member and ``after`` s more (at most
        ``timeout`` s). Stops the members before it returns."""
        check_positive("rate", rate)
        check_positive("lead", lead)
        check_positive("after", after, allow_zero=True)
        check_positive("timeout", timeout)
        check_int("poison_partition", poison_partition, minimum=0)
        if poison_partition >= self.partitions:
            raise ValueError(f"poison_partition must be below partitions ({self.partitions}), got {poison_partition}")
        self.start()
        self._used = True
        producer: KafkaProducer | None = None
        try:
            wait_until(lambda: self._raise_errors() or self.settled(), JOIN_TIMEOUT_S,
                       "the inline-retry group to give every member its partitions", interval=0.05)
            producer = clients.producer(self.kafka)
            return self._measure(producer, rate, lead, after, timeout, poison_partition)
        finally:
            self.stop()
            if producer is not None:
                producer.close(timeout=5)

    def _raise_errors(self) -> bool:
        for m in self.members:
            if m.error is not None:
                raise RuntimeError(f"{m.name} failed: {m.error}") from m.error
        return False

    def _measure(self, producer: KafkaProducer, rate: float, lead: float, after: float, timeout: float,
                 poison_partition: int) -> InlineRun:
        lock = threading.Lock()
        ends = dict.fromkeys(range(self.partitions), 0)

        def stored(md: Any) -> None:
            with lock:
                ends[md.partition] = max(ends[md.partition], md.offset + 1)

        def positions() -> dict[int, int]:
            out = dict.fromkeys(range(self.partitions), 0)
            for m in self.members:
                for p, pos in m.snapshot()[0].items():
                    out[p] = max(out[p], pos)
            return out

        def handled() -> dict[int, int]:
            out = dict.fromkeys(range(self.partitions), 0)
            for m in self.members:
                for p, n in m.snapshot()[1].items():
                    out[p] += n
            return out

        samples: list[tuple[float, dict[int, int]]] = []
        handled_at: list[tuple[float, dict[int, int]]] = []
        t0 = time.monotonic()
        poison: dict[str, Any] = {}
        interval, every = 1.0 / rate, 0.1
        sent, next_sample, done_at = 0, 0.0, None
        bar = progress_bar(len(STAGES), "poison -> stuck -> moved -> stuck again", unit="stage")
        try:
            while (now := time.monotonic() - t0) < timeout:
                if not poison and now >= lead:
                    md = producer.send(self.topic, partition=poison_partition, key=b"order-poison", value=POISON,
                                       headers=[("event_type", b"OrderPlaced")]).get(timeout=10)
                    stored(md)
                    poison.update(offset=md.offset, at=time.monotonic() - t0)
                if now >= sent * interval:
                    events.publish(producer, self.topic, events.order_placed(f"order-{sent}", 10.0 + sent % 50)
                                   ).add_callback(stored)
                    sent += 1
                if now >= next_sample:
                    pos = positions()
                    with lock:
                        samples.append((now, {p: ends[p] - pos[p] for p in ends}))
                    handled_at.append((now, handled()))
                    next_sample += every
                    stage = self._stage(poison, poison_partition)
                    if stage > bar.n:
                        bar.update(stage - bar.n)
                    show_waited(bar, now)  # a stage can take longer than 10 s (max.poll.interval, the rebalance)
                    self._raise_errors()
                    if done_at is None and stage == len(STAGES):
                        done_at = now
                    if done_at is not None and now >= done_at + after:
                        break
                time.sleep(min(interval, every) / 4)
        finally:
            bar.close()
        producer.flush(timeout=10)
        return self._result(poison_partition, poison, t0, dict(ends), samples, handled_at)

    def _stage(self, poison: dict[str, Any], partition: int) -> int:
        """How far the run has come (see :data:`STAGES`)."""
        if not poison:
            return 0
        hit = [m for m in self.members if any((p, o) == (partition, poison["offset"]) for _, p, o in list(m.failures))]
        if len(hit) >= 2:
            return 4
        if hit and any(partition in m.assignment for m in self.members if m is not hit[0]):
            return 3
        return 2 if hit else 1

    def _result(self, partition: int, poison: dict[str, Any], t0: float, ends: dict[int, int],
                samples: list[tuple[float, dict[int, int]]],
                handled_at: list[tuple[float, dict[int, int]]]) -> InlineRun:
        run = InlineRun("retry inline (plain consumer)", self.settings, self.backoff, partition,
                        poison.get("offset", -1), poison.get("at", 0.0), ends, samples)
        if not poison:
            return run
        record = (partition, poison["offset"])
        hit = [m for m in self.members if any((p, o) == record for _, p, o in m.failures)]
        firsts = sorted((min(t for t, p, o in m.failures if (p, o) == record) - t0, m.name, m) for m in hit)
        end = samples[-1][0] if samples else 0.0

        def handled(t: float) -> dict[int, int]:
            after = [h for s, h in handled_at if s >= t]
            return after[0] if after else handled_at[-1][1]

        for i, (since, _name, member) in enumerate(firsts):
            others = [m for m in self.members if m is not member]
            rebalanced = [t - t0 for m in others for t in m.revocations if t - t0 > since]
            until = min(rebalanced) if rebalanced and i == 0 else end
            if i == 0 and len(firsts) > 1:
                until = min(until, firsts[1][0])
            held = next((parts for t, parts in reversed(member.assignments) if t - t0 <= since), member.assignment)
            polled = [t - t0 for t in member.polls if t - t0 <= since]
            start_h, end_h = handled(since), handled(until)
            start_l, end_l = run.lag_at(since), run.lag_at(until)
            run.stalls.append(Stall(member.name, held, since, until,
                                    {p: end_h[p] - start_h[p] for p in sorted(end_h)},
                                    {p: end_l.get(p, 0) - start_l.get(p, 0) for p in sorted(end_l)},
                                    polled[-1] if polled else since))
            run.attempts[member.name] = sum(1 for _, p, o in member.failures if (p, o) == record)
        if len(firsts) >= 2:
            first, second = run.stalls[0], firsts[1][2]
            moved = [t - t0 for t, parts in second.assignments if partition in parts and t - t0 > first.since]
            if moved:
                run.rebalance = (first.until, moved[0])
        run.marks = [(run.poisoned_at, "poison")]
        if run.rebalance is not None:
            run.marks += [(run.rebalance[0], "rebalance"), (run.rebalance[1], "moved")]
        return run
