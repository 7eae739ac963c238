"""Lesson 9's library against a real broker: outbox, idempotency, dead letters, ordering, evolution.

Each integration test counts a data outcome (ids in the database against ids on the topic,
balances, processed + dead-lettered == produced, out-of-order pairs, what a schema library
read), and checks that everything it started has stopped. Unit tests cover the pure parts and
bad parameters; each new check is also shown failing on a wrong input (a relay that marks
first, a partition that moved, a reader without its alias). The last test runs the lesson
with every claim cell and its check executed twice in a row.
"""
from __future__ import annotations

import copy
import os
import signal
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from helpers.core import kills, lifecycle, processes
from helpers.core.wait import wait_until
from helpers.kafka.events import EventError, encode_value, order_placed
from helpers.patterns import deadletters, dualwrites, evolution, fix, idempotency, ordering, outbox, stalls

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "lessons" / "09_price_of_asynchrony.ipynb"
OUR_KINDS = ("service", "relay", "consumer", "event-service", "process")


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every test leaves none of this module's resources registered or running."""
    yield
    left = [e for e in lifecycle.running() if e.kind in OUR_KINDS]
    assert not left, f"still registered: {[(e.kind, e.name) for e in left]}"
    threads = [t for t in lifecycle.course_threads() if not t.endswith("plotly-warm-up")]  # ends by itself
    assert not threads, threads


def _record(value: bytes, *, offset: int = 0, partition: int = 0, key: bytes | None = None, headers=None):
    return SimpleNamespace(topic="orders", partition=partition, offset=offset, key=key, value=value,
                           headers=headers or [])


# --------------------------------------------------------------------------- C16: the outbox


def test_kill_plan_is_seeded_and_checks_its_parameters():
    plan = kills.KillPlan(30, seed=4)
    lifetimes = plan.lifetimes()
    assert lifetimes == kills.KillPlan(30, seed=4).lifetimes() != kills.KillPlan(30, seed=5).lifetimes()
    assert len(lifetimes) == 30 and all(plan.low <= t <= plan.high for t in lifetimes)
    assert len(set(lifetimes)) == 30                              # drawn, not a fixed step
    for bad, name in (({"kills": -1}, "kills"), ({"kills": 3, "seed": -1}, "seed"), ({"kills": 3, "low": 0}, "low"),
                      ({"kills": 3, "low": 0.2, "high": 0.1}, "high")):
        with pytest.raises(ValueError, match=name):
            kills.KillPlan(**bad)


def _outbox_worker(tmp_path, role="outbox", incarnation=1, **extra):
    config = {"role": role, "topic": "unused", "status_topic": "unused", "db": str(tmp_path / "orders.db"),
              "incarnation": incarnation, "rate": 200.0, "bootstrap_servers": "127.0.0.1:1", "kind": "embedded",
              "client_config": {}, **extra}
    return processes.CourseProcess(dualwrites.serve, config, f"{role}-{incarnation}",
                                   preload=dualwrites.PRELOAD).start()


def test_a_worker_is_a_process_killed_abruptly_mid_work(tmp_path):
    """The outbox service needs no Kafka: a real process writes orders until psutil kills it;
    every row it committed is there afterwards, and nothing of it is left running."""
    worker = _outbox_worker(tmp_path)
    try:
        worker.wait_ready()
        assert worker.alive and worker.pid != os.getpid()
        worker.go()                                             # returns once it says "serving"
        db = dualwrites.open_database(tmp_path / "orders.db")
        wait_until(lambda: db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] >= 5, 10, "five orders")
        worker.kill()
        assert not worker.alive and worker.exitcode == -signal.SIGKILL and worker.failure is None
        orders = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        assert orders == rows >= 5                               # the order and its row: one transaction
        assert all(o.startswith("order-001-") for (o,) in db.execute("SELECT order_id FROM orders"))
        db.close()
    finally:
        worker.kill()


