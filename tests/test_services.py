"""Live HTTP services on 127.0.0.1: failures and delays travel upstream, pools saturate,
bad parameters are refused, and nothing is left listening or running after stop.

Durations are small absolute seconds (these tests do not use TIME_SCALE); every
timing assertion compares against an injected delay with a generous margin, because
CI is a noisy 2-core machine.
"""
from __future__ import annotations

import threading
import time

import pytest

from helpers import services
from helpers.core import lifecycle, stats
from helpers.services import Monolith, costs, faults, measure, resilience, start_chain

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    yield
    lifecycle.stop_all("service")


def _our_threads() -> list[str]:
    return [name for name in lifecycle.course_threads() if name.startswith(services.THREAD_PREFIX)]


def _running() -> list[object]:
    return [entry.resource for entry in lifecycle.running("service")]


# --------------------------------------------------------------------------- names and timeouts


def test_a_chain_is_named_from_the_one_cast_of_the_course():
    assert services.CAST[:4] == ("orders", "payments", "shipping", "warehouse")
    assert services.chain_names(3) == ["orders", "payments", "shipping"]
    assert services.chain_names(8)[5:] == ["notifications", "service-7", "service-8"]  # numbered beyond the cast
    assert services.chain_names(2, prefix="svc") == ["svc-1", "svc-2"]
    with pytest.raises(ValueError, match="prefix"):
        services.chain_names(2, prefix=" ")
    with start_chain(3) as chain:
        assert [svc.name for svc in chain] == ["orders", "payments", "shipping"]
        assert repr(chain) == "<Chain client -> orders -> payments -> shipping>"
    with start_chain(2, prefix="node") as chain:
        assert chain["node-2"] is chain[1]


def test_the_timeout_ladder_is_derived_from_the_innermost_timeout():
    with start_chain(4, timeout=2.0) as chain:  # default step: a tenth of the timeout
        assert [svc.faults["timeout"] for svc in chain] == pytest.approx([2.4, 2.2, 2.0, 2.0])
        assert chain.client_timeout == pytest.approx(2.6)
        chain.edge.configure(timeout=3.0)  # the client's default follows the edge's own timeout
        assert chain.client_timeout == pytest.approx(3.2)
    assert faults.ladder_step(0.1) == faults.MIN_GAP_S  # never a step a busy machine could jump


def test_measure_can_show_its_progress():
    class Bar:
        count = 0

        def update(self, n=1):
            self.count += n

    bar = Bar()
    with start_chain(1) as chain:
        m = measure(chain, 6, concurrency=3, progress=bar)
        assert m.n == 6 and bar.count == 6
        assert measure(chain, 2, progress="calls").n == 2  # a tqdm.auto bar of its own
        with pytest.raises(ValueError, match="progress"):
            measure(chain, 1, progress=42)


# --------------------------------------------------------------------------- failures travel upstream


def test_a_service_taken_down_fails_every_level_above_with_a_clear_error():
    with start_chain(4) as chain:
        assert chain.call().ok
        port = chain["shipping"].port
        chain["shipping"].take_down()
        result = chain.call()
        assert not result.ok and result.status == 502
        assert result.error == "502 from orders: payments -> shipping unavailable (connection refused)"
        assert result.failed == "shipping"
        # every level above the hole saw the failure and says who caused it; below it, nobody was called
        assert [h.service for h in result.trace] == ["orders", "payments"]
        for hop in result.trace:
            assert hop.status == 502
            assert "shipping" in hop.error and "connection refused" in hop.error
        assert chain["warehouse"].received == 1  # only the healthy call earlier reached it
        chain["shipping"].bring_up()
        assert chain["shipping"].port == port
        assert chain.call().ok


def test_the_edge_down_is_reported_to_the_client():
    with start_chain(2) as chain:
        chain.edge.take_down()
        result = chain.call()
        assert not result.ok and result.status is None
        assert result.error == "client -> orders unavailable (connection refused)"


def test_an_injected_error_names_the_failing_service_at_the_edge():
    with start_chain(3) as chain:
        chain["shipping"].configure(error_rate=1.0)
        result = chain.call()
        assert result.error == "502 from orders: shipping failed (injected error, HTTP 500)"
        assert [h.status for h in result.trace] == [502, 502, 500]


