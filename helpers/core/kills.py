"""Seeded kills: when each worker dies, drawn from a printed seed, and the loop that kills them.

* :class:`KillPlan`: ``kills`` lifetimes drawn uniformly between ``low`` and ``high`` seconds from
  ``seed`` (printed, so a run can be repeated), stretched on a slower machine by :meth:`~KillPlan.scaled`.
* :func:`run_killed`: start a worker (a :class:`helpers.core.processes.CourseProcess`), let it work
  for each lifetime of the plan and kill it, with **warm spares** started meanwhile, so the next one
  takes over at once (a process and its Kafka client take tens to hundreds of ms to start; only the
  lifetimes are random, never where a kill lands in the code).
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .params import check_int, check_positive
from .processes import CourseProcess

__all__ = ["KillPlan", "KilledRun", "run_killed"]


@dataclass(frozen=True)
class KillPlan:
    """``kills`` lifetimes, each drawn uniformly from [``low``, ``high``] s by ``seed``, then
    multiplied by ``scale`` (see :meth:`scaled`)."""

    kills: int
    seed: int = 7
    low: float = 0.05
    high: float = 0.25
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_int("kills", self.kills, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_positive("low", self.low)
        check_positive("high", self.high)
        check_positive("scale", self.scale)
        if self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}), got {self.high}")

    def lifetimes(self) -> list[float]:
        """How long each worker runs before it is killed, in order (the same for the same seed)."""
        rng = random.Random(self.seed)
        return [rng.uniform(self.low, self.high) * self.scale for _ in range(self.kills)]

    def scaled(self, factor: float) -> KillPlan:
        """The same plan (same seed, same draws) with every lifetime ``factor`` times as long:
        on a machine where the work is slower, each life still holds as much work."""
        return dataclasses.replace(self, scale=check_positive("factor", factor))

    def __str__(self) -> str:
        low, high = self.low * self.scale * 1000, self.high * self.scale * 1000
        return f"seed {self.seed}: {self.kills} kills, each after {low:.0f}-{high:.0f} ms"


@dataclass
class KilledRun:
    """What :func:`run_killed` did: each worker's pid, and how long it ran before its kill."""

    plan: KillPlan
    pids: list[int] = field(default_factory=list)
    lived: list[float] = field(default_factory=list)   # measured: serving to kill, s

    def moments(self) -> str:
        """The kill moments, as printed: "120, 87, 240 ms" (each after its worker said serving)."""
        return ", ".join(f"{s * 1000:.0f}" for s in self.lived) + " ms"


def run_killed(start_worker: Callable[[int], CourseProcess], plan: KillPlan, *, spares: int = 2,
               stretch: Callable[[], float] | None = None,
               on_kill: Callable[[int, float], object] | None = None) -> KilledRun:
    """For each lifetime of ``plan``: a worker (``start_worker(n)``, n = 1, 2, ..., started) works
    and is killed after it. ``spares`` next workers are started ahead, before the current one
    begins, so one takes over at once and no start (seconds on a busy machine) delays a kill.
    ``stretch()``, asked before each life starts (never during it), multiplies that lifetime
    (a machine that has become slower gets longer lives).
    ``on_kill(n, lived)`` runs after each kill (a progress bar, a pace estimate). RuntimeError if a
    worker reported a failure before its kill. Nothing it started is left running."""
    if not isinstance(plan, KillPlan):
        raise ValueError(f"plan must be a KillPlan, got {plan!r}")
    check_int("spares", spares)
    run = KilledRun(plan)
    lifetimes = plan.lifetimes()
    waiting: list[CourseProcess] = []
    current: CourseProcess | None = None
    started = 0

    def top_up() -> None:
        nonlocal started
        while len(waiting) < spares and started < len(lifetimes):
            started += 1
            waiting.append(start_worker(started))

    try:
        top_up()
        for n, lifetime in enumerate(lifetimes, start=1):
            current = waiting.pop(0)
            if stretch is not None:
                lifetime *= check_positive("stretch()", stretch())
            top_up()
            began = current.go()
            time.sleep(max(0.0, lifetime - (time.monotonic() - began)))
            killed_at = current.kill()
            if current.failure is not None:
                raise RuntimeError(f"{current.name} failed while it worked: {current.failure}")
            run.lived.append(killed_at - began)
            run.pids.append(current.pid or 0)
            if on_kill is not None:
                on_kill(n, run.lived[-1])
    finally:
        for worker in [*waiting, *([current] if current is not None else [])]:
            worker.kill()
    return run

