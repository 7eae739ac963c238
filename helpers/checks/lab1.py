"""Lab 1, break the chain: find the weakest link by measuring, then a timeout, retries
and a circuit breaker, each checked against a chain of real HTTP services with faults."""
from __future__ import annotations

import contextlib
import functools
import html
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pybreaker
from tqdm.auto import tqdm

from .. import services
from ..core.params import check_int, check_positive
from ..core.wait import wait_until
from ..services import calls
from .feedback import Deadline, Fail, LearnerError, check, learner, ms, name_of

# =========================================================================== lab runtimes


def lab1_sabotage(chain: services.Chain, seed: int | None = None) -> None:
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


def lab1_compare(chain: services.Chain, strategies: dict[str, Callable[[services.Chain], Any]], *, hang: float,
                 n_requests: int = 40, concurrency: int = 4) -> Table:
    """Measure every strategy (a function ``f(chain) -> CallResult``) in two scenarios:
    "flaky" (the chain as it is) and "hung" (the last service takes ``hang`` seconds).
    Returns a table of availability and p50/p99 latency (ms) per scenario and strategy.
    A progress bar advances with every call (a hung scenario can take a while)."""
    check_positive("hang", hang)
    check_int("n_requests", n_requests)
    rows = []
    with tqdm(total=2 * len(strategies) * n_requests, desc="calls", unit="call", leave=False) as bar:
        for scenario in ("flaky", "hung"):
            with _Faults(chain) as faults:
                if scenario == "hung":
                    faults.healthy()
                    chain[-1].configure(latency=hang)
                for name, fn in strategies.items():
                    bar.set_description(f"{scenario}, {name}")
                    chain.reset_counts()
                    m = calls.measure(chain, n_requests, concurrency, call_fn=functools.partial(fn, chain),
                                      progress=bar)
                    rows.append({"scenario": scenario, "strategy": name, "availability": m.success_rate,
                                 "p50 ms": m.p50 * 1000, "p99 ms": m.p99 * 1000,
                                 "requests to the chain": chain.edge.received})
    return Table(rows)


class _Faults:
    """Remember every service's faults and counts, restore them afterwards."""

    def __init__(self, chain: services.Chain):
        self.chain = chain
        self.saved = [(svc, svc.faults, svc.is_up) for svc in chain]

    def __enter__(self) -> _Faults:
        return self

    def __exit__(self, *exc: object) -> None:
        for svc, faults, was_up in self.saved:
            svc.configure(**faults)
            if was_up and not svc.is_up:
                svc.bring_up()
            elif not was_up and svc.is_up:
                svc.take_down()

    def healthy(self, latency: float | None = None) -> None:
        """No injected errors; each service keeps its latency (or ``latency``) and timeout."""
        for svc, faults, _ in self.saved:
            svc.reset_faults(timeout=faults["timeout"], latency=faults["latency"] if latency is None else latency)
            if not svc.is_up:
                svc.bring_up()


@contextlib.contextmanager
def healthy(chain: services.Chain) -> Iterator[services.Chain]:
    """Inside the block every service of ``chain`` is healthy (no injected errors, its own
    latency kept); afterwards the faults it had are back."""
    with _Faults(chain) as faults:
        faults.healthy()
        yield chain


# =========================================================================== checks


def _chain_of(chain: Any) -> services.Chain:
    if not isinstance(chain, services.Chain):
        raise Fail(f"the check needs the chain you started (a services.Chain), got {type(chain).__name__}.",
                   "Pass `chain`, e.g. `checks.check_lab1_timeout(chain, call_with_timeout)`.")
    if not all(svc.running for svc in chain):
        raise Fail("the chain is stopped.", "Run the cell that starts it again (services.start_chain(3, ...)).")
    return chain


def _as_result(value: Any, name: str) -> Any:
    if not hasattr(value, "ok"):
        raise Fail(f"`{name}` returned {value!r:.60}, not a CallResult.",
                   "Return what services.call gives you (a CallResult, with .ok, .latency and .error), "
                   "also when the call fails.")
    return value


def _retrying_call(fn: Callable[..., Any], chain: services.Chain) -> Any:
    """Call the learner's retrying function; tenacity's RetryError gets its own feedback."""
    try:
        return _as_result(learner(fn, chain), name_of(fn))
    except LearnerError as err:
        if type(err.exc).__name__ == "RetryError":
            raise Fail("when every attempt failed, your function raised tenacity's RetryError.",
                       "Callers (and services.measure) expect a CallResult: add "
                       "`retry_error_callback=lambda state: state.outcome.result()` to return the last "
                       "failed result.") from None
        raise


