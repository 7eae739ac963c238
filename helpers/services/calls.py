"""A synchronous call and what the caller sees: the answer, the time it waited, who failed.

:func:`call` calls anything with a ``call()`` method once, a :class:`helpers.services.Chain`,
a :class:`helpers.services.Service` or a :class:`Monolith`, and returns a :class:`CallResult`
with a per-hop trace (:class:`Hop`). :func:`measure` sends many calls from a few client
threads, each waiting for its answer before it sends the next, and returns a
:class:`Measurement` (percentiles, success rate, throughput). :class:`Monolith` does
the same steps as plain in-process function calls, the baseline of lesson 1, and
:func:`work` is the business work at the end of both.

:func:`http_get` is the one HTTP client of the course's services: the client and every
service calling its downstream use it, so an error always names both ends of the hop
("payments -> shipping timed out after 0.50 s"). All durations are plain seconds.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, urlparse

from ..core.lifecycle import THREAD_PREFIX
from ..core.params import check_int, check_positive
from ..core.stats import RunStats, format_duration

__all__ = [
    "HOST",
    "CallResult",
    "Callee",
    "Hop",
    "Measurement",
    "Monolith",
    "Progress",
    "call",
    "hop_to_wire",
    "http_get",
    "measure",
    "order_of",
    "root_cause",
    "work",
]

HOST = "127.0.0.1"  # never 0.0.0.0: the course's services are reachable from this machine only


class Hop(NamedTuple):
    """One service's part of one request. Times are seconds since the client sent it.

    ``queued``: waited for a free worker; ``own``: the service's own work (injected
    latency and pauses); the rest of ``end - start`` is waiting for its downstream.
    """

    service: str
    start: float
    end: float
    status: int
    queued: float = 0.0
    own: float = 0.0
    error: str = ""

    @property
    def latency(self) -> float:
        """The latency this level saw: from arrival to answer."""
        return self.end - self.start


@dataclass
class CallResult:
    """The outcome of one call as the caller saw it."""

    ok: bool
    status: int | None  # HTTP status from the called service; None when no answer came
    latency: float  # seconds the caller waited
    error: str = ""  # e.g. "502 from orders: payments -> shipping unavailable (connection refused)"
    failed: str | None = None  # the service at fault, as far as the caller can tell
    trace: list[Hop] = field(default_factory=list)
    value: dict[str, Any] | None = None
    cpu: float = 0.0  # CPU seconds the calling thread used during the call
    attempts: int = 1  # > 1 when retried
    short_circuited: bool = False  # True when a circuit breaker failed it without calling

    def levels(self) -> dict[str, float]:
        """Latency seen at each level, from the client down: ``{"client": ..., "orders": ...}``."""
        out = {"client": self.latency}
        out.update({hop.service: hop.latency for hop in self.trace})
        return out

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"FAILED: {self.error}"
        return f"<CallResult {state} in {format_duration(self.latency)}, {len(self.trace)} hops>"


@dataclass
class Measurement(RunStats):
    """What a load run measured: every call's result, the wall time and the concurrency."""

    results: list[CallResult]
    elapsed: float
    concurrency: int
    latencies: list[float] = field(init=False, repr=False)  # every call's, failures included
    successes: list[bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.latencies = [r.latency for r in self.results]
        self.successes = [r.ok for r in self.results]

    @property
    def errors(self) -> collections.Counter[str]:
        """How often each error message occurred."""
        return collections.Counter(r.error for r in self.results if not r.ok)

    def summary(self) -> str:
        """One line: calls, success rate, p50/p95/p99 and throughput."""
        return (
            f"{self.n} calls, concurrency {self.concurrency}: {self.success_rate:.1%} ok, "
            f"p50 {format_duration(self.p50)}, p95 {format_duration(self.p95)}, p99 {format_duration(self.p99)}, "
            f"{self.throughput:,.1f} ok/s"
        )

    def __repr__(self) -> str:
        return f"<Measurement {self.summary()}>"


class Callee(Protocol):
    """Anything a client can call: a Chain, a Service, a Monolith."""

    def call(self, timeout: float | None = None, order_id: int = 1) -> CallResult: ...


class Progress(Protocol):
    """A progress display that counts calls (a ``tqdm.auto`` bar, for example)."""

    def update(self, n: float | None = 1) -> bool | None: ...


def call(target: Callee, timeout: float | None = None, order_id: int = 1) -> CallResult:
    """Call a Chain, a Service or a Monolith once and return what the caller saw."""
    return target.call(timeout=timeout, order_id=order_id)


def measure(target: Callee, n_requests: int = 100, concurrency: int = 1, *, timeout: float | None = None,
            call_fn: Callable[[], CallResult] | None = None, progress: str | Progress | None = None) -> Measurement:
    """Send ``n_requests`` calls from ``concurrency`` client threads, each waiting for
    its answer before sending the next; returns latencies, success rate, throughput.
    ``call_fn`` replaces the plain call (e.g. ``lambda: resilience.call_with_retries(chain, 3)``).
    ``progress``: a label shows a ``tqdm.auto`` bar of the calls (for runs long enough to
    leave a learner's screen still), or pass a bar of your own to advance once per call."""
    check_int("n_requests", n_requests, minimum=1)
    check_int("concurrency", concurrency, minimum=1)
    if timeout is not None:
        check_positive("timeout", timeout)
    if progress is not None and not isinstance(progress, str) and not callable(getattr(progress, "update", None)):
        raise ValueError(f"progress must be a label or a bar with update(), got {progress!r}")
    plain = call_fn or (lambda: call(target, timeout=timeout))
    with contextlib.ExitStack() as stack:
        bar: Progress | None = None
        if isinstance(progress, str):
            from tqdm.auto import tqdm  # imported here: only bars pay for it

            bar = stack.enter_context(tqdm(total=n_requests, desc=progress, unit="call", leave=False))
        elif progress is not None:
            bar = progress

        def one() -> CallResult:
            result = plain()
            if bar is not None:
                bar.update(1)
            return result

        started = time.perf_counter()
        if concurrency == 1:
            results = [one() for _ in range(n_requests)]
        else:
            with ThreadPoolExecutor(max_workers=concurrency,
                                    thread_name_prefix=f"{THREAD_PREFIX}load-client") as pool:
                results = list(pool.map(lambda _: one(), range(n_requests)))
        elapsed = time.perf_counter() - started
    return Measurement(results, elapsed, concurrency)


def work(order_id: int = 1) -> dict[str, Any]:
    """The business work at the end of the chain (and in the monolith): price an order.

    A few lines of arithmetic: lesson 1 measures it as a function call (:class:`Monolith`, the
    work and the call around it: a few microseconds on a laptop, printed there), so what an
    HTTP hop adds around it is the cost of calling over the network."""
    items = [(sku, 1 + (order_id + sku) % 3, 2.5 + sku) for sku in range(5)]
    subtotal = sum(quantity * price for _, quantity, price in items)
    return {"order_id": order_id, "items": len(items), "total": round(subtotal * 1.2, 2)}


class Monolith:
    """The same steps as a chain, as plain in-process function calls (no network)."""

    def __init__(self, depth: int = 1, latency: float = 0.0, name: str = "step"):
        self.depth = check_int("depth", depth, minimum=1)
        self.latency = check_positive("latency", latency, allow_zero=True)
        self.name = name

    def call(self, timeout: float | None = None, order_id: int = 1) -> CallResult:
        """Run every step in this thread; ``timeout`` is ignored (a function call cannot time out)."""
        t0 = time.perf_counter()
        c0 = time.thread_time()
        trace: list[Hop] = []
        value = self._step(0, t0, trace, order_id)
        return CallResult(ok=True, status=200, latency=time.perf_counter() - t0, trace=trace,
                          value=value, cpu=time.thread_time() - c0)

    def _step(self, i: int, t0: float, trace: list[Hop], order_id: int) -> dict[str, Any]:
        start = time.perf_counter()
        if self.latency:
            time.sleep(self.latency)
        own = time.perf_counter() - start
        value = work(order_id) if i == self.depth - 1 else self._step(i + 1, t0, trace, order_id)
        trace.insert(0, Hop(f"{self.name}-{i + 1}", start - t0, time.perf_counter() - t0, 200, 0.0, own))
        return value

    def __repr__(self) -> str:
        return f"<Monolith {self.depth} in-process steps>"


def http_get(caller: str, target: str, port: int | None, timeout: float, order_id: int,
             track: Callable[[http.client.HTTPConnection, bool], None] | None = None) -> tuple[CallResult, float]:
    """GET one service on 127.0.0.1; returns the result and the perf_counter time it was sent.

    Errors name both ends of the hop ("payments -> shipping ...") and, for an HTTP error, the
    service that answered plus the root cause it reported. ``track(conn, True)`` is called
    before the request and ``track(conn, False)`` after it, so a stopping service can cut
    the connection short.
    """
    t0 = time.perf_counter()
    c0 = time.thread_time()

    def failed(error: str, failed_service: str | None, status: int | None = None,
               trace: list[Hop] | None = None) -> CallResult:
        return CallResult(ok=False, status=status, latency=time.perf_counter() - t0, error=error,
                          failed=failed_service, trace=trace or [], cpu=time.thread_time() - c0)

    if port is None:
        return failed(f"{caller} -> {target} unavailable (never started)", target), t0
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if track is not None:
            track(conn, True)
        conn.request("GET", f"/?order={order_id}")
        response = conn.getresponse()
        body = response.read()
        status = response.status
    except ConnectionRefusedError:
        return failed(f"{caller} -> {target} unavailable (connection refused)", target), t0
    except TimeoutError:
        return failed(f"{caller} -> {target} timed out after {timeout:.2f} s", target), t0
    except (http.client.HTTPException, OSError) as exc:
        return failed(f"{caller} -> {target} connection lost ({type(exc).__name__})", target), t0
    finally:
        if track is not None:
            track(conn, False)
        conn.close()
    try:
        data = json.loads(body)
        trace = [Hop(h["service"], h["start"] - t0, h["end"] - t0, h["status"], h["queued"], h["own"], h["error"])
                 for h in data["trace"]]
    except (ValueError, KeyError, TypeError):
        return failed(f"{caller} -> {target} sent an unreadable answer (HTTP {status})", target, status), t0
    if status == 200:
        return CallResult(ok=True, status=200, latency=time.perf_counter() - t0, trace=trace,
                          value=data.get("value"), cpu=time.thread_time() - c0), t0
    root = data.get("error") or f"HTTP {status}"
    return failed(f"{status} from {target}: {root}", data.get("failed") or target, status, trace), t0


# The wire format: a service answers JSON {status, error, failed, value, trace}, where trace
# lists one dict per hop with perf_counter times; http_get turns them into Hops relative to
# the moment it sent the request, and a service passes its downstream's hops back up.


def hop_to_wire(hop: Hop, sent: float) -> dict[str, Any]:
    """A downstream's :class:`Hop` back in absolute perf_counter time, as a service sends it on."""
    return {"service": hop.service, "start": hop.start + sent, "end": hop.end + sent,
            "status": hop.status, "queued": hop.queued, "own": hop.own, "error": hop.error}


def root_cause(result: CallResult) -> str:
    """The innermost description: "502 from orders: payments -> shipping ..." -> "payments -> shipping ..."."""
    error = result.error
    if result.status is not None and error.startswith(f"{result.status} from "):
        return error.split(": ", 1)[1]
    return error


def order_of(path: str) -> int:
    """The order id a request path carries (``/?order=42``); 1 when there is none."""
    try:
        return int(parse_qs(urlparse(path).query).get("order", ["1"])[0])
    except ValueError:
        return 1
