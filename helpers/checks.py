"""Checks a learner runs after each lab task: they run *your* code against real
services and Kafka and say what is wrong and how to fix it.

Every check ``check_labN_<task>(...)``:

* calls your function in its own small scenario (fresh topics, fresh groups, its own
  faults) and judges what happened: events on the topic, counts, offsets, latency.
  Any code that behaves right passes, not only the lab's solution;
* prints friendly feedback: ``Passed: ...`` or ``Not yet: <what is wrong>`` plus a
  ``Hint:``. An exception raised by your code is reported as feedback (with the
  line of your cell it came from), never as a traceback from inside helpers; the
  TODO stub's ``NotImplementedError`` gives "Not yet: ... still a TODO";
* returns a :class:`CheckResult` (``.passed``, ``.message``) when it passes and records
  the pass in :mod:`helpers.progress`;
* when it does not pass, raises :class:`NotYet` (message = the feedback), which stops a
  "Run all" at the first unfinished task; Jupyter shows only the feedback, no
  traceback. ``stop=False`` returns the failed result instead (tests use it).

Also here: the lab scenarios (``lab1_sabotage`` ...), small set-ups a lab calls so
that its cells stay short.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import math
import random
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import progress

_HELPERS_DIR = str(Path(__file__).resolve().parent)

__all__ = [
    "CHECKS", "RECORD_PROGRESS", "CheckResult", "NotYet", "Table",
    "check_lab1_weakest_link", "check_lab1_timeout", "check_lab1_retries", "check_lab1_breaker",
    "lab1_sabotage", "lab1_compare", "healthy",
    "check_lab2_envelope", "check_lab2_producer", "check_lab2_consumer",
    "check_lab3_commit_strategy", "check_lab3_audit", "check_lab3_idempotent_handler", "crash_drill", "DrillResult",
    "check_lab4_plan", "check_lab4_drain", "lab4_figure",
    "check_lab5_correlation", "check_lab5_wait_for_result", "check_lab5_pending", "lab5_shop", "Shop", "Fulfilment",
]


# =========================================================================== results


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
        return f"Lab {self.lab} · {self.check.replace('_', ' ')}"

    def text(self, color: bool = False) -> str:
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
        from IPython import get_ipython
        from IPython.display import display

        ip = get_ipython()
        count = getattr(ip, "execution_count", None)
        if self._shown_in is not None and self._shown_in == count:
            return
        self._shown_in = count
        display({"text/plain": self.text(), "text/html": self._repr_html_()}, raw=True)

    def _repr_html_(self) -> str:
        import html

        colors = {"passed": ("#e8f5e9", "#2e7d32", "✅"), "not yet": ("#fff8e1", "#b26a00", "🟡"),
                  "error": ("#ffebee", "#c62828", "⚠️")}
        bg, fg, icon = colors[self.status]
        head, _, rest = self.message.partition("\n")
        body = html.escape(rest).replace("\n", "<br>")
        return (f'<div style="border-left:4px solid {fg};background:{bg};padding:6px 10px;margin:4px 0">'
                f'<b style="color:{fg}">{icon} {html.escape(self.title)}: {html.escape(head)}</b>'
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


class _Fail(Exception):
    """Raised inside a check: what is wrong, and a hint."""

    def __init__(self, problem: str, hint: str = "", **details: Any):
        super().__init__(problem)
        self.problem, self.hint, self.details = problem, hint, details


class _Todo(Exception):
    """The learner's code is still the TODO stub."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _LearnerError(Exception):
    """The learner's code raised; ``exc`` is what it raised, ``where`` the line of their cell."""

    def __init__(self, name: str, exc: BaseException):
        super().__init__(f"{name} raised {type(exc).__name__}")
        self.name, self.exc, self.where = name, exc, _where(exc)


def _where(exc: BaseException) -> str:
    """' (line 7 of your cell: `x = y`)' for the innermost frame outside helpers and libraries."""
    frames = traceback.extract_tb(exc.__traceback__)
    library = (_HELPERS_DIR, sys.prefix, sys.base_prefix, "<frozen")
    mine = [f for f in frames if not f.filename.startswith(library) and "site-packages" not in f.filename]
    if not mine:
        return ""
    frame = mine[-1]
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f" (line {frame.lineno} of your cell{code})"


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _learner(fn: Callable, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
    """Call learner code: the stub becomes _Todo, any other exception _LearnerError."""
    name = name or _name(fn)
    if fn is ... or fn is None:
        raise _Todo(f"`{name}` is not defined yet")
    if not callable(fn):
        raise _Fail(f"`{name}` should be a function, but it is a {type(fn).__name__}.",
                    "Pass the function itself (its name, no parentheses) to the check.")
    try:
        return fn(*args, **kwargs)
    except (_Fail, _Todo, _LearnerError):  # from a check helper wrapped around learner code
        raise
    except NotImplementedError:
        raise _Todo(f"`{name}` still has the TODO stub") from None
    except Exception as exc:  # noqa: BLE001 - anything the learner's code raises becomes feedback
        raise _LearnerError(name, exc) from None


def _require_value(name: str, value: Any) -> Any:
    """A top-level answer such as ``TIMEOUT = ...`` that is still the placeholder."""
    if value is ...:
        raise _Todo(f"`{name}` is still `...`")
    return value


class _Deadline:
    """Run learner code in a thread with a time limit. If it overruns, ``rescue`` (e.g.
    bring the service back) usually lets it finish, so no thread is left behind."""

    def __init__(self, fn: Callable, *args: Any, name: str | None = None):
        self.fn, self.args, self.name = fn, args, name or _name(fn)
        self.value: Any = None
        self.error: BaseException | None = None
        self.elapsed = math.nan

    def run(self, seconds: float, rescue: Callable[[], None] | None = None, grace: float = 10.0) -> bool:
        """True if it returned (or raised) within ``seconds``."""
        def target():
            started = time.perf_counter()
            try:
                self.value = _learner(self.fn, *self.args, name=self.name)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the check's thread
                self.error = exc
            finally:
                self.elapsed = time.perf_counter() - started

        thread = threading.Thread(target=target, name=f"check-{self.name}", daemon=True)
        thread.start()
        thread.join(seconds)
        if not thread.is_alive():
            if self.error is not None:
                raise self.error
            return True
        if rescue is not None:
            rescue()
        thread.join(grace)
        return False


def _check(lab: int, name: str):
    """Turn a function that returns a success message (or raises _Fail) into a check."""
    if name not in progress.LABS[lab].checks:
        raise ValueError(f"{name!r} is not a check of lab {lab} in helpers.progress.LABS")

    def decorate(body: Callable[..., str]):
        @functools.wraps(body)
        def run(*args: Any, stop: bool = True, quiet: bool = False, **kwargs: Any) -> CheckResult:
            result = _evaluate(lab, name, body, args, kwargs)
            if result.passed and RECORD_PROGRESS:
                try:
                    progress.record(lab, name)
                except OSError as exc:  # a read-only home must not fail a correct solution
                    result.message += f"\n(progress not saved: {exc})"
            elif result.passed:
                result.message += "\n(not recorded as your progress: this is the solution notebook)"
            if not result.passed and stop:
                raise NotYet(result)
            if not quiet:
                _show(result)
            return result

        run.lab, run.check = lab, name
        CHECKS[(lab, name)] = run
        return run

    return decorate


#: Passing checks are recorded in helpers.progress. The generated *solution* notebooks set
#: this to False first, so running them (in CI, or to peek) does not count as doing the lab.
RECORD_PROGRESS = True

#: Every check, by (lab, name).
CHECKS: dict[tuple[int, str], Callable[..., CheckResult]] = {}


def _evaluate(lab: int, name: str, body: Callable[..., str], args: tuple, kwargs: dict) -> CheckResult:
    def result(passed: bool, message: str, status: str, details: dict | None = None) -> CheckResult:
        return CheckResult(lab, name, passed, message, status, details or {})

    try:
        message = body(*args, **kwargs)
        return result(True, f"Passed: {message}", "passed")
    except _Todo as todo:
        return result(False, f"Not yet: {todo.what}.\nHint: replace the `# TODO` and the "
                             "`raise NotImplementedError` (or the `...`) with your code, run that cell, "
                             "then run this check again.", "not yet")
    except _Fail as fail:
        text = f"Not yet: {fail.problem}" + (f"\nHint: {fail.hint}" if fail.hint else "")
        return result(False, text, "not yet", fail.details)
    except _LearnerError as err:
        exc = err.exc
        return result(False, f"Not yet: your `{err.name}` raised {type(exc).__name__}: {exc}{err.where}.\n"
                             "Hint: run your function by hand on a small example to see the error, "
                             "fix it, and run the check again.", "not yet")
    except Exception as exc:  # noqa: BLE001 - a broken check must say so, not print a traceback
        return result(False, f"The check itself could not run: {type(exc).__name__}: {exc}.\n"
                             "This is not your fault: make sure Kafka is up (`python -m helpers doctor`) "
                             "and run the check again.", "error", {"traceback": traceback.format_exc()})


def _show(result: CheckResult) -> None:
    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            result._shown_in = None
            result._ipython_display_()
            return
    except ImportError:
        pass
    print(result.text())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


# =========================================================================== lab 1: break the chain


def lab1_sabotage(chain, seed: int | None = None) -> None:
    """Make one service of ``chain`` (which one is a secret) much flakier than the others.

    Every service fails now and then (2 %); the chosen one fails 25 % of the time.
    """
    rng = random.Random(seed)
    weak = rng.randrange(len(chain))
    for i, svc in enumerate(chain):
        svc.configure(error_rate=0.25 if i == weak else 0.02)


@dataclass
class Table:
    """Rows of dicts shown as an HTML table in Jupyter (plain text elsewhere)."""

    rows: list[dict[str, Any]]

    def _cells(self, row: dict[str, Any]) -> list[str]:
        return [f"{v:.1%}" if k == "availability" else f"{v:.0f}" if isinstance(v, float) else str(v)
                for k, v in row.items()]

    def _repr_html_(self) -> str:
        import html

        if not self.rows:
            return "<i>no rows</i>"
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in self.rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(r)) + "</tr>"
                       for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        if not self.rows:
            return "(no rows)"
        cols = list(self.rows[0])
        cells = [cols] + [self._cells(r) for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
        return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(cols))) for c in cells)

    def where(self, **match: Any) -> dict[str, Any]:
        """The first row whose columns equal ``match``."""
        for row in self.rows:
            if all(row.get(k) == v for k, v in match.items()):
                return row
        raise KeyError(match)


