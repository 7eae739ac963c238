"""Real microservices over HTTP on 127.0.0.1, chained by synchronous calls.

A :class:`Chain` of N services: the client calls ``svc-1`` (the edge), ``svc-i``
calls ``svc-(i+1)`` and waits for its answer (with a timeout), and the last
service does the work. Every service can be given faults while it runs
(:meth:`Service.configure`, :meth:`Service.take_down`), and every answer carries
a per-hop trace so one request shows who waited for whom.

Why the standard library's ``ThreadingHTTPServer`` in threads, and not a web
framework in subprocesses: no extra dependency, nothing to install on Binder, and
the server threads live inside the kernel's process, so a kernel restart (or a
crash) takes them down too and leaves nothing listening. Services still talk real
HTTP over real TCP sockets, so connection refused, timeouts and slow answers are
the genuine article, not a simulation.

All durations in this API are plain seconds. Notebooks multiply them by their
``TIME_SCALE`` (see :func:`helpers.params.time_scale`); this module never scales.

The end of the module holds "the monolith is not instant" (claim C4): small
measured functions for a database query, an fsync, CPU work, lock contention and
a collector pause.
"""
from __future__ import annotations

import atexit
import collections
import gc
import http.client
import json
import math
import os
import random
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, NamedTuple
from urllib.parse import parse_qs, urlparse

import pybreaker
import tenacity

from .params import check_int, check_positive, check_probability

HOST = "127.0.0.1"  # never 0.0.0.0: the course's services are reachable from this machine only
Z99 = 2.3263478740408408  # standard normal quantile of 0.99: turns a p99 into a lognormal sigma
TAIL_CAP = 10.0  # a heavy-tailed sample is capped at TAIL_CAP * p99 so a run always ends
THREAD_PREFIX = "course-svc:"  # every thread this module starts is named so (see leftovers())

__all__ = [
    "HOST", "Hop", "CallResult", "CallFailed", "Measurement", "Service", "Chain", "Monolith", "Durations",
    "start_chain", "call", "call_with_retries", "make_breaker", "call_with_breaker", "measure",
    "availability_sweep", "latency_sweep", "work", "sample_latency", "tail_sigma", "percentile",
    "running", "stop_all", "listening_ports", "leftovers",
    "format_duration", "call_overhead", "database_query", "disk_fsync", "cpu_work", "lock_contention", "gc_pause",
]


# --------------------------------------------------------------------------- results


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
    error: str = ""  # e.g. "502 from svc-1: svc-2 -> svc-3 unavailable (connection refused)"
    failed: str | None = None  # the service at fault, as far as the caller can tell
    trace: list[Hop] = field(default_factory=list)
    value: dict | None = None
    cpu: float = 0.0  # CPU seconds the calling thread used during the call
    attempts: int = 1  # > 1 when retried
    short_circuited: bool = False  # True when a circuit breaker failed it without calling

    def levels(self) -> dict[str, float]:
        """Latency seen at each level, from the client down: ``{"client": ..., "svc-1": ...}``."""
        out = {"client": self.latency}
        out.update({hop.service: hop.latency for hop in self.trace})
        return out

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"FAILED: {self.error}"
        return f"<CallResult {state} in {format_duration(self.latency)}, {len(self.trace)} hops>"


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; nan for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


class Percentiles:
    """p(q), p50, p95, p99 and p999 of ``self.latencies`` (shared by live and simulated results)."""

    latencies: list[float]

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    @property
    def p50(self) -> float:
        return self.p(50)

    @property
    def p95(self) -> float:
        return self.p(95)

    @property
    def p99(self) -> float:
        return self.p(99)

    @property
    def p999(self) -> float:
        return self.p(99.9)


@dataclass
class Measurement(Percentiles):
    """What a load run measured: every call's result, the wall time and the concurrency."""

    results: list[CallResult]
    elapsed: float
    concurrency: int

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def ok_count(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def success_rate(self) -> float:
        return self.ok_count / self.n if self.n else math.nan

    @property
    def latencies(self) -> list[float]:
        """Every call's latency, failures included (a failure also costs the caller time)."""
        return [r.latency for r in self.results]

    @property
    def ok_latencies(self) -> list[float]:
        return [r.latency for r in self.results if r.ok]

    @property
    def throughput(self) -> float:
        """Successful calls per second."""
        return self.ok_count / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies) if self.results else math.nan

    @property
    def stdev(self) -> float:
        return statistics.stdev(self.latencies) if self.n > 1 else 0.0


    @property
    def errors(self) -> collections.Counter:
        """How often each error message occurred."""
        return collections.Counter(r.error for r in self.results if not r.ok)

    def summary(self) -> str:
        return (
            f"{self.n} calls, concurrency {self.concurrency}: {self.success_rate:.1%} ok, "
            f"p50 {format_duration(self.p50)}, p95 {format_duration(self.p95)}, p99 {format_duration(self.p99)}, "
            f"{self.throughput:,.1f} ok/s"
        )

    def __repr__(self) -> str:
        return f"<Measurement {self.summary()}>"


