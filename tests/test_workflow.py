"""The order workflow on a real broker: claims C5-C10 and C15 measured, and clean shutdown.

Every test runs against the session's embedded broker (see conftest.py). One workflow
(payments, shipping, a read model and an analytics recorder) is shared by the module so
the group joins (about 3 s each, in parallel) happen once.
"""
from __future__ import annotations

import itertools
import threading
import time

import psutil
import pytest

from helpers.core import lifecycle
from helpers.core.wait import wait_until
from helpers.kafka.clients import TEACHING_CONSUMER
from helpers.kafka.events import order_placed
from helpers.kafka.events import publish as events_publish
from helpers.shop import coupling, eventplots, experiments, results, workflow
from helpers.shop.service import JOIN_TIMEOUT, EventService, wait_processed

PAY, SHIP = 0.05, 0.03  # seconds of work per order (TIME_SCALE 0.1 of 0.5 s and 0.3 s)


@pytest.fixture(scope="module")
def wf(kafka):
    with workflow.OrderWorkflow(kafka, payment_delay=PAY, shipping_delay=SHIP, decline_above=100.0, view=True,
                                extras={"analytics": 0.0}) as flow:
        yield flow
    assert not any(s.running for s in flow.services)


@pytest.fixture(autouse=True)
def default_delays(request):
    """Each test starts from the module's delays, whatever the previous one set."""
    if "wf" in request.fixturenames:
        flow = request.getfixturevalue("wf")
        flow.payment.processing_delay, flow.shipping.processing_delay = PAY, SHIP
    yield


# --------------------------------------------------------------------------- C6


def test_publish_waits_for_the_ack_never_for_processing(wf, kafka):
    # the work per order is derived from the broker's ack, as lesson 4 does: at least ACK_MARGIN acks
    wf.payment.processing_delay = max(0.1, experiments.ACK_MARGIN * experiments.ack_baseline(kafka))
    t = experiments.measure_publish(wf, n=10)
    print(t.summary())
    assert t.n == 10 and len(t.processed_s) == 10
    assert t.send_p50 < t.ack_p50, "send() only hands the event over; the ack takes a round trip"
    assert t.ack_p50 < t.processing_delay / 3, "the broker's ack does not wait for processing"
    assert min(t.processed_s) >= 0.98 * t.processing_delay, "processing really took its time"
    assert t.publish_total_s < t.processing_total_s / 3, "the producer finished long before the processing"
    table = t.table().splitlines()
    assert len(table) == 1 + 10 and table[0].split()[0] == "order", "one row per order under a header"


def test_the_ack_baseline_is_a_few_milliseconds_and_derives_a_safe_processing_delay(kafka):
    ack = experiments.ack_baseline(kafka, n=4)
    print(f"ack baseline {ack * 1000:.1f} ms")
    assert 0 < ack < 1.0, "the broker acknowledges in milliseconds"
    assert experiments.ACK_MARGIN >= 3 * 2, "the derived work leaves the C6 check (3x) room for a busier machine"
    with pytest.raises(ValueError, match="n"):
        experiments.ack_baseline(kafka, n=3)


# --------------------------------------------------------------------------- C5


def test_independent_groups_each_read_every_event(kafka):
    topic = kafka.create_topic(prefix="facts")
    published = workflow.publish_orders(kafka, topic, 6)
    fan = experiments.fan_out(kafka, topic, published, ["billing", "emails"])
    print(fan.summary())
    assert fan.complete
    assert all(sorted(ids) == sorted(e.event_id for e in published) for ids in fan.received.values())
    assert len(set(fan.groups.values())) == 2, "two different consumer groups"
    assert "MISSING" not in fan.table() and fan.table().count("read") == 2 * 6, "the grid behind the figure"
    assert not {"billing", "emails"} & {e.name for e in lifecycle.running("event-service")}, "both stopped"


def test_fan_out_reports_a_missing_event_as_a_timeout(kafka):
    topic = kafka.create_topic(prefix="facts")
    published = workflow.publish_orders(kafka, topic, 2)
    never_published = order_placed("ghost", 1.0)
    # The group joins first (3 s here, 6-7 s seen under load; not timed out), then the timeout
    # counts only the reads of events already on the topic: each fetch waits at most
    # fetch_max_wait_ms, so 40 of them is room for the two reads, and the third never comes.
    reads = 40 * TEACHING_CONSUMER["fetch_max_wait_ms"] / 1000
    with pytest.raises(TimeoutError, match="2 of 3"):
        experiments.fan_out(kafka, topic, [*published, never_published], ["billing"], timeout=reads,
                            join_timeout=JOIN_TIMEOUT)