def lab1_compare(chain, strategies: dict[str, Callable], *, hang: float, n_requests: int = 40,
                 concurrency: int = 4) -> Table:
    """Measure every strategy (a function ``f(chain) -> CallResult``) in two scenarios:
    "flaky" (the chain as it is) and "hung" (the last service takes ``hang`` seconds).
    Returns a table of availability and p50/p99 latency (ms) per scenario and strategy."""
    from . import services
    from .params import check_int, check_positive

    check_positive("hang", hang)
    check_int("n_requests", n_requests)
    rows = []
    for scenario in ("flaky", "hung"):
        with _Faults(chain) as faults:
            if scenario == "hung":
                faults.healthy()
                chain[-1].configure(latency=hang)
            for name, fn in strategies.items():
                chain.reset_counts()
                m = services.measure(chain, n_requests, concurrency, call_fn=lambda fn=fn: fn(chain))
                rows.append({"scenario": scenario, "strategy": name, "availability": m.success_rate,
                             "p50 ms": m.p50 * 1000, "p99 ms": m.p99 * 1000,
                             "requests to svc-1": chain.edge.received})
    return Table(rows)


class _Faults:
    """Remember every service's faults and counts, restore them afterwards."""

    def __init__(self, chain):
        self.chain = chain
        self.saved = [(svc, svc.faults, svc.is_up) for svc in chain]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for svc, faults, was_up in self.saved:
            svc.configure(**faults)
            if was_up and not svc.is_up:
                svc.bring_up()
            elif not was_up and svc.is_up:
                svc.take_down()

    def healthy(self, latency: float | None = None) -> None:
        for svc, faults, _ in self.saved:
            svc.reset_faults(timeout=faults["timeout"], latency=faults["latency"] if latency is None else latency)
            if not svc.is_up:
                svc.bring_up()


@contextlib.contextmanager
def healthy(chain) -> Iterator[Any]:
    """Inside the block every service of ``chain`` is healthy (no injected errors, its own
    latency kept); afterwards the faults it had are back."""
    with _Faults(chain) as faults:
        faults.healthy()
        yield chain


def _chain_of(chain):
    from . import services

    if not isinstance(chain, services.Chain):
        raise _Fail(f"the check needs the chain you started (a services.Chain), got {type(chain).__name__}.",
                    "Pass `chain`, e.g. `checks.check_lab1_timeout(chain, call_with_timeout)`.")
    if not all(svc in services.running() for svc in chain):
        raise _Fail("the chain is stopped.", "Run the cell that starts it again (services.start_chain(3, ...)).")
    return chain


def _retrying_call(fn: Callable, chain) -> Any:
    """Call the learner's retrying function; tenacity's RetryError gets its own feedback."""
    try:
        return _as_result(_learner(fn, chain), _name(fn))
    except _LearnerError as err:
        if type(err.exc).__name__ == "RetryError":
            raise _Fail("when every attempt failed, your function raised tenacity's RetryError.",
                        "Callers (and services.measure) expect a CallResult: add "
                        "`retry_error_callback=lambda state: state.outcome.result()` to return the last "
                        "failed result.") from None
        raise


def _as_result(value: Any, name: str):
    if not hasattr(value, "ok"):
        raise _Fail(f"`{name}` returned {value!r:.60}, not a CallResult.",
                    "Return what services.call gives you (a CallResult, with .ok, .latency and .error), "
                    "also when the call fails.")
    return value


@_check(1, "weakest_link")
def check_lab1_weakest_link(weakest_link: Callable) -> str:
    """``weakest_link(chain) -> "svc-N"`` must find, by measuring, the service that fails most."""
    from . import services

    answers = {}
    for weak in (2, 1):  # the deepest service, then the middle one
        with services.start_chain(3, latency=0.001, seed=weak) as chain:
            for i, svc in enumerate(chain):
                svc.configure(error_rate=0.3 if i == weak else 0.02)
            answer = _learner(weakest_link, chain)
        name = getattr(answer, "name", answer)  # a Service is fine too
        expected = f"svc-{weak + 1}"
        if not isinstance(name, str):
            raise _Fail(f"`weakest_link` returned {answer!r:.60}; it should return a service name such as 'svc-2'.",
                        "Return the name (a string) of the service that caused most failures.")
        answers[expected] = name
        if name == expected:
            continue
        if weak == 2 and name == "svc-1":
            raise _Fail("you blamed svc-1, the edge, but the check made svc-3 the flaky one. Every failure "
                        "travels up the chain and leaves through svc-1, so svc-1 shows up in every error.",
                        "Count where failures *started*: a failed CallResult's `.failed` names that service "
                        "(or look at the last hop of `.trace`).", answers=answers)
        if weak == 1 and answers.get("svc-3") == "svc-3" and name == "svc-3":
            raise _Fail("your answer stayed 'svc-3' when the check moved the flakiness to svc-2: it looks "
                        "fixed rather than measured.",
                        "Measure the chain you are given (e.g. services.measure(chain, 60)) and name the "
                        "service most failures started in.", answers=answers)
        raise _Fail(f"you named {name!r}, but the check made {expected} fail 30 % of the time and the others 2 %.",
                    "Send enough calls (50 or more) and count failures by the service they started in "
                    "(`result.failed`).", answers=answers)
    return "your function found svc-3 and then svc-2 as the weakest link, by measurement."


@_check(1, "timeout")
def check_lab1_timeout(chain, call_with_timeout: Callable) -> str:
    """Healthy calls must succeed; a call into a hung service must give up fast and fail."""
    from . import services

    chain = _chain_of(chain)
    with _Faults(chain) as faults:
        faults.healthy()
        baseline = services.measure(chain, 30)
        p99 = baseline.p99
        ok = 0
        for _ in range(20):
            ok += bool(_as_result(_learner(call_with_timeout, chain), "call_with_timeout").ok)
        if ok < 16:
            raise _Fail(f"only {ok} of 20 calls to the healthy chain succeeded with your timeout "
                        f"(the chain answers in {_ms(baseline.p50)} typically, {_ms(p99)} at p99).",
                        "Your timeout is too short: measure the chain first and choose a few times its p99.",
                        ok=ok, p99=p99)
        hang = max(1.0, 20 * p99)
        chain[-1].configure(latency=hang)
        waited = []
        for _ in range(2):
            started = time.perf_counter()
            result = _as_result(_learner(call_with_timeout, chain), "call_with_timeout")
            waited.append(time.perf_counter() - started)
            if result.ok:
                break
        worst = max(waited)
        if worst > hang / 2:
            raise _Fail(f"when {chain[-1].name} hung for {_ms(hang)}, your caller waited {_ms(worst)}.",
                        f"Give up sooner: pass a timeout of a few times the healthy p99 ({_ms(p99)}), "
                        "e.g. `services.call(chain, timeout=TIMEOUT)`.", waited=waited)
        if result.ok:
            raise _Fail("a call into a hung service came back successful, which cannot be right.",
                        "Return the CallResult of the call you made with the timeout.")
    return (f"{ok}/20 healthy calls succeeded, and with a hung service your caller gave up after "
            f"{_ms(worst)} instead of waiting {_ms(hang)}.")


