"""Integration tests against the live broker (the embedded one unless configured otherwise).

Each embedded-broker difference the helpers hide is covered here.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from kafka import TopicPartition

from helpers.kafka import clients, events, lag
from helpers.tooling.paths import ROOT


def _produce(kafka, topic, n, *, batched=True, partitions=1):
    p = kafka.producer(linger_ms=50 if batched else 0)
    for i in range(n):
        p.send(topic, key=f"k{i % 7}".encode(), value=json.dumps({"i": i}).encode(), partition=i % partitions)
    p.flush()
    p.close()


def _consume(consumer, n, timeout=20.0):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200, max_records=n - len(got)).values():
            got.extend(batch)
    return got


def test_round_trip(kafka):
    topic = kafka.create_topic(prefix="rt")
    ev = events.order_placed("o-1", 10.0)
    meta = events.publish(kafka.producer(), topic, ev).get(timeout=10)
    c = kafka.consumer()
    c.assign([TopicPartition(topic, meta.partition)])
    c.seek(TopicPartition(topic, meta.partition), meta.offset)
    [record] = _consume(c, 1)
    c.close()
    assert events.decode(record) == ev


def test_lag_is_right_after_a_batched_produce(kafka):
    """Tansu's ListOffsets LATEST is wrong after batched produces; helpers.kafka.lag is not."""
    topic = kafka.create_topic(prefix="lag", partitions=3)
    _produce(kafka, topic, 300, partitions=3)
    ends = lag.end_offsets(kafka, topic)
    assert ends == {0: 100, 1: 100, 2: 100}
    group = clients.unique_name("lag-group")
    assert lag.total_lag(kafka, topic, group) == 300  # nothing consumed yet
    c = kafka.consumer(group_id=group)
    c.assign([TopicPartition(topic, 0)])
    c.seek(TopicPartition(topic, 0), 0)
    consumed = _consume(c, 40)
    c.commit({TopicPartition(topic, 0): __import__("kafka").OffsetAndMetadata(40, "", -1)})
    c.close()
    assert len(consumed) == 40
    assert lag.lag(kafka, topic, group) == {0: 60, 1: 100, 2: 100}
    naive = kafka.consumer()
    reported = naive.end_offsets([TopicPartition(topic, p) for p in range(3)])
    naive.close()
    if kafka.kind == "embedded":  # documents the difference the helper hides
        assert sum(reported.values()) < 300, f"Tansu's end_offsets became right ({reported}): simplify lag"


def test_lag_monitor_records_a_series(kafka):
    topic = kafka.create_topic(prefix="mon")
    _produce(kafka, topic, 50)
    group = clients.unique_name("mon")
    with lag.LagMonitor(kafka, topic, group, interval=0.1) as mon:
        time.sleep(0.5)
    times, totals = mon.series()
    assert len(times) >= 2 and set(totals) == {50}
    with pytest.raises(ValueError, match="interval"):
        lag.LagMonitor(kafka, topic, group, interval=0)


def test_lag_reader_reads_fresh_watermarks_over_clients_it_keeps(kafka):
    """Right after every acknowledged produce, the kept-open reader sees the new end (no stale fetch)."""
    topic = kafka.create_topic(prefix="fresh", partitions=3)
    group = clients.unique_name("fresh")
    producer = kafka.producer(linger_ms=20)
    total = 0
    try:
        with lag.LagReader(kafka, topic, group) as reader:
            assert reader.lag() == {0: 0, 1: 0, 2: 0}
            for k in range(25):
                n = (k * 7) % 23 + 1  # uneven batches, sometimes one partition only
                for i in range(n):
                    producer.send(topic, value=b"x" * 50, partition=(k + i) % 3)
                producer.flush()
                total += n
                ends = reader.end_offsets()
                assert sum(ends.values()) == total, (k, ends, total)
            assert sum(reader.lag().values()) == total
    finally:
        producer.close()