# --------------------------------------------------------------------------- faults


def sample_latency(rng: random.Random, latency: float = 0.0, tail_median: float = 0.0,
                   tail_p99: float | None = None) -> float:
    """One service time: ``latency`` plus, if ``tail_median`` > 0, a lognormal sample
    whose median is ``tail_median`` and whose 99th percentile is ``tail_p99``
    (capped at ``TAIL_CAP * tail_p99``). The simulation uses the same function."""
    extra = 0.0
    if tail_median > 0:
        p99 = tail_p99 if tail_p99 is not None else tail_median
        extra = min(tail_median * math.exp(tail_sigma(tail_median, p99) * rng.gauss(0.0, 1.0)), TAIL_CAP * p99)
    return latency + extra


def tail_sigma(tail_median: float, tail_p99: float) -> float:
    """The lognormal sigma whose median is ``tail_median`` and 99th percentile ``tail_p99``."""
    return math.log(tail_p99 / tail_median) / Z99


@dataclass(frozen=True)
class _Faults:
    latency: float = 0.0  # fixed seconds of own work per request
    error_rate: float = 0.0  # probability of answering HTTP 500
    tail_median: float = 0.0  # heavy-tailed extra latency (lognormal): median ...
    tail_p99: float | None = None  # ... and 99th percentile
    pause_every: float = 0.0  # stop-the-world pause: every pause_every seconds ...
    pause_for: float = 0.0  # ... freeze all requests for pause_for seconds
    workers: int | None = None  # at most this many requests handled at once (None: unbounded)
    timeout: float = 5.0  # seconds to wait for the downstream answer and for a free worker
    retries: int = 0  # extra attempts when the downstream call fails (tenacity)
    retry_wait: float = 0.0  # seconds between those attempts


_FAULT_NAMES = tuple(_Faults.__dataclass_fields__)


def _validated(faults: _Faults) -> _Faults:
    check_positive("latency", faults.latency, allow_zero=True)
    check_probability("error_rate", faults.error_rate)
    check_positive("tail_median", faults.tail_median, allow_zero=True)
    if faults.tail_p99 is not None:
        check_positive("tail_p99", faults.tail_p99)
        if faults.tail_p99 < faults.tail_median:
            raise ValueError(f"tail_p99 must be >= tail_median ({faults.tail_median!r}), got {faults.tail_p99!r}")
    check_positive("pause_every", faults.pause_every, allow_zero=True)
    check_positive("pause_for", faults.pause_for, allow_zero=True)
    if faults.pause_for > 0 and faults.pause_for >= faults.pause_every:
        raise ValueError(
            f"pause_for must be shorter than pause_every ({faults.pause_every!r}), got {faults.pause_for!r}"
        )
    if faults.workers is not None:
        check_int("workers", faults.workers, minimum=1)
    check_positive("timeout", faults.timeout)
    check_int("retries", faults.retries, minimum=0)
    check_positive("retry_wait", faults.retry_wait, allow_zero=True)
    return faults


class _Pool:
    """A bounded worker pool: at most ``size`` requests inside, the rest wait in line.

    A Condition rather than a Semaphore so it can be resized while running and so
    stopping the service wakes every waiter at once.
    """

    def __init__(self, size: int | None):
        self.size = size
        self.busy = 0
        self.waiting = 0
        self.max_busy = 0
        self.max_waiting = 0
        self._cond = threading.Condition()

    def acquire(self, timeout: float, stopping: threading.Event) -> bool:
        deadline = time.perf_counter() + timeout
        with self._cond:
            self.waiting += 1
            self.max_waiting = max(self.max_waiting, self.waiting)
            try:
                while self.size is not None and self.busy >= self.size:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or stopping.is_set():
                        return False
                    self._cond.wait(remaining)
                self.busy += 1
                self.max_busy = max(self.max_busy, self.busy)
                return True
            finally:
                self.waiting -= 1

    def release(self) -> None:
        with self._cond:
            self.busy -= 1
            self._cond.notify()

    def resize(self, size: int | None) -> None:
        with self._cond:
            self.size = size
            self._cond.notify_all()

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def reset_peaks(self) -> None:
        with self._cond:
            self.max_busy = self.busy
            self.max_waiting = self.waiting