def test_a_worker_that_fails_says_why(tmp_path):
    worker = _outbox_worker(tmp_path / "missing-folder")
    with pytest.raises(RuntimeError, match="failed to start: OperationalError: unable to open database file"):
        worker.wait_ready()
    assert not worker.alive
    with pytest.raises(ValueError, match="target"):
        processes.CourseProcess("serve", {}, "x")  # type: ignore[arg-type]


def test_run_killed_kills_each_worker_after_its_lifetime_with_a_spare_ready(tmp_path):
    plan = kills.KillPlan(6, seed=3)
    run = kills.run_killed(lambda n: _outbox_worker(tmp_path, incarnation=n), plan)
    assert len(run.pids) == len(set(run.pids)) == 6
    for planned, lived in zip(plan.lifetimes(), run.lived):
        assert planned <= lived < planned + 0.5                 # killed when the plan said, not at a step
    assert "ms" in run.moments() and not [e for e in lifecycle.running() if e.kind == "process"]
    db = dualwrites.open_database(tmp_path / "orders.db")
    by_process = {o.split("-")[1] for (o,) in db.execute("SELECT order_id FROM orders")}
    db.close()
    assert by_process                                            # real work was going on when they died


def test_pace_stretches_the_lifetimes_only_on_a_slower_machine():
    assert outbox.Pace(first=0.005).stretch() == 1.0                 # faster than the reference: as planned
    pace = outbox.Pace(first=0.02, window=3)
    assert pace.stretch() == pytest.approx(2.0)                     # the first measure, before any life
    pace.add(0.3, 10)
    pace.add(0.6, 10)
    pace.add(3.0, 0)                                                 # one starved process does not decide
    assert pace.seconds_per_order == pytest.approx(0.06)            # the median: 6 times slower ...
    assert pace.stretch() == outbox.MAX_STRETCH == 3.0               # ... stretched as far as allowed
    for _ in range(3):
        pace.add(0.05, 10)                                           # the window forgets the slow lives
    assert pace.stretch() == 1.0 and pace.stretches[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="first"):
        outbox.Pace(first=0)


def test_the_three_designs_under_random_kills_judged_by_database_and_topic(kafka):
    """C16 as the lesson measures it: only the database and the topic decide."""
    runs = outbox.compare_designs(kafka, kills.KillPlan(20, seed=11), progress=False)
    commit_first, publish_first, with_outbox = (runs[d] for d in outbox.DESIGNS)
    assert commit_first.lost and not commit_first.invented
    assert publish_first.invented and not publish_first.lost
    assert with_outbox.db_ids and with_outbox.consistent and not with_outbox.lost and not with_outbox.invented
    assert commit_first.harmful_kills() <= 20 and publish_first.harmful_kills() <= 20
    assert len(with_outbox.relay_kills.lived) == 20
    assert with_outbox.pace is commit_first.pace and len(commit_first.pace.stretches) >= 60  # every life asked
    fig = outbox.dual_write_figure(runs)
    assert [list(bar.y) for bar in fig.data][0][0] == len(commit_first.lost)


def test_the_comparison_catches_a_relay_that_marks_rows_before_publishing(kafka):
    """The wrong input for C16's outbox check: the same kills, a relay that marks first, and the
    database-against-topic comparison finds the events it lost."""
    run = outbox.run_design(kafka, "outbox", kills.KillPlan(30, seed=5), relay="relay-mark-first")
    assert run.lost and not run.consistent and not run.invented


def test_outbox_parameters_are_checked(kafka):
    plan = kills.KillPlan(2)
    with pytest.raises(ValueError, match="design"):
        outbox.run_design(kafka, "publish-and-pray", plan)
    with pytest.raises(ValueError, match="plan"):
        outbox.run_design(kafka, "outbox", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="relay"):
        outbox.run_design(kafka, "outbox", plan, relay="relay-sometimes")
    with pytest.raises(ValueError, match="designs"):
        outbox.compare_designs(kafka, plan, designs=["nope"])
    with pytest.raises(ValueError, match="plan"):
        kills.run_killed(lambda n: None, "plan")  # type: ignore[arg-type, return-value]


# --------------------------------------------------------------------------- C17: idempotency


def _ledger_conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(idempotency.LEDGER_SCHEMA)
    return conn


