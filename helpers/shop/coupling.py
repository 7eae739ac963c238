"""Temporal coupling, measured (lesson 5, claims C9 and C10; C7 on the side).

:func:`compare_coupling` places the same orders two ways at the same time and samples
what each side holds while it waits:

* synchronous: client threads call an HTTP chain orders -> payments -> shipping
  (:class:`helpers.services.Service`, real servers on 127.0.0.1) and wait for the answer;
* events: one producer thread publishes OrderPlaced to the order workflow
  (:class:`helpers.shop.workflow.OrderWorkflow`), waits for the broker's acks only, and is done;
  the workflow's services (same delays) process the orders at their own pace.

The result is a :class:`CouplingRun`: throughput of each producer, thread-seconds held,
and over time: the synchronous side's threads (exact, from each call's trace) and its
connections (counted by the OS every ``sample_every`` s), and the events side's exact
curve from the producer's own send and ack timestamps.

CPU, the third thing the video says waiting ties up, is measured per thread
(``time.thread_time``): the CPU each synchronous client thread used during its calls
(:attr:`helpers.services.calls.CallResult.cpu`, as in lesson 1) against the time it was held, and
the CPU of the events producer's thread. A blocked thread burns almost no CPU; what it
ties up is the core's *capacity*: while one order waits, its thread can compute nothing
for another, so keeping one core busy takes held/CPU threads
(:attr:`CouplingRun.threads_per_busy_core`), each with its stack and its context switches.
"""
from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.lifecycle import THREAD_PREFIX
from ..core.params import check_int, check_positive
from ..core.wait import progress_bar
from ..services import calls
from ..services.chain import CAST, Service
from .service import wait_processed as wait_processed_by
from .workflow import OrderWorkflow, Placement

__all__ = ["CouplingRun", "ResourceSample", "compare_coupling"]


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class ResourceSample:
    """Resources held at one moment (``t``: seconds since both producers started)."""

    t: float
    sync_threads: int  # threads blocked in a call or holding a worker in the HTTP chain (from the traces)
    sync_connections: int  # established TCP connections to the chain's services (from the OS)
    events_threads: int  # producer threads busy publishing or waiting for an ack
    events_pending: int  # produce requests not yet acknowledged by the broker


def _integral(samples: Sequence[ResourceSample], attr: str) -> float:
    """Resource-seconds: the area under a sampled curve (left Riemann sum)."""
    return sum(getattr(a, attr) * (b.t - a.t) for a, b in itertools.pairwise(samples))