@check(1, "weakest_link")
def check_lab1_weakest_link(weakest_link: Callable[..., Any]) -> str:
    """``weakest_link(chain) -> "payments"`` must find, by measuring, the service that fails most."""
    answers = {}
    names = services.chain_names(3)  # orders -> payments -> shipping
    edge, middle, last = names
    for weak in (2, 1):  # the deepest service, then the middle one
        with services.start_chain(3, latency=0.001, seed=weak) as chain:
            for i, svc in enumerate(chain):
                svc.configure(error_rate=0.3 if i == weak else 0.02)
            answer = learner(weakest_link, chain)
        name = getattr(answer, "name", answer)  # a Service is fine too
        expected = names[weak]
        if not isinstance(name, str):
            raise Fail(f"`weakest_link` returned {answer!r:.60}; it should return a service name such as "
                       f"{middle!r}.", "Return the name (a string) of the service that caused most failures.")
        answers[expected] = name
        if name == expected:
            continue
        if weak == 2 and name == edge:
            raise Fail(f"you blamed {edge}, the edge, but the check made {last} the flaky one. Every failure "
                       f"travels up the chain and leaves through {edge}, so {edge} shows up in every error.",
                       "Count where failures *started*: a failed CallResult's `.failed` names that service "
                       "(or look at the last hop of `.trace`).", answers=answers)
        if weak == 1 and answers.get(last) == last and name == last:
            raise Fail(f"your answer stayed {last!r} when the check moved the flakiness to {middle}: it looks "
                       "fixed rather than measured.",
                       "Measure the chain you are given (e.g. services.measure(chain, 60)) and name the "
                       "service most failures started in.", answers=answers)
        raise Fail(f"you named {name!r}, but the check made {expected} fail 30 % of the time and the others 2 %.",
                   "Send enough calls (50 or more) and count failures by the service they started in "
                   "(`result.failed`).", answers=answers)
    return f"your function found {last} and then {middle} as the weakest link, by measurement."


@check(1, "timeout")
def check_lab1_timeout(chain: services.Chain, call_with_timeout: Callable[..., Any]) -> str:
    """Healthy calls must succeed; a call into a hung service must give up fast and fail."""
    chain = _chain_of(chain)
    with _Faults(chain) as faults:
        faults.healthy()
        baseline = calls.measure(chain, 30)
        p99 = baseline.p99
        ok = 0
        for _ in range(20):
            ok += bool(_as_result(learner(call_with_timeout, chain), "call_with_timeout").ok)
        if ok < 16:
            raise Fail(f"only {ok} of 20 calls to the healthy chain succeeded with your timeout "
                       f"(the chain answers in {ms(baseline.p50)} typically, {ms(p99)} at p99).",
                       "Your timeout is too short: measure the chain first and choose a few times its p99.",
                       ok=ok, p99=p99)
        hang = max(1.0, 20 * p99)
        chain[-1].configure(latency=hang)
        waited = []
        for _ in range(2):
            started = time.perf_counter()
            result = _as_result(learner(call_with_timeout, chain), "call_with_timeout")
            waited.append(time.perf_counter() - started)
            if result.ok:
                break
        worst = max(waited)
        if worst > hang / 2:
            raise Fail(f"when {chain[-1].name} hung for {ms(hang)}, your caller waited {ms(worst)}.",
                       f"Give up sooner: pass a timeout of a few times the healthy p99 ({ms(p99)}), "
                       "e.g. `services.call(chain, timeout=TIMEOUT)`.", waited=waited)
        if result.ok:
            raise Fail("a call into a hung service came back successful, which cannot be right.",
                       "Return the CallResult of the call you made with the timeout.")
    return (f"{ok}/20 healthy calls succeeded, and with a hung service your caller gave up after "
            f"{ms(worst)} instead of waiting {ms(hang)}.")