@_check(1, "retries")
def check_lab1_retries(chain, call_with_retries: Callable) -> str:
    """Retries must lift the success rate over a flaky hop, and stop when a service is down."""
    from . import services

    chain = _chain_of(chain)
    n = 40
    with _Faults(chain) as faults:
        faults.healthy()
        chain[1].configure(error_rate=0.3)
        plain = services.measure(chain, n).success_rate
        chain.reset_counts()
        ok = 0
        for _ in range(n):
            ok += bool(_retrying_call(call_with_retries, chain).ok)
        per_call = chain.edge.received / n
        rate = ok / n
        if per_call < 1.05:
            raise _Fail(f"no call was retried: svc-1 received {chain.edge.received} requests for {n} calls, "
                        f"and {rate:.0%} succeeded (plain calls: {plain:.0%}).",
                        "tenacity retries when the function raises, or when `retry=` says so. services.call "
                        "returns a failed CallResult instead of raising: use "
                        "`retry=tenacity.retry_if_result(lambda r: not r.ok)`.", per_call=per_call)
        if rate < 0.85:
            raise _Fail(f"with svc-2 failing 30 % of the time, {rate:.0%} of your calls succeeded "
                        f"({per_call:.1f} requests per call).",
                        "Allow 3 attempts in all: `stop=tenacity.stop_after_attempt(3)`.", rate=rate)
        faults.healthy()
        chain[-1].take_down()
        chain.reset_counts()
        limit = 5.0
        run = _Deadline(_retrying_call, call_with_retries, chain, name=_name(call_with_retries))
        finished = run.run(limit, rescue=chain[-1].bring_up)
        attempts = chain.edge.received
        if not finished:
            raise _Fail(f"with svc-3 down, your function was still retrying after {limit:.0f} s "
                        f"({attempts} requests).",
                        "Retries must stop: `stop=tenacity.stop_after_attempt(3)`, and keep waits short.")
        result = _as_result(run.value, "call_with_retries")
        if attempts > 5:
            raise _Fail(f"with svc-3 down, one call made {attempts} requests: retries multiply the load on a "
                        "service that is already in trouble.",
                        "Stop after 3 attempts: `stop=tenacity.stop_after_attempt(3)`.", attempts=attempts)
        if result.ok:
            raise _Fail("with svc-3 down your function reported success.", "Return the last CallResult.")
    return (f"{rate:.0%} of calls succeeded over a hop that fails 30 % of the time (plain calls: {plain:.0%}), "
            f"and against a dead service your retries stopped after {attempts} attempts.")


