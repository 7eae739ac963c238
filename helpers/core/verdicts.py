"""Verdicts: every claim check says, in one line, what was measured.

The cell tagged ``claim-Cn`` measures; the check cell after it computes the comparison
(always relative to a baseline measured in the same run) and hands it to :func:`check`::

    with verdicts.measuring("C6"):                     # claim cell: marks the measurement
        timings = experiments.measure_publish(wf, N_ORDERS)

    # check: C6
    verdicts.check("C6", timings.ack_p50 < timings.processing_delay / 3,
                   {"acknowledged in": verdicts.duration(timings.ack_p50),
                    "processed after": verdicts.duration(timings.processing_delay)},
                   expected="the acknowledgement within a third of the processing delay")

On success it prints ``C6 holds: acknowledged in 3.1 ms, processed after 500 ms``. On
failure it raises :class:`ClaimFailed` (an ``AssertionError``, so nbval, papermill and CI
fail) whose text says what was measured, what was expected, whether the machine looked
busy during the measurement, and what to try; Jupyter shows that text in place of a
traceback (``_render_traceback_``), so the learner reads it once, without frames.

The busy report compares CPU times sampled at the start of the measurement and at the
check: the share of the machine's CPU that *other* programs used (everything but this
kernel, its child processes and the embedded broker), the share stolen by a hypervisor,
and the 1-minute load average per CPU. The start is marked by :func:`measuring` (the
block) or :func:`start` (until the check); without either, the window runs from the
previous check (or, before the first check, from the first :func:`start` or :func:`measuring`),
and with no usable window only the load average is reported. Nothing is sampled when this
module is imported: the first window opens at the first call.
"""
from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

#: The machine "looked busy" if, during the measurement, other programs used this share of
#: all CPUs, or this share was stolen by the hypervisor ...
OTHERS_BUSY = 0.5
STEAL_BUSY = 0.1
#: ... or, when no measurement window is known, the 1-minute load average per CPU reached this.
LOAD_BUSY = 1.0
#: Windows shorter than this are too short for CPU-time shares; the load average is used instead.
MIN_WINDOW_S = 0.5

_CLAIM = re.compile(r"C[1-9][0-9]*")
ADVICE = ("re-run the measurement cell above and then this one; close other programs (browser tabs, "
          "builds, video calls); or set a larger TIME_SCALE in the parameters cell (for example "
          "TIME_SCALE = 2.0), so the course's timings stand further above the machine's noise")


