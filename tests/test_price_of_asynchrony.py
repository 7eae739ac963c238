"""Lesson 9's library against a real broker: outbox, idempotency, dead letters, ordering, evolution.

Each integration test counts a data outcome (ids in the database against ids on the topic,
balances, processed + dead-lettered == produced, out-of-order pairs), and checks that
everything it started has stopped. Unit tests cover the pure parts and bad parameters.
"""
from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest

from helpers.core import lifecycle
from helpers.core.wait import wait_until
from helpers.kafka.events import EventError, encode_value, order_placed
from helpers.patterns import deadletters, evolution, idempotency, ordering, outbox

OUR_KINDS = ("service", "relay", "consumer", "event-service")


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


def test_crash_plan_is_deterministic_and_checks_its_parameters():
    plan = outbox.CrashPlan(0.3, seed=4)
    hits = [plan.hits("between", i) for i in range(200)]
    assert hits == [outbox.CrashPlan(0.3, seed=4).hits("between", i) for i in range(200)]
    assert 30 <= sum(hits) <= 90
    assert not any(outbox.CrashPlan(0.0).hits("between", i) for i in range(50))
    with pytest.raises(ValueError, match="rate"):
        outbox.CrashPlan(1.5)
    with pytest.raises(ValueError, match="seed"):
        outbox.CrashPlan(0.1, seed=-1)
    with pytest.raises(outbox.SimulatedCrash):
        outbox.CrashPlan(1.0).crash("between", 0)


def test_dual_writes_lose_and_invent_exactly_one_event_per_crash(kafka):
    runs = outbox.compare_designs(kafka, 30, crash_rate=0.3, seed=11, designs=outbox.DESIGNS[:2])
    commit_first, publish_first = runs["commit-then-publish"], runs["publish-then-commit"]
    assert commit_first.crashes == publish_first.crashes > 0
    assert len(commit_first.db_ids) == 30 and len(commit_first.lost) == commit_first.crashes
    assert not commit_first.invented and commit_first.duplicates == 0
    assert len(publish_first.topic_ids) == 30 and len(publish_first.invented) == publish_first.crashes
    assert not publish_first.lost


def test_outbox_publishes_exactly_the_committed_orders_under_the_same_crashes(kafka):
    run = outbox.run_dual_write(kafka, "outbox", 30, crash_rate=0.3, seed=11)
    same = outbox.run_dual_write(kafka, "commit-then-publish", 30, crash_rate=0.3, seed=11)
    assert run.crashes == same.crashes > 0
    assert len(run.db_ids) == 30 - run.crashes
    assert set(run.topic_ids) == run.db_ids and run.consistent
    assert run.relay_crashes > 0 and run.duplicates == run.relay_crashes  # at-least-once, never a loss


def test_outbox_without_crashes_publishes_each_order_once(kafka):
    run = outbox.run_dual_write(kafka, "outbox", 10, crash_rate=0.0)
    assert run.crashes == run.relay_crashes == run.duplicates == 0
    assert sorted(run.topic_ids) == sorted(run.db_ids) and len(run.db_ids) == 10


def test_outbox_transaction_rolls_back_both_rows_on_a_crash(kafka, tmp_path):
    topic = kafka.create_topic(prefix="outbox-unit")
    service = outbox.OutboxOrderService(kafka, topic, tmp_path / "o.db", crashes=outbox.CrashPlan(1.0))
    try:
        with pytest.raises(outbox.SimulatedCrash):
            service.place_order(0, "order-x", 10.0)
        service.restart()
        db = outbox.open_database(tmp_path / "o.db")
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        db.close()
    finally:
        service.stop()


def test_outbox_parameters_are_checked(kafka, tmp_path):
    with pytest.raises(ValueError, match="design"):
        outbox.run_dual_write(kafka, "publish-and-pray", 5)
    with pytest.raises(ValueError, match="designs"):
        outbox.compare_designs(kafka, 5, designs=["nope"])
    with pytest.raises(ValueError, match="n_orders"):
        outbox.run_dual_write(kafka, "outbox", 0)
    with pytest.raises(ValueError, match="crash_rate"):
        outbox.run_dual_write(kafka, "outbox", 5, crash_rate=1.2)
    with pytest.raises(ValueError, match="crashes"):
        outbox.OutboxRelay(kafka, tmp_path / "o.db", crashes=0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        outbox.OutboxRelay(kafka, tmp_path / "o.db", interval=0)


# --------------------------------------------------------------------------- C17: idempotency


def _ledger_conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(idempotency.LEDGER_SCHEMA)
    return conn


def test_apply_once_applies_an_event_id_once_and_forgets_a_failed_effect():
    conn = _ledger_conn()
    add = lambda c: c.execute("INSERT INTO balances VALUES ('ada', 5) "  # noqa: E731
                              "ON CONFLICT(customer) DO UPDATE SET balance = balance + 5")
    assert [idempotency.apply_once(conn, "e1", add) for _ in range(3)] == [True, False, False]
    assert conn.execute("SELECT balance FROM balances").fetchone()[0] == 5

    def broken(c: sqlite3.Connection) -> None:
        add(c)
        raise RuntimeError("the effect failed half-way")

    with pytest.raises(RuntimeError):
        idempotency.apply_once(conn, "e2", broken)
    assert conn.execute("SELECT balance FROM balances").fetchone()[0] == 5      # rolled back ...
    assert idempotency.apply_once(conn, "e2", add)                              # ... so it can be retried
    with pytest.raises(ValueError, match="event_id"):
        idempotency.apply_once(conn, "", add)


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


def test_strict_old_consumer_breaks_on_v2_the_tolerant_reader_reads_both():
    v1, v2 = evolution.order_placed_v1("o-1", 20.0), evolution.order_placed_v2("o-2", 30.0, currency="USD")
    assert evolution.read_strict_v1(v1).amount == 20.0
    with pytest.raises(evolution.SchemaError, match=r"missing \['amount'\], unknown \['currency', 'total'\]"):
        evolution.read_strict_v1(v2)
    assert evolution.read_tolerant(v1) == evolution.Order("o-1", 20.0, "EUR", "ada", 1)
    assert evolution.read_tolerant(v2) == evolution.Order("o-2", 30.0, "USD", "ada", 2)
    broken = evolution.order_placed_v2("o-3", 1.0)
    object.__setattr__(broken, "payload", {**broken.payload, "total": "lots"})
    with pytest.raises(evolution.SchemaError, match="numeric total"):
        evolution.read_tolerant(broken)
    with pytest.raises(ValueError, match="currency"):
        evolution.order_placed_v2("o-4", 1.0, currency="euro")
    with pytest.raises(ValueError, match="amount"):
        evolution.order_placed_v1("o-5", -1.0)


def test_readers_count_both_versions_on_a_real_topic(kafka):
    published, readers = evolution.compare_readers(kafka, 3, 4)
    strict, tolerant = readers["strict v1 consumer"], readers["tolerant reader"]
    assert strict.by_version(1) == (3, 0) and strict.by_version(2) == (0, 4)
    assert tolerant.by_version(1) == (3, 0) and tolerant.by_version(2) == (4, 0)
    assert tolerant.total == sum(e.payload.get("amount", e.payload.get("total")) for e in published)