def test_a_late_answer_makes_the_caller_time_out_and_the_edge_fail():
    with start_chain(3, timeout=0.15, timeout_step=0.3) as chain:
        chain["shipping"].configure(latency=1.0)
        result = chain.call()
        assert not result.ok
        assert result.error == "502 from orders: payments -> shipping timed out after 0.15 s"
        assert [h.status for h in result.trace] == [502, 504]
        # the caller waited about its timeout, not the 1 s of work
        assert 0.14 <= result.latency < 0.8


def test_the_client_times_out_on_a_late_answer():
    with start_chain(1, latency=0.5) as chain:
        result = chain.call(timeout=0.1)
        assert not result.ok and result.status is None
        assert result.error == "client -> orders timed out after 0.10 s"
        assert 0.095 <= result.latency < 0.4


# --------------------------------------------------------------------------- delays travel upstream


def test_injected_latency_shows_at_every_level_above():
    hop, slow = 0.01, 0.15
    with start_chain(4, latency=hop) as chain:
        chain["shipping"].configure(latency=hop + slow)
        result = chain.call()
        assert result.ok
        levels = result.levels()
        # each level waits for its own work and everything below it (sleeps never end early)
        below = {"client": 3 * hop + hop + slow, "orders": 3 * hop + slow, "payments": 2 * hop + slow,
                 "shipping": hop + slow}
        for name, floor in below.items():
            assert levels[name] >= 0.98 * floor, (name, levels)
        assert levels["warehouse"] < hop + slow / 2  # the delay does not travel down
        # the waterfall data: own work and waiting add up inside each hop
        shipping = next(h for h in result.trace if h.service == "shipping")
        assert shipping.own >= 0.98 * (hop + slow)


def test_heavy_tail_and_pause_show_in_measured_latency():
    with start_chain(1, tail_median=0.005, tail_p99=0.1, seed=7) as chain:
        m = measure(chain, 150, concurrency=4)
    assert m.success_rate == 1.0
    # injected: p99 = 20x the median; measured with overhead and a busy machine, still > 3x
    assert m.p99 > 3 * m.p50
    with start_chain(1, latency=0.01, pause_every=0.25, pause_for=0.05) as chain:
        m = measure(chain, 30)  # ~0.35 s of sequential calls: more than one pause cycle
    # the request running when a pause began was frozen for it; most were not
    assert max(m.latencies) >= 0.04 and m.p50 < 0.03


def test_sample_latency_matches_the_median_and_p99_asked_for():
    import random

    rng = random.Random(1)
    samples = [faults.sample_latency(rng, 0.0, 0.01, 0.1) for _ in range(20_000)]
    assert stats.percentile(samples, 50) == pytest.approx(0.01, rel=0.05)
    assert stats.percentile(samples, 99) == pytest.approx(0.1, rel=0.15)


# --------------------------------------------------------------------------- pools


@pytest.mark.slow  # over a second
def test_a_saturated_pool_lowers_throughput():
    with start_chain(1, latency=0.1) as chain:
        free = measure(chain, 16, concurrency=8)
        chain.edge.configure(workers=2)
        chain.reset_counts()
        limited = measure(chain, 16, concurrency=8)
        assert chain.edge.max_in_flight == 2
    assert free.success_rate == limited.success_rate == 1.0
    # 8 clients: ideally 8 / 0.1 s = 80/s without a limit, never above 2 / 0.1 s = 20/s with
    # 2 workers (a hard bound; +10 % for timer granularity). Measured free/limited is ~4;
    # asking for 2 leaves room for a busy machine to slow the free run down.
    assert limited.throughput <= 2 / 0.1 * 1.1
    assert free.throughput > 2 * limited.throughput


def test_a_slow_hop_exhausts_the_pools_above_it():
    with start_chain(3, latency=0.005, workers=2) as chain:
        chain["shipping"].configure(latency=0.15)
        chain.reset_counts()
        m = measure(chain, 8, concurrency=6)
        assert m.success_rate == 1.0
        # every worker of the edge was held waiting for shipping, and callers queued behind them
        assert chain.edge.max_in_flight == 2
        assert chain.edge.max_waiting >= 2
        assert m.throughput <= 2 / 0.15 * 1.15


def test_a_full_pool_turns_away_requests_after_its_timeout():
    with start_chain(1, latency=0.3, workers=1, timeout=0.05) as chain:
        m = measure(chain, 3, concurrency=3, timeout=1.0)
    assert m.ok_count >= 1
    assert any("orders overloaded" in e for e in m.errors)


# --------------------------------------------------------------------------- retries and breakers


