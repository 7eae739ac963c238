"""The faults that play out over time, as threads: repeated pauses, and crashes at random moments.

* :class:`Pauser` freezes the same service on both sides (its processes, suspended) ``length``
  seconds out of every ``2 x length``, on one clock, until it is stopped.
* :func:`crash_plan` draws where each crash of a crash fault falls, from a seed (printed with
  the run): the ``i``-th crash hits the first order placed after a random moment of the ``i``-th
  slice of the fault, at a random fraction of that side's usual answer time after the order was
  sent (the fractions spread over the whole handling: one in each ``1/crashes`` of it). Where
  that moment falls inside the service (before its database write, between the write and the
  publish or the call, after it) is decided by how long each step really takes, not by the plan.
  :class:`Crasher` carries the plan out: a real SIGKILL of the orders process, which its
  supervisor restarts at once.

Both sides get the same crashes: the same orders, the same fractions of their own answer times.
"""
from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core import lifecycle
from .processes import ServiceProcess

__all__ = ["Crash", "Crasher", "Pauser", "crash_plan"]


class Pauser(lifecycle.CourseThread):
    """Suspend ``targets`` together for ``length`` seconds out of every ``2 x length`` (from now)."""

    KIND = "fault"

    def __init__(self, targets: list[ServiceProcess], length: float):
        super().__init__()
        self.targets, self.length = targets, length
        self.name = "capstone-pauses"
        self.pauses = 0

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for target in self.targets:
                    target.suspend()
                self.pauses += 1
                self._stop.wait(self.length)
                for target in self.targets:
                    target.resume()
                self._stop.wait(self.length)
        finally:
            for target in self.targets:
                target.resume()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop pausing; every target is running again when it returns."""
        super().stop(timeout)
        for target in self.targets:
            target.resume()


@dataclass(frozen=True)
class Crash:
    """One planned crash: the first order placed ``after`` seconds into the fault, hit at
    ``fraction`` of each side's usual answer time after it was sent."""

    after: float
    fraction: float


def crash_plan(crashes: int, seconds: float, seed: int) -> list[Crash]:
    """``crashes`` crashes over a fault of ``seconds``: one in each equal slice of the fault, in its
    first half (so the restart has the second half), each at a random fraction of an order's
    handling. The fractions are stratified: one in each ``1/crashes`` of the handling, at a random
    point of it, in a random order, so the crashes sample the whole handling evenly (a plain draw
    can bunch them up at its start or its end)."""
    rng = random.Random(f"capstone-crashes/{seed}/{crashes}/{seconds:.3f}")
    slice_s = seconds / crashes
    strata = rng.sample(range(crashes), crashes)
    return [Crash(round((i + rng.uniform(0.0, 0.5)) * slice_s, 4), round((strata[i] + rng.random()) / crashes, 4))
            for i in range(crashes)]


class Crasher(lifecycle.CourseThread):
    """Carry out a crash plan on the orders services of both sides (see the module's doc).

    ``placements`` receives ``(number, time.monotonic())`` for every order placed; ``usual``
    is each side's usual answer time (seconds, measured before the fault); ``start`` is when
    the fault began (time.monotonic()). ``records`` says, crash by crash, what happened.
    """

    KIND = "fault"

    def __init__(self, plan: list[Crash], services: Mapping[str, ServiceProcess], usual: Mapping[str, float],
                 start: float, placements: queue.Queue[tuple[int, float]], clock: Callable[[], float]):
        super().__init__()
        self.plan, self.services, self.usual = plan, dict(services), dict(usual)
        self.start_at, self.placements, self.clock = start, placements, clock
        self.name = "capstone-crashes"
        self.records: list[dict[str, Any]] = []

    def _next_order(self, after: float) -> tuple[int, float] | None:
        """The first order placed at or after ``after`` (time.monotonic()); None if stopped."""
        while not self._stop.is_set():
            try:
                number, at = self.placements.get(timeout=0.05)
            except queue.Empty:
                continue
            if at >= after:
                return number, at
        return None

    def _run(self) -> None:
        for i, crash in enumerate(self.plan, 1):
            found = self._next_order(self.start_at + crash.after)
            if found is None:
                return
            number, placed = found
            record: dict[str, Any] = {"crash": i, "order": number, "fraction": crash.fraction}
            moments = sorted((placed + crash.fraction * self.usual[side], side) for side in self.services)
            for moment, side in moments:
                if self._stop.wait(max(0.0, moment - time.monotonic())):
                    return
                service = self.services[side]
                if service.ready:
                    service.crash()
                    record[side] = {"at": round(self.clock(), 4), "after": round(moment - placed, 4)}
                else:
                    record[side] = None  # still restarting from the previous crash: nothing to crash
            self.records.append(record)