def test_the_ledgers_process_once_applies_an_event_id_once_and_forgets_a_failed_effect():
    """The idempotent ledger applies through the course's fix (one way to apply an event once)."""
    conn = _ledger_conn()
    add = lambda c: c.execute("INSERT INTO balances VALUES ('ada', 5) "  # noqa: E731
                              "ON CONFLICT(customer) DO UPDATE SET balance = balance + 5")
    assert [fix.process_once(conn, "e1", add) for _ in range(3)] == [True, False, False]
    assert conn.execute("SELECT balance FROM balances").fetchone()[0] == 5

    def broken(c: sqlite3.Connection) -> None:
        add(c)
        raise RuntimeError("the effect failed half-way")

    with pytest.raises(RuntimeError):
        fix.process_once(conn, "e2", broken)
    assert conn.execute("SELECT balance FROM balances").fetchone()[0] == 5      # rolled back ...
    assert fix.process_once(conn, "e2", add)                              # ... so it can be retried
    with pytest.raises(ValueError, match="event_id"):
        fix.process_once(conn, "", add)
    ledger = idempotency.Ledger()
    try:
        payment = idempotency.payment_events(1)[0]
        assert [ledger.apply_idempotent(payment) for _ in range(2)] == [True, False]
        assert ledger.balances() == idempotency.expected_balances([payment])
    finally:
        ledger.close()


def test_ledger_rejects_events_it_cannot_apply():
    ledger = idempotency.Ledger()
    try:
        with pytest.raises(EventError, match="PaymentProcessed"):
            ledger.apply_naive(order_placed("o-1", 3.0))
        bad = idempotency.payment_events(1)[0]
        object.__setattr__(bad, "payload", {"customer": "ada", "amount": "ten"})
        with pytest.raises(EventError, match="numeric amount"):
            ledger.apply_idempotent(bad)
    finally:
        ledger.close()


def test_redelivery_after_a_crash_double_applies_naively_and_once_idempotently(kafka):
    runs = idempotency.compare_handlers(kafka, 12, batch_size=4, crash_after=6, log=None)
    naive, once = runs["naive"], runs["idempotent"]
    for run in (naive, once):
        assert run.crashes == 1 and len(run.joins) == 2
        assert run.redelivered == len(run.exposure) > 0          # real redelivery by the broker
    assert naive.applied == naive.delivered and naive.skipped == 0
    assert naive.excess == pytest.approx(naive.exposed_amount) and naive.wrong_accounts
    assert once.applied == 12 and once.skipped == once.redelivered
    assert once.balances == once.expected and once.excess == 0


def test_the_crash_point_is_drawn_from_a_seed_and_a_comparison_runs_again(kafka):
    points = [idempotency.draw_crash_point(12, seed) for seed in range(40)]
    assert points == [idempotency.draw_crash_point(12, seed) for seed in range(40)]
    assert set(points) <= set(range(1, 12)) and len(set(points)) > 5        # drawn, anywhere in the stream
    comparison = idempotency.HandlerComparison(kafka, 8, batch_size=3, crash_seed=2)
    assert comparison.crash_after == idempotency.draw_crash_point(8, 2)
    lines: list[str] = []
    for _ in range(2):  # a learner re-runs the cell: a fresh topic, groups and ledgers, the same verdict
        runs = comparison.run(log=lines.append)
        naive, once = runs["naive"], runs["idempotent"]
        assert naive.redelivered == len(naive.exposure) > 0 and naive.excess == pytest.approx(naive.exposed_amount)
        assert once.balances == once.expected and once.skipped == once.redelivered
    assert sum(f"crash after {comparison.crash_after} deliveries" in line for line in lines) == 2


def test_idempotency_parameters_are_checked(kafka):
    with pytest.raises(ValueError, match="crash_after"):
        idempotency.compare_handlers(kafka, 5, crash_after=5, log=None)
    ledger = idempotency.Ledger()
    try:
        with pytest.raises(ValueError, match="handler"):
            idempotency.CrashingConsumer(kafka, "t", ledger, {"a"}, handler="careful")
    finally:
        ledger.close()
    with pytest.raises(ValueError, match="customers"):
        idempotency.payment_events(3, customers=())