def test_retries_at_every_level_multiply_the_load_on_the_failing_service():
    with start_chain(3, retries=2) as chain:
        chain["shipping"].configure(error_rate=1.0)
        result = chain.call()
        assert not result.ok
        assert chain.received() == {"orders": 1, "payments": 3, "shipping": 9}


def test_client_retries_recover_some_calls_at_the_cost_of_extra_requests():
    with start_chain(2, seed=3) as chain:
        chain["payments"].configure(error_rate=0.5)
        result = resilience.call_with_retries(chain, attempts=20)
        assert result.ok and result.attempts == chain["payments"].received >= 1


def test_an_open_breaker_fails_fast_without_calling():
    with start_chain(2, timeout=0.1) as chain:
        chain["payments"].configure(latency=1.0)
        breaker = resilience.make_breaker(fail_max=2, reset_timeout=60)
        results = [resilience.call_with_breaker(chain, breaker) for _ in range(6)]
        assert not any(r.ok for r in results)
        assert [r.short_circuited for r in results] == [False, False, True, True, True, True]
        assert chain.edge.received == 2  # the breaker shed the other 4
        # the two real calls waited for orders's 0.1 s timeout; the short-circuited ones did not wait
        assert min(r.latency for r in results[:2]) >= 0.095
        assert max(r.latency for r in results[2:]) < 0.5 * min(r.latency for r in results[:2])


# --------------------------------------------------------------------------- monolith and C4


def test_the_monolith_does_the_same_work_faster_than_one_hop():
    local = measure(Monolith(depth=1), 200)
    with start_chain(1) as chain:
        remote = measure(chain, 100)
        assert chain.call(order_id=7).value == services.work(7)
    assert local.success_rate == remote.success_rate == 1.0
    assert remote.p50 > 5 * local.p50
    assert Monolith(3).call().trace[0].service == "step-1"


def test_local_operations_are_measured_and_not_instant():
    base = costs.call_overhead(10_000)
    for d in (costs.database_query(rows=5_000, repeats=2), costs.cpu_work(n=20_000, repeats=2),
              costs.gc_pause(objects=20_000, repeats=2), costs.disk_fsync(repeats=2)):
        assert len(d.samples) >= 2 and d.mean > 10 * base.median, d
    contended = costs.lock_contention(threads=3, hold=0.002, iterations=4)
    alone = costs.lock_contention(threads=1, hold=0.002, iterations=4)
    assert len(contended.samples) == 12 and contended.mean > 10 * alone.mean
    assert not [t for t in lifecycle.course_threads() if "contention" in t]  # joined before returning


@pytest.mark.slow  # over a second
def test_a_blocked_caller_costs_memory_and_a_pool_slot_and_a_busy_one_costs_cpu():
    blocked = costs.waiting(callers=20, wait=0.2, how="blocked")
    polling = costs.waiting(callers=20, wait=0.2, how="polling")
    spinning = costs.waiting(callers=4, wait=0.2, how="spinning")
    assert blocked.wait >= 0.19 and blocked.queued is not None and blocked.queued >= 0.9 * blocked.wait
    if blocked.files is not None:
        assert blocked.files >= 20  # one open socket each (two ends per pair)
    # busy waiting burns CPU that blocking does not (a busy machine lowers both shares, not the ratio)
    assert polling.cpu > 10 * blocked.cpu and spinning.cpu > 10 * blocked.cpu, (blocked, polling, spinning)
    assert polling.switches > blocked.switches
    assert "callers waited" in str(blocked) and polling.queued is None
    assert not [t for t in lifecycle.course_threads() if "waiting" in t]  # the pool is joined before returning
    value, cpu = costs.cpu_during(lambda: costs.cpu_work(n=20_000, repeats=2))
    assert value.name == "CPU work" and cpu > 0
    with pytest.raises(ValueError, match="how"):
        costs.waiting(how="sleeping")
    with pytest.raises(ValueError, match="callers"):
        costs.waiting(callers=0)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, name", [
    ({"depth": 0}, "depth"),
    ({"depth": 2.5}, "depth"),
    ({"depth": 2, "latency": -0.1}, "latency"),
    ({"depth": 2, "error_rate": 1.5}, "error_rate"),
    ({"depth": 2, "error_rate": -0.1}, "error_rate"),
    ({"depth": 2, "workers": 0}, "workers"),
    ({"depth": 2, "timeout": 0}, "timeout"),
    ({"depth": 2, "tail_median": 0.1, "tail_p99": 0.05}, "tail_p99"),
    ({"depth": 2, "pause_every": 0.1, "pause_for": 0.2}, "pause_for"),
    ({"depth": 2, "retries": -1}, "retries"),
])
def test_bad_chain_parameters_raise_valueerror_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        start_chain(**kwargs)
    assert _running() == []


