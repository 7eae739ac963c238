"""A discrete-event model (simpy) of the same synchronous chains, for scales the live
services in :mod:`helpers.services` cannot reach on a laptop: 50 services, 10,000
requests, 99.9 % availability per hop, worker pools under load.

The model matches the live services: a request arrives at hop i, takes a worker
(if the hop has a bounded pool) and keeps it until its answer goes back up, spends
its own service time (the same fixed + lognormal model as
:func:`helpers.services.faults.sample_latency`), fails with the hop's error rate (then it
answers at once and nothing below is called), otherwise calls hop i+1 and waits. Network overhead is
zero here; that is the main difference from the live chain.

Times are simulated seconds (no sleeping), so TIME_SCALE does not apply. Every
function is deterministic for a given ``seed``. ``tests/test_simulation.py``
cross-checks the model against live services on small cases.
"""
from __future__ import annotations

import math
import random
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from math import exp
from typing import Any, TypeVar, cast

import simpy

from ..core.params import check_int, check_positive, check_probability
from ..core.stats import RunStats
from .faults import TAIL_CAP, check_tail, tail_sigma

__all__ = [
    "SimResult",
    "availability_vs_depth",
    "chain_availability",
    "latency_vs_depth",
    "pool_throughput",
    "simulate_chain",
    "slow_share_formula",
]