# --------------------------------------------------------------------------- C18: dead letters


def test_parse_order_says_what_is_wrong_and_where():
    with pytest.raises(EventError, match=r"orders\[0\]@4: record is not a course event envelope"):
        deadletters.parse_order(_record(deadletters.POISON, offset=4))
    bad_amount = order_placed("o-1", 1.0)
    value = encode_value(bad_amount).replace(b'"amount":1.0', b'"amount":"twelve"')
    with pytest.raises(EventError, match=r"orders\[2\]@9: OrderPlaced.amount must be a number >= 0, got 'twelve'"):
        deadletters.parse_order(_record(value, offset=9, partition=2))
    assert deadletters.parse_order(_record(encode_value(order_placed("o-2", 2.0)))).payload["order_id"] == "o-2"


def test_malformed_events_get_a_clear_error_and_a_dead_letter_never_a_crash_loop(kafka):
    topic = kafka.create_topic(prefix="bad-input")
    dlq = kafka.create_topic(prefix="bad-input-dlq")
    good = [order_placed(f"o-{i}", 5.0 + i) for i in range(3)]
    wrong_type = encode_value(order_placed("o-9", 1.0)).replace(b'"amount":1.0', b'"amount":"twelve"')
    values = [encode_value(good[0]), deadletters.POISON, encode_value(good[1]), wrong_type, encode_value(good[2])]
    producer = kafka.producer()
    try:
        for v in values:
            producer.send(topic, value=v, headers=[("event_type", b"OrderPlaced")]).get(timeout=10)
    finally:
        producer.close()
    worker = deadletters.RetryingConsumer(kafka, topic, max_attempts=3, backoff=0.01, dead_letter_topic=dlq).start()
    try:
        wait_until(lambda: worker.snapshot()[0].get(0, 0) >= len(values), 30, "every record handled")
        assert worker.alive and worker.error is None                    # still running: no crash loop
        assert worker.processed == {0: 3}
        assert worker.attempts == {(0, 1): 3, (0, 3): 3}                # exactly max_attempts each, then on
        assert len(worker.failures) == 6
    finally:
        worker.stop()
    letters = deadletters.read_dead_letters(kafka, dlq)
    assert [(d.offset, d.attempts, d.error_type) for d in letters] == [(1, 3, "EventError"), (3, 3, "EventError")]
    assert "not a course event envelope" in letters[0].error and letters[0].value == deadletters.POISON
    assert "amount must be a number" in letters[1].error and letters[1].topic == topic
    assert worker.dead_letters == letters


def test_poison_blocks_its_partition_until_dead_lettered(kafka):
    stuck = deadletters.poison_run(kafka, max_attempts=None, watch=1.2, backoff=0.04, rate=30)
    p = stuck.poison_partition
    assert stuck.stuck_at_poison and stuck.attempts > 3 and stuck.alive
    assert stuck.lag_end[p] == stuck.produced_after_poison[p] + 1 > 1
    assert all(stuck.progress_after_poison[q] > 0 for q in stuck.others)
    healed = deadletters.poison_run(kafka, max_attempts=3, watch=1.2, backoff=0.04, rate=30)
    assert healed.attempts == 3 and len(healed.dead_letters) == 1
    assert healed.accounted == healed.total_produced and healed.lag_end[healed.poison_partition] == 0
    fig = deadletters.poison_figure([stuck, healed])
    assert len(fig.data) == 2 * len(stuck.produced)


def test_dead_letter_parameters_are_checked(kafka):
    with pytest.raises(ValueError, match="dead_letter_topic"):
        deadletters.RetryingConsumer(kafka, "t", max_attempts=3)
    with pytest.raises(ValueError, match="max_attempts"):
        deadletters.RetryingConsumer(kafka, "t", max_attempts=0, dead_letter_topic="d")
    with pytest.raises(ValueError, match="max_attempts x backoff"):
        deadletters.poison_run(kafka, max_attempts=10, watch=1.0, backoff=0.1)
    with pytest.raises(ValueError, match="poison_partition"):
        deadletters.poison_run(kafka, max_attempts=None, partitions=2, poison_partition=2)
    with pytest.raises(ValueError, match="not a dead letter"):
        topic = kafka.create_topic(prefix="not-dlq")
        producer = kafka.producer()
        producer.send(topic, value=b"{}").get(timeout=10)
        producer.close()
        deadletters.read_dead_letters(kafka, topic)


