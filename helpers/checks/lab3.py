"""Lab 3, survive the outage: a commit strategy that loses nothing in a crash, an audit
of a consumer's report, and a handler that charges each order once however often it
is delivered. :func:`crash_drill` is the lab's quick, real crash on Kafka."""
from __future__ import annotations

import collections
import math
import random
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from ..backlog.pollloop import COMMIT_STRATEGIES, Crash, check_commit, consume_batches
from ..backlog.reports import Tally, count_report
from ..core.params import check_int
from ..kafka import events as ev
from ..kafka.clients import Kafka, delete_topic
from .feedback import Fail, LearnerError, check, learner, require_value

# =========================================================================== the crash drill


@dataclass
class DrillResult:
    """What a quick crash drill delivered: the events produced, and every delivery in order."""

    commit: str
    batch_size: int
    produced: list[ev.Event]  # in topic order
    delivered: list[ev.Event]  # as handled, duplicates included
    crash: str  # when the consumer crashed, in words ("after processing events 20-29, ...")

    @property
    def tally(self) -> Tally:
        """Produced against delivered: unique, duplicates, missing."""
        return count_report([e.event_id for e in self.produced],
                            [{"kind": "processed", "event_id": e.event_id} for e in self.delivered])


def _events(records: list[ConsumerRecord]) -> str:
    """'events 20-29', or 'event 2' for one."""
    first, last = records[0].offset, records[-1].offset
    return f"event {first}" if first == last else f"events {first}-{last}"


#: The worst moment comes in this full poll (the ones before it are committed, so a crash
#: there shows what the commit strategy does with one batch, not what the first poll does).
WORST_POLL = 3


def crash_drill(kafka: Kafka, commit: str, batch_size: int, *, events_total: int | None = None,
                crash_at: int | None = None, payloads: list[dict[str, Any]] | None = None,
                handle: Callable[[ev.Event], object] | None = None) -> DrillResult:
    """A quick, real crash drill on Kafka, in this process.

    A consumer of a fresh group reads a fresh one-partition topic in polls of
    ``batch_size`` records and commits ``"after"`` or ``"before"`` processing each poll.
    It crashes (stops without committing or saying goodbye) at the worst moment for its
    strategy, in its third poll that returns a full batch: with ``"after"``, once it has
    processed the whole batch and before it commits it, so the restart repeats all
    ``batch_size`` events; with ``"before"``, once it has committed the batch and before it
    processes any of it, so all ``batch_size`` are lost. ``crash_at`` crashes instead while
    processing the event at that index (before handling it), wherever the polls fall.
    A new consumer of the same group then resumes from the committed offset and reads to
    the end. ``handle(event)`` (optional) is called for every delivery.

    Partitions are assigned, not subscribed, so no group join is waited for: seconds
    instead of the ~10 s a real SIGKILLed member needs to be evicted (the lab shows that
    too, with ``helpers.backlog.consumers.ConsumerProcess``).
    """
    check_commit(commit)
    check_int("batch_size", batch_size)
    if crash_at is not None:
        check_int("crash_at", crash_at, minimum=0)
    if payloads is None:
        total = events_total or ((WORST_POLL + 1) * batch_size + 5 if crash_at is None
                                 else crash_at + 2 * batch_size + 5)
        rng = random.Random((crash_at if crash_at is not None else -1) * 31 + batch_size)
        payloads = [{"order_id": f"P-{i:04d}", "customer": rng.choice(["ada", "grace", "linus"]),
                     "amount": round(rng.uniform(1, 100), 2)} for i in range(total)]
    produced = [ev.Event("OrderPlaced", dict(p), key=p["order_id"], source="orders") for p in payloads]
    topic = kafka.create_topic(partitions=1, prefix="drill")
    tp = TopicPartition(topic, 0)
    delivered: list[ev.Event] = []
    group = f"drill-{uuid.uuid4().hex[:10]}"
    last = -1  # the offset of the last record handled
    batch: list[ConsumerRecord] = []  # the records of the current poll
    full_polls = 0  # polls so far that returned a whole batch
    crashed: list[str] = []  # how it crashed, once it has

    def on_poll(records: list[ConsumerRecord]) -> None:
        nonlocal full_polls
        batch[:] = records
        full_polls += len(records) == batch_size

    def crash(how: str) -> None:
        crashed.append(how)
        raise Crash(how)  # no more handling, no commit, no goodbye

    def run(crashing: bool) -> None:
        """One consumer of the group on the drill's partition, running helpers.backlog.pollloop's
        poll-process-commit loop until it has handled the last record (or crashes)."""
        def deliver(record: ConsumerRecord) -> None:
            nonlocal last
            worst = crashing and crash_at is None and full_polls == WORST_POLL and len(batch) == batch_size
            if crashing and record.offset == crash_at:
                crash(f"while processing event {crash_at}, before handling it")
            if worst and commit == "before" and record is batch[0]:
                crash(f"after committing {_events(batch)} (a whole batch), before processing any of them")
            event = ev.decode(record)
            delivered.append(event)
            last = record.offset
            if handle is not None:
                handle(event)
            if worst and commit == "after" and record is batch[-1]:
                crash(f"after processing {_events(batch)} (a whole batch), before committing it")

        give_up = time.monotonic() + 20
        with closing(kafka.consumer(group_id=group, max_poll_records=batch_size)) as consumer:
            consumer.assign([tp])  # no group join to wait for: the drill takes seconds
            try:
                consume_batches(consumer, deliver, commit=commit, batch_size=batch_size, poll_ms=300,
                                on_poll=on_poll,
                                stopping=lambda: last >= len(produced) - 1 or time.monotonic() > give_up)
            except Crash:
                consumer.close(autocommit=False)  # the process dies: nothing more is committed

    try:
        with closing(kafka.producer()) as p:
            for e in produced:
                ev.publish(p, topic, e)
            p.flush()
        run(crashing=True)  # processes, then crashes
        if not crashed:
            raise RuntimeError(f"the drill's consumer never reached its crash point ({full_polls} full polls "
                               f"of {batch_size}, {len(delivered)} of {len(produced)} events handled)")
        run(crashing=False)  # the restarted consumer: same group, resumes from the committed offset
    finally:
        delete_topic(kafka, topic)
    return DrillResult(commit, batch_size, produced, delivered, crashed[0])


