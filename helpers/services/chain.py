"""Real microservices over HTTP on 127.0.0.1, chained by synchronous calls.

A :class:`Chain` of N services: the client calls the first (the edge), each service
calls the next one and waits for its answer (with a timeout), and the last service
does the work. The services are named from one cast used across the course
(:data:`CAST`: ``client -> orders -> payments -> shipping -> ...``; see :func:`chain_names`).
Every service can be given faults while it runs (:meth:`Service.configure`,
:meth:`Service.take_down`; the fault model is :mod:`helpers.services.faults`), and every answer
carries a per-hop trace so one request shows who waited for whom.

The caller's side lives in :mod:`helpers.services.calls` (``CallResult``, ``Hop``,
``Measurement``, ``call``, ``measure``, ``Monolith``, ``work``); the package
:mod:`helpers.services` re-exports those names and this module's, so a lesson or a lab needs one
import (``services.start_chain``, ``services.call``, ``services.measure``).

Why the standard library's ``ThreadingHTTPServer`` in threads, and not a web
framework in subprocesses: no extra dependency, nothing to install on Binder, and
the server threads live inside the kernel's process, so a kernel restart (or a
crash) takes them down too and leaves nothing listening. Services still talk real
HTTP over real TCP sockets, so connection refused, timeouts and slow answers are
the genuine article, not a simulation.

Every service registers with :mod:`helpers.core.lifecycle` (kind "service") while it runs,
so ``helpers.stop_all()`` stops it and ``helpers.leftovers()`` would list it, its port
and its threads (named ``course-svc:<name> ...``).

All durations in this API are plain seconds. Notebooks multiply them by their
``TIME_SCALE`` (see :func:`helpers.core.params.time_scale`); this module never scales.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, cast

import tenacity

from ..core import lifecycle
from ..core.params import check_int, check_positive
from ..core.wait import WaitTimeout, wait_until
from . import calls, faults
from .calls import CallResult, work
from .faults import Faults

__all__ = ["CAST", "THREAD_PREFIX", "Chain", "Service", "chain_names", "start_chain"]

THREAD_PREFIX = f"{lifecycle.THREAD_PREFIX}svc:"  # every thread a service starts is named so

#: The one cast of services across the course: a synchronous chain of depth d is named by the
#: first d of these (client -> orders -> payments -> ...), and the event lessons use the same
#: names (an orders topic, a payments service, a shipping service).
CAST: tuple[str, ...] = ("orders", "payments", "shipping", "warehouse", "carrier", "notifications")


def chain_names(depth: int, prefix: str | None = None) -> list[str]:
    """The names of a chain of ``depth`` services, edge first: the first ``depth`` names of
    :data:`CAST`, then numbered ones (``service-7``, ``service-8`` ...) beyond the cast.
    With ``prefix``, numbered names only (``prefix-1``, ``prefix-2`` ...)."""
    check_int("depth", depth, minimum=1)
    if prefix is not None:
        if not isinstance(prefix, str) or not prefix.strip():
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        return [f"{prefix}-{i + 1}" for i in range(depth)]
    return [CAST[i] if i < len(CAST) else f"service-{i + 1}" for i in range(depth)]


# --------------------------------------------------------------------------- HTTP plumbing


class JsonHandler(BaseHTTPRequestHandler):
    """A course service's request handler (here and in the capstone's service processes): small
    answers go out at once, an idle connection cannot pin a thread, nothing is logged, and
    :meth:`answer` sends a JSON body. Subclasses write ``do_GET``."""

    server_version = "course-svc/1"
    disable_nagle_algorithm = True  # small answers go out at once (no 40 ms delayed-ACK stalls)
    timeout = 30  # an idle or half-open connection cannot pin a thread forever

    def answer(self, status: int, body: bytes) -> None:
        """Send ``body`` (JSON) with ``status``; a caller that gave up (its timeout) or died is ignored."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the caller gave up (timeout) and closed the connection

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        pass  # keep notebooks quiet