# --------------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    server_version = "course-svc/1"
    disable_nagle_algorithm = True  # small answers go out at once (no 40 ms delayed-ACK stalls)
    timeout = 30  # an idle or half-open connection cannot pin a thread forever

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.service._handle(self)

    def log_message(self, format, *args) -> None:  # noqa: A002 - keep notebooks quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck request never blocks the kernel from exiting
    allow_reuse_address = True  # a service taken down comes back on the same port at once
    # The listen backlog. socketserver's default of 5 overflows when many clients connect
    # at once on a busy machine; Linux then drops the SYN and the client retries after a
    # full second, which would show up as a mysterious 1 s latency spike.
    request_queue_size = 128

    def __init__(self, port: int, service: "Service"):
        self.service = service
        super().__init__((HOST, port), _Handler)

    def process_request(self, request, client_address) -> None:
        # Like ThreadingMixIn, but the thread is named after the service and tracked
        # by it, so stop() can wait for it and tests can check none is left.
        thread = threading.Thread(
            target=self.service._run_request,
            args=(self, request, client_address),
            name=f"{THREAD_PREFIX}{self.service.name} request",
            daemon=True,
        )
        self.service._track(thread)
        thread.start()


def _http_get(caller: str, target: str, port: int | None, timeout: float, order_id: int) -> tuple[CallResult, float]:
    """GET one service; returns the result and the perf_counter time the request was sent.

    Errors name both ends of the hop ("svc-2 -> svc-3 ...") and, for an HTTP
    error, the service that answered plus the root cause it reported.
    """
    t0 = time.perf_counter()
    c0 = time.thread_time()

    def failed(error: str, failed_service: str | None, status: int | None = None, trace=None) -> CallResult:
        return CallResult(ok=False, status=status, latency=time.perf_counter() - t0, error=error,
                          failed=failed_service, trace=trace or [], cpu=time.thread_time() - c0)

    if port is None:
        return failed(f"{caller} -> {target} unavailable (never started)", target), t0
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", f"/?order={order_id}")
        response = conn.getresponse()
        body = response.read()
        status = response.status
    except ConnectionRefusedError:
        return failed(f"{caller} -> {target} unavailable (connection refused)", target), t0
    except (TimeoutError, socket.timeout):
        return failed(f"{caller} -> {target} timed out after {timeout:.2f} s", target), t0
    except (http.client.HTTPException, OSError) as exc:
        return failed(f"{caller} -> {target} connection lost ({type(exc).__name__})", target), t0
    finally:
        conn.close()
    try:
        data = json.loads(body)
        trace = [
            Hop(h["service"], h["start"] - t0, h["end"] - t0, h["status"], h["queued"], h["own"], h["error"])
            for h in data["trace"]
        ]
    except (ValueError, KeyError, TypeError):
        return failed(f"{caller} -> {target} sent an unreadable answer (HTTP {status})", target, status), t0
    if status == 200:
        return CallResult(ok=True, status=200, latency=time.perf_counter() - t0, trace=trace,
                          value=data.get("value"), cpu=time.thread_time() - c0), t0
    root = data.get("error") or f"HTTP {status}"
    return failed(f"{status} from {target}: {root}", data.get("failed") or target, status, trace), t0


# --------------------------------------------------------------------------- services

_REGISTRY: set["Service"] = set()
_REGISTRY_LOCK = threading.Lock()
_PORTS_USED: set[int] = set()  # every port a service of this kernel ever listened on