@dataclass
class CouplingRun:
    """The same orders placed through a synchronous chain and through events, at once."""

    n_orders: int
    workers: int  # client threads of the synchronous producer
    payment_delay: float
    shipping_delay: float
    sync_s: float  # until the last synchronous order was answered
    events_s: float  # until the last event was acknowledged by the broker
    sync_ok: int
    events_ok: int
    sync_thread_s: float  # thread-seconds held by the sync side (clients waiting + service workers)
    events_thread_s: float  # thread-seconds held by the events producer
    samples: list[ResourceSample]
    events_window: tuple[float, float] = (0.0, 0.0)  # when the events producer started and was done
    events_requests: list[tuple[float, float]] = field(default_factory=list)  # (send, ack) per order
    consumers_done_s: float | None = None  # when payments and shipping had processed every event
    sync_cpu_s: float = 0.0  # CPU seconds the synchronous client threads used during their calls
    sync_client_s: float = 0.0  # seconds the synchronous client threads were held by their calls
    events_cpu_s: float = 0.0  # CPU seconds the events producer's thread used (send + waiting for acks)

    @property
    def sync_throughput(self) -> float:
        """Orders per second the synchronous producer placed (answered)."""
        return self.sync_ok / self.sync_s if self.sync_s > 0 else math.nan

    @property
    def events_throughput(self) -> float:
        """Orders per second the events producer placed (acknowledged)."""
        return self.events_ok / self.events_s if self.events_s > 0 else math.nan

    @property
    def ratio(self) -> float:
        """Events throughput / synchronous throughput (orders per second)."""
        return self.events_throughput / self.sync_throughput

    @property
    def sync_thread_s_per_order(self) -> float:
        """Thread-seconds the synchronous side held per order."""
        return self.sync_thread_s / self.n_orders

    @property
    def events_thread_s_per_order(self) -> float:
        """Thread-seconds the events producer held per order."""
        return self.events_thread_s / self.n_orders

    @property
    def sync_cpu_share(self) -> float:
        """Share of the time a synchronous client thread was held that it spent computing."""
        return self.sync_cpu_s / self.sync_client_s if self.sync_client_s > 0 else math.nan

    @property
    def threads_per_busy_core(self) -> float:
        """How many synchronous client threads it takes to keep one core busy (held / CPU)."""
        return self.sync_client_s / self.sync_cpu_s if self.sync_cpu_s > 0 else math.inf

    @property
    def sync_cpu_s_per_order(self) -> float:
        """CPU seconds a synchronous client thread used per order."""
        return self.sync_cpu_s / self.n_orders

    @property
    def events_cpu_s_per_order(self) -> float:
        """CPU seconds the events producer's thread used per order."""
        return self.events_cpu_s / self.n_orders

    def events_curve(self) -> tuple[list[float], list[int], list[int]]:
        """The events side exactly, as step points: (times, producer threads busy, sends
        awaiting their ack), from the producer's own send and ack timestamps."""
        start, end = self.events_window
        edges = sorted({start, end, *(t for pair in self.events_requests for t in pair)})
        threads = [int(start <= t < end) for t in edges]
        pending = [sum(1 for a, b in self.events_requests if a <= t < b) for t in edges]
        return edges, threads, pending

    @property
    def peak(self) -> dict[str, int]:
        """The most held at once: sync from the samples, events from the exact curve."""
        _, threads, pending = self.events_curve()
        return {"sync_threads": max((s.sync_threads for s in self.samples), default=0),
                "sync_connections": max((s.sync_connections for s in self.samples), default=0),
                "events_threads": max(threads, default=0), "events_pending": max(pending, default=0)}

    @property
    def connection_s(self) -> dict[str, float]:
        """Connection-seconds held by the synchronous side (sampled from the OS) and
        request-seconds the events producer spent awaiting acks (exact)."""
        return {"sync": _integral(self.samples, "sync_connections"),
                "events": sum(b - a for a, b in self.events_requests)}

    def summary(self) -> str:
        """The run in a few lines of text."""
        peak = self.peak
        lines = [
            (f"{self.n_orders} orders; payment {self.payment_delay * 1000:.0f} ms + shipping "
             f"{self.shipping_delay * 1000:.0f} ms of work each"),
            (f"  synchronous ({self.workers} client threads): {self.sync_ok} answered in {self.sync_s:7.3f} s "
             f"= {self.sync_throughput:8.1f} orders/s"),
            (f"  events (1 producer thread):   {self.events_ok} acknowledged in {self.events_s:7.3f} s "
             f"= {self.events_throughput:8.1f} orders/s"),
            f"  throughput ratio events / synchronous: {self.ratio:.1f}x",
            (f"  threads held per order: synchronous {self.sync_thread_s_per_order * 1000:7.1f} ms, "
             f"events {self.events_thread_s_per_order * 1000:6.2f} ms"),
            (f"  peak: synchronous {peak['sync_threads']} threads / {peak['sync_connections']} connections; "
             f"events {peak['events_threads']} thread / {peak['events_pending']} unacknowledged sends"),
        ]
        if self.sync_cpu_s > 0:
            lines.append(
                f"  CPU per order: synchronous client thread {self.sync_cpu_s_per_order * 1000:.2f} ms while held "
                f"{self.sync_client_s / self.n_orders * 1000:.0f} ms ({self.sync_cpu_share:.1%} busy: "
                f"{self.threads_per_busy_core:,.0f} such threads to keep one core busy); "
                f"events producer thread {self.events_cpu_s_per_order * 1000:.2f} ms")
        if self.consumers_done_s is not None:
            lines.append(f"  the event consumers finished processing after {self.consumers_done_s:.3f} s, "
                         "at their own pace")
        return "\n".join(lines)

    def table(self) -> str:
        """The numbers behind :func:`helpers.shop.eventplots.coupling_figure`, as a text table."""
        peak = self.peak
        rows = [("", "synchronous", "events"),
                ("producer throughput (orders/s)", f"{self.sync_throughput:,.1f}", f"{self.events_throughput:,.1f}"),
                ("producer done after (ms)", f"{self.sync_s * 1000:,.0f}", f"{self.events_window[1] * 1000:,.1f}"),
                ("threads held at the peak", str(peak["sync_threads"]), str(peak["events_threads"])),
                ("connections / unacknowledged sends at the peak", str(peak["sync_connections"]),
                 str(peak["events_pending"])),
                ("thread time held per order (ms)", f"{self.sync_thread_s_per_order * 1000:,.1f}",
                 f"{self.events_thread_s_per_order * 1000:,.2f}"),
                ("producer CPU per order (ms)", f"{self.sync_cpu_s_per_order * 1000:,.2f}",
                 f"{self.events_cpu_s_per_order * 1000:,.2f}")]
        return "\n".join(f"{a:48} {b:>12} {c:>12}" for a, b, c in rows)

    def __str__(self) -> str:
        return self.summary()