class ClaimFailed(AssertionError):
    """A claim check failed; ``str()`` is the whole verdict (measured, expected, machine, advice)."""

    def __init__(self, claim: str, text: str) -> None:
        super().__init__(text)
        self.claim = claim
        self.text = text

    def __str__(self) -> str:
        return self.text

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the verdict alone (the frames are noise here)."""
        return self.text.splitlines()


# ------------------------------------------------------------------ sampling the machine

@dataclass(frozen=True)
class Sample:
    """CPU counters at one instant (seconds of CPU time, summed over every CPU)."""

    t: float                  # time.monotonic()
    total: float              # all CPU time the machine had
    busy: float               # CPU time not idle (includes the course's own and stolen time)
    steal: float | None       # stolen by the hypervisor (None where the OS does not say)
    own: float                # used by this process, its children and the embedded broker
    load: float | None        # 1-minute load average per CPU (None where unavailable)


def _tree_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    # children_* hold the reaped children, so a child that exits mid-window stays counted
    return float(times.user + times.system + getattr(times, "children_user", 0.0)
                 + getattr(times, "children_system", 0.0))


#: Processes of the course that are not this kernel's descendants, counted as its own (the
#: embedded broker outlives kernels): callables that return a pid or None, added by
#: :func:`count_as_own` from the package that starts them (core imports no other package).
_OWN_PROCESSES: list[Callable[[], int | None]] = []


def count_as_own(pid_of: Callable[[], int | None]) -> None:
    """Count the process ``pid_of()`` names as the course's own when judging whether the machine
    was busy (:mod:`helpers.kafka.embedded` adds the embedded broker's)."""
    if pid_of not in _OWN_PROCESSES:
        _OWN_PROCESSES.append(pid_of)


def _other_own_pids() -> list[int]:
    pids = []
    for pid_of in _OWN_PROCESSES:
        try:
            pid = pid_of()
        except (OSError, ValueError):
            continue
        if pid is not None:
            pids.append(pid)
    return pids


def _own_cpu() -> float:
    """CPU seconds of this process, its live descendants and the embedded broker."""
    try:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for pid in _other_own_pids():
        if pid not in {p.pid for p in procs}:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
    total = 0.0
    for proc in procs:
        try:
            total += _tree_cpu(proc) if proc is me else proc.cpu_times().user + proc.cpu_times().system
        except psutil.Error:  # gone since the listing
            pass
    return total


def sample_machine() -> Sample:
    """Read the machine's CPU counters now (cheap: a few system calls)."""
    cpu = psutil.cpu_times()
    fields = cpu._asdict()
    # on Linux, guest time is already inside user (and guest_nice inside nice)
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    try:
        load: float | None = os.getloadavg()[0] / (psutil.cpu_count() or 1)
    except (AttributeError, OSError):
        load = None
    return Sample(time.monotonic(), total, total - idle, fields.get("steal"), _own_cpu(), load)


@dataclass(frozen=True)
class Machine:
    """How busy the machine was during a measurement window."""

    window_s: float | None     # None: no usable window (load average only)
    others: float | None       # share of all CPUs used by other programs
    steal: float | None        # share of all CPUs stolen by the hypervisor
    load: float | None         # 1-minute load average per CPU
    since: str                 # where the window started, in words

    @property
    def busy(self) -> bool:
        """True if the machine looked busy (see OTHERS_BUSY, STEAL_BUSY, LOAD_BUSY)."""
        if self.window_s is not None:
            return bool((self.others or 0.0) >= OTHERS_BUSY or (self.steal or 0.0) >= STEAL_BUSY)
        return self.load is not None and self.load >= LOAD_BUSY

    def describe(self) -> str:
        """One line: busy or idle, and the numbers behind it."""
        parts = []
        if self.window_s is not None:
            parts.append(f"other programs used {self.others or 0.0:.0%} of the CPUs")
            parts.append("CPU time stolen: n/a" if self.steal is None else f"CPU time stolen {self.steal:.0%}")
        if self.load is not None:
            parts.append(f"load average {self.load:.2f} per CPU")
        where = (f"during the {self.window_s:.1f} s {self.since}" if self.window_s is not None
                 else "(no measurement window was marked: load average only)")
        verdict = "looked BUSY" if self.busy else "looked idle"
        return f"{verdict} {where}: {', '.join(parts) or 'no counters available'}"


def assess(first: Sample | None, last: Sample, since: str = "since the measurement started") -> Machine:
    """Compare two samples: the CPU shares used by other programs and stolen, and the load."""
    if first is None or last.t - first.t < MIN_WINDOW_S or last.total <= first.total:
        return Machine(None, None, None, last.load, since)
    total = last.total - first.total
    steal = None if first.steal is None or last.steal is None else max(0.0, last.steal - first.steal)
    others = max(0.0, (last.busy - first.busy) - (steal or 0.0) - (last.own - first.own))
    return Machine(last.t - first.t, min(1.0, others / total),
                   None if steal is None else min(1.0, steal / total), last.load, since)


_MARKS: dict[str, tuple[Sample, Sample | None, str]] = {}
#: Where the window of a check without a mark starts, and how to say it (None: no window yet).
_PREVIOUS: tuple[Sample, str] | None = None


def _remember_previous() -> None:
    global _PREVIOUS
    try:
        _PREVIOUS = (sample_machine(), "since the previous check")
    except (psutil.Error, OSError):  # the verdict still works, without a window
        _PREVIOUS = None


def _opened(first: Sample, claim: str) -> Sample:
    """``first``, the start of ``claim``'s measurement; the first one also opens the window of a
    check without a mark (until then there is none: nothing is sampled at import)."""
    global _PREVIOUS
    if _PREVIOUS is None:
        _PREVIOUS = (first, f"since the measurement of {claim} began")
    return first


def start(claim: str) -> None:
    """Mark the start of ``claim``'s measurement (call it first in the claim cell)."""
    _check_claim(claim)
    _MARKS[claim] = (_opened(sample_machine(), claim), None, f"since verdicts.start({claim!r})")


@contextmanager
def measuring(claim: str) -> Iterator[None]:
    """``with verdicts.measuring("C6"): ...``: the block is the window the busy report covers."""
    _check_claim(claim)
    first = _opened(sample_machine(), claim)
    try:
        yield
    finally:
        _MARKS[claim] = (first, sample_machine(), "of the measurement")


def _window(claim: str) -> Machine:
    now = sample_machine()
    if claim in _MARKS:
        first, last, since = _MARKS.pop(claim)
        return assess(first, last or now, since)
    if _PREVIOUS is None:
        return assess(None, now)
    return assess(_PREVIOUS[0], now, _PREVIOUS[1])


# ------------------------------------------------------------------ formatting numbers

def duration(seconds: float) -> str:
    """``0.0031`` -> ``'3.1 ms'``; ``0.00004`` -> ``'40 µs'``; ``12.5`` -> ``'12.5 s'``."""
    _check_number("seconds", seconds)
    if seconds != 0 and abs(seconds) < 1e-3:
        return f"{_number(seconds * 1e6)} µs"
    if abs(seconds) < 1:
        return f"{_number(seconds * 1e3)} ms"
    return f"{_number(seconds)} s"


def times(factor: float) -> str:
    """``37.61`` -> ``'37.6x'`` (how many times larger)."""
    _check_number("factor", factor)
    return f"{_number(factor)}x"


def percent(fraction: float) -> str:
    """``0.875`` -> ``'87.5%'``."""
    _check_number("fraction", fraction)
    return f"{fraction * 100:.1f}%"


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` for measured quantities >= 0 (``inf`` when only the denominator is 0)."""
    _check_number("numerator", numerator, minimum=0.0)
    _check_number("denominator", denominator, minimum=0.0)
    if denominator == 0:
        if numerator == 0:
            raise ValueError("denominator and numerator are both 0: the ratio is undefined")
        return math.inf
    return numerator / denominator


def _number(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    return f"{value:,.0f}" if size >= 100 else f"{value:.3g}"


def _check_number(name: str, value: float, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if minimum is not None and (value < minimum or math.isinf(value)):
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")


# ------------------------------------------------------------------ the verdict

def _check_claim(claim: object) -> str:
    if not isinstance(claim, str) or not _CLAIM.fullmatch(claim):
        raise ValueError(f"claim must be a claim id like 'C6' (C and a number, see docs/claims.md), got {claim!r}")
    return claim


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's bool too
        return bool(value)
    raise ValueError(f"{name} must be a bool (the comparison computed in the cell), got {value!r}")


def _conditions(holds: object) -> dict[str, bool]:
    if isinstance(holds, Mapping):
        if not holds:
            raise ValueError("holds must not be an empty mapping")
        out = {}
        for name, value in holds.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"holds: every condition must be named by a non-empty string, got {name!r}")
            out[name] = _as_bool(f"holds[{name!r}]", value)
        return out
    return {"": _as_bool("holds", holds)}


def _render(measured: object) -> str:
    if not isinstance(measured, Mapping) or not measured:
        raise ValueError(f"measured must be a non-empty mapping of what was measured to its value, got {measured!r}")
    parts = []
    for name, value in measured.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"measured: every value must be named by a non-empty string, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"measured[{name!r}] must be a number or a formatted string, got {value!r}")
        parts.append(f"{name} {value if isinstance(value, str) else _number(value)}")
    text = ", ".join(parts)
    if not any(ch.isdigit() for ch in text):
        raise ValueError(f"measured must carry at least one number, got {text!r}")
    return text


def check(claim: str, holds: bool | Mapping[str, bool], measured: Mapping[str, float | str], expected: str,
          *, advice: str = "") -> None:
    """Print the one-line verdict on ``claim``, or raise :class:`ClaimFailed` saying why it does not hold.

    ``holds`` is the comparison computed in the cell (relative to a baseline measured in
    the same run), or a mapping ``{condition in words: bool}`` so a failure names which
    failed. ``measured`` maps a phrase to its value and reads as ``"<phrase> <value>"``
    (format durations with :func:`duration`, factors with :func:`times`). ``expected``
    says in words what would make the claim hold; ``advice`` adds a claim-specific hint.
    """
    __tracebackhide__ = True  # IPython and pytest show the verdict, not this frame
    _check_claim(claim)
    conditions = _conditions(holds)
    numbers = _render(measured)
    if not isinstance(expected, str) or not expected.strip():
        raise ValueError(f"expected must say in words what the claim needs, got {expected!r}")
    if not isinstance(advice, str):
        raise ValueError(f"advice must be a string, got {advice!r}")
    try:
        machine: Machine | None = _window(claim)
    except (psutil.Error, OSError):
        machine = None
    _remember_previous()
    if all(conditions.values()):
        print(f"{claim} holds: {numbers}", flush=True)
        return
    failed = [name for name, ok in conditions.items() if not ok and name]
    lines = [f"{claim} does NOT hold.", f"  measured: {numbers}", f"  expected: {expected.strip()}"]
    if failed:
        lines.append(f"  failed:   {'; '.join(failed)}")
    if machine is None:
        lines.append("  machine:  could not be sampled")
    else:
        lines.append(f"  machine:  {machine.describe()}")
    tips = [advice.strip()] if advice.strip() else []
    tips.append(ADVICE)
    if machine is not None and not machine.busy:
        tips.append("if it fails again on an idle machine, the course may be at fault: please report it "
                    "with this message")
    lines.append(f"  try:      {'; '.join(tips)}.")
    raise ClaimFailed(claim, "\n".join(lines)) from None