# --------------------------------------------------------------------------- C7


def test_consumers_process_at_their_own_pace(wf):
    pace = experiments.measure_pace(wf, n=20)
    print(pace.summary())
    done = pace.done_s
    assert set(done) == {"payments", "shipping", "analytics"}
    assert done["payments"] >= 0.98 * 20 * PAY, "payments worked through every order"
    assert pace.producer_s < done["payments"] / 3, "the producer was not held up by the slow consumer"
    assert done["analytics"] < done["payments"] / 2, "the fast consumer did not wait for the slow one"
    assert len(pace.acked) == 20
    rows = pace.table().splitlines()
    assert rows[0].split()[-2:] == ["20", "done"] and len(rows) == 1 + 1 + 3, "producer and each consumer"


# --------------------------------------------------------------------------- C8


def test_watch_for_finds_the_correlated_result(wf, kafka):
    placed = wf.place_order(amount=30)
    result = results.watch_for(kafka, wf.topics.shipments, placed.correlation_id, workflow.ORDER_SHIPPED,
                                timeout=20)
    print(result)
    assert result.found and result.status == "found"
    assert result.event.type == workflow.ORDER_SHIPPED
    assert result.event.correlation_id == placed.correlation_id == placed.event.event_id
    assert result.event.payload["order_id"] == placed.order_id


def test_watch_for_times_out_cleanly_with_pending(wf, kafka):
    declined = wf.place_order(amount=500)  # over decline_above: never shipped
    t0 = time.monotonic()
    result = results.watch_for(kafka, wf.topics.shipments, declined.correlation_id, workflow.ORDER_SHIPPED,
                                timeout=0.5)
    print(result)
    assert not result and result.status == "pending" and result.event is None
    assert 0.5 <= result.waited_s < 5 and time.monotonic() - t0 < 5
    assert "pending" in str(result)
    why = results.watch_for(kafka, wf.topics.payments, declined.correlation_id,
                             [workflow.PAYMENT_PROCESSED, workflow.PAYMENT_DECLINED], timeout=20)
    assert why.found and why.event.type == workflow.PAYMENT_DECLINED


def test_track_orders_follows_each_order_to_its_outcome(wf):
    tracks = results.track_orders(wf, [20, 500, 30], deadline=3)
    print([(t.order_id, t.outcome, {k: round(v * 1000) for k, v in t.times().items()}) for t in tracks])
    assert [t.outcome for t in tracks] == ["shipped", "declined", "shipped"]
    shipped = tracks[0].times()
    assert shipped["acknowledged"] < shipped[workflow.PAYMENT_PROCESSED] < shipped[workflow.ORDER_SHIPPED]
    assert shipped[workflow.ORDER_SHIPPED] >= PAY + SHIP
    assert tracks[1].shipment.status == "pending" and tracks[1].shipment.waited_s >= 3
    eventplots.tracks_figure(tracks, deadline=3)


def test_a_dispatcher_reads_from_the_end_and_hands_each_result_to_its_request(wf, kafka):
    before = wf.place_order(amount=20)
    wf.shipping.wait_for([before.correlation_id], 20)  # its result is published before the dispatcher starts
    with results.ResultDispatcher(kafka, [wf.topics.payments, wf.topics.shipments]) as dispatcher:
        assert dispatcher.wait_ready(1).ready and dispatcher.group_id is None, "no group: ready at once"
        placed = wf.place_order(amount=25)
        shipped = dispatcher.wait(placed.correlation_id, workflow.ORDER_SHIPPED, timeout=20)
        assert shipped.found and shipped.event.correlation_id == placed.correlation_id
        assert shipped.seen_at is not None and shipped.seen_at - placed.sent_at >= PAY + SHIP
        old = dispatcher.wait(before.correlation_id, workflow.ORDER_SHIPPED, timeout=0.3)
        assert old.status == "pending", "from the end: a result published before it started is not read"
        tracks = results.track_orders(wf, [20, 500], deadline=3, watcher=dispatcher)
        assert [t.outcome for t in tracks] == ["shipped", "declined"]
        report = experiments.stale_reads(wf, n=3, deadline=5, watcher=dispatcher, progress=False)
        assert report.corrected_counts == {"right": 3, "wrong": 0, "pending": 0}
        assert dispatcher.count() >= 2 + 3 + 3 and dispatcher.running
    assert not dispatcher.running and dispatcher not in [e.resource for e in lifecycle.running()]