def test_poll_settings_derive_from_the_retry_budget():
    settings = stalls.poll_settings(0.15)
    assert settings == {"max_poll_interval_ms": 600, "heartbeat_interval_ms": 150}
    assert stalls.poll_settings(0.3)["max_poll_interval_ms"] == 1200
    with pytest.raises(ValueError, match="retry_budget"):
        stalls.poll_settings(0)


def test_a_stall_names_only_the_partitions_that_stopped():
    """The wrong input for C18's first check: a partition that moved is not called stalled."""
    stall = stalls.Stall("member-A", [0, 1], 1.0, 2.0, {0: 0, 1: 0, 2: 9, 3: 7}, {0: 5, 1: 6, 2: 0, 3: 1}, 0.9)
    assert stall.stalled == [0, 1] and stall.others(4) == [2, 3] and stall.without_poll == pytest.approx(1.1)
    moving = stalls.Stall("member-A", [0, 1], 1.0, 2.0, {0: 3, 1: 0, 2: 9, 3: 7}, {0: 5, 1: 6, 2: 0, 3: 1}, 0.9)
    assert moving.stalled == [1]


def test_a_poison_retried_inline_stalls_the_member_then_moves_to_the_next(kafka):
    """C18's first half as the lesson measures it: every partition of the member on the poison
    stops, the group evicts it after max.poll.interval.ms, and the next member stalls in turn."""
    group = stalls.InlineGroup(kafka, backoff=0.05).start()
    try:
        run = group.run(rate=100, lead=0.4, after=0.5)
    finally:
        group.stop()
    first = run.stalls[0]
    assert len(first.partitions) == 2 and first.stalled == first.partitions
    assert all(first.progress[p] > 0 for p in first.others(4))
    assert run.rebalance is not None and first.without_poll >= run.max_poll_interval
    assert run.moved and run.stalls[1].stalled == run.stalls[1].partitions == [0, 1, 2, 3]
    assert [label for _, label in run.marks] == ["poison", "rebalance", "moved"]
    assert len(deadletters.poison_figure([run]).data) == 4
    with pytest.raises(ValueError, match="poison_partition"):
        group.run(poison_partition=4)
    with pytest.raises(ValueError, match="members"):
        stalls.InlineGroup(kafka, members=1)


def test_the_dead_letter_design_keeps_the_other_partitions_flowing_during_its_attempts(kafka):
    healed = deadletters.poison_run(kafka, max_attempts=3, watch=1.5, backoff=0.05, rate=100, partitions=4)
    during = healed.progress_during_retries
    assert healed.retry_window is not None and during[healed.poison_partition] == 0
    assert sum(during[q] for q in healed.others) > 0
    assert healed.accounted == healed.total_produced and not any(healed.lag_end.values())
    assert [label for _, label in healed.marks] == ["poison", "dead-lettered"]


# --------------------------------------------------------------------------- C19: ordering


def test_order_stories_keep_each_orders_steps_in_order():
    stories = ordering.order_stories(6, seed=2)
    assert stories == ordering.order_stories(6, seed=2) and len(stories) == 6 * len(ordering.STEPS)
    for order_id in {o for o, _, _ in stories}:
        assert [s for o, s, _ in stories if o == order_id] == list(range(len(ordering.STEPS)))
    with pytest.raises(ValueError, match="n_orders"):
        ordering.order_stories(0)


def test_out_of_order_pairs_counts_inversions_within_one_order_only():
    def seen(order_id: str, step: int, produced: int) -> ordering.Seen:
        return ordering.Seen(order_id, step, produced, 0, produced, "w", float(produced))

    assert ordering.out_of_order_pairs([seen("a", 0, 0), seen("b", 0, 1), seen("a", 1, 2)]) == 0
    assert ordering.out_of_order_pairs([seen("a", 2, 0), seen("a", 0, 1), seen("a", 1, 2)]) == 2