# =========================================================================== checks

MAX_DUPLICATES = 20


@check(3, "commit_strategy")
def check_lab3_commit_strategy(kafka: Kafka, commit: str, batch_size: int) -> str:
    """``COMMIT`` and ``BATCH_SIZE`` must lose nothing in a crash and repeat at most 20 events."""
    commit = require_value("COMMIT", commit)
    batch_size = require_value("BATCH_SIZE", batch_size)
    if commit not in COMMIT_STRATEGIES:
        raise Fail(f"COMMIT is {commit!r}; the choices are " + " or ".join(map(repr, COMMIT_STRATEGIES)) + ".",
                   "'after' commits once the batch is processed, 'before' commits as soon as it is polled.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise Fail(f"BATCH_SIZE is {batch_size!r}; it must be a whole number of events, 1 or more.",
                   "It is how many events a poll returns, and so how often the consumer commits.")
    if batch_size > 200:  # no drill needed: the arithmetic of the worst moment says it
        if commit == "before":
            raise Fail(f"with commit 'before' and BATCH_SIZE {batch_size}, a crash right after a commit and "
                       f"before any processing loses the whole batch: {batch_size} events.",
                       "Commit *after* processing ('after'): a crash then repeats events, but never loses one.")
        raise Fail(f"with BATCH_SIZE {batch_size}, a crash after processing a whole batch and before its commit "
                   f"repeats all {batch_size} events, far more than the {MAX_DUPLICATES} allowed.",
                   "Commit more often: a smaller batch.")
    drill = crash_drill(kafka, commit, batch_size)  # crashes at the worst moment for this strategy and size
    tally = drill.tally
    if tally.missing:
        lost = "1 event was" if tally.missing == 1 else f"{tally.missing} events were"
        raise Fail(f"in the drill the consumer crashed {drill.crash}, and {lost} never processed: "
                   f"with commit {commit!r} the offsets were committed before the crash.",
                   "Commit *after* processing ('after'): a crash then repeats events, but never loses one.",
                   missing=tally.missing)
    if tally.duplicates > MAX_DUPLICATES:
        raise Fail(f"nothing was lost, but the consumer crashed {drill.crash}, and processed those "
                   f"{tally.duplicates} events twice (the limit is {MAX_DUPLICATES}).",
                   "Everything processed since the last commit is repeated after a crash, at worst a whole "
                   "batch: commit more often, with a BATCH_SIZE of at most the repeats allowed.",
                   duplicates=tally.duplicates)
    return (f"in a crash drill at the worst moment (the consumer crashed {drill.crash}) with commit {commit!r} "
            f"and batches of {batch_size}, {tally.unique} of {tally.produced} events were processed, none lost, "
            f"{tally.duplicates} repeated.")