def test_a_dispatcher_remembers_a_bounded_number_of_orders(kafka):
    topic = kafka.create_topic(prefix="bounded-results")
    with results.ResultDispatcher(kafka, topic, keep=2) as dispatcher:
        dispatcher.wait_ready()
        orders = workflow.publish_orders(kafka, topic, 4)  # four stories, one event each
        wait_until(lambda: dispatcher.count() == 4, 20, "the dispatcher to read all four")
        assert dispatcher.remembered() == 2 and dispatcher.dropped == 2
        assert dispatcher.wait(orders[-1].event_id, timeout=1).found, "the newest is remembered"
        assert dispatcher.wait(orders[0].event_id, timeout=0.1).status == "pending", "the oldest was forgotten"


def test_a_watcher_from_the_start_reads_the_history(kafka):
    topic = kafka.create_topic(prefix="history")
    old = workflow.publish_orders(kafka, topic, 2)
    with results.ResultWatcher(kafka, topic) as watcher:
        assert all(watcher.wait(e.event_id, timeout=10).found for e in old)
        assert watcher.remembered() == 2 and watcher.keep is None and watcher.dropped == 0


# --------------------------------------------------------------------------- C15


def test_naive_reads_are_stale_and_waiting_for_the_result_is_not(wf):
    report = experiments.stale_reads(wf, n=8, deadline=5)
    print(report.summary())
    naive, corrected = report.naive_counts, report.corrected_counts
    assert report.stale >= 6, "reading the read model right after publishing sees old state"
    assert naive["wrong"] >= 6, "and the naive caller turns it into wrong answers"
    assert corrected["wrong"] == 0
    assert corrected["right"] >= 6, "with a deadline well above the processing time, results arrive"
    first = report.naive[0]
    assert first.seen in (None, "placed") and first.answer in ("no such order", "not paid")
    assert first.truth == "paid" and first.wrong
    assert wf.view.wait_for_status(first.order_id, ("paid", "shipped"), 10) in ("paid", "shipped"), \
        "the view was not broken, only behind: it catches up"
    assert report.table().splitlines()[1].split()[-3:] == [str(naive["right"]), str(naive["wrong"]),
                                                           str(naive["pending"])]
    eventplots.stale_figure(report)


def test_a_short_deadline_gives_pending_not_wrong(wf):
    wf.payment.processing_delay = 0.3
    report = experiments.stale_reads(wf, n=3, deadline=0.05, decline_every=3)
    print(report.summary())
    assert report.corrected_counts["pending"] >= 2 and report.corrected_counts["wrong"] == 0
    assert report.naive[-1].truth == "declined"


# --------------------------------------------------------------------------- C9, C10


def test_events_free_the_producer(wf):
    run = coupling.compare_coupling(wf, n_orders=30, workers=4)
    print(run.summary())
    assert run.sync_ok == run.events_ok == 30
    assert run.ratio > 3, f"events should be much faster for the producer, got {run.ratio:.1f}x"
    assert run.events_window[1] < run.sync_s / 3, "the events producer was free far sooner"
    assert run.sync_thread_s_per_order >= PAY + SHIP, "each order held threads for the whole chain"
    assert run.connection_s["sync"] >= 0.5 * 30 * (PAY + SHIP), "and connections, counted by the OS"
    assert run.events_thread_s_per_order < run.sync_thread_s_per_order / 10
    peak = run.peak
    assert peak["sync_threads"] >= 4 and peak["sync_connections"] >= 2, peak
    assert peak["events_threads"] == 1 and 1 <= peak["events_pending"] <= 30, peak
    assert run.consumers_done_s >= 30 * PAY, "the consumers still did all the work, later"
    assert run.consumers_done_s > 3 * run.events_window[1]
    assert not lifecycle.running("service") and not lifecycle.leftovers()["ports"], "the HTTP chain is stopped"
    assert 0 < run.sync_cpu_s < run.sync_client_s and run.events_cpu_s > 0, "CPU measured per thread"
    assert run.sync_cpu_share < 0.25, "a waiting client thread computes for a sliver of the time it is held"
    assert run.threads_per_busy_core > 4, "so keeping one core busy takes many threads"
    assert "CPU per order" in run.summary() and len(run.table().splitlines()) == 7
    eventplots.coupling_figure(run)


# --------------------------------------------------------------------------- waiting, in view


