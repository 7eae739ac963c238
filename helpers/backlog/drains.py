"""Draining one backlog with consumer groups of different sizes (claim C14).

:func:`compare_drains` starts one fresh, paused group per size on the same topic (they
join at once: joining takes seconds on any broker and is not what is measured), then
resumes each in turn and times it from the resume to its last needed event. With more
members than partitions the extra members sit idle: the partition count bounds the
parallelism. :class:`DrainResult` holds one measurement.

How long to wait for a drain is derived, in one place, from the work itself:
:func:`deadline` gives the events ``DEADLINE_MARGIN`` times the time they need at the
group's rate, plus ``REBALANCE_S`` for each group join or rebalance on the way (those run
on the broker's clock and do not scale with TIME_SCALE).

A group is done when its busiest member is: with 3 partitions and 2 members, one member
holds 2 of them. :func:`expected_ratio` says, from the members' *measured* shares, how long
one group should take against another; ``SHARE_MARGIN`` is how far a measurement may stray.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..kafka.clients import Kafka
from .consumers import SESSION_TIMEOUT_S, ConsumerGroup, wait_processed
from .reports import count_report

#: A deadline gives the work this many times the time it needs at its nominal rate (margin: a
#: busy machine processes slower, and a deadline should only fail a run that is stuck) ...
DEADLINE_MARGIN = 5.0
#: ... plus this much for each group join or rebalance on the way: ten session timeouts (the
#: embedded broker completes one after about half a session timeout on an idle machine, Apache
#: Kafka sooner; one was seen to take 28 s on a 2-core machine with a load average of 10).
#: Unscaled: it runs on the broker's clock.
REBALANCE_S = 10 * SESSION_TIMEOUT_S
#: How far a group's drain time, relative to another group's at the same rate, may stray from
#: :func:`expected_ratio` (0.25: within 25%). Measured for lesson 7 (2 members against 1 on 3
#: partitions, 300 events, 20 events/s each at TIME_SCALE 1, a fresh backlog each run): at
#: TIME_SCALE 1.0 within 1% (3 runs, load average 1-3); at 0.1, 49 runs with a load average of
#: 1 to 18 on 2 CPUs: 46 within 15%, 48 within 21%, one 49% short (the single consumer stalled
#: for about 3 s at a load of 14). The bound above: 2 members on 3 equal partitions should take
#: 2/3 of one consumer's time, an even split of the events 1/2, 25% less; a wider margin would
#: accept the even split. (A group at *half* the rate against one at the full rate strayed by
#: up to 44% at 0.1 under load, always short: the full-rate consumer falls behind its rate on a
#: busy machine, the half-rate ones do not. Groups at one rate have no such bias, so lesson 7
#: compares those and derives the half-rate case from the same shares.)
SHARE_MARGIN = 0.25


def deadline(events: int, rate: float, *, rebalances: int = 0) -> float:
    """Seconds to allow for ``events`` to be processed at ``rate`` events/s (the net rate at
    which a backlog shrinks), with ``rebalances`` group joins or rebalances on the way."""
    check_int("events", events, minimum=0)
    check_positive("rate", rate)
    check_int("rebalances", rebalances, minimum=0)
    return DEADLINE_MARGIN * events / rate + rebalances * REBALANCE_S + 1.0


@dataclass
class DrainResult:
    """How long a group of ``consumers`` members took to drain ``events`` events."""

    consumers: int
    seconds: float
    events: int
    rate: float
    assignment: dict[str, list[int]]
    duplicates: int = 0
    per_member: dict[str, int] = field(default_factory=dict)  # events each member processed
    member_seconds: dict[str, float] = field(default_factory=dict)  # from the resume to each member's last event

    @property
    def idle(self) -> list[str]:
        """Members that got no partition."""
        return [m for m, parts in self.assignment.items() if not parts]

    @property
    def busiest_events(self) -> int:
        """The events the busiest member processed."""
        return max(self.per_member.values(), default=0)

    @property
    def busiest_share(self) -> float:
        """The share of the backlog the busiest member processed: a group drains no faster than
        that member, since each partition, and so each event, has exactly one owner."""
        return self.busiest_events / self.events if self.events else 0.0

    def shares(self) -> str:
        """One line per member: its partitions, the events it processed and when it was done."""
        return "\n".join(f"{m}: partitions {parts or 'none'}, {self.per_member.get(m, 0)} events "
                         f"({self.per_member.get(m, 0) / max(self.events, 1):.0%}), done after "
                         f"{self.member_seconds.get(m, 0.0):.2f} s" for m, parts in self.assignment.items())

    @property
    def throughput(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        busy = self.consumers - len(self.idle)
        return (f"{self.consumers} consumer(s) ({busy} busy, {len(self.idle)} idle): "
                f"{self.events} events in {self.seconds:.2f} s = {self.throughput:.0f} events/s")


def expected_ratio(group: DrainResult, baseline: DrainResult, *, rate: float | None = None) -> float:
    """The drain time ``group`` should take relative to ``baseline``'s, from the measured shares.

    Each group is done when its busiest member is, and a member needs its events divided by
    the rate: ``(group's busiest events / rate) / (baseline's busiest events / its rate)``.
    For 2 members on 3 equal partitions against 1 consumer at the same rate: 2/3.
    ``rate`` (events/s each, default the group's own) asks what the same shares give at
    another rate: at half the rate, twice as long (2 x 2/3 = 4/3).
    """
    rate = group.rate if rate is None else check_positive("rate", rate)
    if not group.busiest_events or not baseline.busiest_events:
        raise ValueError("group and baseline must have processed events (per_member is empty or all 0)")
    return (group.busiest_events / rate) / (baseline.busiest_events / baseline.rate)


def start_drain_groups(kafka: Kafka, topic: str, sizes: Iterable[int], *, rate: float = 100.0,
                       batch_size: int = 10) -> list[ConsumerGroup]:
    """Start one fresh, paused group per size on ``topic``: they join now, drain later.

    Pass them to :func:`compare_drains` (``groups=``), which resumes and times them.
    """
    sizes = [check_int("consumers", n) for n in sizes]
    if not sizes:
        raise ValueError("sizes must name at least one group size")
    check_positive("rate", rate)
    groups = [ConsumerGroup(kafka, topic, n, rate=rate, batch_size=batch_size, paused=True, prefix="drain")
              for n in sizes]
    try:
        for g in groups:
            g.start()
    except BaseException:
        lifecycle.stop_together(groups)
        raise
    return groups


def compare_drains(kafka: Kafka, topic: str, sizes: Iterable[int], expected: Iterable[str] | int, *,
                   rate: float = 100.0, batch_size: int = 10, timeout: float | None = None,
                   groups: list[ConsumerGroup] | None = None, progress: bool = False) -> list[DrainResult]:
    """Drain the same backlog once per group size, each with a fresh group, and time it.

    All groups start paused and join at once (joining takes seconds on any broker and
    is not what we measure); then each group in turn is resumed and timed from the
    resume to its last needed event. ``groups`` (from :func:`start_drain_groups`) skips
    the start: they may have joined while something else ran. All are stopped at the end.
    ``timeout`` (per wait) defaults to :func:`deadline` for one member and one join;
    ``progress`` shows a bar per group while it drains.
    """
    sizes = [check_int("consumers", n) for n in sizes]
    if not sizes:
        raise ValueError("sizes must name at least one group size")
    check_positive("rate", rate)
    if not isinstance(expected, int):
        expected = list(expected)
    count = expected if isinstance(expected, int) else len(expected)
    timeout = deadline(count, rate, rebalances=1) if timeout is None else check_positive("timeout", timeout)
    if groups is None:
        groups = start_drain_groups(kafka, topic, sizes, rate=rate, batch_size=batch_size)
    elif [g.size for g in groups] != sizes or any(g.topic != topic for g in groups):
        raise ValueError(f"groups must be {len(sizes)} groups of sizes {sizes} on {topic!r}")
    results = []
    try:
        # Each group's join is waited for, its settling for a while only once: the groups joined side by
        # side, and a group whose every member holds partitions, each partition once, has finished joining
        # (a rebalance first takes every member's partitions away). This saves 0.3 s a group.
        first, *rest = groups
        assignments = [first.wait_assigned(timeout=timeout), *(g.wait_assigned(timeout=timeout, stable=0.0)
                                                                for g in rest)]
        for g, assignment in zip(groups, assignments):
            t0 = time.time()
            g.resume()
            label = f"{g.size} consumer{'s' if g.size > 1 else ''} draining" if progress else None
            t_end = wait_processed([g], expected, timeout=timeout, progress=label)
            records = g.processed()
            ids = [r["event_id"] for r in records] if isinstance(expected, int) else expected
            tally = count_report(ids, records)
            per_member: dict[str, int] = {m: 0 for m in assignment}
            done_at: dict[str, float] = {}
            for r in records:
                per_member[r["member"]] = per_member.get(r["member"], 0) + 1
                done_at[r["member"]] = max(done_at.get(r["member"], t0), r["t"])
            results.append(DrainResult(consumers=g.size, seconds=max(t_end - t0, 1e-6),
                                       events=tally.unique, rate=g.rate, assignment=assignment,
                                       duplicates=tally.duplicates, per_member=per_member,
                                       member_seconds={m: t - t0 for m, t in done_at.items()}))
            g.pause()  # drained: stays idle until all are stopped together
    finally:
        lifecycle.stop_together(groups)
    return results