@dataclass
class SimResult(RunStats):
    """What one simulated run measured (simulated seconds); ``throughput`` is per simulated second."""

    depth: int
    latencies: list[float]  # end-to-end latency of every request (a client timeout caps it)
    successes: list[bool]
    elapsed: float  # simulated time from the first request sent to the last answer
    hit_tail: list[bool] = field(default_factory=list)  # request met at least one hop above its p99

    @property
    def tail_share(self) -> float:
        """Share of requests that met at least one hop slower than that hop's p99."""
        return sum(self.hit_tail) / self.n if self.hit_tail else math.nan

    def __repr__(self) -> str:
        return (f"<SimResult depth {self.depth}, {self.n} requests: {self.success_rate:.2%} ok, "
                f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, {self.throughput:.1f} ok/s>")


T = TypeVar("T")
_Proc = Generator[Any, Any, Any]  # a simpy process body


def _per_hop(name: str, value: T | Sequence[T], depth: int) -> list[T]:
    """One value per hop: a list/tuple of ``depth`` values, or one value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ValueError(f"{name} must have one value per hop ({depth}), got {len(value)}")
        return list(value)
    return [cast(T, value)] * depth


def simulate_chain(depth: int, n_requests: int = 10_000, *, latency: float | Sequence[float] = 0.0,
                   tail_median: float | Sequence[float] = 0.0, tail_p99: float | Sequence[float] | None = None,
                   error_rate: float | Sequence[float] = 0.0, workers: int | None | Sequence[int | None] = None,
                   concurrency: int = 1, arrival_rate: float | None = None, timeout: float | None = None,
                   seed: int = 0) -> SimResult:
    """Simulate ``n_requests`` through a chain of ``depth`` hops.

    Per-hop parameters take one value for every hop or a list with one per hop
    (e.g. ``latency=[0.01, 0.01, 0.2]`` slows hop 3). Load: ``concurrency`` clients
    in a closed loop (like :func:`helpers.services.calls.measure`), or, if ``arrival_rate``
    is given, Poisson arrivals at that many requests per second (open loop).
    ``timeout``: the client gives up after that long (the chain keeps working on it).
    """
    check_int("depth", depth, minimum=1)
    check_int("n_requests", n_requests, minimum=1)
    check_int("concurrency", concurrency, minimum=1)
    if arrival_rate is not None:
        check_positive("arrival_rate", arrival_rate)
    if timeout is not None:
        check_positive("timeout", timeout)
    hop_latency = [check_positive("latency", v, allow_zero=True) for v in _per_hop("latency", latency, depth)]
    medians = _per_hop("tail_median", tail_median, depth)
    p99s: list[float | None] = _per_hop("tail_p99", tail_p99, depth)
    for med, p99 in zip(medians, p99s):
        check_tail(med, p99)  # the live services' own check (helpers.services.faults)
    errors = [check_probability("error_rate", v) for v in _per_hop("error_rate", error_rate, depth)]
    pool_sizes: list[int | None] = _per_hop("workers", workers, depth)
    for w in pool_sizes:
        if w is not None:
            check_int("workers", w, minimum=1)

    rng = random.Random(seed)
    gauss = rng.gauss
    # Per hop: the lognormal's sigma and cap, computed once. The draw below is exactly
    # helpers.services.faults.sample_latency (a test checks they agree sample for sample).
    sigma = [tail_sigma(med, p99 if p99 is not None else med) if med > 0 else 0.0
             for med, p99 in zip(medians, p99s)]
    cap = [TAIL_CAP * (p99 if p99 is not None else med) for med, p99 in zip(medians, p99s)]
    env = simpy.Environment()
    pools = [simpy.Resource(env, capacity=w) if w is not None else None for w in pool_sizes]
    # A hop is "in its tail" when its own time exceeds its own p99.
    slow_at = [lat + (p99 if p99 is not None else med) if med > 0 else math.inf
               for lat, med, p99 in zip(hop_latency, medians, p99s)]
    latencies: list[float] = []
    oks: list[bool] = []
    tails: list[bool] = []
    first_sent: list[float] = []
    last_done = [0.0]

    def request(env: simpy.Environment) -> _Proc:
        """One request walking down the chain. Consecutive hops without a pool are
        merged into one timeout (nothing can interleave there), which keeps 50-hop
        chains with 10,000 requests fast; the result is the same."""
        held: list[tuple[simpy.Resource, Any]] = []
        pending = 0.0
        ok, tail = True, False
        for i in range(depth):
            pool = pools[i]
            if pool is not None:
                if pending:
                    yield env.timeout(pending)
                    pending = 0.0
                req = pool.request()
                yield req
                held.append((pool, req))
            own = hop_latency[i]
            if medians[i] > 0:
                own += min(medians[i] * exp(sigma[i] * gauss(0.0, 1.0)), cap[i])
                tail = tail or own > slow_at[i]
            pending += own
            if errors[i] and rng.random() < errors[i]:
                ok = False
                break
        if pending:
            yield env.timeout(pending)
        for resource, req in reversed(held):  # answers travel back up: workers free innermost first
            resource.release(req)
        return ok, tail

    def one(env: simpy.Environment) -> _Proc:
        sent = env.now
        first_sent.append(sent)
        if timeout is None:
            ok, tail = yield from request(env)  # inline: no extra simpy process per request
            latencies.append(env.now - sent)
        else:
            proc = env.process(request(env))
            outcome = yield proc | env.timeout(timeout)
            if proc in outcome:
                ok, tail = outcome[proc]
                latencies.append(env.now - sent)
            else:  # the client gives up; the chain below goes on working (as in reality)
                ok, tail = False, False
                latencies.append(timeout)
        oks.append(ok)
        tails.append(tail)
        last_done[0] = max(last_done[0], env.now)

    if arrival_rate is None:
        issued = [0]

        def client(env: simpy.Environment) -> _Proc:
            while issued[0] < n_requests:
                issued[0] += 1
                yield from one(env)

        for _ in range(min(concurrency, n_requests)):
            env.process(client(env))
    else:
        def arrivals(env: simpy.Environment) -> _Proc:
            for _ in range(n_requests):
                env.process(one(env))
                yield env.timeout(rng.expovariate(arrival_rate))

        env.process(arrivals(env))
    env.run()
    elapsed = last_done[0] - (min(first_sent) if first_sent else 0.0)
    return SimResult(depth, latencies, oks, elapsed, tails)


# --------------------------------------------------------------------------- formulas


def chain_availability(per_hop: float | Iterable[float], depth: int | None = None) -> float:
    """The product formula: a chain is up only when every link is up. Pass one availability
    and ``depth``, or one availability per link."""
    if isinstance(per_hop, (int, float)):
        check_int("depth", depth if depth is not None else 1, minimum=1)
        return check_probability("availability", per_hop) ** (depth or 1)
    if depth is not None:
        raise ValueError(f"depth must be None when per_hop lists every link, got {depth!r}")
    return math.prod(check_probability("availability", a) for a in per_hop)


def slow_share_formula(depth: int, tail_quantile: float = 0.99) -> float:
    """Share of requests that meet at least one hop slower than its own p99: 1 - 0.99 ** depth."""
    check_int("depth", depth, minimum=1)
    return 1 - check_probability("tail_quantile", tail_quantile) ** depth


# --------------------------------------------------------------------------- sweeps


def _steps(items: Iterable[T], progress: str | None, unit: str) -> Iterator[T]:
    """``items``, behind a ``tqdm.auto`` bar labelled ``progress`` (none when it is None)."""
    if progress is None:
        yield from items
        return
    from tqdm.auto import tqdm  # imported here: only bars pay for it

    with tqdm(list(items), desc=progress, unit=unit, leave=False) as bar:
        yield from bar


def availability_vs_depth(depths: Iterable[int], availability: float = 0.999, n_requests: int = 10_000,
                          seed: int = 0, progress: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{depth, measured, formula, n}``: simulated chain availability when every hop
    is up with probability ``availability``, against the product formula. ``progress``:
    a label shows a ``tqdm.auto`` bar over the depths."""
    check_probability("availability", availability)
    rows: list[dict[str, Any]] = []
    for depth in _steps(depths, progress, "depth"):
        result = simulate_chain(depth, n_requests, error_rate=1 - availability, seed=seed + depth)
        rows.append({"depth": depth, "measured": result.success_rate,
                     "formula": chain_availability(availability, depth), "n": n_requests})
    return rows


def latency_vs_depth(depths: Iterable[int], latency: float = 0.0, tail_median: float = 0.01,
                     tail_p99: float | None = 0.1, n_requests: int = 10_000, seed: int = 0,
                     progress: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{depth, p50, p95, p99, p999, mean, tail_share, tail_share_formula, hop_p50, hop_p99}``
    of end-to-end latency when every hop takes ``latency`` plus a heavy tail. ``progress``:
    a label shows a ``tqdm.auto`` bar over the depths (deep chains take seconds to simulate)."""
    rows: list[dict[str, Any]] = []
    for depth in _steps(depths, progress, "depth"):
        r = simulate_chain(depth, n_requests, latency=latency, tail_median=tail_median, tail_p99=tail_p99,
                           seed=seed + depth)
        rows.append({"depth": depth, "p50": r.p50, "p95": r.p95, "p99": r.p99, "p999": r.p999, "mean": r.mean,
                     "tail_share": r.tail_share, "tail_share_formula": slow_share_formula(depth),
                     "hop_p50": latency + tail_median, "hop_p99": latency + (tail_p99 or tail_median)})
    return rows


def pool_throughput(concurrencies: Iterable[int], workers: int, latency: float, depth: int = 1,
                    slow_hop: int | None = None, slow_latency: float | None = None,
                    n_requests: int = 2_000, seed: int = 0, progress: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{concurrency, throughput, p50, p99, capacity}``: closed-loop load on a chain
    whose hops each have ``workers`` workers. ``slow_hop`` (1-based) takes ``slow_latency``
    instead; every worker above it is held while it works. capacity = workers / the
    time a worker of the edge is held per request (the formula's throughput ceiling).
    ``progress``: a label shows a ``tqdm.auto`` bar over the loads."""
    check_int("workers", workers, minimum=1)
    check_positive("latency", latency)
    lat = [latency] * depth
    if slow_hop is not None:
        check_int("slow_hop", slow_hop, minimum=1)
        if slow_hop > depth:
            raise ValueError(f"slow_hop must be <= depth ({depth}), got {slow_hop}")
        lat[slow_hop - 1] = check_positive("slow_latency", slow_latency if slow_latency is not None else latency)
    rows: list[dict[str, Any]] = []
    for c in _steps(concurrencies, progress, "load"):
        r = simulate_chain(depth, n_requests, latency=lat, workers=workers, concurrency=c, seed=seed + c)
        rows.append({"concurrency": c, "throughput": r.throughput, "p50": r.p50, "p99": r.p99,
                     "capacity": workers / sum(lat)})
    return rows
