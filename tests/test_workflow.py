"""The order workflow on a real broker: claims C5-C10 and C15 measured, and clean shutdown.

Every test runs against the session's embedded broker (see conftest.py). One workflow
(payments, shipping, a read model and an analytics recorder) is shared by the module so
the group joins (about 3 s each, in parallel) happen once.
"""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from helpers import eventplots, services, workflow
from helpers.events import order_placed

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


def test_publish_waits_for_the_ack_never_for_processing(wf):
    wf.payment.processing_delay = 0.1
    t = workflow.measure_publish(wf, n=10)
    print(t.summary())
    assert t.n == 10 and len(t.processed_s) == 10
    assert t.send_p50 < t.ack_p50, "send() only hands the event over; the ack takes a round trip"
    assert t.ack_p50 < t.processing_delay / 3, "the broker's ack does not wait for processing"
    assert min(t.processed_s) >= 0.98 * t.processing_delay, "processing really took its time"
    assert t.publish_total_s < t.processing_total_s / 3, "the producer finished long before the processing"


# --------------------------------------------------------------------------- C5


def test_independent_groups_each_read_every_event(kafka):
    topic = kafka.create_topic(prefix="facts")
    published = workflow.publish_orders(kafka, topic, 6)
    fan = workflow.fan_out(kafka, topic, published, ["billing", "emails"])
    print(fan.summary())
    assert fan.complete
    assert all(sorted(ids) == sorted(e.event_id for e in published) for ids in fan.received.values())
    assert len(set(fan.groups.values())) == 2, "two different consumer groups"
    assert workflow.running() == [] or all(s.name not in ("billing", "emails") for s in workflow.running())


def test_fan_out_reports_a_missing_event_as_a_timeout(kafka):
    topic = kafka.create_topic(prefix="facts")
    published = workflow.publish_orders(kafka, topic, 2)
    never_published = order_placed("ghost", 1.0)
    with pytest.raises(TimeoutError, match="2 of 3"):
        workflow.fan_out(kafka, topic, [*published, never_published], ["billing"], timeout=6)


# --------------------------------------------------------------------------- C7


def test_consumers_process_at_their_own_pace(wf):
    pace = workflow.measure_pace(wf, n=20)
    print(pace.summary())
    done = pace.done_s
    assert set(done) == {"payments", "shipping", "analytics"}
    assert done["payments"] >= 0.98 * 20 * PAY, "payments worked through every order"
    assert pace.producer_s < done["payments"] / 3, "the producer was not held up by the slow consumer"
    assert done["analytics"] < done["payments"] / 2, "the fast consumer did not wait for the slow one"
    assert len(pace.acked) == 20


# --------------------------------------------------------------------------- C8


def test_watch_for_finds_the_correlated_result(wf, kafka):
    placed = wf.place_order(amount=30)
    result = workflow.watch_for(kafka, wf.topics.shipments, placed.correlation_id, workflow.ORDER_SHIPPED,
                                timeout=20)
    print(result)
    assert result.found and result.status == "found"
    assert result.event.type == workflow.ORDER_SHIPPED
    assert result.event.correlation_id == placed.correlation_id == placed.event.event_id
    assert result.event.payload["order_id"] == placed.order_id


def test_watch_for_times_out_cleanly_with_pending(wf, kafka):
    declined = wf.place_order(amount=500)  # over decline_above: never shipped
    t0 = time.monotonic()
    result = workflow.watch_for(kafka, wf.topics.shipments, declined.correlation_id, workflow.ORDER_SHIPPED,
                                timeout=0.5)
    print(result)
    assert not result and result.status == "pending" and result.event is None
    assert 0.5 <= result.waited_s < 5 and time.monotonic() - t0 < 5
    assert "pending" in str(result)
    why = workflow.watch_for(kafka, wf.topics.payments, declined.correlation_id,
                             [workflow.PAYMENT_PROCESSED, workflow.PAYMENT_DECLINED], timeout=20)
    assert why.found and why.event.type == workflow.PAYMENT_DECLINED


def test_track_orders_follows_each_order_to_its_outcome(wf):
    tracks = workflow.track_orders(wf, [20, 500, 30], deadline=3)
    print([(t.order_id, t.outcome, {k: round(v * 1000) for k, v in t.times().items()}) for t in tracks])
    assert [t.outcome for t in tracks] == ["shipped", "declined", "shipped"]
    shipped = tracks[0].times()
    assert shipped["acknowledged"] < shipped[workflow.PAYMENT_PROCESSED] < shipped[workflow.ORDER_SHIPPED]
    assert shipped[workflow.ORDER_SHIPPED] >= PAY + SHIP
    assert tracks[1].shipment.status == "pending" and tracks[1].shipment.waited_s >= 3
    eventplots.tracks_figure(tracks, deadline=3)


