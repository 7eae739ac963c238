"""How a check grades a learner: run their code, turn what happened into feedback.

A check is a function decorated with :func:`check`. Its body runs the learner's code
through :func:`learner` (or a :class:`Deadline` when it may hang), judges what happened,
and either returns a success message or raises :class:`Fail` (what is wrong, and a
hint). The decorator turns that into a :class:`CheckResult`:

* ``Passed: ...``, recorded in :mod:`helpers.core.progress` (unless the package's
  ``RECORD_PROGRESS`` is False: the solution notebooks switch it off);
* ``Not yet: ...`` plus a ``Hint:`` when the body raised :class:`Fail`, when the
  learner's code is still the TODO stub (:class:`Todo`), or when it raised
  (:class:`LearnerError`, naming the line of their cell); then :class:`NotYet` is
  raised, which Jupyter shows as the feedback only, no traceback;
* ``The check itself could not run`` when the check broke (never the learner's fault).
"""
from __future__ import annotations

import functools
import html
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from IPython import get_ipython
from IPython.display import display

from ..core import progress, style
from ..core.lifecycle import THREAD_PREFIX
from ..core.wait import wait_until

#: Frames in these folders are not the learner's: feedback names the learner's own line.
_LIBRARY_DIRS = (str(Path(__file__).resolve().parents[1]), sys.prefix, sys.base_prefix, "<frozen")

#: The status of a result, its colour (from helpers.core.style), and an icon (meaning never rides on colour alone).
_LOOK = {"passed": (style.TEXT_COLOR["ok"], "✅"), "not yet": (style.OKABE_ITO["orange"], "🟡"),
         "error": (style.TEXT_COLOR["error"], "⚠️")}

@dataclass
class CheckResult:
    """The outcome of one check: ``passed``, the feedback ``message`` and measured ``details``."""

    lab: int
    check: str
    passed: bool
    message: str
    status: str = "passed"  # "passed" | "not yet" | "error" (the check itself could not run)
    details: dict[str, Any] = field(default_factory=dict)
    _shown_in: int | None = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def title(self) -> str:
        """'Lab 2 · producer'."""
        return f"Lab {self.lab} · {self.check.replace('_', ' ')}"

    def text(self, color: bool = False) -> str:
        """The feedback as plain text (with ANSI colour for a terminal if ``color``)."""
        if not color:
            return f"[{self.title}] {self.message}"
        tint = {"passed": "32", "not yet": "33", "error": "31"}[self.status]
        head, _, rest = self.message.partition("\n")
        return f"\x1b[1;{tint}m[{self.title}] {head}\x1b[0m" + (f"\n{rest}" if rest else "")

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"<CheckResult {self.title}: {self.status}>"

    def _ipython_display_(self) -> None:
        """Show the feedback once per cell: the check displays it, and the cell's value
        (this same result) is then not shown a second time."""
        count = getattr(get_ipython(), "execution_count", None)
        if self._shown_in is not None and self._shown_in == count:
            return
        self._shown_in = count
        display({"text/plain": self.text(), "text/html": self._repr_html_()}, raw=True)

    def _repr_html_(self) -> str:
        tint, icon = _LOOK[self.status]
        head, _, rest = self.message.partition("\n")
        body = html.escape(rest).replace("\n", "<br>")
        # The role colour marks the border and, at 12 % opacity (hex alpha 1f), the background.
        return (f'<div style="border-left:4px solid {tint};background:{tint}1f;padding:6px 10px;margin:4px 0">'
                f"<b>{icon} {html.escape(self.title)}: {html.escape(head)}</b>"
                + (f'<div style="margin-top:4px">{body}</div>' if rest else "") + "</div>")


class NotYet(Exception):
    """A check did not pass. The message is the feedback; ``.result`` the CheckResult.

    In Jupyter only the feedback is shown (``_render_traceback_``), not a traceback:
    the problem is in the learner's code, and the feedback says where.
    """

    def __init__(self, result: CheckResult):
        super().__init__(result.text())
        self.result = result

    def _render_traceback_(self) -> list[str]:
        return self.result.text(color=True).split("\n")


class Fail(Exception):
    """Raised inside a check: what is wrong, and a hint (``details``: measured values)."""

    def __init__(self, problem: str, hint: str = "", **details: Any):
        super().__init__(problem)
        self.problem, self.hint, self.details = problem, hint, details


class Todo(Exception):
    """The learner's code is still the TODO stub."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class LearnerError(Exception):
    """The learner's code raised; ``exc`` is what it raised, ``where`` the line of their cell."""

    def __init__(self, name: str, exc: BaseException):
        super().__init__(f"{name} raised {type(exc).__name__}")
        self.name, self.exc, self.where = name, exc, _where(exc)


def _where(exc: BaseException) -> str:
    """' (line 7 of your cell: `x = y`)' for the innermost frame outside helpers and libraries."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not f.filename.startswith(_LIBRARY_DIRS) and "site-packages" not in f.filename]
    if not mine:
        return ""
    frame = mine[-1]
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f" (line {frame.lineno} of your cell{code})"


def name_of(fn: Any) -> str:
    """The name feedback uses for the learner's function."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def learner(fn: Any, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call learner code: the stub becomes :class:`Todo`, any other exception :class:`LearnerError`."""
    name = name or name_of(fn)
    if fn is ... or fn is None:
        raise Todo(f"`{name}` is not defined yet")
    if not callable(fn):
        raise Fail(f"`{name}` should be a function, but it is a {type(fn).__name__}.",
                   "Pass the function itself (its name, no parentheses) to the check.")
    try:
        return fn(*args, **kwargs)
    except (Fail, Todo, LearnerError):  # from a check helper wrapped around learner code
        raise
    except NotImplementedError:
        raise Todo(f"`{name}` still has the TODO stub") from None
    except Exception as exc:  # noqa: BLE001 - anything the learner's code raises becomes feedback
        raise LearnerError(name, exc) from None