class Service:
    """One microservice: an HTTP server on 127.0.0.1 that does its own work, then
    (if it has a downstream) calls it synchronously and waits for the answer.

    Faults (all changeable while running with :meth:`configure`): ``latency``,
    ``error_rate``, ``tail_median``/``tail_p99`` (heavy tail), ``pause_every``/
    ``pause_for`` (stop-the-world pauses), ``workers`` (bounded pool), ``timeout``,
    ``retries``/``retry_wait``. :meth:`take_down` closes the listening socket
    (callers get "connection refused"); :meth:`bring_up` reopens the same port.
    """

    def __init__(self, name: str, downstream: "Service | None" = None, *, seed: int | None = None, **faults):
        self.name = name
        self.downstream = downstream
        self.port: int | None = None
        self._faults = _validated(_Faults(**faults))
        self._pool = _Pool(self._faults.workers)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self._epoch = time.perf_counter()
        self._lock = threading.Lock()
        self.received = 0
        self.answered: collections.Counter = collections.Counter()

    # ---- lifecycle
    def start(self) -> "Service":
        """Listen on 127.0.0.1 (a free port the first time, the same port afterwards)."""
        with self._lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            self._server = self._bind(self.port or 0)
            self.port = self._server.server_address[1]
            _PORTS_USED.add(self.port)
            self._epoch = time.perf_counter()
            self._serve_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"{THREAD_PREFIX}{self.name} listener", daemon=True,
            )
            self._serve_thread.start()
        with _REGISTRY_LOCK:
            _REGISTRY.add(self)
        return self

    def _bind(self, port: int) -> _Server:
        # Coming back on a fixed port can race with the OS handing that port to an
        # outgoing connection; retry briefly, then say so clearly.
        for attempt in range(20):
            try:
                return _Server(port, self)
            except OSError as exc:
                if port == 0:
                    raise
                if attempt == 19:
                    raise RuntimeError(f"{self.name} could not listen again on {HOST}:{port}: {exc}") from exc
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def _close_listener(self) -> None:
        with self._lock:
            server, thread = self._server, self._serve_thread
            self._server = self._serve_thread = None
        if server is not None:
            server.shutdown()  # returns within poll_interval
            server.server_close()  # the listening socket is gone: connection refused from now on
        if thread is not None:
            thread.join(timeout=2)

    def take_down(self) -> "Service":
        """Close the listening socket: new calls get "connection refused". In-flight ones finish."""
        self._close_listener()
        return self

    def bring_up(self) -> "Service":
        """Listen again on the same port."""
        return self.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop listening, cut short every sleeping request, and wait for request threads."""
        _stop_together([self], timeout)

    def _signal_stop(self) -> None:
        self._stopping.set()  # every sleep in a request ends now; requests answer 503
        self._pool.wake_all()
        self._close_listener()

    def _join(self, deadline: float) -> None:
        for thread in self._live_threads():
            thread.join(timeout=max(0.0, deadline - time.perf_counter()))
        with _REGISTRY_LOCK:
            _REGISTRY.discard(self)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    # ---- faults and counters
    @property
    def faults(self) -> dict:
        """The current fault settings."""
        return dict(self._faults.__dict__)

    def configure(self, **changes) -> "Service":
        """Change faults while running, e.g. ``configure(latency=0.2, error_rate=0.1)``.
        Unknown names raise TypeError; bad values raise ValueError naming the parameter."""
        unknown = set(changes) - set(_FAULT_NAMES)
        if unknown:
            raise TypeError(f"unknown fault(s) {sorted(unknown)}; known: {list(_FAULT_NAMES)}")
        new = _validated(replace(self._faults, **changes))
        self._faults = new
        if new.workers != self._pool.size:
            self._pool.resize(new.workers)
        return self

    def reset_faults(self, **keep) -> "Service":
        """Back to a healthy service (keeping any settings passed, e.g. ``timeout``)."""
        return self.configure(**{**_Faults().__dict__, **keep})

    def reset_counts(self) -> None:
        with self._lock:
            self.received = 0
            self.answered = collections.Counter()
        self._pool.reset_peaks()

    @property
    def in_flight(self) -> int:
        """Requests holding a worker right now."""
        return self._pool.busy

    @property
    def waiting(self) -> int:
        """Requests waiting in line for a worker right now."""
        return self._pool.waiting

    @property
    def max_in_flight(self) -> int:
        return self._pool.max_busy

    @property
    def max_waiting(self) -> int:
        return self._pool.max_waiting

    def __repr__(self) -> str:
        state = "up" if self.is_up else "DOWN"
        return f"<Service {self.name} {state} on {HOST}:{self.port}>"

    # ---- threads
    def _track(self, thread: threading.Thread) -> None:
        with self._threads_lock:
            self._threads.add(thread)

    def _live_threads(self) -> list[threading.Thread]:
        with self._threads_lock:
            self._threads = {t for t in self._threads if t.is_alive() or t.ident is None}
            return list(self._threads)

    def _run_request(self, server: _Server, request, client_address) -> None:
        try:
            server.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken connection must not print a traceback
            pass
        finally:
            server.shutdown_request(request)
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    # ---- time: sleeps are cut short by stop(), and frozen by stop-the-world pauses
    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _paused_for(self, now: float) -> float:
        """Seconds left in the current pause (0 if not paused). Pauses occupy the last
        ``pause_for`` seconds of every ``pause_every`` window after the service started."""
        every, length = self._faults.pause_every, self._faults.pause_for
        if every <= 0 or length <= 0:
            return 0.0
        phase = (now - self._epoch) % every
        return every - phase if phase >= every - length else 0.0

    def _run_for(self, seconds: float) -> None:
        """Spend ``seconds`` of running time; a pause freezes the clock, like a GC pause
        freezes every thread of a process."""
        remaining = seconds
        while not self._stopping.is_set():
            now = time.perf_counter()
            frozen = self._paused_for(now)
            if frozen > 0:
                self._sleep(frozen)
                continue
            if remaining <= 0:
                return
            every, length = self._faults.pause_every, self._faults.pause_for
            step = remaining
            if every > 0 and length > 0:
                step = min(step, (every - length) - (now - self._epoch) % every + 1e-6)
            self._sleep(step)
            remaining -= step

    # ---- one request
    def _handle(self, handler: _Handler) -> None:
        arrived = time.perf_counter()
        with self._lock:
            self.received += 1
        faults = self._faults
        order_id = _order_id(handler.path)
        trace: list[dict] = []
        value = None
        error, failed = "", None
        queued = own = 0.0
        if not self._pool.acquire(faults.timeout, self._stopping):
            queued = time.perf_counter() - arrived
            status = 503
            error, failed = f"{self.name} overloaded (no free worker within {faults.timeout:.2f} s)", self.name
        else:
            try:
                queued = time.perf_counter() - arrived
                started = time.perf_counter()
                with self._rng_lock:
                    service_time = sample_latency(self._rng, faults.latency, faults.tail_median, faults.tail_p99)
                    unlucky = self._rng.random() < faults.error_rate
                self._run_for(service_time)
                own = time.perf_counter() - started
                if self._stopping.is_set():
                    status = 503
                    error, failed = f"{self.name} is shutting down", self.name
                elif unlucky:
                    status = 500
                    error, failed = f"{self.name} failed (injected error, HTTP 500)", self.name
                elif self.downstream is None:
                    status, value = 200, work(order_id)
                else:
                    result = self._call_downstream(faults, order_id)
                    trace = [_hop_to_wire(h, result.sent) for h in result.trace]
                    if result.ok:
                        status, value = 200, result.value
                    else:
                        error, failed = _root_cause(result), result.failed
                        # The service that saw the failure says what it saw: 502 (refused or
                        # a failed answer), 504 (timeout); every level above passes on 502.
                        timed_out_here = result.error.startswith(f"{self.name} -> ") and "timed out" in result.error
                        status = 504 if timed_out_here else 502
                self._run_for(0.0)  # a pause that began meanwhile holds the answer too
            finally:
                self._pool.release()
        end = time.perf_counter()
        hop = {"service": self.name, "start": arrived, "end": end, "status": status,
               "queued": queued, "own": own, "error": error}
        body = json.dumps({"status": status, "error": error, "failed": failed, "value": value,
                           "trace": [hop, *trace]}).encode()
        with self._lock:
            self.answered[status] += 1
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass  # the caller gave up (timeout) and closed the connection

    def _call_downstream(self, faults: _Faults, order_id: int) -> "_Sent":
        target = self.downstream

        def once() -> _Sent:
            result, sent = _http_get(self.name, target.name, target.port, faults.timeout, order_id)
            return _Sent(result, sent)

        if faults.retries == 0:
            return once()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(faults.retries + 1),
            wait=tenacity.wait_fixed(faults.retry_wait),
            retry=tenacity.retry_if_result(lambda s: not s.ok and not self._stopping.is_set()),
            sleep=self._sleep,
            retry_error_callback=lambda state: state.outcome.result(),
        )
        return retrying(once)


def _stop_together(services: list["Service"], timeout: float = 3.0) -> None:
    """Signal every service first, then wait for their threads: a request waiting for a
    downstream answer is released as soon as that downstream cuts its own sleep short."""
    for svc in services:
        svc._signal_stop()
    deadline = time.perf_counter() + timeout
    for svc in services:
        svc._join(deadline)


class _Sent:
    """A downstream result plus the time it was sent (to convert its trace times back)."""

    def __init__(self, result: CallResult, sent: float):
        self.result, self.sent = result, sent

    def __getattr__(self, name):
        return getattr(self.result, name)


def _hop_to_wire(hop: Hop, sent: float) -> dict:
    return {"service": hop.service, "start": hop.start + sent, "end": hop.end + sent,
            "status": hop.status, "queued": hop.queued, "own": hop.own, "error": hop.error}


def _root_cause(result: CallResult) -> str:
    """The innermost description: "502 from svc-2: svc-2 -> svc-3 ..." -> "svc-2 -> svc-3 ..."."""
    error = result.error
    if result.status is not None and error.startswith(f"{result.status} from "):
        return error.split(": ", 1)[1]
    return error


def _order_id(path: str) -> int:
    try:
        return int(parse_qs(urlparse(path).query).get("order", ["1"])[0])
    except ValueError:
        return 1


def work(order_id: int = 1) -> dict:
    """The business work at the end of the chain (and in the monolith): price an order.
    A few microseconds of CPU, so what we measure around it is the cost of calling."""
    items = [(sku, 1 + (order_id + sku) % 3, 2.5 + sku) for sku in range(5)]
    subtotal = sum(quantity * price for _, quantity, price in items)
    return {"order_id": order_id, "items": len(items), "total": round(subtotal * 1.2, 2)}


# --------------------------------------------------------------------------- chains


class Chain:
    """N services in a line: client -> svc-1 -> svc-2 -> ... -> svc-N (does the work).

    Every service gets the same faults at the start (per hop); change one with
    ``chain[i].configure(...)`` (0-based) or ``chain["svc-3"]``. Timeouts shrink
    with depth by ``timeout_step`` per level so the caller nearest a slow service
    times out first and the error names the right hop.
    """

    def __init__(self, depth: int, *, timeout: float = 5.0, timeout_step: float = 0.05,
                 seed: int | None = None, prefix: str = "svc", **faults):
        check_int("depth", depth, minimum=1)
        check_positive("timeout", timeout)
        check_positive("timeout_step", timeout_step, allow_zero=True)
        unknown = set(faults) - set(_FAULT_NAMES)
        if unknown:
            raise TypeError(f"unknown fault(s) {sorted(unknown)}; known: {list(_FAULT_NAMES)}")
        _validated(_Faults(timeout=timeout, **faults))
        self.timeout_step = timeout_step
        seeds = random.Random(seed) if seed is not None else None
        self.services: list[Service] = []
        downstream = None
        for i in reversed(range(depth)):
            svc_timeout = timeout + timeout_step * max(0, depth - 2 - i)
            svc = Service(f"{prefix}-{i + 1}", downstream, timeout=svc_timeout,
                          seed=None if seeds is None else seeds.randrange(2**32), **faults)
            self.services.insert(0, svc)
            downstream = svc
        self.client_timeout = self.edge.faults["timeout"] + timeout_step

    @property
    def depth(self) -> int:
        return len(self.services)

    @property
    def edge(self) -> Service:
        return self.services[0]

    def start(self) -> "Chain":
        for svc in self.services:
            svc.start()
        return self

    def stop(self) -> None:
        _stop_together(self.services)

    def __enter__(self) -> "Chain":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __getitem__(self, key: int | str) -> Service:
        if isinstance(key, str):
            for svc in self.services:
                if svc.name == key:
                    return svc
            raise KeyError(key)
        return self.services[key]

    def __iter__(self):
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    def call(self, timeout: float | None = None, order_id: int = 1) -> CallResult:
        """Call the edge like a client would and wait (at most ``timeout``, default
        ``client_timeout``). The error says where it failed, e.g.
        ``"502 from svc-1: svc-2 -> svc-3 unavailable (connection refused)"``."""
        if timeout is None:
            timeout = self.client_timeout
        check_positive("timeout", timeout)
        return _http_get("client", self.edge.name, self.edge.port, timeout, order_id)[0]

    def configure_all(self, **changes) -> "Chain":
        for svc in self.services:
            svc.configure(**changes)
        return self

    def reset_counts(self) -> None:
        for svc in self.services:
            svc.reset_counts()

    def received(self) -> dict[str, int]:
        """How many requests each service received since the last reset_counts()."""
        return {svc.name: svc.received for svc in self.services}

    def __repr__(self) -> str:
        names = [s.name + ("" if s.is_up else "(DOWN)") for s in self.services]
        return "<Chain " + " -> ".join(["client", *names]) + ">"


def start_chain(depth: int, **options) -> Chain:
    """Start a chain of ``depth`` services; use it as a context manager
    (``with start_chain(3, latency=0.05) as chain: chain.call()``). Options: ``timeout``,
    ``timeout_step``, ``seed``, ``prefix`` and any fault of :meth:`Service.configure`."""
    chain = Chain(depth, **options)
    try:
        return chain.start()
    except BaseException:
        chain.stop()
        raise


def call(target, timeout: float | None = None, order_id: int = 1) -> CallResult:
    """Call a Chain, a Service or a Monolith once and return what the caller saw."""
    if isinstance(target, Service):
        if timeout is None:
            timeout = target.faults["timeout"]
        check_positive("timeout", timeout)
        return _http_get("client", target.name, target.port, timeout, order_id)[0]
    return target.call(timeout=timeout, order_id=order_id)


class Monolith:
    """The same steps as a chain, as plain in-process function calls (no network)."""

    def __init__(self, depth: int = 1, latency: float = 0.0, name: str = "step"):
        self.depth = check_int("depth", depth, minimum=1)
        self.latency = check_positive("latency", latency, allow_zero=True)
        self.name = name

    def call(self, timeout: float | None = None, order_id: int = 1) -> CallResult:
        t0 = time.perf_counter()
        c0 = time.thread_time()
        trace: list[Hop] = []
        value = self._step(0, t0, trace, order_id)
        return CallResult(ok=True, status=200, latency=time.perf_counter() - t0, trace=trace,
                          value=value, cpu=time.thread_time() - c0)

    def _step(self, i: int, t0: float, trace: list[Hop], order_id: int) -> dict:
        start = time.perf_counter()
        if self.latency:
            time.sleep(self.latency)
        own = time.perf_counter() - start
        value = work(order_id) if i == self.depth - 1 else self._step(i + 1, t0, trace, order_id)
        trace.insert(0, Hop(f"{self.name}-{i + 1}", start - t0, time.perf_counter() - t0, 200, 0.0, own))
        return value

    def __repr__(self) -> str:
        return f"<Monolith {self.depth} in-process steps>"


# --------------------------------------------------------------------------- clients: load, retries, breaker


def measure(target, n_requests: int = 100, concurrency: int = 1, *, timeout: float | None = None,
            call_fn: Callable[[], CallResult] | None = None) -> Measurement:
    """Send ``n_requests`` calls from ``concurrency`` client threads, each waiting for
    its answer before sending the next; returns latencies, success rate, throughput.
    ``call_fn`` replaces the plain call (e.g. ``lambda: call_with_retries(chain, 3)``)."""
    check_int("n_requests", n_requests, minimum=1)
    check_int("concurrency", concurrency, minimum=1)
    if timeout is not None:
        check_positive("timeout", timeout)
    one = call_fn or (lambda: call(target, timeout=timeout))
    started = time.perf_counter()
    if concurrency == 1:
        results = [one() for _ in range(n_requests)]
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{THREAD_PREFIX}load-client") as pool:
            results = list(pool.map(lambda _: one(), range(n_requests)))
    return Measurement(results, time.perf_counter() - started, concurrency)


def call_with_retries(target, attempts: int = 3, wait: float = 0.0, timeout: float | None = None) -> CallResult:
    """Call, and call again (up to ``attempts`` in all, ``wait`` seconds apart) while it fails.
    Uses tenacity. The result's ``attempts`` says how many calls it took."""
    check_int("attempts", attempts, minimum=1)
    check_positive("wait", wait, allow_zero=True)
    t0 = time.perf_counter()
    tries = []

    def once() -> CallResult:
        result = call(target, timeout=timeout)
        tries.append(result)
        return result

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_fixed(wait),
        retry=tenacity.retry_if_result(lambda r: not r.ok),
        retry_error_callback=lambda state: state.outcome.result(),
    )
    result = retrying(once)
    return replace(result, latency=time.perf_counter() - t0, attempts=len(tries))