def test_wait_processed_counts_what_each_service_did_and_names_who_is_short(wf):
    placed = [wf.place_order(wait_ack=False) for _ in range(3)]
    ids = [p.correlation_id for p in placed]
    done = wait_processed({"payments": wf.payment, "shipping": wf.shipping}, ids, 20, progress="processed")
    assert [h.correlation_id for h in done["payments"]] == ids and len(done["shipping"]) == 3
    with pytest.raises(TimeoutError, match="payments 1 of 1, shipping 1 of 1"):
        wait_processed({"payments": wf.payment, "shipping": wf.shipping}, ["never-published"], 0.2)
    with pytest.raises(ValueError, match="services"):
        wait_processed({}, ids, 1)
    with pytest.raises(ValueError, match="timeout"):
        wait_processed({"payments": wf.payment}, ids, 0)


def test_a_workflow_that_is_ready_waits_without_a_bar(wf, capsys):
    wf.wait_ready()
    assert wf.ready and "joined" not in capsys.readouterr().err, "no bar when there is nothing to wait for"


# --------------------------------------------------------------------------- experiments (headless)


def test_experiments_rerun_and_redraw(wf):
    exp = eventplots.pace_experiment(wf, 0.1, n=4, payment_ms=100)
    before = len(exp.history)
    result = exp.rerun(payment_ms=300)
    assert len(exp.history) == before + 1 and exp.controls["payment_ms"].value == 300
    assert result.delays["payments"] == pytest.approx(0.03) and result.done_s["payments"] >= 4 * 0.03
    assert wf.payment.processing_delay == PAY, "the experiment restores the workflow's delay"
    assert len(exp.figure.data) >= 2
    stale = eventplots.stale_experiment(wf, 0.1, n=3, run_now=False)
    out = stale.rerun(deadline_ms=2000)
    assert out.corrected_counts["wrong"] == 0
    with pytest.raises(ValueError, match="rerun"):
        exp.rerun(bogus=1)


def test_a_slider_moved_after_clean_up_restarts_the_workflow(kafka):
    flow = workflow.OrderWorkflow(kafka).start()
    first_topics = flow.topics
    flow.stop()
    assert not flow.ready
    exp = eventplots.pace_experiment(flow, 0.1, n=3, payment_ms=0, run_now=False)
    try:
        result = exp.rerun()
        assert flow.ready and flow.topics != first_topics, "fresh topics: no backlog from the first run"
        assert set(result.done_s) == {"payments", "shipping"} and len(result.acked) == 3
    finally:
        flow.stop()
    assert not any(s.running for s in flow.services)


# --------------------------------------------------------------------------- parameters