@_check(1, "breaker")
def check_lab1_breaker(chain, call_with_breaker: Callable) -> str:
    """The breaker must open (calls stop reaching the chain and fail fast), then close again."""
    import pybreaker

    chain = _chain_of(chain)

    def one() -> Any:
        try:
            return _as_result(_learner(call_with_breaker, chain), "call_with_breaker")
        except _LearnerError as err:
            if isinstance(err.exc, pybreaker.CircuitBreakerError):
                raise _Fail("while the circuit was open your function let pybreaker's CircuitBreakerError out.",
                            "Catch it and return a failed result, e.g. `services.CallResult(ok=False, "
                            "status=None, latency=0.0, error='circuit open', short_circuited=True)`.") from None
            raise

    def until_ok(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if one().ok:
                return True
            time.sleep(0.02)
        return False

    with _Faults(chain) as faults:
        faults.healthy()
        if not until_ok(5.0):
            raise _Fail("on a healthy chain your function never returned a successful result within 5 s.",
                        "Return the CallResult when the call succeeds, and keep reset_timeout short "
                        "(1 s x TIME_SCALE).")
        chain[-1].take_down()
        chain.reset_counts()
        n = 20
        latencies = []
        for _ in range(n):
            started = time.perf_counter()
            one()
            latencies.append(time.perf_counter() - started)
        reached = chain.edge.received
        if reached >= n:
            raise _Fail(f"with svc-3 down, all {n} of {n} calls still reached the chain: the breaker never opened.",
                        "pybreaker counts a failure only when the protected function *raises*: raise when "
                        "`result.ok` is False (e.g. `raise services.CallFailed(result)`). Create the breaker "
                        "once, outside your function, and keep fail_max small (about 5).", reached=reached)
        if reached > 12:
            raise _Fail(f"the breaker opened only after {reached} failed calls.",
                        "Use a smaller fail_max (about 5): every call before it opens waits for a failure.")
        chain[-1].bring_up()
        recovered = until_ok(3.0)
        if not recovered:
            raise _Fail("after svc-3 came back, your breaker still failed every call 3 s later.",
                        "reset_timeout is how long the breaker stays open before a trial call: keep it "
                        "short here (about 1 s x TIME_SCALE).")
    fast = sorted(latencies)[n // 2]
    return (f"with svc-3 down only {reached} of {n} calls reached the chain; the others failed fast "
            f"(median {_ms(fast)}); and the breaker closed again when svc-3 came back.")


# =========================================================================== lab 2: from calls to events

SAMPLE_ORDERS = [
    {"order_id": "A-100", "customer": "ada", "amount": 12.5, "items": 2},
    {"order_id": "B-200", "customer": "grace", "amount": 99.0, "items": 1},
    {"order_id": "C-300", "customer": "ada", "amount": 5.25, "items": 3},
]


def _sample_orders(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    customers = ["ada", "grace", "linus", "barbara", "edsger"]
    return [{"order_id": f"{rng.choice('KLMN')}-{1000 + i}", "customer": rng.choice(customers),
             "amount": round(rng.uniform(5, 200), 2), "items": rng.randint(1, 5)} for i in range(n)]


@_check(2, "envelope")
def check_lab2_envelope(to_event: Callable) -> str:
    """``to_event(order) -> Event``: an OrderPlaced fact keyed by the order id, with the order as payload."""
    from . import events

    made = []
    for order in SAMPLE_ORDERS:
        event = _learner(to_event, dict(order))
        if isinstance(event, dict):
            raise _Fail("`to_event` returned a dict; the course's events are `helpers.events.Event` objects.",
                        "Build one with `events.Event(type, payload, key=..., source=...)`.")
        if not isinstance(event, events.Event):
            raise _Fail(f"`to_event` returned a {type(event).__name__}, not an events.Event.",
                        "Build one with `events.Event(type, payload, key=..., source=...)`.")
        made.append((order, event))
    for order, event in made:
        if event.type != "OrderPlaced":
            if event.type.lower().replace("_", "") in ("placeorder", "createorder", "order", "neworder", "submitorder"):
                raise _Fail(f"the event type is {event.type!r}, which reads like a command or a thing, "
                            "not like something that happened.",
                            "An event is a fact in the past: name it `OrderPlaced`.")
            raise _Fail(f"the event type is {event.type!r}; the lab's consumers look for 'OrderPlaced'.",
                        "Use `type='OrderPlaced'` (a fact, in the past tense).")
        if event.key is None:
            raise _Fail("your events have no key, so Kafka spreads one order's events over partitions and "
                        "their order is lost.",
                        "Use the order id as the key: `key=order['order_id']`.")
        if event.key != order["order_id"]:
            raise _Fail(f"the key is {event.key!r} for order {order['order_id']!r}.",
                        "Key by the order id, so all events of one order land in one partition, in order.")
        missing = [k for k in order if k not in event.payload or event.payload[k] != order[k]]
        if missing:
            raise _Fail(f"the payload of order {order['order_id']} lacks (or changed) {', '.join(missing)}.",
                        "Put the whole order in the payload: consumers must not call back to ask for it.")
    if len({e.event_id for _, e in made}) < len(made):
        raise _Fail("two different orders got the same event_id.",
                    "Leave event_id out: events.Event gives every event a fresh one.")
    return "OrderPlaced events, keyed by order id, carrying the order, each with its own event id."


class _WatchedProducer:
    """A real KafkaProducer, plus a note of every send's future (to see, when the
    learner's function returns, whether the broker had acknowledged everything)."""

    def __init__(self, producer):
        self._producer = producer
        self.futures: list = []

    def send(self, *args, **kwargs):
        future = self._producer.send(*args, **kwargs)
        self.futures.append(future)
        return future

    def __getattr__(self, name):
        return getattr(self._producer, name)


def _read_all(kafka, topic: str, expect: int, timeout: float = 5.0) -> list:
    """Every record on ``topic`` (assign + seek to the beginning; no group)."""
    from kafka import TopicPartition

    from .clients import _closing, partitions_for

    tps = [TopicPartition(topic, p) for p in partitions_for(kafka, topic)]
    records: list = []
    with _closing(kafka.consumer()) as c:
        c.assign(tps)
        c.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=200).values():
                records.extend(batch)
            if len(records) >= expect and not c.poll(timeout_ms=100):
                break
    return records


@_check(2, "producer")
def check_lab2_producer(kafka, publish_orders: Callable) -> str:
    """``publish_orders(producer, topic, orders)``: every order on the topic as one keyed envelope,
    acknowledged by the broker before the function returns."""
    from . import events
    from .clients import _closing, delete_topic

    orders = _sample_orders(12)
    topic = kafka.create_topic(partitions=3, prefix="check-lab2-producer")
    try:
        with _closing(kafka.producer(linger_ms=50)) as real:
            producer = _WatchedProducer(real)
            _learner(publish_orders, producer, topic, [dict(o) for o in orders])
            pending = sum(not f.is_done for f in producer.futures)
            sent = len(producer.futures)
        records = _read_all(kafka, topic, len(orders))
    finally:
        delete_topic(kafka, topic)
    if not records:
        if sent:
            raise _Fail(f"your function sent {sent} records, but none arrived on the topic it was given.",
                        "Publish to the `topic` argument, not to a topic name from elsewhere in the notebook.")
        raise _Fail("nothing arrived on the topic.",
                    "For each order, build its event and `events.publish(producer, topic, event)`.")
    if pending:
        raise _Fail(f"when your function returned, {pending} of {sent} events were not yet acknowledged by the "
                    "broker: a crash right then would lose them, and the caller cannot know.",
                    "Call `producer.flush()` before returning (it waits for the broker's acks, not for "
                    "any consumer).", pending=pending)
    try:
        decoded = [events.decode(r) for r in records]
    except events.EventError:
        raise _Fail("the records on the topic are not event envelopes (helpers.events could not decode them).",
                    "Send events with `events.publish(producer, topic, to_event(order))`, not the raw order.") \
            from None
    if any(r.key is None for r in records):
        raise _Fail("some records have no key.", "Publish events built by your `to_event`: it sets the key.")
    if len(records) != len(orders):
        raise _Fail(f"{len(records)} records arrived for {len(orders)} orders.",
                    "Publish each order exactly once." if len(records) > len(orders)
                    else "Publish every order of the list (and flush).", count=len(records))
    by_id = {e.payload.get("order_id"): (e, r) for e, r in zip(decoded, records)}
    for order in orders:
        if order["order_id"] not in by_id:
            raise _Fail(f"order {order['order_id']} is not on the topic.", "Publish every order of the list.")
        event, record = by_id[order["order_id"]]
        if event.type != "OrderPlaced" or event.key != order["order_id"]:
            raise _Fail(f"order {order['order_id']} arrived as a {event.type!r} keyed {event.key!r}.",
                        "Use your `to_event` (it passed its check) to build each event.")
    partitions = collections.Counter(r.partition for r in records)
    return (f"{len(orders)} OrderPlaced events on the topic, keyed by order id, spread over "
            f"{len(partitions)} partitions, all acknowledged before your function returned.")


class _HandlerCrash(RuntimeError):
    """What the check's handler raises to simulate a crash while processing one event."""


@_check(2, "consumer")
def check_lab2_consumer(kafka, process_batch: Callable) -> str:
    """``process_batch(consumer, handle) -> int``: poll once, handle each event, then commit.
    Everything must be handled once, committed, and an event whose handling failed must not
    be committed."""
    from kafka import TopicPartition

    from . import events, lag
    from .clients import _closing, delete_topic

    orders = _sample_orders(20, seed=11)
    topic = kafka.create_topic(partitions=2, prefix="check-lab2-consumer")
    try:
        with _closing(kafka.producer()) as p:
            for o in orders:
                events.publish(p, topic, events.Event("OrderPlaced", o, key=o["order_id"], source="orders"))
            p.flush()
        tps = [TopicPartition(topic, p) for p in (0, 1)]

        # 1. A clean run: everything handled exactly once, and committed.
        group = f"check-lab2-{uuid.uuid4().hex[:8]}"
        seen: list = []
        with _closing(kafka.consumer(group_id=group)) as c:
            c.assign(tps)
            deadline = time.monotonic() + 15
            while len(seen) < len(orders) and time.monotonic() < deadline:
                _learner(process_batch, c, seen.append)
        handled = [getattr(e, "payload", {}).get("order_id") if hasattr(e, "payload") else e for e in seen]
        if not seen:
            raise _Fail("your function never called `handle`.",
                        "Poll the consumer (`consumer.poll(timeout_ms=500)`), decode each record with "
                        "`events.decode(record)` and pass the event to `handle(event)`.")
        if not all(hasattr(e, "payload") for e in seen):
            raise _Fail(f"`handle` received {type(seen[0]).__name__} objects, not events.",
                        "Decode each record first: `handle(events.decode(record))`.")
        dupes = len(handled) - len(set(handled))
        if len(set(handled)) < len(orders):
            raise _Fail(f"{len(set(handled))} of {len(orders)} events reached `handle` within 15 s.",
                        "Handle every record of every partition that poll() returns "
                        "(`for records in batch.values(): for record in records: ...`).")
        if dupes:
            raise _Fail(f"{dupes} events were handled twice in a run without any failure.",
                        "Handle each record once per poll.")
        remaining = lag.total_lag(kafka, topic, group)
        if remaining:
            raise _Fail(f"all {len(orders)} events were handled, but {remaining} are not committed: after a "
                        "restart the group would process them again.",
                        "Call `consumer.commit()` after handling the batch.", lag=remaining)

        # 2. The handler fails on the 6th event: it must not be committed.
        group = f"check-lab2-{uuid.uuid4().hex[:8]}"
        count = {"n": 0}
        failed_at: dict = {}

        def fragile(event):
            count["n"] += 1
            if count["n"] == 6:
                failed_at["order_id"] = event.payload.get("order_id")
                raise _HandlerCrash("the check's handler failed on purpose (a crash while processing)")

        raised = False
        with _closing(kafka.consumer(group_id=group)) as c:
            c.assign(tps)
            deadline = time.monotonic() + 10
            while count["n"] < 6 and time.monotonic() < deadline:
                try:
                    _learner(process_batch, c, fragile)
                except _LearnerError as err:
                    if not isinstance(err.exc, _HandlerCrash):
                        raise
                    raised = True
                    break
        records = _read_all(kafka, topic, len(orders))
        failing = next(r for r in records if events.decode(r).payload.get("order_id") == failed_at.get("order_id"))
        done = lag.committed(kafka, topic, group)
        committed = done.get(failing.partition) or 0
    finally:
        delete_topic(kafka, topic)
    if committed > failing.offset:
        if raised:
            raise _Fail(f"the handler failed on order {failed_at['order_id']} (offset {failing.offset}), yet its "
                        f"offset was already committed (committed offset {committed}): after a crash that "
                        "event is lost.",
                        "Commit *after* handling the whole batch, never before.")
        raise _Fail(f"the handler failed on order {failed_at['order_id']}, your function carried on and committed "
                    "past it: that event is lost.",
                    "Let the exception propagate (no bare `except:` around `handle`), so nothing after a "
                    "failure is committed; the event is retried after a restart.")
    if not raised:
        raise _Fail("the handler failed, but your function did not let the failure through.",
                    "Do not catch the handler's exception: a failure must stop the batch before the commit.")
    return (f"all {len(orders)} events handled once and committed (lag 0), and an event whose handling "
            "failed was not committed, so it will be processed again after a restart.")


# =========================================================================== lab 3: survive the outage


@dataclass
class DrillResult:
    """What a quick crash drill delivered: the events produced, and every delivery in order."""

    commit: str
    batch_size: int
    produced: list  # events.Event, in topic order
    delivered: list  # events.Event as handled, duplicates included
    crashed_at: int  # index (in topic order) of the event being processed when it crashed

    @property
    def tally(self):
        from .consumers import count_report

        return count_report([e.event_id for e in self.produced],
                            [{"kind": "processed", "event_id": e.event_id} for e in self.delivered])


def crash_drill(kafka, commit: str, batch_size: int, *, events_total: int | None = None,
                crash_at: int | None = None, payloads: list[dict] | None = None,
                handle: Callable | None = None) -> DrillResult:
    """A quick, real crash drill on Kafka, in this process.

    A consumer of a fresh group reads a fresh one-partition topic in polls of
    ``batch_size`` records and commits ``"after"`` or ``"before"`` processing each poll.
    It crashes (stops without committing or saying goodbye) while processing the event
    at index ``crash_at`` (by default the last one of its third poll, the worst moment for
    "after"). A new consumer of the same group then resumes from the committed offset
    and reads to the end. ``handle(event)`` (optional) is called for every delivery.

    Partitions are assigned, not subscribed, so no group join is waited for: seconds
    instead of the ~10 s a real SIGKILLed member needs to be evicted (the lab shows that
    too, with ``helpers.consumers.ConsumerProcess``).
    """
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from . import events as ev
    from .clients import _closing, delete_topic
    from .consumers import COMMIT_STRATEGIES
    from .params import check_int

    if commit not in COMMIT_STRATEGIES:
        raise ValueError(f"commit must be one of {sorted(COMMIT_STRATEGIES)}, got {commit!r}")
    check_int("batch_size", batch_size)
    crash_at = 3 * batch_size - 1 if crash_at is None else check_int("crash_at", crash_at, minimum=0)
    if payloads is None:
        total = events_total or crash_at + 2 * batch_size + 5
        rng = random.Random(crash_at * 31 + batch_size)
        payloads = [{"order_id": f"P-{i:04d}", "customer": rng.choice(["ada", "grace", "linus"]),
                     "amount": round(rng.uniform(1, 100), 2)} for i in range(total)]
    produced = [ev.Event("PaymentReceived", dict(p), key=p["order_id"], source="payments") for p in payloads]
    topic = kafka.create_topic(partitions=1, prefix="drill")
    tp = TopicPartition(topic, 0)
    delivered: list = []
    group = f"drill-{uuid.uuid4().hex[:10]}"
    try:
        with _closing(kafka.producer()) as p:
            for e in produced:
                ev.publish(p, topic, e)
            p.flush()

        def deliver(record) -> None:
            event = ev.decode(record)
            delivered.append(event)
            if handle is not None:
                handle(event)

        # The first consumer: processes, then crashes while processing event `crash_at`.
        first = kafka.consumer(group_id=group, max_poll_records=batch_size)
        first.assign([tp])
        position, crashed, deadline = 0, False, time.monotonic() + 20
        while not crashed and time.monotonic() < deadline:
            records = first.poll(timeout_ms=500).get(tp, [])
            if not records:
                continue
            end = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)}
            if commit == "before":
                first.commit(end)
            for record in records:
                if position == crash_at:
                    crashed = True  # the process dies here: no handling, no commit, no goodbye
                    break
                deliver(record)
                position += 1
            if not crashed and commit == "after":
                first.commit(end)
        first.close(autocommit=False)
        # The restarted consumer: same group, resumes from the committed offset.
        with _closing(kafka.consumer(group_id=group, max_poll_records=batch_size)) as second:
            second.assign([tp])
            last = -1
            deadline = time.monotonic() + 20
            while last < len(produced) - 1 and time.monotonic() < deadline:
                records = second.poll(timeout_ms=300).get(tp, [])
                for record in records:
                    deliver(record)
                    last = record.offset
                if records:
                    second.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)})
    finally:
        delete_topic(kafka, topic)
    return DrillResult(commit, batch_size, produced, delivered, crash_at)


