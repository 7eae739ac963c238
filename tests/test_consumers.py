"""Consumer processes that crash, restart and scale (claims C11-C14), against a live broker."""
from __future__ import annotations

import ast
import json
import time

import psutil
import pytest

from helpers import unique_name
from helpers.backlog import consumers as C
from helpers.backlog import drains, producers
from helpers.backlog.pollloop import Crash, consume_batches
from helpers.core import lifecycle
from helpers.core.wait import wait_until
from helpers.kafka.lag import total_lag
from helpers.tooling.paths import ROOT


def consumer_children() -> list[psutil.Process]:
    """Live consumer processes (``python -m`` :data:`~helpers.backlog.consumers.CHILD_MODULE`)
    below this one (not those of the learners' pass, which runs its notebooks' kernels below
    the session at the same time)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if (C.CHILD_MODULE in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
                    and not any("helpers.tooling.learnerpass" in " ".join(a.cmdline()) for a in p.parents())):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_sigkill_three_times_misses_nothing(kafka):
    """(a) C11/C12: SIGKILL mid-stream three times; the producer never fails; nothing is missed."""
    topic = kafka.create_topic(partitions=3, prefix="crash")
    consumer = C.ConsumerProcess(kafka, topic, unique_name("crash"), rate=300, batch_size=20, commit="after")
    # 20/s: a few hundred events per round of kill, rejoin and catch-up (a rejoin waits out the
    # killed member's session); more only lengthens the final drain, not what is shown.
    producer = producers.ProducerRunner(kafka, topic, rate=20)
    repeated_at_kills = []
    try:
        producer.start()  # orders pile up while the consumer joins: it starts busy
        consumer.start()
        consumer.wait_assigned()
        for _round in range(3):
            done = len({r["event_id"] for r in consumer.processed()})
            C.wait_processed([consumer], done + 40, timeout=30)
            pid = consumer.kill()
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            exposure = consumer.exposure()
            repeated_at_kills.append(exposure.repeated)
            uncommitted = {(r["partition"], r["offset"]) for r in consumer.processed()
                           if r["offset"] >= exposure.committed.get(r["partition"], 0)}
            assert len(uncommitted) == exposure.repeated
            lag_down = total_lag(kafka, topic, consumer.group_id)
            assert wait_until(lambda down=lag_down: total_lag(kafka, topic, consumer.group_id) > down, 5,
                              "the lag to grow", strict=False), "events must queue while it is down"
            consumer.start()
            consumer.wait_assigned(timeout=40)
            C.wait_processed([consumer], 1 + len({(r["partition"], r["offset"]) for r in consumer.processed()}),
                             timeout=30)

            def repeated_by_the_new_process(new_pid=consumer.pid, again=uncommitted) -> bool:
                return again <= {(r["partition"], r["offset"]) for r in consumer.processed() if r["pid"] == new_pid}

            # It processes again what the killed one had not committed, before it is killed in turn (a
            # process killed before reaching a partition would leave that partition's repeats for the next).
            wait_until(repeated_by_the_new_process, 30, "the new process to repeat the uncommitted events")
            # The new process starts exactly at the committed offset of each partition it read.
            for partition, first in consumer.resume_points().items():
                assert first == exposure.committed[partition], (partition, first, exposure.committed)
        stats = producer.stop()
        C.wait_processed([consumer], producer.acked_ids, timeout=60)
        tally = C.count_report(producer.acked_ids, consumer.records())
        print(f"\n3 SIGKILLs: {tally}; repeated at each kill: {repeated_at_kills}; producer {stats}")
        assert stats["errors"] == 0 and stats["acked"] == stats["sent"] > 100
        assert tally.missing == 0 and tally.unique == len(producer.acked_ids)
        assert tally.duplicates == sum(repeated_at_kills)
        assert len(set(consumer.pids)) == 4
    finally:
        producer.stop()
        consumer.stop()


def test_commit_before_processing_loses_what_a_crash_interrupts(kafka):
    """At-most-once: killed mid-batch, the restarted consumer skips exactly the committed, unprocessed events."""
    topic, ids = producers.make_backlog(kafka, 300, partitions=1, prefix="amo")
    consumer = C.ConsumerProcess(kafka, topic, unique_name("amo"), rate=400, batch_size=25, commit="before")
    try:
        consumer.start()
        consumer.wait_assigned()
        C.wait_processed([consumer], 30, timeout=30)
        C.kill_mid_batch(consumer)
        exposure = consumer.exposure()
        consumer.start()
        C.wait_processed([consumer], len(ids) - exposure.lost, timeout=40)
        time.sleep(0.3)
        tally = C.count_report(ids, consumer.records())
        print(f"\ncommit before processing, one SIGKILL: {tally}; {exposure}")
        assert exposure.lost > 0
        assert tally.missing == exposure.lost and tally.duplicates == 0
    finally:
        consumer.stop()


def test_three_consumers_drain_faster_than_one(kafka):
    """(b) C14: the same backlog on 3 partitions drains measurably faster with 3 consumers; a 4th idles;
    2 take their busiest member's share of one consumer's time (one of them holds 2 partitions)."""
    topic, ids = producers.make_backlog(kafka, 600, partitions=3, prefix="drain")
    one, two, three, four = drains.compare_drains(kafka, topic, [1, 2, 3, 4], ids, rate=200)
    ratio = one.seconds / three.seconds
    ratio_two, expected_two = two.seconds / one.seconds, drains.expected_ratio(two, one)
    print(f"\n{one}\n{two}\n{three}\n{four}\ndrain-time ratio 1 vs 3 consumers: {ratio:.2f}; "
          f"1 vs 4: {one.seconds / four.seconds:.2f}; 2 vs 1: {ratio_two:.2f} (expected {expected_two:.2f})\n"
          f"{two.shares()}")
    assert one.events == two.events == three.events == four.events == len(ids)
    assert ratio > 1.5
    assert len(four.idle) == 1 and not three.idle
    # A member beyond the partition count adds nothing: 4 is not clearly faster than 3.
    assert four.seconds > three.seconds * 0.6
    # Partitions, not events, are shared out: 2 + 1, and the group is done when its busiest member is.
    assert sorted(map(len, two.assignment.values())) == [1, 2]
    assert two.busiest_events == max(two.per_member.values()) and 0.5 < two.busiest_share < 0.85
    assert abs(ratio_two / expected_two - 1) < drains.SHARE_MARGIN, (ratio_two, expected_two)


def _drain(consumers: int, seconds: float, per_member: dict[str, int], rate: float = 20.0) -> drains.DrainResult:
    parts = iter([[0, 1], [2]] if consumers == 2 else [[0, 1, 2]])
    return drains.DrainResult(consumers=consumers, seconds=seconds, events=sum(per_member.values()), rate=rate,
                              assignment={m: next(parts) for m in per_member}, per_member=per_member)


def test_the_expected_drain_ratio_follows_the_measured_shares():
    """expected_ratio: a group is done when its busiest member is; the check against SHARE_MARGIN fails
    on a measurement that does not follow the shares, and on a wrong expectation (an even split)."""
    one = _drain(1, 15.3, {"m1": 300})
    two = _drain(2, 10.1, {"a": 204, "b": 96})   # lesson 7 at TIME_SCALE 1.0: 204 and 96 events
    assert two.busiest_events == 204 and two.busiest_share == pytest.approx(0.68)
    assert drains.expected_ratio(two, one) == pytest.approx(0.68)
    assert drains.expected_ratio(two, one, rate=10.0) == pytest.approx(1.36)   # half the rate: 2 x 0.68
    assert drains.expected_ratio(one, one) == pytest.approx(1.0)

    def follows(group: drains.DrainResult, baseline: drains.DrainResult) -> bool:
        """The lesson's condition."""
        ratio = group.seconds / baseline.seconds
        return abs(ratio / drains.expected_ratio(group, baseline) - 1) < drains.SHARE_MARGIN

    assert follows(two, one)                                           # 0.66x measured, 0.68x expected
    assert not follows(_drain(2, 7.6, {"a": 204, "b": 96}), one)       # half the time: not what 204 events need
    assert not follows(_drain(2, 10.1, {"a": 150, "b": 150}), one)     # an even split expects 0.5x, not 0.66x
    assert follows(_drain(2, 20.2, {"a": 204, "b": 96}, rate=10.0), one)   # 2 at half the rate: 1.32x, 1.36x expected
    # The margin excludes an even split when the partitions are equal: 1/2 is 25% short of 2/3.
    assert 1 - drains.SHARE_MARGIN >= (1 / 2) / (2 / 3) - 1e-9
    with pytest.raises(ValueError, match="rate"):
        drains.expected_ratio(two, one, rate=0)
    with pytest.raises(ValueError, match="baseline"):
        drains.expected_ratio(two, _drain(1, 1.0, {}))