class CallFailed(Exception):
    """Raised inside a circuit breaker so it counts a failed call."""

    def __init__(self, result: CallResult):
        super().__init__(result.error)
        self.result = result


def make_breaker(fail_max: int = 5, reset_timeout: float = 30.0) -> pybreaker.CircuitBreaker:
    """A pybreaker circuit breaker: opens after ``fail_max`` consecutive failures and
    lets one trial call through after ``reset_timeout`` seconds."""
    check_int("fail_max", fail_max, minimum=1)
    check_positive("reset_timeout", reset_timeout)
    return pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=reset_timeout)


def call_with_breaker(target, breaker: pybreaker.CircuitBreaker, timeout: float | None = None) -> CallResult:
    """Call through ``breaker``: while it is open the call fails at once without reaching
    the service (``short_circuited=True``)."""
    t0 = time.perf_counter()
    seen: list[CallResult] = []

    def attempt() -> CallResult:
        result = call(target, timeout=timeout)
        seen.append(result)
        if not result.ok:
            raise CallFailed(result)
        return result

    try:
        return breaker.call(attempt)
    except CallFailed as exc:
        return exc.result
    except pybreaker.CircuitBreakerError:
        if seen:  # this very call failed and tripped the breaker
            return seen[-1]
        return CallResult(ok=False, status=None, latency=time.perf_counter() - t0,
                          error="circuit open: failed fast without calling", short_circuited=True)