def test_bad_parameters_elsewhere_raise_valueerror_naming_them():
    with start_chain(1) as chain:
        with pytest.raises(ValueError, match="error_rate"):
            chain.edge.configure(error_rate=2)
        with pytest.raises(ValueError, match="latency"):
            chain.edge.configure(latency=-1)
        with pytest.raises(TypeError, match="unknown"):
            chain.edge.configure(latncy=1)
        with pytest.raises(ValueError, match="n_requests"):
            measure(chain, 0)
        with pytest.raises(ValueError, match="concurrency"):
            measure(chain, 1, concurrency=0)
        with pytest.raises(ValueError, match="timeout"):
            chain.call(timeout=-1)
        with pytest.raises(ValueError, match="attempts"):
            resilience.call_with_retries(chain, attempts=0)
        with pytest.raises(ValueError, match="fail_max"):
            resilience.make_breaker(fail_max=0)
    with pytest.raises(ValueError, match="rows"):
        costs.database_query(rows=0)
    with pytest.raises(ValueError, match="hold"):
        costs.lock_contention(hold=-1)


# --------------------------------------------------------------------------- clean start and stop


def test_services_listen_on_loopback_only():
    with start_chain(2) as chain:
        for svc in chain:
            assert svc._server.server_address[0] == "127.0.0.1"
        assert {svc.port for svc in chain} <= lifecycle.listening_ports()


def test_after_stop_no_listening_socket_and_no_thread_is_left():
    with start_chain(3, latency=0.02) as chain:
        ports = {svc.port for svc in chain}
        assert ports <= lifecycle.listening_ports()
        measure(chain, 12, concurrency=4)
        chain["shipping"].configure(latency=5.0)  # requests asleep inside services when we stop
        sleepers = threading.Thread(target=lambda: chain.call(timeout=10), daemon=True)
        sleepers.start()
        time.sleep(0.1)
        started = time.perf_counter()
    assert time.perf_counter() - started < 2.0  # stop cut the sleeping request short
    sleepers.join(timeout=2)
    assert not (ports & lifecycle.listening_ports())
    assert _running() == []
    assert _our_threads() == []
    left = lifecycle.leftovers()
    assert "service" not in left and left["ports"] == [], left


def test_stop_all_stops_every_service_even_one_taken_down():
    a = start_chain(2)
    b = start_chain(1)
    a["payments"].take_down()
    assert len(_running()) == 3 and all(svc.running for svc in [*a, *b])
    assert lifecycle.stop_all("service") == 3
    assert _running() == [] and _our_threads() == []
    assert not any(svc.running for svc in [*a, *b])
    assert not ({s.port for s in [*a, *b]} & lifecycle.listening_ports())


def test_services_register_with_the_lifecycle_and_name_their_threads():
    with start_chain(2) as chain:
        entries = lifecycle.running("service")
        assert [(e.name, e.resource) for e in entries] == [("orders", chain[0]), ("payments", chain[1])]
        assert chain.call().ok
        left = lifecycle.leftovers()
        assert left["service"] == ["orders", "payments"]
        assert set(left["ports"]) == {svc.port for svc in chain}  # noted with lifecycle.note_port
        assert all(t.startswith(services.THREAD_PREFIX) for t in _our_threads())
        assert services.THREAD_PREFIX.startswith(lifecycle.THREAD_PREFIX)
    left = lifecycle.leftovers()
    assert "service" not in left and left["ports"] == [] and _our_threads() == []


def test_one_service_stops_fast_even_while_its_downstream_still_hangs():
    # lifecycle.stop_all() stops newest first, but a service stopped on its own must not
    # wait for a downstream that is still running: stop() cuts its open call short.
    with start_chain(2, timeout=10.0) as chain:
        chain["payments"].configure(latency=5.0)
        caller = threading.Thread(target=lambda: chain.call(timeout=10), daemon=True)
        caller.start()
        time.sleep(0.2)
        assert chain["payments"].received == 1
        started = time.perf_counter()
        chain.edge.stop()
        assert time.perf_counter() - started < 1.5
        assert not chain.edge.running and chain["payments"].running
        assert not [t for t in _our_threads() if t.startswith(f"{services.THREAD_PREFIX}orders ")]
    caller.join(timeout=2)