def _established_to(ports: set[int]) -> int:
    """Established TCP connections whose local port is one of ``ports`` (the server ends of
    connections to our services), as the OS reports them. Linux: /proc/self/net/tcp with
    one regular expression (the file lists every socket of the machine, thousands on a
    busy one, so a Python loop over it would itself slow the run); elsewhere: psutil."""
    try:
        with open("/proc/self/net/tcp", "rb") as fh:
            table = fh.read()
    except OSError:
        return _established_psutil(ports)
    if not ports:
        return 0
    # "sl: 0100007F:1F90 0100007F:D2A4 01 ...": local 127.0.0.1:port, remote, state 01 = ESTABLISHED
    wanted = b"|".join(b"%04X" % p for p in sorted(ports))
    return len(re.findall(rb":\s+[0-9A-F]{8}:(?:" + wanted + rb") [0-9A-F]{8}:[0-9A-F]{4} 01 ", table))


def _established_psutil(ports: set[int]) -> int:
    import psutil

    proc = psutil.Process()
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port in ports)


# --------------------------------------------------------------------------- the race


def _active(intervals: Sequence[tuple[float, float]], t: float) -> int:
    """How many of the (start, end) intervals hold the moment ``t``."""
    return sum(1 for a, b in intervals if a <= t < b)


def _http_chain(pay: float, ship: float, timeout: float) -> list[Service]:
    """A fresh synchronous chain orders -> payments -> shipping (the first three of the course's
    cast, :data:`helpers.services.CAST`) with the workflow's delays."""
    first, second, third = CAST[:3]
    shipping = Service(third, None, latency=ship, timeout=timeout)
    payments = Service(second, shipping, latency=pay, timeout=timeout)
    return [Service(first, payments, latency=0.0, timeout=timeout), payments, shipping]