MAX_DUPLICATES = 20


@_check(3, "commit_strategy")
def check_lab3_commit_strategy(kafka, commit: str, batch_size: int) -> str:
    """``COMMIT`` and ``BATCH_SIZE`` must lose nothing in a crash and repeat at most 20 events."""
    from .consumers import COMMIT_STRATEGIES

    commit = _require_value("COMMIT", commit)
    batch_size = _require_value("BATCH_SIZE", batch_size)
    if commit not in COMMIT_STRATEGIES:
        raise _Fail(f"COMMIT is {commit!r}; the choices are " + " or ".join(map(repr, COMMIT_STRATEGIES)) + ".",
                    "'after' commits once the batch is processed, 'before' commits as soon as it is polled.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise _Fail(f"BATCH_SIZE is {batch_size!r}; it must be a whole number of events, 1 or more.",
                    "It is how many events a poll returns, and so how often the consumer commits.")
    if batch_size > 200:
        raise _Fail(f"with BATCH_SIZE {batch_size}, a crash just before a commit repeats up to "
                    f"{batch_size - 1} events, far more than the {MAX_DUPLICATES} allowed.",
                    "Commit more often: a smaller batch.")
    drill = crash_drill(kafka, commit, batch_size)
    tally = drill.tally
    if tally.missing:
        lost = "1 event was" if tally.missing == 1 else f"{tally.missing} events were"
        raise _Fail(f"in the drill the consumer crashed in the middle of a batch and {lost} never processed: "
                    f"with commit {commit!r} the offsets were committed before the crash.",
                    "Commit *after* processing ('after'): a crash then repeats events, but never loses one.",
                    missing=tally.missing)
    if tally.duplicates > MAX_DUPLICATES:
        raise _Fail(f"nothing was lost, but the crash made the consumer process {tally.duplicates} events "
                    f"twice (the limit is {MAX_DUPLICATES}).",
                    "Everything processed since the last commit is repeated after a crash: commit more "
                    "often, with a smaller BATCH_SIZE.", duplicates=tally.duplicates)
    return (f"in a crash drill with commit {commit!r} and batches of {batch_size}, {tally.unique} of "
            f"{tally.produced} events were processed, none lost, {tally.duplicates} repeated.")


def _audit_cases() -> list[tuple[str, list[str], list[dict]]]:
    """(name, produced ids, report lines) with known answers, as a real report looks."""
    def line(eid, offset):
        return {"kind": "processed", "event_id": eid, "partition": 0, "offset": offset, "pid": 1}

    def commit(offset):
        return {"kind": "committed", "offsets": {"0": offset}, "pid": 1}

    ids = [f"e{i:02d}" for i in range(12)]
    crash = ([line(i, n) for n, i in enumerate(ids[:8])] + [commit(5)]
             + [line(i, n + 5) for n, i in enumerate(ids[5:])] + [commit(12)])  # 3 repeated
    lost = [line(i, n) for n, i in enumerate(ids[:4])] + [commit(8)] + \
        [line(i, n + 8) for n, i in enumerate(ids[8:])]  # 4 lost (e04..e07)
    both = [line(i, n) for n, i in enumerate(ids[:6])] + [commit(4)] + \
        [line(i, n + 4) for n, i in enumerate(ids[4:10])] + [line("e09", 9)]  # e10, e11 missing; e04,e05,e09 twice
    clean = [line(i, n) for n, i in enumerate(ids)] + [commit(12)]
    return [("a clean run", ids, clean), ("a crash with commit after", ids, crash),
            ("a crash with commit before", ids, lost), ("repeats and losses together", ids, both)]


@_check(3, "audit")
def check_lab3_audit(audit: Callable, produced_ids: list | None = None, records: list | None = None) -> str:
    """``audit(produced_ids, records) -> {"missing": int, "duplicates": int}`` must count right,
    on known reports and (if given) on your drill's real report."""
    from .consumers import count_report

    cases = _audit_cases()
    if produced_ids is not None and records is not None:
        cases.append(("your drill's report", list(produced_ids), list(records)))
    for name, ids, lines in cases:
        try:
            answer = _learner(audit, list(ids), [dict(r) for r in lines])
        except _LearnerError as err:
            if isinstance(err.exc, KeyError) and "event_id" in str(err.exc):
                raise _Fail("your `audit` raised KeyError 'event_id': the report also holds 'committed' lines, "
                            "which have no event id.",
                            "Keep only the lines with `record['kind'] == 'processed'`.") from None
            raise
        expected = count_report(ids, lines)
        if not isinstance(answer, dict) or not {"missing", "duplicates"} <= set(answer):
            raise _Fail(f"`audit` returned {answer!r:.80}; it should return a dict with 'missing' and 'duplicates'.",
                        "e.g. `return {'missing': 0, 'duplicates': 3}`.")
        got_missing, got_dupes = answer["missing"], answer["duplicates"]
        if (got_missing, got_dupes) == (expected.missing, expected.duplicates):
            continue
        processed = [r for r in lines if r.get("kind") == "processed"]
        subtracted = len(processed) - len(ids)
        if got_dupes != expected.duplicates and got_dupes in (subtracted, len(lines) - len(ids)):
            raise _Fail(f"on {name} you counted {got_dupes} duplicates (lines minus produced events), but "
                        f"{expected.duplicates} events were processed more than once: a lost event and a "
                        "repeated one cancel out in that subtraction.",
                        "Count per event id (collections.Counter): duplicates = for each id seen more than "
                        "once, its count - 1; missing = produced ids never seen.")
        if got_missing != expected.missing and got_missing in (-subtracted, max(0, -subtracted)):
            raise _Fail(f"on {name} you counted {got_missing} missing (produced events minus processed lines), "
                        f"but {expected.missing} events were never processed: repeats hide the losses.",
                        "missing = the produced ids that no 'processed' line has (a set difference).")
        raise _Fail(f"on {name} you counted missing={got_missing}, duplicates={got_dupes}; the report says "
                    f"missing={expected.missing}, duplicates={expected.duplicates}.",
                    "missing: produced ids that no 'processed' line has; duplicates: for each id, every "
                    "processed line after its first.")
    real = " and on your drill's real report" if len(cases) > 4 else ""
    return f"your audit counts missing and repeated events right on {len(_audit_cases())} known reports{real}."