def test_a_key_per_order_keeps_each_order_in_order_a_random_key_does_not(kafka):
    group = ordering.FulfilmentGroup(kafka, process_s=0.005).start()
    try:
        for n in (12, 6):  # a second run on the same group counts only its own events
            runs = group.run(n, seed=n)
            by_id, by_random = runs["order id"], runs["random key"]
            assert len(by_id.seen) == len(by_random.seen) == n * len(ordering.STEPS)
            assert by_id.split_orders == 0 and by_id.out_of_order == 0 and by_id.interleaved > 0
            assert by_id.log_order_kept and by_random.log_order_kept      # Kafka keeps each partition's order
            assert by_random.split_orders > 0
    finally:
        group.stop()
    with pytest.raises(ValueError, match="members"):
        ordering.FulfilmentGroup(kafka, members=0)


# --------------------------------------------------------------------------- C20: evolution


def _event(version: int, registry: evolution.SchemaRegistry, **fields):
    record = evolution.order_payload(version, fields.pop("order_id", "o-1"), fields.pop("amount", 20.0), **fields)
    return evolution.encode(record, registry.register(evolution.VERSIONS[version]), registry)


def test_the_registry_gives_one_id_per_schema_and_travels_in_a_header():
    registry = evolution.SchemaRegistry()
    ids = [registry.register(evolution.VERSIONS[v]) for v in (1, 2, 3, 2)]
    assert ids == [1, 2, 3, 2] and len(registry.table()) == 3
    value, headers = _event(3, registry)
    assert dict(headers)["schema_id"] == b"3" and isinstance(value, bytes)
    with pytest.raises(evolution.SchemaError, match="no schema with id 9"):
        registry.schema(9)
    with pytest.raises(evolution.SchemaError, match="no schema_id header"):
        evolution.decode(value, [], evolution.READERS["v1 reader"], registry)


def test_schema_resolution_decides_each_reader_and_version():
    """fastavro's rules, not the course's: added field, rename, alias, and the silent default."""
    registry = evolution.SchemaRegistry()
    v1, v2, v3 = (_event(v, registry, amount=25.0, currency="USD" if v > 1 else "EUR") for v in (1, 2, 3))
    read = evolution.decode
    assert read(*v2, evolution.READERS["v1 reader"], registry) == {"order_id": "o-1", "amount": 25.0, "customer": "ada"}
    assert read(*v1, evolution.READERS["v2 reader"], registry)["currency"] == "EUR"           # the default
    with pytest.raises(evolution.SchemaError, match="SchemaResolutionError: No default value for field amount"):
        read(*v3, evolution.READERS["v1 reader"], registry)
    assert read(*v1, evolution.READERS["v3 reader with alias"], registry)["total"] == 25.0
    with pytest.raises(evolution.SchemaError, match="No default value for field total"):  # the wrong input: no alias
        read(*v1, evolution.READERS["v3 reader without alias"], registry)
    assert read(*v3, evolution.READERS["v1 reader with defaults"], registry)["amount"] == 0.0  # silently wrong
    assert evolution.upcast(*v2, registry) == {"order_id": "o-1", "total": 25.0, "customer": "ada", "currency": "USD"}
    assert evolution.upcast(*v1, registry)["currency"] == "EUR"
    with pytest.raises(ValueError, match="currency"):
        evolution.order_payload(2, "o", 1.0, currency="euro")
    with pytest.raises(ValueError, match="version"):
        evolution.order_payload(4, "o", 1.0)
    with pytest.raises(ValueError, match="amount"):
        evolution.order_payload(1, "o", -1.0)