# --------------------------------------------------------------------------- C15


def test_naive_reads_are_stale_and_waiting_for_the_result_is_not(wf):
    report = workflow.stale_reads(wf, n=8, deadline=5)
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
    eventplots.stale_figure(report)


def test_a_short_deadline_gives_pending_not_wrong(wf):
    wf.payment.processing_delay = 0.3
    report = workflow.stale_reads(wf, n=3, deadline=0.05, decline_every=3)
    print(report.summary())
    assert report.corrected_counts["pending"] >= 2 and report.corrected_counts["wrong"] == 0
    assert report.naive[-1].truth == "declined"


# --------------------------------------------------------------------------- C9, C10


def test_events_free_the_producer(wf):
    run = workflow.compare_coupling(wf, n_orders=30, workers=4)
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
    assert services.leftovers() == {"services": [], "ports": [], "threads": []}
    eventplots.coupling_figure(run)


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
        (lambda: workflow.EventService(kafka, "", "t"), "name"),
        (lambda: workflow.EventService(kafka, "svc", []), "topics"),
        (lambda: workflow.EventService(kafka, "my service", "t"), "name"),
        (lambda: workflow.fan_out(kafka, "t", [order_placed("x", 1)], ["e mails"]), "labels"),
        (lambda: workflow.OrderWorkflow(kafka, extras={"a b": 0.0}), "extras"),
        (lambda: workflow.EventService(kafka, "svc", "t", processing_delay=-0.1), "processing_delay"),
        (lambda: setattr(wf.payment, "processing_delay", -1), "processing_delay"),
        (lambda: workflow.measure_publish(wf, n=0), "n"),
        (lambda: workflow.measure_pace(wf, n=1.5), "n"),
        (lambda: workflow.compare_coupling(wf, n_orders=0), "n_orders"),
        (lambda: workflow.compare_coupling(wf, workers=0), "workers"),
        (lambda: workflow.compare_coupling(wf, workers=1000), "workers"),
        (lambda: workflow.compare_coupling(wf, sample_every=0), "sample_every"),
        (lambda: workflow.watch_for(kafka, wf.topics.shipments, "abc", "OrderShipped", timeout=0), "timeout"),
        (lambda: workflow.watch_for(kafka, wf.topics.shipments, "", "OrderShipped"), "correlation_id"),
        (lambda: workflow.watch_for(kafka, wf.topics.shipments, "abc", []), "type"),
        (lambda: workflow.watch_for(kafka, "", "abc", "OrderShipped"), "topic"),
        (lambda: workflow.stale_reads(wf, n=0), "n"),
        (lambda: workflow.stale_reads(wf, read_after=-1), "read_after"),
        (lambda: workflow.stale_reads(wf, deadline=float("inf")), "deadline"),
        (lambda: workflow.track_orders(wf, []), "amounts"),
        (lambda: workflow.fan_out(kafka, "t", [], ["a"]), "published"),
        (lambda: workflow.fan_out(kafka, "t", [order_placed("x", 1)], ["a", "a"]), "labels"),
        (lambda: workflow.publish_orders(kafka, "t", 0), "n"),
        (lambda: workflow.create_topics(kafka, partitions=0), "partitions"),
        (lambda: eventplots.pace_experiment(wf, 0, run_now=False), "time_scale"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(ValueError, match="read model"):
        workflow.stale_reads(workflow.OrderWorkflow(kafka), n=1)


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
    assert workflow.watch_for(kafka, flow.topics.shipments, placed.correlation_id, workflow.ORDER_SHIPPED, timeout=20)
    mine = flow.services
    assert all(s.running for s in mine) and _established(proc) > conns_before
    flow.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        new_threads = [t.name for t in threading.enumerate() if t.ident not in threads_before]
        if not new_threads and _established(proc) <= conns_before:
            break
        time.sleep(0.1)
    assert not any(s.running for s in mine)
    assert [t.name for t in threading.enumerate() if t.ident not in threads_before] == []
    assert _established(proc) <= conns_before
    assert all(s not in workflow.running() for s in mine)
    assert flow.producer is None
    flow.stop()  # stopping twice is harmless