def test_events_are_ordinary_kafka_records(kafka):
    """(c) librdkafka (confluent-kafka) reads the course's events: keys and JSON values."""
    confluent_kafka = pytest.importorskip("confluent_kafka")
    topic = kafka.create_topic(partitions=3, prefix="plain")
    producer = producers.ProducerRunner(kafka, topic, rate=200, count=12).start()
    assert producer.wait(timeout=30)
    producer.stop()
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": kafka.bootstrap_servers, "group.id": unique_name("librdkafka"),
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "broker.address.family": "v4",  # 127.0.0.1, as everything in the course
        "session.timeout.ms": 6000,
    })
    seen = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(seen) < 12 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = json.loads(msg.value())
            seen[value["event_id"]] = (msg.key().decode(), value)
    finally:
        consumer.close()
    assert set(seen) == set(producer.acked_ids)
    for key, value in seen.values():
        assert value["type"] == "OrderPlaced" and value["payload"]["order_id"] == key


@pytest.mark.parametrize("build, name", [
    (lambda k: C.ConsumerProcess(k, "t", "g", rate=-5), "rate"),
    (lambda k: C.ConsumerProcess(k, "t", "g", rate=0), "rate"),
    (lambda k: C.ConsumerProcess(k, "t", "g", rate=float("nan")), "rate"),
    (lambda k: C.ConsumerProcess(k, "t", "g", commit="sometimes"), "commit"),
    (lambda k: C.ConsumerProcess(k, "t", "g", batch_size=0), "batch_size"),
    (lambda k: C.ConsumerProcess(k, "", "g"), "topic"),
    (lambda k: C.ConsumerProcess(k, "t", ""), "group_id"),
    (lambda k: C.ConsumerGroup(k, "t", 0), "members"),
    (lambda k: C.ConsumerGroup(k, "t", 2, rate=-1), "rate"),
    (lambda k: producers.ProducerRunner(k, "t", rate=-10), "rate"),
    (lambda k: producers.ProducerRunner(k, "t", rate=10, count=0), "count"),
    (lambda k: producers.make_backlog(k, 10, partitions=0), "partitions"),
    (lambda k: producers.make_backlog(k, -1), "count"),
    (lambda k: drains.compare_drains(k, "t", [0], 10), "consumers"),
    (lambda k: drains.compare_drains(k, "t", [1], 10, rate=-1), "rate"),
    (lambda k: consume_batches(None, print, commit="sometimes"), "commit"),
])
def test_bad_input_names_the_parameter(kafka, build, name):
    """(d) Bad parameters raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match=name):
        build(kafka)


def test_group_scaling_and_pause(kafka):
    """A group reports its members' partitions; scaling in rebalances; a paused member processes nothing."""
    topic, ids = producers.make_backlog(kafka, 200, partitions=2, prefix="scale")
    group = C.ConsumerGroup(kafka, topic, 3, rate=400, paused=True)
    try:
        group.start()
        assignment = group.wait_assigned()
        assert sorted(len(p) for p in assignment.values()) == [0, 1, 1]
        assert len(group.idle_members()) == 1
        time.sleep(0.5)
        assert group.processed() == []  # paused from the start: nothing processed
        group.scale(1)  # keeps the group's leader (see ConsumerGroup.scale)
        assert list(group.wait_assigned().values()) == [[0, 1]]
        group.resume()
        C.wait_processed([group], ids, timeout=30)
        assert group.count(ids).missing == 0
    finally:
        group.stop()
    assert consumer_children() == []