def test_bad_parameters_raise_value_error_naming_them(kafka, wf):
    cases = [
        (lambda: workflow.OrderWorkflow(kafka, payment_delay=-1), "payment_delay"),
        (lambda: workflow.OrderWorkflow(kafka, shipping_delay=float("nan")), "shipping_delay"),
        (lambda: workflow.OrderWorkflow(kafka, partitions=0), "partitions"),
        (lambda: workflow.OrderWorkflow(kafka, extras={"analytics": -2}), "extras"),
        (lambda: EventService(kafka, "", "t"), "name"),
        (lambda: EventService(kafka, "svc", []), "topics"),
        (lambda: EventService(kafka, "my service", "t"), "name"),
        (lambda: experiments.fan_out(kafka, "t", [order_placed("x", 1)], ["e mails"]), "labels"),
        (lambda: experiments.fan_out(kafka, "t", [order_placed("x", 1)], ["a"], join_timeout=0), "join_timeout"),
        (lambda: workflow.OrderWorkflow(kafka, extras={"a b": 0.0}), "extras"),
        (lambda: EventService(kafka, "svc", "t", processing_delay=-0.1), "processing_delay"),
        (lambda: setattr(wf.payment, "processing_delay", -1), "processing_delay"),
        (lambda: experiments.measure_publish(wf, n=0), "n"),
        (lambda: experiments.measure_pace(wf, n=1.5), "n"),
        (lambda: coupling.compare_coupling(wf, n_orders=0), "n_orders"),
        (lambda: coupling.compare_coupling(wf, workers=0), "workers"),
        (lambda: coupling.compare_coupling(wf, workers=1000), "workers"),
        (lambda: coupling.compare_coupling(wf, sample_every=0), "sample_every"),
        (lambda: results.watch_for(kafka, wf.topics.shipments, "abc", "OrderShipped", timeout=0), "timeout"),
        (lambda: results.watch_for(kafka, wf.topics.shipments, "", "OrderShipped"), "correlation_id"),
        (lambda: results.watch_for(kafka, wf.topics.shipments, "abc", []), "type"),
        (lambda: results.watch_for(kafka, "", "abc", "OrderShipped"), "topic"),
        (lambda: experiments.stale_reads(wf, n=0), "n"),
        (lambda: experiments.stale_reads(wf, read_after=-1), "read_after"),
        (lambda: experiments.stale_reads(wf, deadline=float("inf")), "deadline"),
        (lambda: results.track_orders(wf, []), "amounts"),
        (lambda: experiments.fan_out(kafka, "t", [], ["a"]), "published"),
        (lambda: experiments.fan_out(kafka, "t", [order_placed("x", 1)], ["a", "a"]), "labels"),
        (lambda: workflow.publish_orders(kafka, "t", 0), "n"),
        (lambda: workflow.create_topics(kafka, partitions=0), "partitions"),
        (lambda: eventplots.pace_experiment(wf, 0, run_now=False), "time_scale"),
        (lambda: experiments.measure_publish(wf, n=-1), "n"),
        (lambda: results.ResultWatcher(kafka, wf.topics.shipments, keep=0), "keep"),
        (lambda: results.ResultDispatcher(kafka, []), "topics"),
        (lambda: EventService(kafka, "svc", "t", from_start=False), "from_start"),
        (lambda: results.track_orders(wf, [20], watcher="not a watcher"), "watcher"),
        (lambda: results.track_orders(wf, [20], watcher=results.ResultWatcher(kafka, wf.topics.shipments)),
         "watcher"),
        (lambda: experiments.stale_reads(wf, n=1, watcher=results.ResultWatcher(kafka, wf.topics.payments)),
         "watcher"),
        (lambda: wf.wait_ready(timeout=0), "timeout"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(ValueError, match="read model"):
        experiments.stale_reads(workflow.OrderWorkflow(kafka), n=1)


# --------------------------------------------------------------------------- nothing left running


def _established(proc: psutil.Process) -> int:
    conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections(kind="tcp")
    return sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED)


def test_nothing_is_left_running_after_stop(kafka):
    proc = psutil.Process()
    threads_before = {t.ident for t in threading.enumerate()}
    conns_before = _established(proc)
    flow = workflow.OrderWorkflow(kafka, payment_delay=0.01, view=True, extras={"emails": 0.0}).start()
    placed = flow.place_order()
    assert results.watch_for(kafka, flow.topics.shipments, placed.correlation_id, workflow.ORDER_SHIPPED, timeout=20)
    mine = flow.services
    assert all(s.running for s in mine) and _established(proc) > conns_before
    registered = {id(e.resource) for e in lifecycle.running()}
    assert id(flow) in registered and all(id(s) in registered for s in mine), "the workflow and its services register"
    started = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    assert all(n.startswith((lifecycle.THREAD_PREFIX, *lifecycle.KAFKA_THREAD_PREFIXES)) for n in started), started
    flow.stop()

    def all_gone() -> bool:
        new_threads = [t.name for t in threading.enumerate() if t.ident not in threads_before]
        return not new_threads and _established(proc) <= conns_before

    wait_until(all_gone, 10, "the workflow's threads and connections to end", strict=False)
    assert not any(s.running for s in mine)
    assert [t.name for t in threading.enumerate() if t.ident not in threads_before] == []
    assert _established(proc) <= conns_before
    registered = {id(e.resource) for e in lifecycle.running()}
    assert id(flow) not in registered and not any(id(s) in registered for s in mine)
    assert flow.producer is None
    flow.stop()  # stopping twice is harmless


def test_workflow_services_and_watcher_register_by_kind_until_stopped(kafka):
    flow = workflow.OrderWorkflow(kafka).start()
    try:
        with results.ResultWatcher(kafka, flow.topics.shipments) as watcher:
            kinds = {id(e.resource): e.kind for e in lifecycle.running()}
            assert kinds[id(flow)] == "workflow" and kinds[id(watcher)] == "watcher"
            assert all(kinds[id(s)] == "event-service" for s in flow.services)
            assert watcher.wait_ready(1).ready, "a watcher has no group to join"
    finally:
        flow.stop()
    registered = {id(e.resource) for e in lifecycle.running()}
    assert not registered & {id(flow), id(watcher), *map(id, flow.services)}, "stop() unregisters"


# --------------------------------------------------------------------------- the service, reused


class Fulfilment(EventService):
    """Lab 5's back office as a subclass: per-order delay, results out of order, no copy of the loop."""

    def __init__(self, kafka, orders, results_topic, *, fast, slow):
        self.results_topic, self.fast, self.slow = results_topic, fast, slow
        super().__init__(kafka, "fulfilment", orders, types=workflow.ORDER_PLACED, workers=None, use_group=False)

    def delay_for(self, event):
        return self.slow if event.payload["items"] > 3 else self.fast

    def handle(self, event):
        return [(self.results_topic, event.follow(workflow.ORDER_SHIPPED, {"order_id": event.key}))]


def test_a_subclass_sets_the_delay_per_event_and_a_slow_one_holds_up_no_other(kafka):
    orders, shipped = kafka.create_topic(prefix="lab-orders"), kafka.create_topic(prefix="lab-results")
    big, small = order_placed("big", 10.0, items=5), order_placed("small", 10.0, items=1)
    with Fulfilment(kafka, orders, shipped, fast=0.05, slow=0.6) as office:
        assert office.wait_ready(1).ready, "no group to join: ready at once"
        producer = kafka.producer()
        try:
            for e in (big, small):
                events_publish(producer, orders, e)
            producer.flush()
        finally:
            producer.close()
        done = office.wait_for([big.event_id, small.event_id], 20)
        with results.ResultWatcher(kafka, shipped) as watcher:
            assert watcher.wait(small.event_id, timeout=10).found and watcher.wait(big.event_id, timeout=10).found
    assert done[1].t < done[0].t, "the small order, placed second, was done first"
    assert done[0].t - done[1].t > 0.3, "each on its own clock: the big one took its 0.6 s"
    assert not office.running and office.group_id is None


def test_one_worker_takes_the_events_in_turn_and_commits_what_it_processed(kafka):
    from kafka import TopicPartition

    from helpers.shop.service import _Work  # the loop's bookkeeping, without a broker

    # In turn, by construction: with one worker each event is due a full delay after the one
    # before, however late the loop read them. Checked on the schedule: a processed time is read
    # when the loop gets round to it, and a loop held up on a busy machine handles several due
    # events in one pass (seen: gaps of 0.00007 s), which says nothing about the turns.
    work, tp = _Work(workers=1), TopicPartition("t", 0)
    for offset in range(4):
        work.read(tp, offset)
        work.schedule(tp, None, order_placed(f"o{offset}", 1.0), 0.1, now=100.0)
    assert [e.key for _, _, e in work.due(100.25)] == ["o0", "o1"], "the third is due only at 100.3"
    assert [e.key for _, _, e in work.due(100.4)] == ["o2", "o3"]
    assert [e.key for _, _, e in work.due(1000.0)] == []

    topic = kafka.create_topic(prefix="turns")
    published = workflow.publish_orders(kafka, topic, 4)
    with EventService(kafka, "turns", topic, processing_delay=0.1) as svc:
        handled = svc.wait_for([e.event_id for e in published], 20)
        order = [h.event.event_id for h in svc.handled]
    assert order == [e.event_id for e in published], "one worker, one partition: in the order published, once each"
    assert all(b.t >= a.t for a, b in itertools.pairwise(handled))
    with EventService(kafka, "turns", topic, group_id=svc.group_id) as again:  # same group: resumes after commits
        again.wait_ready()
        more = workflow.publish_orders(kafka, topic, 1, prefix="later")
        again.wait_for([more[0].event_id], 20)
        assert [h.event.event_id for h in again.handled] == [more[0].event_id], "nothing processed twice"


def test_offsets_are_committed_only_up_to_the_first_unfinished_one():
    from kafka import TopicPartition

    from helpers.shop.service import _Work  # the loop's bookkeeping, without a broker

    work, tp = _Work(workers=None), TopicPartition("t", 0)
    for offset, delay in ((0, 0.5), (1, 0.0), (2, 0.0)):
        work.read(tp, offset)
        work.schedule(tp, None, order_placed(f"o{offset}", 1.0), delay, now=100.0)
    assert [e.key for _, _, e in work.due(100.0)] == ["o1", "o2"], "quick ones first"
    work.finish(tp, 1)
    work.finish(tp, 2)
    assert work.committable()[tp].offset == 0, "offset 0 is still being worked on: commit nothing past it"
    assert [e.key for _, _, e in work.due(100.5)] == ["o0"]
    work.finish(tp, 0)
    assert work.committable()[tp].offset == 3 and work.committable() == {}, "then all three, once"