def require_value(name: str, value: Any) -> Any:
    """A top-level answer such as ``TIMEOUT = ...`` that is still the placeholder is a TODO."""
    if value is ...:
        raise Todo(f"`{name}` is still `...`")
    return value


class Deadline:
    """Run learner code in a thread with a time limit. If it overruns, ``rescue`` (e.g.
    bring the service back) usually lets it finish, so no thread is left behind."""

    def __init__(self, fn: Any, *args: Any, name: str | None = None):
        self.fn, self.args, self.name = fn, args, name or name_of(fn)
        self.value: Any = None
        self.error: BaseException | None = None
        self.elapsed = math.nan

    def run(self, seconds: float, rescue: Callable[[], object] | None = None, grace: float = 10.0,
            give_up: Callable[[], bool] | None = None) -> bool:
        """True if it returned (or raised: re-raised here) within ``seconds``. ``give_up()``,
        if given, is asked as it runs: True ends the wait early, as an overrun (the code is
        clearly not going to return, e.g. it already made ten times the requests allowed)."""
        def target() -> None:
            started = time.perf_counter()
            try:
                self.value = learner(self.fn, *self.args, name=self.name)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the check's thread
                self.error = exc
            finally:
                self.elapsed = time.perf_counter() - started

        thread = threading.Thread(target=target, name=f"{THREAD_PREFIX}check-{self.name}", daemon=True)
        thread.start()
        if give_up is None:
            thread.join(seconds)
        else:
            wait_until(lambda: not thread.is_alive() or give_up(), seconds, f"{self.name} to return",
                       interval=0.02, strict=False)
        if not thread.is_alive():
            if self.error is not None:
                raise self.error
            return True
        if rescue is not None:
            rescue()
        thread.join(grace)
        return False


#: Every check, by (lab, name).
CHECKS: dict[tuple[int, str], Callable[..., CheckResult]] = {}


def _record_progress() -> bool:
    """``helpers.checks.RECORD_PROGRESS``, read when a check passes (a solution notebook sets it)."""
    return bool(getattr(sys.modules.get(__package__ or ""), "RECORD_PROGRESS", True))


def check(lab: int, name: str) -> Callable[[Callable[..., str]], Callable[..., CheckResult]]:
    """Turn a function that returns a success message (or raises :class:`Fail`) into a check
    ``f(*args, stop=True, quiet=False, **kwargs) -> CheckResult`` of ``lab`` named ``name``."""
    if name not in progress.LABS[lab].checks:
        raise ValueError(f"name must be a check of lab {lab} in helpers.core.progress.LABS, got {name!r}")

    def decorate(body: Callable[..., str]) -> Callable[..., CheckResult]:
        @functools.wraps(body)
        def run(*args: Any, stop: bool = True, quiet: bool = False, **kwargs: Any) -> CheckResult:
            result = _evaluate(lab, name, body, args, kwargs)
            if result.passed and _record_progress():
                try:
                    progress.record(lab, name)
                except OSError as exc:  # a read-only home must not fail a correct solution
                    result.message += f"\n(progress not saved: {exc})"
            elif result.passed:
                result.message += "\n(not recorded as your progress: this is the solution notebook)"
            if not result.passed and stop:
                raise NotYet(result)
            if not quiet:
                show(result)
            return result

        run.lab, run.check = lab, name  # type: ignore[attr-defined]  # tests find a check's lab and name
        CHECKS[(lab, name)] = run
        return run

    return decorate


def _evaluate(lab: int, name: str, body: Callable[..., str], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> CheckResult:
    def result(passed: bool, message: str, status: str, details: dict[str, Any] | None = None) -> CheckResult:
        return CheckResult(lab, name, passed, message, status, details or {})

    try:
        message = body(*args, **kwargs)
        return result(True, f"Passed: {message}", "passed")
    except Todo as todo:
        return result(False, f"Not yet: {todo.what}.\nHint: replace the `# TODO` and the "
                             "`raise NotImplementedError` (or the `...`) with your code, run that cell, "
                             "then run this check again.", "not yet")
    except Fail as fail:
        text = f"Not yet: {fail.problem}" + (f"\nHint: {fail.hint}" if fail.hint else "")
        return result(False, text, "not yet", fail.details)
    except LearnerError as err:
        exc = err.exc
        return result(False, f"Not yet: your `{err.name}` raised {type(exc).__name__}: {exc}{err.where}.\n"
                             "Hint: run your function by hand on a small example to see the error, "
                             "fix it, and run the check again.", "not yet")
    except Exception as exc:  # noqa: BLE001 - a broken check must say so, not print a traceback
        return result(False, f"The check itself could not run: {type(exc).__name__}: {exc}.\n"
                             "This is not your fault: make sure Kafka is up (`python -m helpers doctor`) "
                             "and run the check again.", "error", {"traceback": traceback.format_exc()})


def show(result: CheckResult) -> None:
    """Display ``result`` in Jupyter (HTML), or print it (plain Python)."""
    if get_ipython() is not None:
        result._shown_in = None
        result._ipython_display_()
        return
    print(result.text())


def ms(seconds: float) -> str:
    """'250 ms', or '12.5 s' from 10 s on."""
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"