def test_no_process_left_after_stop(kafka):
    """(e) Stopped consumers leave no process. (That a consumer process dies with its parent,
    even a SIGKILLed one, is tests/test_kernel_cleanup.py's: its parent there is a kernel.)"""
    topic = kafka.create_topic(partitions=1, prefix="orphans")
    c = C.ConsumerProcess(kafka, topic, unique_name("orphans")).start()
    c.wait_assigned()
    c.stop()
    assert consumer_children() == []


@pytest.mark.parametrize("commit, duplicates, lost", [("after", 5, 0), ("before", 0, 5)])
def test_the_consumer_loop_in_process_repeats_or_loses_what_a_crash_interrupts(kafka, commit, duplicates, lost):
    """consume_batches (the loop the consumer processes run) crashes mid-batch with Crash; a
    restarted consumer of the same group resumes at the committed offset."""
    from kafka import TopicPartition

    topic, ids = producers.make_backlog(kafka, 50, partitions=1, prefix="loop")
    group = unique_name("loop")
    handled: list[int] = []

    def crash_at_25(record) -> None:
        if record.offset == 25:
            raise Crash("the process dies here")
        handled.append(record.offset)

    first = kafka.consumer(group_id=group)
    first.assign([TopicPartition(topic, 0)])
    try:
        with pytest.raises(Crash):
            consume_batches(first, crash_at_25, commit=commit, batch_size=10,
                            stopping=lambda: len(handled) >= 50)
    finally:
        first.close(autocommit=False)
    assert handled == list(range(25))
    second = kafka.consumer(group_id=group)
    second.assign([TopicPartition(topic, 0)])
    try:
        count = consume_batches(second, lambda r: handled.append(r.offset), commit=commit, batch_size=10,
                                stopping=lambda: handled[-1:] == [49])
    finally:
        second.close()
    repeated = len(handled) - len(set(handled))
    missing = set(range(50)) - set(handled)
    print(f"\ncommit {commit}: crash at offset 25 of 50 in batches of 10: {repeated} repeated, {len(missing)} lost")
    assert count == 50 - 25 + duplicates - lost
    assert repeated == duplicates and len(missing) == lost