# --------------------------------------------------------------------------- sweeps


def availability_sweep(depths: Iterable[int], error_rate: float, n_requests: int = 200,
                       concurrency: int = 4, seed: int | None = 0) -> list[dict]:
    """Live: for each depth, a chain whose every hop fails with ``error_rate``; returns rows
    ``{depth, measured, formula, n}`` with formula = (1 - error_rate) ** depth."""
    check_probability("error_rate", error_rate)
    rows = []
    for depth in depths:
        with start_chain(depth, error_rate=error_rate, seed=None if seed is None else seed + depth) as chain:
            m = measure(chain, n_requests, concurrency)
        rows.append({"depth": depth, "measured": m.success_rate, "formula": (1 - error_rate) ** depth,
                     "n": n_requests})
    return rows


def latency_sweep(depths: Iterable[int], latency: float, n_requests: int = 10,
                  concurrency: int = 1, **faults) -> list[dict]:
    """Live: for each depth, a chain with ``latency`` per hop; returns rows
    ``{depth, p50, p95, p99, mean, formula}`` with formula = depth * latency."""
    check_positive("latency", latency, allow_zero=True)
    rows = []
    for depth in depths:
        with start_chain(depth, latency=latency, **faults) as chain:
            m = measure(chain, n_requests, concurrency)
        rows.append({"depth": depth, "p50": m.p50, "p95": m.p95, "p99": m.p99, "mean": m.mean,
                     "formula": depth * latency, "success_rate": m.success_rate})
    return rows