class _Race:
    """Both producers, released by one signal, and a sampler of the synchronous side's connections.

    The synchronous side: ``workers`` client threads through :func:`helpers.services.calls.measure`;
    each call's send time is logged, so its trace says exactly when its client thread and
    each service's worker thread were held. The events side: one thread places every order
    fire-and-forget, then waits for the acks. The sampler counts, every ``sample_every`` s,
    the established connections to the chain (from the OS).
    """

    def __init__(self, wf: OrderWorkflow, chain: list[Service], n_orders: int, workers: int,
                 sample_every: float, call_timeout: float):
        self.wf, self.chain, self.n_orders, self.workers = wf, chain, n_orders, workers
        self.sample_every, self.call_timeout = sample_every, call_timeout
        self.go = threading.Event()
        self.over = threading.Event()
        self.t0 = 0.0
        self.samples: list[tuple[float, int]] = []  # (t, established connections to the chain)
        self.calls: list[tuple[float, calls.CallResult]] = []  # (monotonic send time, result)
        self.sync: calls.Measurement | None = None
        self.sync_s = 0.0
        self.placements: list[Placement] = []
        self.events_window = (0.0, 0.0)  # monotonic: events producer started, all acked
        self.events_cpu = 0.0  # CPU seconds of the events producer's thread
        self.bar: Any = None  # a progress bar of the synchronous calls, or None
        self._lock = threading.Lock()

    def _call(self) -> calls.CallResult:
        sent = time.monotonic()
        result = calls.call(self.chain[0], timeout=self.call_timeout)
        with self._lock:
            self.calls.append((sent, result))
        return result

    def _sync_side(self) -> None:
        self.go.wait()
        started = time.monotonic()
        self.sync = calls.measure(self.chain[0], self.n_orders, self.workers, call_fn=self._call, progress=self.bar)
        self.sync_s = time.monotonic() - started

    def _events_side(self) -> None:
        self.go.wait()
        started, cpu = time.monotonic(), time.thread_time()
        placements = [self.wf.place_order(wait_ack=False) for _ in range(self.n_orders)]
        for p in placements:
            p.ack()
        self.events_window = (started, time.monotonic())
        self.events_cpu = time.thread_time() - cpu
        self.placements = placements

    def _sampler(self) -> None:
        ports = {svc.port for svc in self.chain if svc.port is not None}
        self.go.wait()
        while True:  # a periodic sampler, not a wait: it ends when the race is over
            self.samples.append((time.monotonic() - self.t0, _established_to(ports)))
            if self.over.wait(self.sample_every):
                return

    def run(self, limit: float) -> None:
        """Start the three threads, release both producers at once, wait for them (at most ``limit`` s)."""
        threads = [threading.Thread(target=fn, name=f"{THREAD_PREFIX}coupling-{label}", daemon=True)
                   for label, fn in (("sync-load", self._sync_side), ("events-producer", self._events_side),
                                     ("sampler", self._sampler))]
        for t in threads:
            t.start()
        self.t0 = time.monotonic()
        self.go.set()
        try:
            deadline = time.monotonic() + limit
            for t in threads[:2]:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    raise TimeoutError(f"compare_coupling: {t.name} did not finish within {limit:g} s")
        finally:
            self.over.set()
            threads[2].join(5)

    def result(self, pay: float, ship: float, consumers_done: float | None) -> CouplingRun:
        """The measured run, on the race's clock (seconds since both producers were released)."""
        if self.sync is None:
            raise RuntimeError("compare_coupling: the synchronous side did not finish")
        window = (self.events_window[0] - self.t0, self.events_window[1] - self.t0)
        requests = [(p.sent_at - self.t0, (p.acked_at if p.acked_at is not None else self.events_window[1]) - self.t0)
                    for p in self.placements]
        # Threads held, exactly, from each call's trace: its client thread for the whole call,
        # each service's worker thread for its hop (hop times are relative to the send).
        held = [(sent - self.t0, sent - self.t0 + r.latency) for sent, r in self.calls]
        held += [(sent - self.t0 + h.start, sent - self.t0 + h.end) for sent, r in self.calls for h in r.trace]
        # The events side is over in milliseconds, faster than any sampler: its curve is exact,
        # from the producer's own timestamps (send, ack). Both are evaluated at the sampling times.
        samples = [ResourceSample(t, _active(held, t), conns, int(window[0] <= t < window[1]), _active(requests, t))
                   for t, conns in self.samples]
        # Thread-seconds, exactly: every client thread waits for its whole call; every service
        # holds a worker thread for its part of it (its hop, including waiting downstream).
        results = self.sync.results
        sync_thread_s = sum(r.latency for r in results) + sum(h.latency for r in results for h in r.trace)
        # CPU, per thread: each client thread's own CPU during its call (lesson 1's measure).
        sync_cpu_s, sync_client_s = sum(r.cpu for r in results), sum(r.latency for r in results)
        return CouplingRun(
            n_orders=self.n_orders, workers=self.workers, payment_delay=pay, shipping_delay=ship,
            sync_s=self.sync_s, events_s=window[1] - window[0], sync_ok=self.sync.ok_count,
            events_ok=sum(1 for p in self.placements if p.acked_at is not None),
            sync_thread_s=sync_thread_s, events_thread_s=window[1] - window[0], samples=samples,
            events_window=window, events_requests=requests, consumers_done_s=consumers_done,
            sync_cpu_s=sync_cpu_s, sync_client_s=sync_client_s, events_cpu_s=self.events_cpu,
        )