def _audit_cases() -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    """(name, produced ids, report lines) with known answers, as a real report looks."""
    def line(eid: str, offset: int) -> dict[str, Any]:
        return {"kind": "processed", "event_id": eid, "partition": 0, "offset": offset, "pid": 1}

    def commit(offset: int) -> dict[str, Any]:
        return {"kind": "committed", "offsets": {"0": offset}, "pid": 1}

    ids = [f"e{i:02d}" for i in range(12)]
    crash = ([line(i, n) for n, i in enumerate(ids[:8])] + [commit(5)]
             + [line(i, n + 5) for n, i in enumerate(ids[5:])] + [commit(12)])  # 3 repeated
    lost = [line(i, n) for n, i in enumerate(ids[:4])] + [commit(8)] + \
        [line(i, n + 8) for n, i in enumerate(ids[8:])]  # 4 lost (e04..e07)
    both = [line(i, n) for n, i in enumerate(ids[:6])] + [commit(4)] + \
        [line(i, n + 4) for n, i in enumerate(ids[4:10])] + [line("e09", 9)]  # e10, e11 missing; e04,e05,e09 twice
    clean = [line(i, n) for n, i in enumerate(ids)] + [commit(12)]
    return [("a clean run", ids, clean), ("a crash with commit after", ids, crash),
            ("a crash with commit before", ids, lost), ("repeats and losses together", ids, both)]


@check(3, "audit")
def check_lab3_audit(audit: Callable[..., Any], produced_ids: list[str] | None = None,
                     records: list[dict[str, Any]] | None = None) -> str:
    """``audit(produced_ids, records) -> {"missing": int, "duplicates": int}`` must count right,
    on known reports and (if given) on your drill's real report."""
    cases = _audit_cases()
    if produced_ids is not None and records is not None:
        cases.append(("your drill's report", list(produced_ids), list(records)))
    for name, ids, lines in cases:
        try:
            answer = learner(audit, list(ids), [dict(r) for r in lines])
        except LearnerError as err:
            if isinstance(err.exc, KeyError) and "event_id" in str(err.exc):
                raise Fail("your `audit` raised KeyError 'event_id': the report also holds 'committed' lines, "
                           "which have no event id.",
                           "Keep only the lines with `record['kind'] == 'processed'`.") from None
            raise
        expected = count_report(ids, lines)
        if not isinstance(answer, dict) or not {"missing", "duplicates"} <= set(answer):
            raise Fail(f"`audit` returned {answer!r:.80}; it should return a dict with 'missing' and 'duplicates'.",
                       "e.g. `return {'missing': 0, 'duplicates': 3}`.")
        got_missing, got_dupes = answer["missing"], answer["duplicates"]
        if (got_missing, got_dupes) == (expected.missing, expected.duplicates):
            continue
        processed = [r for r in lines if r.get("kind") == "processed"]
        subtracted = len(processed) - len(ids)
        if got_dupes != expected.duplicates and got_dupes in (subtracted, len(lines) - len(ids)):
            raise Fail(f"on {name} you counted {got_dupes} duplicates (lines minus produced events), but "
                       f"{expected.duplicates} events were processed more than once: a lost event and a "
                       "repeated one cancel out in that subtraction.",
                       "Count per event id (collections.Counter): duplicates = for each id seen more than "
                       "once, its count - 1; missing = produced ids never seen.")
        if got_missing != expected.missing and got_missing in (-subtracted, max(0, -subtracted)):
            raise Fail(f"on {name} you counted {got_missing} missing (produced events minus processed lines), "
                       f"but {expected.missing} events were never processed: repeats hide the losses.",
                       "missing = the produced ids that no 'processed' line has (a set difference).")
        raise Fail(f"on {name} you counted missing={got_missing}, duplicates={got_dupes}; the report says "
                   f"missing={expected.missing}, duplicates={expected.duplicates}.",
                   "missing: produced ids that no 'processed' line has; duplicates: for each id, every "
                   "processed line after its first.")
    real = " and on your drill's real report" if len(cases) > 4 else ""
    return f"your audit counts missing and repeated events right on {len(_audit_cases())} known reports{real}."