def test_processes_producers_and_groups_register_while_they_run(kafka):
    """helpers.core.lifecycle lists what runs (kinds 'consumer', 'producer') and forgets it when stopped."""
    topic = kafka.create_topic(partitions=2, prefix="registry")
    runner = producers.ProducerRunner(kafka, topic, rate=50).start()
    member = C.ConsumerProcess(kafka, topic, unique_name("registry")).start()
    group = C.ConsumerGroup(kafka, topic, 2, rate=200).start()
    try:
        assert {e.resource for e in lifecycle.running("producer")} >= {runner}
        assert {e.resource for e in lifecycle.running("consumer")} >= {member, group, *group.members}
        assert any(t.startswith(lifecycle.THREAD_PREFIX + "producer-") for t in lifecycle.course_threads())
        assert any(t.endswith(f"{member.name}-status") for t in lifecycle.course_threads())
        member.wait_assigned()
        member.kill()
        assert member not in {e.resource for e in lifecycle.running("consumer")}
    finally:
        runner.stop()
        group.stop()
        member.stop()
    mine = {runner, member, group, *group.members}
    assert not mine & {e.resource for e in lifecycle.running()}
    assert not [t for t in lifecycle.course_threads() if t.endswith("-status") or "producer-" in t]
    assert consumer_children() == []