# --------------------------------------------------------------------------- registry


def running() -> list[Service]:
    """Services started and not yet stopped (listening or taken down)."""
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY, key=lambda s: (s.name, s.port or 0))


def stop_all() -> int:
    """Stop every service this kernel started; returns how many were stopped."""
    services = running()
    _stop_together(services)
    return len(services)


atexit.register(stop_all)


def listening_ports() -> set[int]:
    """TCP ports this process is listening on (psutil), to check nothing is left open."""
    import psutil

    proc = psutil.Process()
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    return {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}


def leftovers() -> dict:
    """What is still around from the services of this kernel: running services, ports of
    ours still listening, threads of ours still alive. All empty after :func:`stop_all`."""
    ours = [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]
    return {"services": [s.name for s in running()],
            "ports": sorted(listening_ports() & _PORTS_USED),
            "threads": ours}


# --------------------------------------------------------------------------- C4: the monolith is not instant


@dataclass
class Durations:
    """Measured durations (seconds) of one kind of local operation."""

    name: str
    samples: list[float]
    detail: str = ""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def total(self) -> float:
        return sum(self.samples)

    def __repr__(self) -> str:
        return (f"<Durations {self.name}: median {format_duration(self.median)}, "
                f"max {format_duration(self.max)} over {len(self.samples)} ({self.detail})>")