def test_lag_monitor_samples_ten_times_a_second_and_closes_its_clients(kafka):
    """The monitor keeps its clients open: >= 10 samples a second against the live broker;
    it registers with helpers.core.lifecycle and leaves no thread and no client when stopped."""
    from helpers.core import lifecycle

    topic = kafka.create_topic(prefix="rate", partitions=3)
    _produce(kafka, topic, 90, partitions=3)
    group = clients.unique_name("rate")
    before = set(lifecycle.kafka_threads())
    monitor = lag.LagMonitor(kafka, topic, group, interval=0.01)
    with monitor:
        assert monitor in {e.resource for e in lifecycle.running("lag-monitor")}
        assert f"{lifecycle.THREAD_PREFIX}lag-{group}" in lifecycle.course_threads()
        time.sleep(2.0)
    rate = monitor.rate()
    times, totals = monitor.series()
    started = time.monotonic()
    baseline = [lag.lag(kafka, topic, group) for _ in range(5)]  # a new pair of clients per sample
    old_rate = len(baseline) / (time.monotonic() - started)
    print(f"\nlag samples: {rate:.1f}/s over {times[-1] - times[0]:.1f} s with clients kept open; "
          f"{old_rate:.1f}/s with two new clients per sample")
    assert rate >= 10, f"only {rate:.1f} lag samples a second"
    assert set(totals) == {90} and monitor.failures == 0
    assert monitor not in {e.resource for e in lifecycle.running()}
    assert not [t for t in lifecycle.course_threads() if t.startswith(f"{lifecycle.THREAD_PREFIX}lag-")]
    assert set(lifecycle.kafka_threads()) <= before, "the monitor's clients are closed"


def test_group_join_takes_under_five_seconds(kafka):
    topic = kafka.create_topic(prefix="join")
    _produce(kafka, topic, 5)
    started = time.monotonic()
    c = kafka.consumer(topic, group_id=clients.unique_name("join"))
    got = _consume(c, 5, timeout=15)
    joined = time.monotonic() - started
    c.close()
    print(f"group join to first records: {joined:.2f} s")
    assert len(got) == 5 and joined < 5.0


def test_admin_describes_groups(kafka):
    topic = kafka.create_topic(prefix="desc")
    _produce(kafka, topic, 3)
    group = clients.unique_name("desc")
    c = kafka.consumer(topic, group_id=group)
    assert len(_consume(c, 3)) == 3
    adm = kafka.admin()
    try:
        [described] = adm.describe_groups([group])
        text = repr(described)
    finally:
        adm.close()
        c.close()
    assert group in text


def test_topics_are_created_with_their_partition_count(kafka):
    topic = kafka.create_topic(prefix="parts", partitions=4)
    assert clients.partitions_for(kafka, topic) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="already exists"):
        kafka.create_topic(topic)
    with pytest.raises(ValueError, match="partitions"):
        kafka.create_topic(partitions=0)
    clients.delete_topic(kafka, topic)


CONSUMER_SCRIPT = textwrap.dedent("""
    import sys, time
    import helpers
    from kafka import TopicPartition
    kafka = helpers.connect(quiet=True)
    topic, group, out = sys.argv[1], sys.argv[2], sys.argv[3]
    c = kafka.consumer(topic, group_id=group, max_poll_records=1)
    with open(out, "a") as fh:
        while True:
            for batch in c.poll(timeout_ms=200).values():
                for r in batch:
                    fh.write(f"{r.offset}\\n"); fh.flush()
                    c.commit()
                    time.sleep(0.02)
""")


def test_consumer_resumes_from_its_committed_offset_after_its_process_is_killed(kafka, tmp_path):
    topic = kafka.create_topic(prefix="resume")
    group = clients.unique_name("resume")
    out = tmp_path / "processed.txt"
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER_SCRIPT)
    _produce(kafka, topic, 200)
    proc = subprocess.Popen([sys.executable, str(script), topic, group, str(out)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().split()) < 30):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    first_run = [int(x) for x in out.read_text().split()]
    committed = lag.committed(kafka, topic, group)[0]
    assert 30 <= len(first_run) < 200 and committed is not None
    # a restarted process (a new group member) resumes at the committed offset
    c = kafka.consumer(topic, group_id=group)
    rest = _consume(c, 200 - committed, timeout=30)
    c.close()
    assert rest[0].offset == committed
    seen = set(first_run) | {r.offset for r in rest}
    assert seen == set(range(200)), f"missing offsets: {sorted(set(range(200)) - seen)[:10]}"
    duplicates = len(first_run) + len(rest) - 200
    print(f"processed {len(first_run)} before the kill, {len(rest)} after, duplicates {duplicates}")
    assert 0 <= duplicates <= 1  # commit after each record: at most the one in flight repeats


