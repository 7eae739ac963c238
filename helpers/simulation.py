"""A discrete-event model (simpy) of the same synchronous chains, for scales the live
services in :mod:`helpers.services` cannot reach on a laptop: 50 services, 10,000
requests, 99.9 % availability per hop, worker pools under load.

The model matches the live services: a request arrives at hop i, takes a worker
(if the hop has a bounded pool) and keeps it until its answer goes back up, spends
its own service time (the same fixed + lognormal model as
:func:`helpers.services.sample_latency`), fails with the hop's error rate (then it
answers at once and nothing below is called), otherwise calls hop i+1 and waits. Network overhead is
zero here; that is the main difference from the live chain.

Times are simulated seconds (no sleeping), so TIME_SCALE does not apply. Every
function is deterministic for a given ``seed``. ``tests/test_simulation.py``
cross-checks the model against live services on small cases.
"""
from __future__ import annotations

import math
import random
from math import exp
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import simpy

from .params import check_int, check_positive, check_probability
from .services import TAIL_CAP, Percentiles, tail_sigma

__all__ = ["SimResult", "simulate_chain", "chain_availability", "slow_share_formula",
           "availability_vs_depth", "latency_vs_depth", "pool_throughput"]


@dataclass
class SimResult(Percentiles):
    """What one simulated run measured (simulated seconds)."""

    depth: int
    latencies: list[float]  # end-to-end latency of every request (a client timeout caps it)
    ok: list[bool]
    elapsed: float  # simulated time from the first request sent to the last answer
    hit_tail: list[bool] = field(default_factory=list)  # request met at least one hop above its p99

    @property
    def n(self) -> int:
        return len(self.ok)

    @property
    def success_rate(self) -> float:
        return sum(self.ok) / self.n if self.n else math.nan

    @property
    def throughput(self) -> float:
        """Successful requests per simulated second."""
        return sum(self.ok) / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def ok_latencies(self) -> list[float]:
        return [lat for lat, good in zip(self.latencies, self.ok) if good]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies)


    @property
    def tail_share(self) -> float:
        """Share of requests that met at least one hop slower than that hop's p99."""
        return sum(self.hit_tail) / self.n if self.hit_tail else math.nan

    def __repr__(self) -> str:
        return (f"<SimResult depth {self.depth}, {self.n} requests: {self.success_rate:.2%} ok, "
                f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, {self.throughput:.1f} ok/s>")


def _per_hop(name: str, value, depth: int) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != depth:
            raise ValueError(f"{name} must have one value per hop ({depth}), got {len(value)}")
        return list(value)
    return [value] * depth


def simulate_chain(depth: int, n_requests: int = 10_000, *, latency: float | Sequence[float] = 0.0,
                   tail_median: float | Sequence[float] = 0.0, tail_p99: float | Sequence[float] | None = None,
                   error_rate: float | Sequence[float] = 0.0, workers: int | None | Sequence[int | None] = None,
                   concurrency: int = 1, arrival_rate: float | None = None, timeout: float | None = None,
                   seed: int = 0) -> SimResult:
    """Simulate ``n_requests`` through a chain of ``depth`` hops.

    Per-hop parameters take one value for every hop or a list with one per hop
    (e.g. ``latency=[0.01, 0.01, 0.2]`` slows hop 3). Load: ``concurrency`` clients
    in a closed loop (like :func:`helpers.services.measure`), or, if ``arrival_rate``
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
    latency = [check_positive("latency", v, allow_zero=True) for v in _per_hop("latency", latency, depth)]
    tail_median = [check_positive("tail_median", v, allow_zero=True)
                   for v in _per_hop("tail_median", tail_median, depth)]
    tail_p99 = _per_hop("tail_p99", tail_p99, depth)
    for med, p99 in zip(tail_median, tail_p99):
        if p99 is not None:
            check_positive("tail_p99", p99)
            if p99 < med:
                raise ValueError(f"tail_p99 must be >= tail_median ({med!r}), got {p99!r}")
    error_rate = [check_probability("error_rate", v) for v in _per_hop("error_rate", error_rate, depth)]
    workers = _per_hop("workers", workers, depth)
    for w in workers:
        if w is not None:
            check_int("workers", w, minimum=1)

    rng = random.Random(seed)
    gauss = rng.gauss
    # Per hop: the lognormal's sigma and cap, computed once. The draw below is exactly
    # helpers.services.sample_latency (a test checks they agree sample for sample).
    sigma = [tail_sigma(med, p99 if p99 is not None else med) if med > 0 else 0.0
             for med, p99 in zip(tail_median, tail_p99)]
    cap = [TAIL_CAP * (p99 if p99 is not None else med) for med, p99 in zip(tail_median, tail_p99)]
    env = simpy.Environment()
    pools = [simpy.Resource(env, capacity=w) if w is not None else None for w in workers]
    # A hop is "in its tail" when its own time exceeds its own p99.
    slow_at = [lat + (p99 if p99 is not None else med) if med > 0 else math.inf
               for lat, med, p99 in zip(latency, tail_median, tail_p99)]
    latencies: list[float] = []
    oks: list[bool] = []
    tails: list[bool] = []
    first_sent: list[float] = []
    last_done = [0.0]

    def request(env):
        """One request walking down the chain. Consecutive hops without a pool are
        merged into one timeout (nothing can interleave there), which keeps 50-hop
        chains with 10,000 requests fast; the result is the same."""
        held = []
        pending = 0.0
        ok, tail = True, False
        for i in range(depth):
            if pools[i] is not None:
                if pending:
                    yield env.timeout(pending)
                    pending = 0.0
                req = pools[i].request()
                yield req
                held.append((pools[i], req))
            own = latency[i]
            if tail_median[i] > 0:
                own += min(tail_median[i] * exp(sigma[i] * gauss(0.0, 1.0)), cap[i])
                tail = tail or own > slow_at[i]
            pending += own
            if error_rate[i] and rng.random() < error_rate[i]:
                ok = False
                break
        if pending:
            yield env.timeout(pending)
        for pool, req in reversed(held):  # answers travel back up: workers free innermost first
            pool.release(req)
        return ok, tail

    def one(env):
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

        def client(env):
            while issued[0] < n_requests:
                issued[0] += 1
                yield from one(env)

        for _ in range(min(concurrency, n_requests)):
            env.process(client(env))
    else:
        def arrivals(env):
            for _ in range(n_requests):
                env.process(one(env))
                yield env.timeout(rng.expovariate(arrival_rate))

        env.process(arrivals(env))
    env.run()
    elapsed = last_done[0] - (min(first_sent) if first_sent else 0.0)
    return SimResult(depth, latencies, oks, elapsed, tails)


# --------------------------------------------------------------------------- formulas


def chain_availability(per_hop: float | Iterable[float], depth: int | None = None) -> float:
    """The product formula: a chain is up only when every link is up."""
    if depth is not None:
        check_int("depth", depth, minimum=1)
        return check_probability("availability", per_hop) ** depth
    return math.prod(check_probability("availability", a) for a in per_hop)


def slow_share_formula(depth: int, tail_quantile: float = 0.99) -> float:
    """Share of requests that meet at least one hop slower than its own p99: 1 - 0.99 ** depth."""
    check_int("depth", depth, minimum=1)
    return 1 - check_probability("tail_quantile", tail_quantile) ** depth


# --------------------------------------------------------------------------- sweeps


def availability_vs_depth(depths: Iterable[int], availability: float = 0.999, n_requests: int = 10_000,
                          seed: int = 0) -> list[dict]:
    """Rows ``{depth, measured, formula, n}``: simulated chain availability when every hop
    is up with probability ``availability``, against the product formula."""
    check_probability("availability", availability)
    rows = []
    for depth in depths:
        result = simulate_chain(depth, n_requests, error_rate=1 - availability, seed=seed + depth)
        rows.append({"depth": depth, "measured": result.success_rate,
                     "formula": chain_availability(availability, depth), "n": n_requests})
    return rows


def latency_vs_depth(depths: Iterable[int], latency: float = 0.0, tail_median: float = 0.01,
                     tail_p99: float | None = 0.1, n_requests: int = 10_000, seed: int = 0) -> list[dict]:
    """Rows ``{depth, p50, p95, p99, p999, mean, tail_share, tail_share_formula, hop_p50, hop_p99}``
    of end-to-end latency when every hop takes ``latency`` plus a heavy tail."""
    rows = []
    for depth in depths:
        r = simulate_chain(depth, n_requests, latency=latency, tail_median=tail_median, tail_p99=tail_p99,
                           seed=seed + depth)
        rows.append({"depth": depth, "p50": r.p50, "p95": r.p95, "p99": r.p99, "p999": r.p999, "mean": r.mean,
                     "tail_share": r.tail_share, "tail_share_formula": slow_share_formula(depth),
                     "hop_p50": latency + tail_median, "hop_p99": latency + (tail_p99 or tail_median)})
    return rows


def pool_throughput(concurrencies: Iterable[int], workers: int, latency: float, depth: int = 1,
                    slow_hop: int | None = None, slow_latency: float | None = None,
                    n_requests: int = 2_000, seed: int = 0) -> list[dict]:
    """Rows ``{concurrency, throughput, p50, p99, capacity}``: closed-loop load on a chain
    whose hops each have ``workers`` workers. ``slow_hop`` (1-based) takes ``slow_latency``
    instead; every worker above it is held while it works. capacity = workers / the
    time a worker of the edge is held per request (the formula's throughput ceiling)."""
    check_int("workers", workers, minimum=1)
    check_positive("latency", latency)
    lat = [latency] * depth
    if slow_hop is not None:
        check_int("slow_hop", slow_hop, minimum=1)
        if slow_hop > depth:
            raise ValueError(f"slow_hop must be <= depth ({depth}), got {slow_hop}")
        lat[slow_hop - 1] = check_positive("slow_latency", slow_latency if slow_latency is not None else latency)
    rows = []
    for c in concurrencies:
        r = simulate_chain(depth, n_requests, latency=lat, workers=workers, concurrency=c, seed=seed + c)
        rows.append({"concurrency": c, "throughput": r.throughput, "p50": r.p50, "p99": r.p99,
                     "capacity": workers / sum(lat)})
    return rows