@_check(3, "idempotent_handler")
def check_lab3_idempotent_handler(kafka, charge: Callable) -> str:
    """``charge(state, event)`` must charge each payment once, however often it is delivered."""
    rng = random.Random(5)
    payloads = [{"order_id": f"P-{i:04d}", "customer": rng.choice(["ada", "grace", "linus"]),
                 "amount": round(rng.uniform(1, 100), 2)} for i in range(40)]
    payloads[12]["order_id"] = payloads[11]["order_id"]  # a second, different payment for the same order
    payloads[12]["customer"] = payloads[11]["customer"]
    state: dict = {}
    drill = crash_drill(kafka, "after", 10, payloads=payloads, crash_at=27,
                        handle=lambda event: _learner(charge, state, event))
    if drill.tally.duplicates == 0:
        raise RuntimeError("the drill delivered no duplicates")
    expected: dict[str, float] = {}
    for p in payloads:
        expected[p["customer"]] = expected.get(p["customer"], 0.0) + p["amount"]
    charged = state.get("charged")
    if not isinstance(charged, dict):
        raise _Fail("after the drill, `state['charged']` is not a dict of customer -> amount.",
                    "Keep the totals in `state['charged']`, e.g. `state.setdefault('charged', {})`.")
    total_expected, total_charged = sum(expected.values()), sum(float(v) for v in charged.values())
    if math.isclose(total_charged, total_expected, abs_tol=0.01) and all(
            math.isclose(float(charged.get(c, 0.0)), v, abs_tol=0.01) for c, v in expected.items()):
        return (f"{drill.tally.duplicates} payments were delivered twice after the crash, and every customer "
                "was charged exactly once per payment.")
    repeated = [e for e in drill.produced if e.event_id in set(drill.tally.duplicate_ids)]
    twice = sum(e.payload["amount"] for e in repeated)
    if math.isclose(total_charged, total_expected + twice, abs_tol=0.01):
        raise _Fail(f"after the crash {len(repeated)} payments were delivered again, and your handler charged "
                    f"them again: customers paid {twice:.2f} too much.",
                    "Remember the event ids you have handled (e.g. a set in `state`) and skip an event whose "
                    "id you have seen: the retry of a delivery has the same event_id.")
    second = payloads[12]["amount"]
    if math.isclose(total_charged, total_expected - second, abs_tol=0.01):
        raise _Fail(f"one order had two different payments, and your handler charged only one of them "
                    f"({second:.2f} missing).",
                    "Deduplicate by `event.event_id` (one delivery of one fact), not by order id: two "
                    "payments for one order are two facts.")
    raise _Fail(f"customers were charged {total_charged:.2f} in all; the payments add up to {total_expected:.2f}.",
                "Add `event.payload['amount']` to `state['charged'][event.payload['customer']]`, once per "
                "event id.")


# =========================================================================== lab 4: drain the backlog


def _needed_consumers(produce_rate: float, process_rate: float, backlog: int, deadline: float,
                      max_lag: int) -> int:
    """The fewest consumers that bring ``backlog`` (plus what arrives meanwhile) down to
    ``max_lag`` within ``deadline`` seconds."""
    surplus_needed = produce_rate + max(0.0, backlog - max_lag) / deadline
    return max(1, math.ceil(surplus_needed / process_rate - 1e-9))


# (produce rate, process rate per consumer, backlog, deadline, max lag): scenarios where the
# typical shortcuts give a different answer than the right one.
PLAN_SCENARIOS = [
    (10.0, 10.0, 500, 30.0, 80),    # the lab's own numbers (at TIME_SCALE 1): 3 consumers
    (40.0, 25.0, 300, 60.0, 50),    # producing faster than one consumer: 2 would only just keep up
    (5.0, 20.0, 2000, 20.0, 100),   # a big backlog, little new traffic
    (100.0, 30.0, 0, 10.0, 20),     # no backlog: just keep up
]


def _plan_models(scenario: tuple) -> dict[str, int]:
    """What the right formula and the typical shortcuts give for one scenario."""
    produce, process, backlog, deadline, max_lag = scenario
    exact = (produce + max(0.0, backlog - max_lag) / deadline) / process
    return {"right": _needed_consumers(*scenario),
            "ignores arrivals": max(1, math.ceil(backlog / (process * deadline))),
            "keeps up only": max(1, math.ceil(produce / process)),
            "rounds down": max(1, math.floor(exact))}


def _describe(scenario: tuple) -> str:
    produce, process, backlog, deadline, max_lag = scenario
    return (f"producing {produce:g}/s, {process:g}/s per consumer, a backlog of {backlog} to bring "
            f"below {max_lag} within {deadline:g} s")