# --------------------------------------------------------------------------- the experiment


def _delays(wf: OrderWorkflow, payment_delay: float | None, shipping_delay: float | None) -> tuple[float, float]:
    """The work per order of each service: given, or the workflow's own; set on the workflow."""
    pay = wf.payment.processing_delay if payment_delay is None else check_positive(
        "payment_delay", payment_delay, allow_zero=True)
    ship = wf.shipping.processing_delay if shipping_delay is None else check_positive(
        "shipping_delay", shipping_delay, allow_zero=True)
    wf.payment.processing_delay, wf.shipping.processing_delay = pay, ship
    return pay, ship


def compare_coupling(wf: OrderWorkflow, n_orders: int = 20, *, workers: int = 4,
                     payment_delay: float | None = None, shipping_delay: float | None = None,
                     sample_every: float = 0.02, wait_processed: bool = True,
                     timeout: float | None = None, progress: bool = True) -> CouplingRun:
    """Place ``n_orders`` orders two ways at the same time and sample the resources held.

    Synchronous: ``workers`` client threads call an HTTP chain orders -> payments ->
    shipping and wait for the answer. Events: one producer thread publishes OrderPlaced to
    the workflow ``wf`` (send all, then wait for the broker's acks) and is done; its payment
    and shipping services (same delays: ``payment_delay``/``shipping_delay``, default the
    workflow's) process them at their own pace. Every ``sample_every`` seconds a sampler
    counts the connections to the chain (the OS's count) and reads the threads held off the
    calls' traces. ``wait_processed``: also wait until the services
    have processed every order (``consumers_done_s``). ``timeout`` bounds each producer.
    ``progress``: show progress bars (the synchronous calls answered, then the events the
    consumers processed), so a long run never leaves the screen still.
    """
    check_int("n_orders", n_orders)
    check_int("workers", workers)
    if workers > 64:
        raise ValueError(f"workers must be <= 64, got {workers!r}")
    check_positive("sample_every", sample_every)
    if timeout is not None:
        check_positive("timeout", timeout)
    wf.wait_ready()
    pay, ship = _delays(wf, payment_delay, shipping_delay)
    chain = _http_chain(pay, ship, timeout=30.0 + 10 * (pay + ship))
    race = _Race(wf, chain, n_orders, workers, sample_every, call_timeout=30.0 + 10 * (pay + ship))
    try:
        for svc in reversed(chain):
            svc.start()
        if progress:
            race.bar = progress_bar(n_orders, "synchronous orders answered", unit="order")
        race.run(timeout if timeout is not None else 60.0 + 3 * n_orders * (pay + ship))
    finally:
        race.go.set()
        if race.bar is not None:
            race.bar.close()
        for svc in chain:
            svc.stop()
    consumers_done = None
    if wait_processed:
        ids = [p.correlation_id for p in race.placements]
        done = wait_processed_by({"payments": wf.payment, "shipping": wf.shipping}, ids,
                                 30.0 + 3 * n_orders * (pay + ship),
                                 progress="events processed by payments and shipping" if progress else None)
        consumers_done = max(h.t for handled in done.values() for h in handled) - race.t0
    return race.result(pay, ship, consumers_done)