def test_readers_count_every_version_on_a_real_topic(kafka):
    registry, published, readers = evolution.compare_readers(kafka, {1: 2, 2: 3, 3: 2})
    assert [v for v, _ in published] == [1, 1, 2, 2, 2, 3, 3]
    assert all(r["currency"] != "EUR" for v, r in published if v > 1)      # a replaced currency would show
    old, tolerant = readers["v1 reader"], readers["v1 reader with defaults"]
    assert old.by_version(1) == (2, 0) and old.by_version(2) == (3, 0) and old.by_version(3) == (0, 2)
    assert tolerant.by_version(3) == (2, 0) and tolerant.wrong_in(3) == 2 and not tolerant.wrong_in(2)
    aliased, unaliased = readers["v3 reader with alias"], readers["v3 reader without alias"]
    assert [aliased.by_version(v) for v in (1, 2, 3)] == [(2, 0), (3, 0), (2, 0)] and not aliased.wrong
    assert [unaliased.by_version(v) for v in (1, 2, 3)] == [(0, 2), (0, 3), (2, 0)]
    assert "WRONG" in str(tolerant) and len(registry.table()) == 3
    with pytest.raises(ValueError, match="reader"):
        evolution.read_all(kafka, "t", "v4 reader", registry, published)


# --------------------------------------------------------------------------- the lesson, each claim twice


def _claim(cell: nbformat.NotebookNode) -> str | None:
    return next((t for t in cell.get("metadata", {}).get("tags", []) if t.startswith("claim-")), None)


def twice(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str]]:
    """A copy of ``nb`` in which each claim cell and its check cell (the next code cell) run again,
    right after the first time, in the same kernel; and the claims so repeated."""
    out, repeated, cells, i = copy.deepcopy(nb), [], nb.cells, 0
    out.cells = []
    while i < len(cells):
        out.cells.append(copy.deepcopy(cells[i]))
        claim = _claim(cells[i]) if cells[i].cell_type == "code" else None
        if claim is None:
            i += 1
            continue
        check = next(j for j in range(i + 1, len(cells)) if cells[j].cell_type == "code")
        out.cells.extend(copy.deepcopy(cells[i + 1:check + 1]))
        again = [copy.deepcopy(cells[i]), copy.deepcopy(cells[check])]
        for cell in again:
            cell.pop("id", None)
            cell.metadata.pop("tags", None)  # the repeat is not a second claim demo for the lint
        out.cells.extend(again)
        repeated.append(claim)
        i = check + 1
    for n, cell in enumerate(out.cells):
        cell["id"] = f"cell-{n}"
    return out, repeated


def test_twice_repeats_each_claim_cell_and_its_check_right_after_them():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = measure()", metadata={"tags": ["claim-C3"]}),
        nbformat.v4.new_markdown_cell("prose"),
        nbformat.v4.new_code_cell("# check: C3\nassert x"),
        nbformat.v4.new_code_cell("print('after')")])
    out, repeated = twice(nb)
    assert repeated == ["claim-C3"]
    assert [c.source.splitlines()[0] for c in out.cells] == ["x = measure()", "prose", "# check: C3",
                                                             "x = measure()", "# check: C3", "print('after')"]
    assert twice(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("y = 1")]))[1] == []


@pytest.mark.slow  # runs the whole lesson in a kernel, which starts the broker
def test_lesson_9_gives_the_same_verdicts_when_each_claim_cell_runs_twice_in_a_row(tmp_path):
    """Every claim cell and its check, re-executed at once in the same kernel, hold again (a
    comparison that closed its own databases, say, would fail the second time)."""
    from nbclient import NotebookClient

    nb, repeated = twice(nbformat.read(LESSON, as_version=4))
    assert sorted(set(repeated)) == ["claim-C16", "claim-C17", "claim-C18", "claim-C19", "claim-C20"]
    assert repeated.count("claim-C18") == 2
    lifecycle.warm_up_plotly().join()  # its import of IPython must not race jupyter_client's, in this process
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(LESSON.parent)}})
    client.execute()  # raises CellExecutionError naming the cell if a verdict fails
    verdicts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "stream" and " holds: " in o.get("text", "")]
    held = sorted(line.split(" holds:")[0] for text in verdicts for line in text.splitlines() if " holds:" in line)
    assert held == sorted(c.replace("claim-", "") for c in repeated * 2), held
