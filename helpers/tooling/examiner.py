"""The grader's side inside the kernel that runs a submission (``python -m helpers grade``).

:mod:`helpers.tooling.grade` executes a submission cell by cell. Its first cell, before any of
the learner's, calls :func:`arm`, which keeps the lab's checks (``helpers.checks.feedback.CHECKS``)
as they are then; every check cell of the course is rewritten to call :func:`grade` with that
kept check (:mod:`helpers.tooling.submission`), so a learner's cell that later rebinds
``checks``, one of its functions or ``helpers.core.progress`` changes nothing. :func:`grade`:

* runs the check with ``stop=False`` (an unfinished task does not stop the notebook: every check
  is scored on its own) and shows its feedback as the learner would have seen it;
* samples the machine around it (``helpers.core.verdicts``' busy report) and runs it again when
  it did not pass while the machine looked busy over the check's own run (one long enough for
  the report to measure: at least ``verdicts.MIN_WINDOW_S``), or when the check itself could
  not run, up to ``reruns`` more times; each attempt is recorded;
* ends the cell with one output of type :data:`MIME` holding the result and the cell's nonce.
  The grader reads that output of the check cell only, so a learner's cell that prints or
  displays "Passed" earns nothing, and it scores 0 a check cell that shows more than one.

The learner's code runs in this same kernel, as in nbgrader or otter-grader: code written to
tamper with the grader from inside it is out of the grader's reach, and what a teacher should
look at is flagged (:func:`helpers.tooling.submission.flags`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from IPython.display import display

from ..checks import feedback
from ..core import verdicts

#: The output type of a check cell's record.
MIME = "application/vnd.asynchronous-events.grade+json"

_KEPT: dict[str, Callable[..., Any]] = {}
_ARMED: dict[str, int] = {"lab": 0, "reruns": 1}


def arm(lab: int, reruns: int = 1) -> None:
    """Keep lab ``lab``'s checks as they are now (before any learner code ran)."""
    if reruns < 0:
        raise ValueError(f"reruns must be 0 or more, got {reruns!r}")
    _KEPT.clear()
    _KEPT.update({name: fn for (number, name), fn in feedback.CHECKS.items() if number == lab})
    if not _KEPT:
        raise ValueError(f"lab must be a lab with checks, got {lab!r}")
    _ARMED.update(lab=lab, reruns=reruns)


def check(name: str) -> Callable[..., Any]:
    """The kept check ``name`` of the armed lab."""
    return _KEPT[name]


def _attempt(name: str, call: Callable[[], Any]) -> feedback.CheckResult:
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - the arguments the notebook was to provide are missing
        return feedback.CheckResult(
            _ARMED["lab"], name, False,
            f"Not yet: the check could not run with what your notebook defined: {type(exc).__name__}: {exc}.\n"
            "Hint: every cell above this check must run without an error (Kernel > Restart Kernel and Run "
            "All Cells shows the first that does not).", "not yet")
    if not isinstance(result, feedback.CheckResult):
        return feedback.CheckResult(_ARMED["lab"], name, False, f"The check itself could not run: it returned "
                                    f"{type(result).__name__}.", "error")
    return result


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it (measured details may be any type)."""
    return json.loads(json.dumps(value, default=repr))


def grade(name: str, nonce: str, call: Callable[[], Any]) -> None:
    """Run the check ``call()`` (the kept check with its notebook arguments), again while it
    fails on a busy machine, show its feedback, and record it for the grader."""
    attempts: list[dict[str, Any]] = []
    result = None
    for _ in range(1 + _ARMED["reruns"]):
        first = verdicts.sample_machine()
        started = time.monotonic()
        result = _attempt(name, call)
        machine = verdicts.assess(first, verdicts.sample_machine(), "of the check")
        attempts.append({"status": result.status, "seconds": round(time.monotonic() - started, 2),
                         "busy": machine.busy, "machine": machine.describe()})
        # Re-run what a busy machine may have failed: a check long enough for the busy report to
        # measure its own window (a stub, a wrong value or an exception fails at once, busy or not),
        # or a check that could not run at all.
        if result.passed or not (result.status == "error" or (machine.busy and machine.window_s is not None)):
            break
    assert result is not None
    feedback.show(result)
    display({MIME: {"nonce": nonce, "check": name, "passed": result.passed, "status": result.status,
                    "message": result.message, "details": _plain(result.details), "attempts": attempts}},
            raw=True)