@check(3, "idempotent_handler")
def check_lab3_idempotent_handler(kafka: Kafka, charge: Callable[..., Any]) -> str:
    """``charge(state, event)`` must charge each order event once, however often it is delivered."""
    rng = random.Random(5)
    payloads: list[dict[str, Any]] = [{"order_id": f"P-{i:04d}", "customer": rng.choice(["ada", "grace", "linus"]),
                 "amount": round(rng.uniform(1, 100), 2)} for i in range(40)]
    payloads[12]["order_id"] = payloads[11]["order_id"]  # an amendment: a second fact, a second payment, one order
    payloads[12]["customer"] = payloads[11]["customer"]
    state: dict[str, Any] = {"charged": collections.Counter()}  # as the task says: a customer not charged yet is 0
    drill = crash_drill(kafka, "after", 10, payloads=payloads,  # the worst moment: a whole batch repeated
                        handle=lambda event: learner(charge, state, event))
    if drill.tally.duplicates == 0:
        raise RuntimeError("the drill delivered no duplicates")
    expected: dict[str, float] = {}
    for p in payloads:
        expected[p["customer"]] = expected.get(p["customer"], 0.0) + p["amount"]
    charged = state.get("charged")
    if not isinstance(charged, dict):
        raise Fail("after the drill, `state['charged']` is not a dict of customer -> amount.",
                   "Keep the totals in `state['charged']`, e.g. `state.setdefault('charged', {})`.")
    total_expected, total_charged = sum(expected.values()), sum(float(v) for v in charged.values())
    if math.isclose(total_charged, total_expected, abs_tol=0.01) and all(
            math.isclose(float(charged.get(c, 0.0)), v, abs_tol=0.01) for c, v in expected.items()):
        return (f"{drill.tally.duplicates} orders were delivered twice after the crash, and every customer "
                "was charged exactly once per order event.")
    if math.isclose(total_charged, 0.0, abs_tol=0.01):
        raise Fail(f"after the drill nobody was charged anything; the orders add up to {total_expected:.2f}.",
                   "Add `event.payload['amount']` to `state['charged'][event.payload['customer']]`, once per "
                   "event id.")
    repeated = [e for e in drill.produced if e.event_id in set(drill.tally.duplicate_ids)]
    twice = sum(e.payload["amount"] for e in repeated)
    if math.isclose(total_charged, total_expected + twice, abs_tol=0.01):
        raise Fail(f"the consumer crashed {drill.crash}, so {len(repeated)} orders were delivered again, and your "
                   f"handler charged them again: customers paid {twice:.2f} too much.",
                   "Remember the event ids you have handled (e.g. a set in `state`) and skip an event whose "
                   "id you have seen: the retry of a delivery has the same event_id.")
    if total_expected < total_charged < total_expected + twice:
        raise Fail(f"the consumer crashed {drill.crash}, so {len(repeated)} orders were delivered again, and your "
                   f"handler charged some of them again: customers paid {total_charged - total_expected:.2f} "
                   "too much. Does it forget ids it has handled (a window of recent ids)?",
                   "A repeat can come after any number of other events (a whole batch, or more after a "
                   "rebalance): keep every id you have applied (in production, durably, with the effect).")
    second = payloads[12]["amount"]
    if math.isclose(total_charged, total_expected - second, abs_tol=0.01):
        raise Fail("one order came in two events (an amendment with its own amount): two different payments, "
                   f"and your handler charged only one of them ({second:.2f} missing).",
                   "Deduplicate by `event.event_id` (one delivery of one fact), not by order id: two "
                   "events for one order are two facts.")
    raise Fail(f"customers were charged {total_charged:.2f} in all; the orders add up to {total_expected:.2f}.",
               "Add `event.payload['amount']` to `state['charged'][event.payload['customer']]`, once per "
               "event id.")