def test_an_unrelated_client_reads_what_kafka_python_produced(kafka):
    """confluent-kafka (librdkafka, a separate protocol implementation) reads our records."""
    confluent = pytest.importorskip("confluent_kafka")
    topic = kafka.create_topic(prefix="interop", partitions=2)
    sent = [events.order_placed(f"o-{i}", float(i)) for i in range(10)]
    p = kafka.producer()
    for ev in sent:
        events.publish(p, topic, ev)
    p.flush()
    p.close()
    meta = pytest.importorskip("confluent_kafka.admin").AdminClient({"bootstrap.servers": kafka.bootstrap_servers,
                                        "broker.address.family": "v4"}).list_topics(timeout=10)
    assert len(meta.topics[topic].partitions) == 2
    c = confluent.Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": clients.unique_name("rdkafka"),
                            "auto.offset.reset": "earliest", "broker.address.family": "v4",
                            "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got.append((msg.key().decode(), json.loads(msg.value())))
    c.close()
    assert sorted(k for k, _ in got) == sorted(ev.key for ev in sent)
    assert all(v["type"] == "OrderPlaced" and v["payload"]["order_id"] == k for k, v in got)


def test_status_json_names_a_broker_that_serves_clients(kafka):
    out = subprocess.run([sys.executable, "-m", "helpers", "broker", "status", "--json"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    info = json.loads(out.stdout)
    assert out.returncode == 0 and info["bootstrap_servers"] == kafka.bootstrap_servers
    assert info["kind"] == kafka.kind and (info["pid"] or kafka.kind != "embedded")


def test_trend_fits_how_fast_the_lag_moved_and_names_a_short_stretch():
    times, totals = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [100, 90, 110, 130, 150, 170]
    grew = lag.trend(times, totals, 2.0, 5.0, "growing")
    assert grew.slope == pytest.approx(20.0) and (grew.first, grew.last, grew.peak, grew.samples) == (110, 170, 170, 4)
    assert grew.fitted(2.0) == pytest.approx(110.0) and "grew 20.0 events/s" in str(grew)
    assert lag.trend(times, [50, 40, 30, 20, 10, 0], 0.0, 5.0).slope == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="times must hold at least 2 samples"):
        lag.trend(times, totals, 4.5, 9.0)


def test_live_lag_plot_watches_a_growing_lag_behind_a_bar_and_tables_its_marks(kafka):
    from helpers.backlog import lagplots, producers
    from helpers.core import lifecycle

    topic = kafka.create_topic(prefix="watch", partitions=2)
    chart = lagplots.LiveLagPlot(kafka, topic, clients.unique_name("nobody"), live=False).start()
    runner = producers.ProducerRunner(kafka, topic, rate=100).start()   # no consumer: the lag grows at this rate
    try:
        chart.mark("orders start")
        grew = chart.watch(1.0, "nobody consuming", min_samples=5)
        with pytest.raises(ValueError, match="seconds"):
            chart.watch(0, "never")
    finally:
        runner.stop()
        chart.stop()
    print(f"\n{grew}\n{chart.table()}")
    assert grew.samples >= 5 and 50 < grew.slope < 200, grew       # about 100 events/s
    assert grew.end - grew.start >= 0.8
    assert "orders start" in chart.table() and f"peak lag {chart.peak()} events" in chart.table()
    assert chart.lag_at(-1.0) is None and chart.lag_at(chart.now()) == chart.latest()
    assert chart not in {e.resource for e in lifecycle.running("lag-monitor")}
    with pytest.raises(RuntimeError, match="start"):
        chart.watch(1.0, "stopped")
    figure = lagplots.trend_figure(chart, [grew])
    assert [d.name for d in figure.data] == ["total lag", f"nobody consuming: {grew.slope:+.1f} events/s"]


def test_a_watch_that_waits_past_its_window_for_samples_keeps_its_bar_full(kafka):
    """On a busy machine a watch can wait beyond its seconds for its samples; its bar must not
    overshoot (tqdm then drops the total the bar's text shows, and raised TypeError)."""
    from helpers.backlog import lagplots

    topic = kafka.create_topic(prefix="overshoot")
    chart = lagplots.LiveLagPlot(kafka, topic, clients.unique_name("nobody"), interval=0.2, live=False).start()
    try:
        trend = chart.watch(0.2, "a short window", min_samples=8)   # 8 samples at 0.2 s: about 1.6 s
    finally:
        chart.stop()
    assert trend.samples >= 8 and trend.end - trend.start >= 1.0, trend