def test_deadlines_derive_from_the_work_and_the_rebalances():
    """Durations raced against each other come from one place: the session timeout (the broker's
    clock, unscaled) and the work at its rate, with stated margins."""
    from helpers.kafka.clients import TEACHING_CONSUMER

    assert C.SESSION_TIMEOUT_S == TEACHING_CONSUMER["session_timeout_ms"] / 1000 == 6.0
    assert drains.REBALANCE_S == 10 * C.SESSION_TIMEOUT_S
    assert drains.deadline(100, 20) == drains.DEADLINE_MARGIN * 100 / 20 + 1.0
    assert drains.deadline(100, 20, rebalances=2) == drains.deadline(100, 20) + 2 * drains.REBALANCE_S
    for time_scale in (0.1, 0.3, 1.0):   # the work scales, the margin over it does not shrink
        work = 300 / (20 / time_scale)
        assert drains.deadline(300, 20 / time_scale) >= drains.DEADLINE_MARGIN * work
    for call, name in ((lambda: drains.deadline(-1, 5), "events"), (lambda: drains.deadline(5, 0), "rate"),
                       (lambda: drains.deadline(5, 5, rebalances=-1), "rebalances")):
        with pytest.raises(ValueError, match=name):
            call()


def test_lesson_6_restarts_inside_the_session_timeout_at_every_time_scale():
    """Lesson 6's outage is derived from the session timeout with a margin of half of it, so the
    restarted processes always wait for the broker to give up on the killed ones."""
    import ast

    import nbformat

    nb = nbformat.read(ROOT / "lessons" / "06_increased_reliability.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {t.id: ast.literal_eval(n.value) for n in ast.parse(params.source).body for t in n.targets}
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "OUTAGE = OUTAGE_SESSIONS * consumers.SESSION_TIMEOUT_S" in code
    assert "time.sleep(OUTAGE_S" not in code and "OUTAGE_S * TIME_SCALE" not in code
    for _time_scale in (0.1, 0.3, 1.0):   # the outage is on the broker's clock: the same at every scale
        outage = values["OUTAGE_SESSIONS"] * C.SESSION_TIMEOUT_S
        assert outage <= 0.5 * C.SESSION_TIMEOUT_S


class _Reveals:
    """A fake consumer whose report grows by one event per look."""

    def __init__(self, ids):
        self.ids, self.seen = list(ids), 0

    def processed(self):
        self.seen = min(self.seen + 1, len(self.ids))
        return [{"event_id": i, "t": time.time()} for i in self.ids[:self.seen]]


@pytest.mark.slow  # over a second
def test_wait_processed_shows_a_bar_that_ends_full_and_says_how_far_it_got(monkeypatch):
    bars = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(C, "progress_bar", Bar)
    ids = [f"e{i}" for i in range(30)]
    C.wait_processed([_Reveals(ids)], ids, timeout=10, poll=0.05, progress="draining")
    assert [(b.total, b.desc, b.n, b.closed) for b in bars] == [(30, "draining", 30, True)]
    with pytest.raises(C.WaitTimeout, match=r"processed \d+ of 30 events within 0.2 s"):
        C.wait_processed([_Reveals(ids)], ids, timeout=0.2, poll=0.05, progress="too slow")
    assert bars[-1].closed and 0 < bars[-1].n < 30


def _private_reaches(source: str) -> list[str]:
    """``x._name`` where ``x`` is another object (not ``self``, ``cls``, ``super()`` or a module)."""
    tree = ast.parse(source)
    modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
               for a in n.names}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls", *modules}:
            continue
        if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
            continue
        found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_groups_ask_their_members_through_public_methods():
    """A ConsumerGroup, stop_many and the drains use ConsumerProcess's public methods (signal_stop,
    stop, pause/resume with wait=False, wait_paused), never its private ones."""
    assert _private_reaches("m._send('resume')\nfor p in ps: p._finish_stop(1)\nself._x\nos._exit(0)\n"
                            "import os") == ["line 1: m._send", "line 2: p._finish_stop"]  # the scan sees them
    backlog = ROOT / "helpers" / "backlog"
    reaches = {path.name: found for path in sorted(backlog.glob("*.py"))
               if (found := _private_reaches(path.read_text()))}
    assert reaches == {}