def format_duration(seconds: float) -> str:
    """A duration with a readable unit: ns, µs, ms or s."""
    if math.isnan(seconds):
        return "n/a"
    for unit, factor in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3)):
        if abs(seconds) * factor < 1000:
            return f"{seconds * factor:.3g} {unit}"
    return f"{seconds:.3g} s"


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def call_overhead(calls: int = 100_000) -> Durations:
    """The baseline: one trivial in-process function call (averaged over batches of ``calls``)."""
    check_int("calls", calls, minimum=1)

    def noop(x):
        return x

    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(calls):
            noop(i)
        samples.append((time.perf_counter() - t0) / calls)
    return Durations("function call", samples, f"average of {calls} calls per sample")


def database_query(rows: int = 50_000, repeats: int = 5) -> Durations:
    """An SQL query that scans a table of ``rows`` orders (sqlite3, in memory, no index)."""
    check_int("rows", rows, minimum=1)
    check_int("repeats", repeats, minimum=1)
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, amount REAL)")
        db.executemany("INSERT INTO orders (customer, amount) VALUES (?, ?)",
                       ((i % 997, (i * 7919) % 1000 / 10) for i in range(rows)))
        db.commit()
        query = "SELECT COUNT(*), SUM(amount) FROM orders WHERE customer = ? AND amount > ?"
        samples = _timed(lambda: db.execute(query, (42, 10.0)).fetchone(), repeats)
    finally:
        db.close()
    return Durations("database query", samples, f"scan of {rows} rows")


def disk_fsync(repeats: int = 5, size: int = 4096) -> Durations:
    """Write ``size`` bytes to a temporary file and force them to disk (os.fsync)."""
    check_int("repeats", repeats, minimum=1)
    check_int("size", size, minimum=1)
    payload = os.urandom(size)
    fd, path = tempfile.mkstemp(prefix="course-fsync-")
    try:
        def write_and_sync():
            os.write(fd, payload)
            os.fsync(fd)

        samples = _timed(write_and_sync, repeats)
    finally:
        os.close(fd)
        os.unlink(path)
    return Durations("disk write + fsync", samples, f"{size} bytes")


def cpu_work(n: int = 200_000, repeats: int = 5) -> Durations:
    """Pure computation: a loop of ``n`` arithmetic steps, as business code does."""
    check_int("n", n, minimum=1)
    check_int("repeats", repeats, minimum=1)

    def compute():
        total = 0
        for i in range(n):
            total += (i * i) % 7
        return total

    return Durations("CPU work", _timed(compute, repeats), f"{n} loop steps")


def lock_contention(threads: int = 4, hold: float = 0.002, iterations: int = 10) -> Durations:
    """``threads`` threads share one lock and each holds it ``hold`` seconds per turn;
    the samples are how long each acquisition waited for the lock."""
    check_int("threads", threads, minimum=1)
    check_positive("hold", hold)
    check_int("iterations", iterations, minimum=1)
    lock = threading.Lock()
    waits: list[float] = []
    waits_lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker():
        start.wait()
        for _ in range(iterations):
            t0 = time.perf_counter()
            with lock:
                waited = time.perf_counter() - t0
                time.sleep(hold)  # the critical section (e.g. updating shared state)
            with waits_lock:
                waits.append(waited)
            time.sleep(hold / 4)  # a little work outside the lock

    pool = [threading.Thread(target=worker, name=f"{THREAD_PREFIX}contention-{i}", daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    name = "lock contention" if threads > 1 else "lock, uncontended"
    return Durations(name, waits, f"{threads} thread{'s' if threads > 1 else ''}, lock held {format_duration(hold)}")


def gc_pause(objects: int = 200_000, repeats: int = 3) -> Durations:
    """A collector pause: ``gc.collect()`` with ``objects`` cyclic containers alive
    (the collector must walk all of them; meanwhile this thread does nothing else)."""
    check_int("objects", objects, minimum=1)
    check_int("repeats", repeats, minimum=1)
    graph = [[i] for i in range(objects)]
    for i, node in enumerate(graph):
        node.append(graph[i - 1])  # cycles: only the cycle collector can free these
    try:
        samples = _timed(gc.collect, repeats)
    finally:
        for node in graph:
            node.clear()
        del graph
        gc.collect()
    return Durations("GC-style pause", samples, f"gc.collect() over {objects} objects")