@_check(4, "plan")
def check_lab4_plan(plan: Callable) -> str:
    """``plan(produce_rate, process_rate, backlog, deadline, max_lag) -> (partitions, consumers)``
    must meet the lag target, without idle consumers or absurd over-provisioning."""
    formula = ("Consumers must process the new events *and* the backlog: consumers x process_rate >= "
               "produce_rate + (backlog - max_lag) / deadline; round up (math.ceil). Then at least as many "
               "partitions as consumers.")
    answers = []
    for scenario in PLAN_SCENARIOS:
        answer = _learner(plan, *scenario)
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise _Fail(f"`plan` returned {answer!r:.60}; it should return a pair (partitions, consumers).",
                        "e.g. `return partitions, consumers`.")
        partitions, consumers = answer
        for name, value in (("partitions", partitions), ("consumers", consumers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _Fail(f"{name} must be a whole number >= 1, got {value!r} ({_describe(scenario)}).",
                            "Round up with math.ceil and convert with int().")
        if consumers > partitions:
            raise _Fail(f"{consumers} consumers for {partitions} partitions ({_describe(scenario)}): a partition "
                        f"is read by one member of a group, so {consumers - partitions} of them would sit idle.",
                        "Create at least as many partitions as consumers.", scenario=scenario)
        answers.append((scenario, partitions, consumers))
    # Name the shortcut when every answer follows one, else describe the first miss.
    short = [(sc, c) for sc, _p, c in answers if c < _plan_models(sc)["right"]]
    if short:
        followed = [name for name in ("ignores arrivals", "keeps up only", "rounds down")
                    if all(c == _plan_models(sc)[name] for sc, _p, c in answers)]
        scenario, consumers = short[0]
        produce, process, backlog, deadline, max_lag = scenario
        need = _plan_models(scenario)["right"]
        if followed and followed[0] == "ignores arrivals":
            problem = (f"{consumers} consumer(s) ({_describe(scenario)}) would clear the backlog if nothing new "
                       f"arrived, but {produce:g} events/s keep arriving while they drain.")
        elif consumers * process <= produce:
            problem = (f"{consumers} consumer(s) ({_describe(scenario)}) process {consumers * process:g}/s while "
                       f"{produce:g}/s arrive: the " + ("backlog never shrinks." if backlog else "lag only grows."))
        else:
            left = backlog - (consumers * process - produce) * deadline
            problem = (f"with {consumers} consumer(s) ({_describe(scenario)}) the lag would still be about "
                       f"{left:.0f} at the deadline; {need} are needed"
                       + (": you rounded down." if followed and followed[0] == "rounds down" else "."))
        raise _Fail(problem, formula, scenario=scenario, consumers=consumers)
    for scenario, partitions, consumers in answers:
        need = _plan_models(scenario)["right"]
        if consumers > 2 * need + 1:
            raise _Fail(f"{consumers} consumers ({_describe(scenario)}) is far more than the {need} needed: every "
                        "one costs a process and a connection.",
                        "Round the formula up (math.ceil) and add little or no headroom.", scenario=scenario)
        if partitions > 4 * consumers + 4:
            raise _Fail(f"{partitions} partitions for {consumers} consumers ({_describe(scenario)}) is far more "
                        "than you can use.", "A partition or two per consumer is plenty.", scenario=scenario)
    first = answers[0]
    return (f"your plans meet the lag target in {len(PLAN_SCENARIOS)} scenarios (for the lab's numbers: "
            f"{first[1]} partitions, {first[2]} consumers).")


def _monitor_of(monitor: Any):
    from .lag import LagMonitor

    inner = getattr(monitor, "monitor", monitor)  # a lagplots.LiveLagPlot holds a LagMonitor
    if not isinstance(inner, LagMonitor):
        raise _Fail(f"the check needs the LagMonitor of your run, got {type(monitor).__name__}.",
                    "Return the `helpers.lag.LagMonitor` (or `lagplots.LiveLagPlot`) that sampled your run.")
    return inner


@_check(4, "drain")
def check_lab4_drain(monitor: Any, *, deadline: float, max_lag: int, consumers: int | None = None) -> str:
    """The measured lag curve: it starts with the backlog, is at or below ``max_lag`` by
    ``deadline`` seconds and stays there."""
    mon = _monitor_of(monitor)
    times, totals = mon.series()
    partitions = sorted({s.partition for s in mon.samples})
    if consumers is not None and partitions and consumers > len(partitions):
        raise _Fail(f"{consumers} consumers shared {len(partitions)} partitions: "
                    f"{consumers - len(partitions)} sat idle.",
                    "Create the topic with at least as many partitions as consumers (from your plan).")
    if len(times) < 3:
        raise _Fail(f"the monitor has {len(times)} samples: there is no lag curve to judge.",
                    "Start the monitor when the consumers start, and stop it only after the deadline.")
    if max(totals) <= max_lag:
        raise _Fail(f"the lag never exceeded {max_lag} (highest sample {max(totals)}): the run had no backlog "
                    "to drain, or the monitor started after it was gone.",
                    "Produce the backlog before the consumers start; start the monitor when they resume.")
    slack = 1.25 * deadline + 0.5  # a busy machine samples late; the claim still has to hold
    reached = next((t for t, v in zip(times, totals) if v <= max_lag), None)
    if reached is None:
        if times[-1] < deadline:
            raise _Fail(f"the curve ends at {times[-1]:.1f} s with a lag of {totals[-1]}, before the deadline "
                        f"({deadline:.1f} s).",
                        "Keep the run (and the monitor) going until the deadline has passed.")
        at_deadline = next((v for t, v in zip(times, totals) if t >= deadline), totals[-1])
        raise _Fail(f"the lag was still {at_deadline} at the deadline ({deadline:.1f} s); the target is {max_lag}.",
                    "Too few consumers for the rates: revisit your plan (and give the topic enough partitions).",
                    lag_at_deadline=at_deadline)
    if reached > slack:
        raise _Fail(f"the lag reached {max_lag} only after {reached:.1f} s; the deadline was {deadline:.1f} s.",
                    "Add consumers (and partitions): the drain rate is consumers x process rate minus the "
                    "produce rate.", reached=reached)
    after = [v for t, v in zip(times, totals) if t > reached]
    if after and max(after) > 1.5 * max_lag + 10:
        raise _Fail(f"the lag dipped to {max_lag} at {reached:.1f} s but climbed back to {max(after)}: the group "
                    "cannot keep up with the producer.",
                    "Consumers together must process faster than events arrive.")
    return (f"the lag fell from {max(totals)} to {max_lag} or less after {reached:.1f} s (deadline {deadline:.1f} s) "
            f"and stayed there, over {len(partitions)} partitions.")


def lab4_figure(monitor: Any, *, deadline: float, max_lag: int, title: str = "Draining the backlog"):
    """The lag curve of a run with the target drawn in: the deadline and the lag limit."""
    import plotly.graph_objects as go

    mon = _monitor_of(monitor)
    times, totals = mon.series()
    fig = go.Figure()
    fig.add_scatter(x=times, y=totals, mode="lines+markers", name="total lag", line=dict(width=3, color="#d62728"))
    fig.add_hline(y=max_lag, line_dash="dash", line_color="#2ca02c", annotation_text=f"target: lag ≤ {max_lag}")
    fig.add_vline(x=deadline, line_dash="dot", line_color="gray", annotation_text="deadline")
    fig.update_layout(template="plotly_white", height=360, title=title, xaxis_title="seconds since the consumers started",
                      yaxis_title="lag (events)", margin=dict(l=60, r=20, t=50, b=50))
    return fig


# =========================================================================== lab 5: embrace the async


class Fulfilment:
    """The shop's back office for lab 5, a consumer and a producer in a thread.

    It reads ``OrderPlaced`` events from ``orders`` and, after a delay, publishes the
    result to ``results``: ``PaymentDeclined`` for the customer "mallory" (fraud), else
    ``OrderShipped``. Results carry the order's key and its correlation id
    (``Event.follow``). Big orders (more than 3 items) take ``slow`` seconds, the others
    ``fast``. It reads by assignment (no consumer group to join), so it is ready at once.
    """

    def __init__(self, kafka, orders: str, results: str, *, fast: float, slow: float):
        from .params import check_positive

        self.kafka, self.orders, self.results = kafka, orders, results
        self.fast = check_positive("fast", fast, allow_zero=True)
        self.slow = check_positive("slow", slow, allow_zero=True)
        self.handled = 0
        self.published: list = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def delay(self, event) -> float:
        return self.slow if int(event.payload.get("items", 1)) > 3 else self.fast

    def start(self) -> "Fulfilment":
        self._thread = threading.Thread(target=self._run, name=f"fulfilment-{self.orders}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        import heapq
        import itertools

        from kafka import TopicPartition

        from . import events as ev
        from .clients import partitions_for

        consumer = producer = None
        try:
            consumer, producer = self.kafka.consumer(), self.kafka.producer()
            tps = [TopicPartition(self.orders, p) for p in partitions_for(self.kafka, self.orders)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            self._ready.set()
            due: list = []
            seq = itertools.count()
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=30).values():
                    for record in records:
                        try:
                            placed = ev.decode(record)
                        except ev.EventError:
                            continue
                        if placed.type != "OrderPlaced":
                            continue
                        self.handled += 1
                        heapq.heappush(due, (time.monotonic() + self.delay(placed), next(seq), placed))
                sent = False
                while due and due[0][0] <= time.monotonic():
                    _, _, placed = heapq.heappop(due)
                    order_id = placed.payload.get("order_id")
                    if placed.payload.get("customer") == "mallory":
                        result = placed.follow("PaymentDeclined", {"order_id": order_id, "reason": "payment declined"},
                                               source="fulfilment")
                    else:
                        result = placed.follow("OrderShipped", {"order_id": order_id, "carrier": "parcel-co"},
                                               source="fulfilment")
                    ev.publish(producer, self.results, result)
                    self.published.append(result)
                    sent = True
                if sent:
                    producer.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
            self._ready.set()
        finally:
            for client in (consumer, producer):
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001 - closing anyway
                        pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> "Fulfilment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Shop:
    """Lab 5's world: an ``orders`` topic, a ``results`` topic, a producer for the web
    front end, and the :class:`Fulfilment` back office between them. Close it (or use it
    as a context manager) to stop the back office and delete the topics."""

    def __init__(self, kafka, *, fast: float, slow: float, producer=None):
        self.kafka = kafka
        self.orders = kafka.create_topic(prefix="shop-orders", partitions=3)
        self.results = kafka.create_topic(prefix="shop-results", partitions=3)
        self.producer = producer if producer is not None else kafka.producer()
        self._own_producer = producer is None
        self.fulfilment = Fulfilment(kafka, self.orders, self.results, fast=fast, slow=slow).start()
        self._consumers: list = []

    def results_consumer(self):
        """A consumer of ``results`` from its beginning (assigned, no group): every result so far."""
        from kafka import TopicPartition

        from .clients import partitions_for

        consumer = self.kafka.consumer()
        tps = [TopicPartition(self.results, p) for p in partitions_for(self.kafka, self.results)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        self._consumers.append(consumer)
        return consumer

    def close(self) -> None:
        from .clients import delete_topic

        self.fulfilment.stop()
        for consumer in self._consumers:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._own_producer:
            self.producer.close()
        for topic in (self.orders, self.results):
            delete_topic(self.kafka, topic)

    def __enter__(self) -> "Shop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Shop orders={self.orders} results={self.results} (fast {self.fast:g} s, slow {self.slow:g} s)>"

    @property
    def fast(self) -> float:
        return self.fulfilment.fast

    @property
    def slow(self) -> float:
        return self.fulfilment.slow


def lab5_shop(kafka, *, fast: float, slow: float) -> Shop:
    """Start lab 5's shop (topics, producer, back office); ``shop.close()`` stops it."""
    return Shop(kafka, fast=fast, slow=slow)


@_check(5, "correlation")
def check_lab5_correlation(kafka, place_order: Callable) -> str:
    """``place_order(shop, order) -> correlation_id``: an OrderPlaced keyed by the order id
    carrying a fresh correlation id per request, acknowledged before returning."""
    from . import events as ev

    orders = [{"order_id": "W-1", "customer": "ada", "amount": 20.0, "items": 1},
              {"order_id": "W-2", "customer": "grace", "amount": 35.5, "items": 2},
              {"order_id": "W-1", "customer": "ada", "amount": 20.0, "items": 1}]  # clicked twice
    with _closing_producer(kafka) as real:
        producer = _WatchedProducer(real)
        with Shop(kafka, fast=3600.0, slow=3600.0, producer=producer) as shop:
            returned = []
            for order in orders:
                returned.append(_learner(place_order, shop, dict(order)))
                pending = sum(not f.is_done for f in producer.futures)
                if pending:
                    raise _Fail(f"when `place_order` returned, {pending} event(s) were not yet acknowledged by the "
                                "broker.", "Call `shop.producer.flush()` before returning the correlation id.")
            records = _read_all(kafka, shop.orders, len(orders))
    if len(records) != len(orders):
        raise _Fail(f"{len(records)} events arrived on `shop.orders` for {len(orders)} orders placed.",
                    "Publish exactly one OrderPlaced event per call, to `shop.orders`.")
    placed = sorted((ev.decode(r) for r in records), key=lambda e: e.occurred_at)
    if any(e.type != "OrderPlaced" or e.key != o["order_id"] for e, o in zip(placed, orders)):
        raise _Fail("the events are not OrderPlaced events keyed by their order id.",
                    "Build them like in lab 2: `events.Event('OrderPlaced', order, key=order['order_id'], ...)`.")
    ids = [e.correlation_id for e in placed]
    if any(i is None for i in ids):
        raise _Fail("your events carry no correlation id, so nobody can tell which result answers which request.",
                    "Pass `correlation_id=uuid.uuid4().hex` to events.Event, and return it.")
    if len(set(ids)) == 1:
        raise _Fail(f"all three requests carry the same correlation id {ids[0]!r}.",
                    "Make a fresh one per request: `uuid.uuid4().hex`.")
    if ids[0] == ids[2]:
        raise _Fail(f"the customer placed order W-1 twice and both requests got the correlation id {ids[0]!r} "
                    "(the order id?): the answer to one could be taken for the other's.",
                    "A correlation id identifies one request, not the order: `uuid.uuid4().hex`.")
    if list(returned) != ids:
        raise _Fail(f"`place_order` returned {returned[0]!r}, but the event carries the correlation id "
                    f"{ids[0]!r}.", "Return the correlation id you put in the event.")
    return "each request published one OrderPlaced, acknowledged, with its own correlation id, which you returned."


@contextlib.contextmanager
def _closing_producer(kafka):
    producer = kafka.producer()
    try:
        yield producer
    finally:
        producer.close()


@_check(5, "wait_for_result")
def check_lab5_wait_for_result(kafka, wait_for_result: Callable) -> str:
    """``wait_for_result(consumer, correlation_id, deadline) -> Event | None``: the result for
    this request (not another's), or None once ``deadline`` seconds have passed."""
    from . import events as ev

    with Shop(kafka, fast=3600.0, slow=3600.0) as shop:
        def result_for(correlation_id, order_id="R-1"):
            placed = ev.Event("OrderPlaced", {"order_id": order_id}, key=order_id, correlation_id=correlation_id)
            return placed.follow("OrderShipped", {"order_id": order_id}, source="fulfilment")

        decoys = [result_for(uuid.uuid4().hex, f"R-{i}") for i in range(3)]
        for e in decoys:
            ev.publish(shop.producer, shop.results, e)
        shop.producer.flush()

        # 1. The answer arrives 0.3 s after the call, behind three answers to other requests.
        mine = uuid.uuid4().hex
        expected = result_for(mine, "R-mine")
        timer = threading.Timer(0.3, lambda: (ev.publish(shop.producer, shop.results, expected),
                                              shop.producer.flush()))
        timer.start()
        run = _Deadline(wait_for_result, shop.results_consumer(), mine, 5.0)
        try:
            finished = run.run(8.0)
        finally:
            timer.cancel()
        if not finished:
            raise _Fail("`wait_for_result` did not return within 8 s, although the result arrived after 0.3 s.",
                        "Poll in a loop (`consumer.poll(timeout_ms=100)`) and return as soon as an event with "
                        "the right correlation id arrives.")
        got = run.value
        if got is None:
            raise _Fail("the result arrived 0.3 s after your call, within the 5 s deadline, but your function "
                        "returned None.",
                        "Keep polling until the deadline: the first poll may come back empty.")
        if not isinstance(got, ev.Event):
            raise _Fail(f"`wait_for_result` returned {type(got).__name__}, not an events.Event.",
                        "Decode records with `events.decode(record)` and return the event.")
        if got.event_id in {d.event_id for d in decoys}:
            raise _Fail(f"you returned the result of another request (correlation id {got.correlation_id!r}, "
                        "not yours): that customer would see someone else's order.",
                        "Skip every event whose `correlation_id` is not the one you are waiting for.")
        if got.event_id != expected.event_id:
            raise _Fail("you returned an event that is not the result for this correlation id.",
                        "Compare `event.correlation_id == correlation_id`.")

        # 2. No answer comes in time: None, by the deadline.
        nobody = uuid.uuid4().hex
        deadline = 0.5
        run = _Deadline(wait_for_result, shop.results_consumer(), nobody, deadline)

        def rescue():  # an answer at last, so a function waiting forever returns and its thread ends
            ev.publish(shop.producer, shop.results, result_for(nobody, "R-late"))
            shop.producer.flush()

        try:
            finished = run.run(deadline + 2.5, rescue=rescue)
        except _LearnerError as err:
            if isinstance(err.exc, TimeoutError) or "timeout" in type(err.exc).__name__.lower():
                raise _Fail(f"when no result came, your function raised {type(err.exc).__name__}.",
                            "Return None instead: no result *yet* is a normal outcome, and the caller decides "
                            "what to tell the user.") from None
            raise
    if not finished:
        raise _Fail(f"with no result coming, your function was still waiting {deadline + 2.5:.1f} s later "
                    f"(deadline {deadline} s).",
                    "Stop at the deadline: `deadline_at = time.monotonic() + deadline`, loop while "
                    "`time.monotonic() < deadline_at`, then return None.")
    if run.value is not None:
        raise _Fail(f"with no result for this request, your function returned {run.value!r:.60}.",
                    "Return None when the deadline passes without the result.")
    if run.elapsed > deadline + 1.0:
        raise _Fail(f"with no result coming, your function returned after {run.elapsed:.1f} s; the deadline "
                    f"was {deadline} s.", "Check the clock in your loop and poll with a short timeout.")
    return (f"found the result for its own request behind three others, and returned None after "
            f"{run.elapsed:.2f} s when none came (deadline {deadline} s).")


@_check(5, "pending")
def check_lab5_pending(kafka, order_status: Callable) -> str:
    """``order_status(shop, order, deadline) -> "shipped" | "declined" | "pending"``: the
    result if it arrives in time, else "pending" by the deadline, never a guess."""
    deadline = 1.0
    cases = [({"order_id": "S-1", "customer": "ada", "amount": 12.0, "items": 1}, "shipped"),
             ({"order_id": "S-2", "customer": "mallory", "amount": 999.0, "items": 1}, "declined"),
             ({"order_id": "S-3", "customer": "grace", "amount": 80.0, "items": 5}, "pending")]
    answers, took = {}, {}
    with Shop(kafka, fast=0.1, slow=2.5) as shop:
        for order, truth in cases:
            run = _Deadline(order_status, shop, dict(order), deadline)
            try:
                finished = run.run(deadline + 4.0)
            except _LearnerError as err:
                if truth == "pending":
                    raise _Fail(f"order {order['order_id']} takes longer than the deadline, and your function "
                                f"raised {type(err.exc).__name__}: {err.exc}.",
                                "No result yet is not an error: return 'pending', so the page can say "
                                "\"we are on it\" and check again later.") from None
                raise
            if not finished:
                raise _Fail(f"`order_status` for order {order['order_id']} did not return within "
                            f"{deadline + 4:.1f} s (deadline {deadline} s).",
                            "Wait at most `deadline` seconds (your wait_for_result does), then answer.")
            answers[order["order_id"]], took[order["order_id"]] = run.value, run.elapsed
        late = _wait_until(lambda: any(e.payload.get("order_id") == "S-3" for e in shop.fulfilment.published), 5.0)
    for order, truth in (cases[2], cases[0], cases[1]):  # the one still in progress first: the lesson
        oid, got = order["order_id"], answers[order["order_id"]]
        if got == truth:
            continue
        if truth == "pending" and took[oid] > deadline + 0.5:
            raise _Fail(f"order {oid} answered {got!r} after {took[oid]:.1f} s: it waited for the result "
                        f"past the {deadline} s deadline.",
                        "Stop waiting at the deadline and answer 'pending'.")
        if truth == "pending" and got in ("shipped", "declined"):
            raise _Fail(f"order {oid} had no result yet when you answered {got!r}: a guess, and a wrong answer "
                        "if the order then fails.",
                        "Answer from a result event only; with none by the deadline, answer 'pending'.")
        if truth == "pending":
            raise _Fail(f"order {oid} was still in progress at the deadline and you answered {got!r}: it is not "
                        "failed or lost, it will ship " + (f"({shop.slow:.1f} s after it was placed)." if late else "later."),
                        "Answer 'pending' when no result arrived by the deadline.")
        if got == "pending" and took[oid] < 0.05:
            raise _Fail(f"order {oid} got a result within {shop.fast} s, but you answered 'pending' after "
                        f"{took[oid] * 1000:.0f} ms without waiting for it.",
                        "Wait (up to the deadline) for the result event with your correlation id.")
        if truth == "declined" and got == "shipped":
            raise _Fail(f"order {oid} was declined (a PaymentDeclined event) but you answered 'shipped'.",
                        "Read the answer from the result event's type: OrderShipped -> 'shipped', "
                        "PaymentDeclined -> 'declined'.")
        raise _Fail(f"order {oid} should be {truth!r}, your function answered {got!r}.",
                    "OrderShipped -> 'shipped', PaymentDeclined -> 'declined', nothing by the deadline -> 'pending'.")
    if not late:
        raise RuntimeError("the slow order never shipped")
    return (f"'shipped' and 'declined' from their result events, and 'pending' after {took['S-3']:.2f} s for the "
            "order still in progress (which then shipped): no wrong answers.")


def _wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