@check(1, "retries")
def check_lab1_retries(chain: services.Chain, call_with_retries: Callable[..., Any]) -> str:
    """Retries must lift the success rate over a flaky hop, and stop when a service is down."""
    chain = _chain_of(chain)
    n = 40
    with _Faults(chain) as faults:
        faults.healthy()
        chain[1].configure(error_rate=0.3)
        plain = calls.measure(chain, n).success_rate
        chain.reset_counts()
        ok = 0
        for _ in range(n):
            ok += bool(_retrying_call(call_with_retries, chain).ok)
        per_call = chain.edge.received / n
        rate = ok / n
        if per_call < 1.05:
            raise Fail(f"no call was retried: {chain.edge.name} received {chain.edge.received} requests for {n} calls, "
                       f"and {rate:.0%} succeeded (plain calls: {plain:.0%}).",
                       "tenacity retries when the function raises, or when `retry=` says so. services.call "
                       "returns a failed CallResult instead of raising: use "
                       "`retry=tenacity.retry_if_result(lambda r: not r.ok)`.", per_call=per_call)
        if rate < 0.85:
            raise Fail(f"with {chain[1].name} failing 30 % of the time, {rate:.0%} of your calls succeeded "
                       f"({per_call:.1f} requests per call).",
                       "Allow 3 attempts in all: `stop=tenacity.stop_after_attempt(3)`.", rate=rate)
        faults.healthy()
        chain[-1].take_down()
        chain.reset_counts()
        limit = 5.0
        runaway = 50  # requests: ten times the most a call may make (below); it is not going to stop
        run = Deadline(_retrying_call, call_with_retries, chain, name=name_of(call_with_retries))
        started = time.monotonic()
        finished = run.run(limit, rescue=chain[-1].bring_up, give_up=lambda: chain.edge.received > runaway)
        waited = time.monotonic() - started
        attempts = chain.edge.received
        if not finished:
            raise Fail(f"with {chain[-1].name} down, your function was still retrying after {min(waited, limit):.1f} s "
                       f"({attempts} requests).",
                       "Retries must stop: `stop=tenacity.stop_after_attempt(3)`, and keep waits short.")
        result = _as_result(run.value, "call_with_retries")
        if attempts > 5:
            raise Fail(f"with {chain[-1].name} down, one call made {attempts} requests: retries multiply the load on a "
                       "service that is already in trouble.",
                       "Stop after 3 attempts: `stop=tenacity.stop_after_attempt(3)`.", attempts=attempts)
        if result.ok:
            raise Fail(f"with {chain[-1].name} down your function reported success.", "Return the last CallResult.")
    return (f"{rate:.0%} of calls succeeded over a hop that fails 30 % of the time (plain calls: {plain:.0%}), "
            f"and against a dead service your retries stopped after {attempts} attempts.")


@check(1, "breaker")
def check_lab1_breaker(chain: services.Chain, call_with_breaker: Callable[..., Any]) -> str:
    """The breaker must open (calls stop reaching the chain and fail fast), then close again."""
    chain = _chain_of(chain)

    def one() -> Any:
        try:
            return _as_result(learner(call_with_breaker, chain), "call_with_breaker")
        except LearnerError as err:
            if isinstance(err.exc, pybreaker.CircuitBreakerError):
                raise Fail("while the circuit was open your function let pybreaker's CircuitBreakerError out.",
                           "Catch it and return a failed result, e.g. `services.CallResult(ok=False, "
                           "status=None, latency=0.0, error='circuit open', short_circuited=True)`.") from None
            raise

    def until_ok(seconds: float) -> bool:
        return bool(wait_until(lambda: one().ok, seconds, "a successful call", interval=0.02, strict=False))

    with _Faults(chain) as faults:
        faults.healthy()
        if not until_ok(5.0):
            raise Fail("on a healthy chain your function never returned a successful result within 5 s.",
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
            raise Fail(f"with {chain[-1].name} down, all {n} of {n} calls still reached the chain: the breaker "
                       "never opened.",
                       "pybreaker counts a failure only when the protected function *raises*: raise when "
                       "`result.ok` is False (e.g. `raise resilience.CallFailed(result)`). Create the breaker "
                       "once, outside your function, and keep fail_max small (about 5).", reached=reached)
        if reached > 12:
            raise Fail(f"the breaker opened only after {reached} failed calls.",
                       "Use a smaller fail_max (about 5): every call before it opens waits for a failure.")
        chain[-1].bring_up()
        if not until_ok(3.0):
            raise Fail(f"after {chain[-1].name} came back, your breaker still failed every call 3 s later.",
                       "reset_timeout is how long the breaker stays open before a trial call: keep it "
                       "short here (about 1 s x TIME_SCALE).")
    fast = sorted(latencies)[n // 2]
    return (f"with {chain[-1].name} down only {reached} of {n} calls reached the chain; the others failed fast "
            f"(median {ms(fast)}); and the breaker closed again when {chain[-1].name} came back.")