class CourseServer(ThreadingHTTPServer):
    """A course service's HTTP server (here and in the capstone's service processes)."""

    daemon_threads = True  # a stuck request never blocks the kernel from exiting
    allow_reuse_address = True  # a service taken down comes back on the same port at once
    # The listen backlog. socketserver's default of 5 overflows when many clients connect
    # at once on a busy machine; Linux then drops the SYN and the client retries after a
    # full second, which would show up as a mysterious 1 s latency spike.
    request_queue_size = 128


class _Handler(JsonHandler):
    def do_GET(self) -> None:  # the name http.server dispatches a GET to
        cast(_Server, self.server).service._handle(self)


class _Server(CourseServer):
    def __init__(self, port: int, service: Service):
        self.service = service
        super().__init__((calls.HOST, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Like ThreadingMixIn, but the thread is named after the service and tracked
        # by it, so stop() can wait for it and leftovers() can check none is left.
        thread = threading.Thread(target=self.service._run_request, args=(self, request, client_address),
                                  name=f"{THREAD_PREFIX}{self.service.name} request", daemon=True)
        self.service._track(thread)
        thread.start()


# --------------------------------------------------------------------------- services


class Service:
    """One microservice: an HTTP server on 127.0.0.1 that does its own work, then
    (if it has a downstream) calls it synchronously and waits for the answer.

    Faults (all changeable while running with :meth:`configure`, see
    :class:`helpers.services.faults.Faults`): ``latency``, ``error_rate``, ``tail_median``/
    ``tail_p99`` (heavy tail), ``pause_every``/``pause_for`` (stop-the-world pauses),
    ``workers`` (bounded pool), ``timeout``, ``retries``/``retry_wait``.
    :meth:`take_down` closes the listening socket (callers get "connection refused");
    :meth:`bring_up` reopens the same port; :meth:`stop` ends it for good.
    """

    def __init__(self, name: str, downstream: Service | None = None, *, seed: int | None = None,
                 **settings: Any):
        faults.check_fault_names(settings)
        self.name = name
        self.downstream = downstream
        self.port: int | None = None
        self._faults = Faults(**settings)
        self._pool = faults.WorkerPool(self._faults.workers)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._outgoing: set[http.client.HTTPConnection] = set()  # open calls to the downstream
        self._threads_lock = threading.Lock()
        self._epoch = time.perf_counter()
        self._lock = threading.Lock()
        self._running = False
        self.received = 0
        self.answered: collections.Counter[int] = collections.Counter()

    # ---- lifecycle
    def start(self) -> Service:
        """Listen on 127.0.0.1 (a free port the first time, the same port afterwards)."""
        with self._lock:
            if self._server is not None:
                return self
            self._stopping.clear()
            self._server = self._bind(self.port or 0)
            self.port = self._server.server_address[1]
            lifecycle.note_port(self.port)
            self._epoch = time.perf_counter()
            self._serve_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"{THREAD_PREFIX}{self.name} listener", daemon=True)
            self._serve_thread.start()
            self._running = True
        lifecycle.register(self, "service", self.name)
        return self

    def _bind(self, port: int) -> _Server:
        if port == 0:
            return _Server(0, self)
        # Coming back on a fixed port can race with the OS handing that port to an
        # outgoing connection; retry for a second, then say so clearly.
        errors: list[OSError] = []

        def attempt() -> _Server | None:
            try:
                return _Server(port, self)
            except OSError as exc:
                errors.append(exc)
                return None

        try:
            server = wait_until(attempt, 1.0, f"{self.name} to listen again on {calls.HOST}:{port}")
        except WaitTimeout as exc:
            raise RuntimeError(f"{self.name} could not listen again on {calls.HOST}:{port}: {errors[-1]}") from exc
        assert server is not None  # wait_until returns a truthy value or raises
        return server

    def _close_listener(self) -> None:
        with self._lock:
            server, thread = self._server, self._serve_thread
            self._server = self._serve_thread = None
        if server is not None:
            server.shutdown()  # returns within poll_interval
            server.server_close()  # the listening socket is gone: connection refused from now on
        if thread is not None:
            thread.join(timeout=2)

    def take_down(self) -> Service:
        """Close the listening socket: new calls get "connection refused". In-flight ones finish."""
        self._close_listener()
        return self

    def bring_up(self) -> Service:
        """Listen again on the same port."""
        return self.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop listening, cut short every sleeping request and every call it is waiting
        on, and wait (at most ``timeout`` s) for its request threads."""
        _stop_together([self], timeout)

    def _signal_stop(self) -> None:
        self._stopping.set()  # every sleep in a request ends now; requests answer 503
        self._pool.wake_all()
        with self._threads_lock:
            outgoing = list(self._outgoing)
        for conn in outgoing:  # a request waiting for its downstream gets "connection lost" at once
            if conn.sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    conn.sock.shutdown(socket.SHUT_RDWR)
        self._close_listener()

    def _join(self, deadline: float) -> None:
        for thread in self._live_threads():
            thread.join(timeout=max(0.0, deadline - time.perf_counter()))
        self._running = False
        lifecycle.unregister(self)

    @property
    def running(self) -> bool:
        """Started and not stopped (a service taken down is still running: it can come back)."""
        return self._running

    @property
    def is_up(self) -> bool:
        """Listening now."""
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://{calls.HOST}:{self.port}/"

    def call(self, timeout: float | None = None, order_id: int = 1) -> CallResult:
        """Call this service like a client would (``timeout`` defaults to its own)."""
        if timeout is None:
            timeout = self._faults.timeout
        check_positive("timeout", timeout)
        return calls.http_get("client", self.name, self.port, timeout, order_id)[0]

    # ---- faults and counters
    @property
    def faults(self) -> dict[str, Any]:
        """The current fault settings."""
        return self._faults.as_dict()

    def configure(self, **changes: Any) -> Service:
        """Change faults while running, e.g. ``configure(latency=0.2, error_rate=0.1)``.
        Unknown names raise TypeError; bad values raise ValueError naming the parameter."""
        faults.check_fault_names(changes)
        new = replace(self._faults, **changes)
        self._faults = new
        if new.workers != self._pool.size:
            self._pool.resize(new.workers)
        return self

    def reset_faults(self, **keep: Any) -> Service:
        """Back to a healthy service (keeping any settings passed, e.g. ``timeout``)."""
        return self.configure(**{**Faults().as_dict(), **keep})

    def reset_counts(self) -> None:
        """Zero ``received``, ``answered`` and the pool's peaks."""
        with self._lock:
            self.received = 0
            self.answered = collections.Counter()
        self._pool.reset_peaks()

    @property
    def max_in_flight(self) -> int:
        """Most requests holding a worker at once since :meth:`reset_counts`."""
        return self._pool.max_busy

    @property
    def max_waiting(self) -> int:
        """Most requests waiting in line for a worker at once since :meth:`reset_counts`."""
        return self._pool.max_waiting

    def __repr__(self) -> str:
        state = "up" if self.is_up else "DOWN"
        return f"<Service {self.name} {state} on {calls.HOST}:{self.port}>"

    # ---- threads and connections
    def _track(self, thread: threading.Thread) -> None:
        with self._threads_lock:
            self._threads.add(thread)

    def _track_call(self, conn: http.client.HTTPConnection, open_: bool) -> None:
        with self._threads_lock:
            if open_:
                self._outgoing.add(conn)
            else:
                self._outgoing.discard(conn)

    def _live_threads(self) -> list[threading.Thread]:
        with self._threads_lock:
            self._threads = {t for t in self._threads if t.is_alive() or t.ident is None}
            return list(self._threads)

    def _run_request(self, server: _Server, request: Any, client_address: Any) -> None:
        try:
            with contextlib.suppress(Exception):  # a broken connection must not print a traceback
                server.finish_request(request, client_address)
        finally:
            server.shutdown_request(request)
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    # ---- time: sleeps are cut short by stop(), and frozen by stop-the-world pauses
    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _run_for(self, seconds: float) -> None:
        """Spend ``seconds`` of running time; a pause freezes the clock, like a GC pause
        freezes every thread of a process."""
        remaining = seconds
        while not self._stopping.is_set():
            since = time.perf_counter() - self._epoch
            frozen = faults.pause_left(self._faults, since)
            if frozen > 0:
                self._sleep(frozen)
                continue
            if remaining <= 0:
                return
            step = min(remaining, faults.until_next_pause(self._faults, since))
            self._sleep(step)
            remaining -= step

    # ---- one request
    def _handle(self, handler: _Handler) -> None:
        arrived = time.perf_counter()
        with self._lock:
            self.received += 1
        cfg = self._faults  # one consistent snapshot for this request
        order_id = calls.order_of(handler.path)
        trace: list[dict[str, Any]] = []
        value = None
        error, failed = "", None
        queued = own = 0.0
        if not self._pool.acquire(cfg.timeout, self._stopping):
            queued = time.perf_counter() - arrived
            status = 503
            error, failed = f"{self.name} overloaded (no free worker within {cfg.timeout:.2f} s)", self.name
        else:
            try:
                queued = time.perf_counter() - arrived
                started = time.perf_counter()
                with self._rng_lock:
                    service_time = faults.sample_latency(self._rng, cfg.latency, cfg.tail_median, cfg.tail_p99)
                    unlucky = self._rng.random() < cfg.error_rate
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
                    result, sent = self._call_downstream(self.downstream, cfg, order_id)
                    trace = [calls.hop_to_wire(h, sent) for h in result.trace]
                    if result.ok:
                        status, value = 200, result.value
                    else:
                        error, failed = calls.root_cause(result), result.failed
                        # The service that saw the failure says what it saw: 502 (refused or
                        # a failed answer), 504 (timeout); every level above passes on 502.
                        timed_out_here = result.error.startswith(f"{self.name} -> ") and "timed out" in result.error
                        status = 504 if timed_out_here else 502
                self._run_for(0.0)  # a pause that began meanwhile holds the answer too
            finally:
                self._pool.release()
        hop = {"service": self.name, "start": arrived, "end": time.perf_counter(), "status": status,
               "queued": queued, "own": own, "error": error}
        body = json.dumps({"status": status, "error": error, "failed": failed, "value": value,
                           "trace": [hop, *trace]}).encode()
        with self._lock:
            self.answered[status] += 1
        handler.answer(status, body)

    def _call_downstream(self, target: Service, cfg: Faults, order_id: int) -> tuple[CallResult, float]:
        """Call ``target`` (with ``cfg.retries`` extra attempts); the result and when it was sent."""

        def once() -> tuple[CallResult, float]:
            return calls.http_get(self.name, target.name, target.port, cfg.timeout, order_id, self._track_call)

        if cfg.retries == 0:
            return once()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(cfg.retries + 1),
            wait=tenacity.wait_fixed(cfg.retry_wait),
            retry=tenacity.retry_if_result(lambda sent: not sent[0].ok and not self._stopping.is_set()),
            sleep=self._sleep,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        return retrying(once)


def _stop_together(services: Iterable[Service], timeout: float = 3.0) -> None:
    """Signal every service first, then wait for their threads: a request waiting for a
    downstream answer is released as soon as that downstream cuts its own sleep short."""
    services = list(services)
    for svc in services:
        svc._signal_stop()
    deadline = time.perf_counter() + timeout
    for svc in services:
        svc._join(deadline)


# --------------------------------------------------------------------------- chains


class Chain(lifecycle.Managed):
    """N services in a line: client -> orders -> payments -> ... (the last does the work).

    Names come from :func:`chain_names` (the course's :data:`CAST`). Every service gets
    the same faults at the start (per hop); change one with ``chain[i].configure(...)``
    (0-based) or ``chain["shipping"]``. Timeouts shrink with depth by ``timeout_step``
    per level (default :func:`helpers.services.faults.ladder_step`: a tenth of ``timeout``, at least
    50 ms) so the caller nearest a slow service times out first and the error names the
    right hop.
    """

    def __init__(self, depth: int, *, timeout: float = 5.0, timeout_step: float | None = None,
                 seed: int | None = None, prefix: str | None = None, **settings: Any):
        check_int("depth", depth, minimum=1)
        check_positive("timeout", timeout)
        step = (faults.ladder_step(timeout) if timeout_step is None
                else check_positive("timeout_step", timeout_step, allow_zero=True))
        names = chain_names(depth, prefix)
        faults.check_fault_names(settings)
        Faults(timeout=timeout, **settings)  # every value checked before anything starts
        self.timeout_step = step
        seeds = random.Random(seed) if seed is not None else None
        self.services: list[Service] = []
        downstream = None
        for i in reversed(range(depth)):
            svc_timeout = timeout + step * max(0, depth - 2 - i)
            svc = Service(names[i], downstream, timeout=svc_timeout,
                          seed=None if seeds is None else seeds.randrange(2**32), **settings)
            self.services.insert(0, svc)
            downstream = svc

    @property
    def client_timeout(self) -> float:
        """How long :meth:`call` waits by default: one ``timeout_step`` more than the edge waits."""
        return float(self.edge.faults["timeout"]) + self.timeout_step

    @property
    def depth(self) -> int:
        return len(self.services)

    @property
    def edge(self) -> Service:
        """The first service, the one the client calls."""
        return self.services[0]

    def start(self) -> Self:
        """Start every service, the edge first."""
        for svc in self.services:
            svc.start()
        return self

    def stop(self) -> None:
        """Stop every service of the chain together."""
        _stop_together(self.services)

    def __getitem__(self, key: int | str) -> Service:
        if isinstance(key, str):
            for svc in self.services:
                if svc.name == key:
                    return svc
            raise KeyError(key)
        return self.services[key]

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    def call(self, timeout: float | None = None, order_id: int = 1) -> CallResult:
        """Call the edge like a client would and wait (at most ``timeout``, default
        ``client_timeout``). The error says where it failed, e.g.
        ``"502 from orders: payments -> shipping unavailable (connection refused)"``."""
        return self.edge.call(self.client_timeout if timeout is None else timeout, order_id)

    def configure_all(self, **changes: Any) -> Chain:
        """:meth:`Service.configure` every service the same way."""
        for svc in self.services:
            svc.configure(**changes)
        return self

    def reset_counts(self) -> None:
        """:meth:`Service.reset_counts` on every service."""
        for svc in self.services:
            svc.reset_counts()

    def received(self) -> dict[str, int]:
        """How many requests each service received since the last reset_counts()."""
        return {svc.name: svc.received for svc in self.services}

    def __repr__(self) -> str:
        names = [s.name + ("" if s.is_up else "(DOWN)") for s in self.services]
        return "<Chain " + " -> ".join(["client", *names]) + ">"


def start_chain(depth: int, **options: Any) -> Chain:
    """Start a chain of ``depth`` services; use it as a context manager
    (``with start_chain(3, latency=0.05) as chain: chain.call()``). Options: ``timeout``,
    ``timeout_step``, ``seed``, ``prefix`` (numbered names instead of the cast) and any fault
    of :meth:`Service.configure`."""
    chain = Chain(depth, **options)
    try:
        return chain.start()
    except BaseException:
        chain.stop()
        raise
