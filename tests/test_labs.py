"""The labs: sources and generated notebooks in sync, learner notebooks stop at their first
check with "not yet", every check passes a different correct solution and gives typical
mistakes their own feedback, and progress survives a new process."""
from __future__ import annotations

import collections
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from checking import assert_not_yet, assert_passes, judge

from helpers import checks
from helpers.core import progress
from helpers.tooling import labgen
from helpers.tooling.lint import tags
from helpers.tooling.paths import ROOT

SOURCES = labgen.sources()


def _id(path: Path) -> str:
    return path.stem


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    """Every test records progress into its own file."""
    monkeypatch.setenv(progress.ENV_PROGRESS_FILE, str(tmp_path / "progress.json"))


# =========================================================================== (a) authored once


def test_five_labs_each_with_a_source_a_learner_notebook_and_a_solution():
    assert [p.name for p in SOURCES] == [lab.notebook for lab in progress.LABS.values()]
    for src in SOURCES:
        learner, solution = labgen.targets(src)
        assert learner.exists() and solution.exists(), f"run `python -m helpers labs build` ({src.name})"


def test_generated_notebooks_are_in_sync_with_their_sources():
    stale = labgen.out_of_date()
    assert not stale, f"out of date (run `python -m helpers labs build`): {[str(p) for p in stale]}"


def test_sync_check_fails_when_a_source_changes_and_the_generator_was_not_rerun(tmp_path):
    copy = tmp_path / "labs"
    shutil.copytree(ROOT / "labs", copy)
    assert labgen.out_of_date(copy) == []
    assert labgen.main(["check", "--labs-dir", str(copy)]) == 0

    src = copy / "sources" / SOURCES[0].name
    nb = nbformat.read(src, as_version=4)
    task = next(c for c in nb.cells if labgen.BEGIN in c.source)
    task.source = task.source.replace(labgen.END, "    pass  # an edit\n    " + labgen.END)
    nbformat.write(nb, src)

    stale = labgen.out_of_date(copy)
    assert stale == sorted([copy / SOURCES[0].name, copy / "solutions" / SOURCES[0].name])
    assert labgen.main(["check", "--labs-dir", str(copy)]) == 1
    assert labgen.build_all(copy) == stale
    assert labgen.out_of_date(copy) == []
    assert "pass  # an edit" in (copy / "solutions" / SOURCES[0].name).read_text()


def test_a_generated_notebook_without_a_source_is_out_of_date(tmp_path):
    copy = tmp_path / "labs"
    shutil.copytree(ROOT / "labs", copy)
    shutil.copy(copy / SOURCES[0].name, copy / "99_orphan.ipynb")
    assert copy / "99_orphan.ipynb" in labgen.out_of_date(copy)


def _write_source(path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    for i, c in enumerate(nb.cells):
        c.id = f"c{i}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_generator_stubs_regions_keeps_hints_and_reveals_solutions_on_demand(tmp_path):
    v4 = nbformat.v4
    hint = v4.new_markdown_cell("<details><summary>Hint</summary>think</details>", metadata={"tags": ["hint"]})
    secret = v4.new_markdown_cell("the solution explained", metadata={"tags": ["solution"]})
    task = v4.new_code_cell("ANSWER = 1\n### BEGIN SOLUTION\nANSWER = 42\n### STUB: ANSWER = ...\n### END SOLUTION\n\n"
                            "def f(x):\n    y = x\n    ### BEGIN SOLUTION\n    return y * 2\n    ### END SOLUTION")
    task.outputs = [v4.new_output("stream", text="old output")]
    task.execution_count = 3
    check = v4.new_code_cell("checks.check(f)", metadata={"tags": ["check"]})
    src = _write_source(tmp_path / "labs" / "sources" / "01_x.ipynb", [
        v4.new_markdown_cell("# Lab 1: X\n\n[Contents](../../lessons/00_welcome.ipynb) | [Next](02_y.ipynb)"),
        task, check, hint, secret, v4.new_markdown_cell("## Recap")])
    learner, solution = labgen.generate(src)

    code = learner.cells[1].source
    assert "ANSWER = 1\n# TODO: your code here\nANSWER = ...\n" in code
    assert "    y = x\n    # TODO: your code here\n    raise NotImplementedError(" in code
    assert "42" not in code and "y * 2" not in code and "###" not in code
    assert [tags(c) for c in learner.cells] == [[], [], ["check"], ["hint"], ["solution-reveal"], []]
    reveal = learner.cells[4].source
    assert "<details>" in reveal and "return y * 2" in reveal and "ANSWER = 42" in reveal and "###" not in reveal
    assert "the solution explained" not in json.dumps(learner)

    assert solution.cells[1].source == "ANSWER = 1\nANSWER = 42\n\ndef f(x):\n    y = x\n    return y * 2"
    assert "the solution explained" in solution.cells[4].source
    assert solution.cells[0].source.startswith("# Lab 1: X (solution)")
    for nb in (learner, solution):
        assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code")
    # links work from each notebook's folder; a sibling lab maps to the generated sibling
    assert "[Contents](../lessons/00_welcome.ipynb) | [Next](02_y.ipynb)" in learner.cells[0].source
    assert "[Contents](../../lessons/00_welcome.ipynb) | [Next](02_y.ipynb)" in solution.cells[0].source
    # deterministic: generating twice gives the same files
    again = labgen.generate(src)
    assert nbformat.writes(again[0]) == nbformat.writes(learner)


@pytest.mark.parametrize("source", [
    "### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_generator_names_the_cell_with_unbalanced_markers(tmp_path, source):
    src = _write_source(tmp_path / "labs" / "sources" / "01_bad.ipynb",
                        [nbformat.v4.new_markdown_cell("# Lab"), nbformat.v4.new_code_cell(source)])
    with pytest.raises(labgen.LabSourceError, match="01_bad.ipynb, cell 1"):
        labgen.generate(src)
    assert labgen.main(["check", "--labs-dir", str(tmp_path / "labs")]) == 2


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_learner_notebook_holds_no_solution_code_outside_the_reveals(source):
    src = nbformat.read(source, as_version=4)
    learner = nbformat.read(labgen.targets(source)[0], as_version=4)
    learner_code = "\n".join(c.source for c in learner.cells if c.cell_type == "code")
    assert labgen.BEGIN not in learner_code
    assert "NotImplementedError" in learner_code or "= ..." in learner_code
    solution_lines, given_lines = set(), set()
    for cell in src.cells:
        if cell.cell_type != "code":
            continue
        inside = False
        for line in cell.source.splitlines():
            if line.strip() in (labgen.BEGIN, labgen.END):
                inside = line.strip() == labgen.BEGIN
            else:
                (solution_lines if inside else given_lines).add(line.strip())
    distinctive = {line for line in solution_lines - given_lines
                   if len(line) > 12 and not line.startswith(("#", "return", labgen.STUB))}
    assert distinctive, "a lab without solution code?"
    leaked = sorted(line for line in distinctive if line in learner_code)
    assert not leaked, f"solution lines left in the learner notebook: {leaked}"


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_every_task_is_followed_by_its_check_and_every_check_of_the_lab_is_used(source):
    number = int(source.name[:2])
    nb = nbformat.read(source, as_version=4)
    check_cells = [c for c in nb.cells if "check" in tags(c)]
    called = [name for c in check_cells for (lab, name) in checks.CHECKS
              if lab == number and f"check_lab{lab}_{name}(" in c.source]
    assert called == list(progress.LABS[number].checks)
    for i, cell in enumerate(nb.cells):
        if labgen.BEGIN in cell.source:
            later = [c for c in nb.cells[i + 1:] if c.cell_type == "code"]
            assert any("check" in tags(c) for c in later), f"cell {i} has a task but no check after it"


# =========================================================================== (b) learner notebooks stop at "not yet"


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_unsolved_learner_notebook_stops_at_its_first_check_with_not_yet(source, kafka):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = labgen.targets(source)[0]
    nb = nbformat.read(path, as_version=4)
    first_check = next(i for i, c in enumerate(nb.cells) if "check" in tags(c))
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as stopped:
        client.execute()
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert [i for i, _ in errors] == [first_check], f"stopped at {[i for i, _ in errors]}: {errors}"
    error = errors[0][1]
    assert error.ename == "NotYet"
    assert "Not yet:" in error.evalue and "TODO" in error.evalue, error.evalue
    shown = "\n".join(error.traceback)
    assert "Traceback" not in shown and "helpers/checks/" not in shown, shown
    assert "Not yet:" in str(stopped.value)
    later = [c for c in nb.cells[first_check + 1:] if c.cell_type == "code"]
    assert all(c.execution_count is None for c in later), "nothing after the first check may run"


def test_not_yet_renders_as_feedback_without_a_traceback():
    def stub(_):
        raise NotImplementedError("your code here")

    with pytest.raises(checks.NotYet) as raised:
        checks.check_lab2_envelope(stub)
    lines = raised.value._render_traceback_()
    assert "Not yet: `stub` still has the TODO stub" in "\n".join(lines)
    assert not any("Traceback" in line or "File " in line for line in lines)
    assert raised.value.result.passed is False


def test_learner_exceptions_become_feedback_naming_their_line():
    def broken(order):
        return order["no such field"]

    result = judge(checks.check_lab2_envelope, broken)
    assert_not_yet(result, "your `broken` raised KeyError", "return order[\"no such field\"]")


def test_a_check_that_cannot_run_says_so_without_a_traceback():
    result = judge(checks.check_lab1_timeout, "not a chain", lambda chain: None)
    assert_not_yet(result, "the check needs the chain you started")
    result = judge(checks.check_lab4_drain, object(), deadline=1.0, max_lag=1)
    assert_not_yet(result, "needs the LagMonitor")


# =========================================================================== (c) lab 1: break the chain


@pytest.fixture(scope="module")
def chain():
    from helpers import services

    with services.start_chain(3, latency=0.002, seed=3) as c:
        checks.lab1_sabotage(c, seed=3)
        yield c


@pytest.mark.slow  # lab 1's check against live services (2-4 s)
def test_lab1_weakest_link(chain):
    from helpers import services

    def by_trace(chain):  # a different correct solution: the deepest hop that reported an error
        starts = collections.Counter()
        for _ in range(100):
            result = services.call(chain)
            if not result.ok:
                starts[[h.service for h in result.trace if h.error][-1]] += 1
        return max(starts, key=starts.get)

    assert_passes(judge(checks.check_lab1_weakest_link, by_trace))

    def blames_the_edge(chain):  # parses "502 from orders: ..."
        m = services.measure(chain, 60)
        blamed = collections.Counter(r.error.split(":")[0].split()[-1] for r in m.results if not r.ok)
        return blamed.most_common(1)[0][0]

    assert_not_yet(judge(checks.check_lab1_weakest_link, blames_the_edge), "you blamed orders, the edge")
    assert_not_yet(judge(checks.check_lab1_weakest_link, lambda chain: "shipping"), "fixed rather than measured")
    assert_not_yet(judge(checks.check_lab1_weakest_link, lambda chain: 2), "should return a service name")


@pytest.mark.slow  # lab 1's check against live services (2-4 s)
def test_lab1_timeout(chain):
    from helpers import services

    with checks.healthy(chain):
        p99 = services.measure(chain, 40).p99

    def with_timeout(chain):  # a different correct solution: call a Service directly
        return services.call(chain.edge, timeout=max(0.1, 8 * p99))

    assert_passes(judge(checks.check_lab1_timeout, chain, with_timeout))
    assert_not_yet(judge(checks.check_lab1_timeout, chain, lambda c: services.call(c, timeout=0.0002)),
                   "timeout is too short")
    assert_not_yet(judge(checks.check_lab1_timeout, chain, lambda c: services.call(c)), "your caller waited")
    assert_not_yet(judge(checks.check_lab1_timeout, chain, lambda c: services.call(c).ok), "not a CallResult")


@pytest.mark.slow  # lab 1's check against live services (2-4 s)
def test_lab1_retries(chain):
    import tenacity

    from helpers import services

    def call(c):
        return services.call(c, timeout=0.5)

    def loop(chain):  # a different correct solution: a plain loop, no tenacity
        for _attempt in range(4):
            result = call(chain)
            if result.ok:
                break
        return result

    assert_passes(judge(checks.check_lab1_retries, chain, loop))

    @tenacity.retry(stop=tenacity.stop_after_attempt(3))  # retries only on exceptions: never here
    def on_exceptions_only(c):
        return call(c)

    @tenacity.retry(retry=tenacity.retry_if_result(lambda r: not r.ok), stop=tenacity.stop_after_attempt(3))
    def raises_retry_error(c):
        return call(c)

    @tenacity.retry(retry=tenacity.retry_if_result(lambda r: not r.ok))
    def forever(c):
        return call(c)

    assert_not_yet(judge(checks.check_lab1_retries, chain, on_exceptions_only), "no call was retried")
    assert_not_yet(judge(checks.check_lab1_retries, chain, raises_retry_error), "RetryError")
    started = time.monotonic()
    assert_not_yet(judge(checks.check_lab1_retries, chain, forever), "still retrying after")
    assert time.monotonic() - started < 30
    assert all(svc.is_up for svc in chain), "the check brings the service back"


@pytest.mark.slow  # lab 1's check against live services (2-4 s)
def test_lab1_breaker(chain):
    import pybreaker

    from helpers import services

    class Guard:  # a different correct solution: a breaker used as a decorator, inside a class
        breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=0.1)

        @staticmethod
        @breaker
        def strict(c):
            result = services.call(c, timeout=0.5)
            if not result.ok:
                raise RuntimeError(result.error)
            return result

        def __call__(self, c):
            try:
                return self.strict(c)
            except (RuntimeError, pybreaker.CircuitBreakerError) as exc:
                return services.CallResult(ok=False, status=None, latency=0.0, error=str(exc))

    assert_passes(judge(checks.check_lab1_breaker, chain, Guard()))

    never_raises = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=0.1)
    assert_not_yet(judge(checks.check_lab1_breaker, chain, lambda c: never_raises.call(services.call, c, timeout=0.5)),
                   "the breaker never opened")

    from helpers.services import resilience

    leaky = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=0.1)

    def lets_it_out(c):
        try:
            return leaky.call(lambda: _raise_if_failed(services.call(c, timeout=0.5)))
        except resilience.CallFailed as failed:
            return failed.result

    assert_not_yet(judge(checks.check_lab1_breaker, chain, lets_it_out), "CircuitBreakerError out")

    stuck = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60)

    def never_closes(c):
        try:
            return stuck.call(lambda: _raise_if_failed(services.call(c, timeout=0.5)))
        except resilience.CallFailed as failed:
            return failed.result
        except pybreaker.CircuitBreakerError:
            return services.CallResult(ok=False, status=None, latency=0.0, error="open")

    assert_not_yet(judge(checks.check_lab1_breaker, chain, never_closes), "reset_timeout")


def _raise_if_failed(result):
    from helpers.services import resilience

    if not result.ok:
        raise resilience.CallFailed(result)
    return result


# =========================================================================== (c) lab 2: from calls to events


def test_lab2_envelope():
    from helpers.kafka import events

    def from_fields(order):  # a different correct solution: keyword arguments, a copied payload
        return events.Event(type="OrderPlaced", payload={**order}, key=str(order["order_id"]), source="shop")

    assert_passes(judge(checks.check_lab2_envelope, from_fields))
    assert_not_yet(judge(checks.check_lab2_envelope, lambda o: events.Event("PlaceOrder", o, key=o["order_id"])),
                   "reads like a command", "OrderPlaced")
    assert_not_yet(judge(checks.check_lab2_envelope, lambda o: events.Event("OrderPlaced", o)), "have no key")
    assert_not_yet(judge(checks.check_lab2_envelope, lambda o: events.Event("OrderPlaced", o, key=o["customer"])),
                   "the key is 'ada'")
    assert_not_yet(judge(checks.check_lab2_envelope, lambda o: events.Event("OrderPlaced", {"id": o["order_id"]},
                                                                            key=o["order_id"])), "payload")
    assert_not_yet(judge(checks.check_lab2_envelope, dict), "returned a dict")


def test_lab2_producer(kafka):
    from helpers.kafka import events

    def event(o):
        return events.Event("OrderPlaced", dict(o), key=o["order_id"], source="orders")

    def acked_one_by_one(producer, topic, orders):  # a different correct solution: wait on every future
        futures = [events.publish(producer, topic, event(o)) for o in orders]
        return [f.get(timeout=10) for f in futures]

    assert_passes(judge(checks.check_lab2_producer, kafka, acked_one_by_one))

    def no_flush(producer, topic, orders):
        for o in orders:
            events.publish(producer, topic, event(o))

    def raw_json(producer, topic, orders):
        for o in orders:
            producer.send(topic, key=o["order_id"].encode(), value=json.dumps(o).encode())
        producer.flush()

    def wrong_topic(producer, topic, orders):
        for o in orders:
            events.publish(producer, topic + "-elsewhere", event(o))
        producer.flush()

    def twice(producer, topic, orders):
        for o in orders + orders:
            events.publish(producer, topic, event(o))
        producer.flush()

    assert_not_yet(judge(checks.check_lab2_producer, kafka, no_flush), "not yet acknowledged", "flush()")
    assert_not_yet(judge(checks.check_lab2_producer, kafka, raw_json), "not event envelopes")
    assert_not_yet(judge(checks.check_lab2_producer, kafka, wrong_topic), "Publish to the `topic` argument")
    assert_not_yet(judge(checks.check_lab2_producer, kafka, twice), "24 records arrived for 12 orders")


def test_lab2_consumer(kafka):
    from kafka.structs import OffsetAndMetadata

    from helpers.kafka import events

    def commit_per_record(consumer, handle):  # a different correct solution: commit each record's offset
        handled = 0
        for tp, records in consumer.poll(timeout_ms=300).items():
            for record in records:
                handle(events.decode(record))
                consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                handled += 1
        return handled

    assert_passes(judge(checks.check_lab2_consumer, kafka, commit_per_record))

    def no_commit(consumer, handle):
        for records in consumer.poll(timeout_ms=300).values():
            for record in records:
                handle(events.decode(record))

    def commit_first(consumer, handle):
        batch = consumer.poll(timeout_ms=300)
        consumer.commit()
        for records in batch.values():
            for record in records:
                handle(events.decode(record))

    def swallows(consumer, handle):
        for records in consumer.poll(timeout_ms=300).values():
            for record in records:
                try:
                    handle(events.decode(record))
                except Exception:  # noqa: BLE001 - the mistake under test
                    pass
        consumer.commit()

    def undecoded(consumer, handle):
        for records in consumer.poll(timeout_ms=300).values():
            for record in records:
                handle(record)
        consumer.commit()

    assert_not_yet(judge(checks.check_lab2_consumer, kafka, no_commit), "are not committed")
    assert_not_yet(judge(checks.check_lab2_consumer, kafka, commit_first), "already committed", "*after*")
    assert_not_yet(judge(checks.check_lab2_consumer, kafka, swallows), "carried on and committed past it")
    assert_not_yet(judge(checks.check_lab2_consumer, kafka, undecoded), "Decode each record")


# =========================================================================== (c) lab 3: survive the outage


def test_lab3_commit_strategy(kafka):
    assert_passes(judge(checks.check_lab3_commit_strategy, kafka, "after", 1))  # different: commit every event
    assert_passes(judge(checks.check_lab3_commit_strategy, kafka, "after", 20))  # the largest that meets "20"
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "before", 10), "never processed", "'after'",
                   "10 events were")
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "after", 50), "50 events twice",
                   "a whole batch")
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "after", 500), "repeats all 500")
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "before", 500), "loses the whole batch")
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "auto", 10), "the choices are")
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, ..., 10), "`COMMIT` is still `...`")


def test_lab3_rejects_a_batch_size_that_passes_only_with_a_lucky_crash(kafka):
    """BATCH_SIZE=21 meets "at most 20 repeated" only if the crash spares the batch's last event: the drill
    before issue 19 crashed while processing it, and passed 21. The worst moment repeats all 21."""
    lucky = checks.crash_drill(kafka, "after", 21, crash_at=3 * 21 - 1)
    assert (lucky.tally.missing, lucky.tally.duplicates) == (0, 20), lucky.tally
    worst = checks.crash_drill(kafka, "after", 21)
    assert (worst.tally.missing, worst.tally.duplicates) == (0, 21), worst.tally
    assert worst.crash == "after processing events 42-62 (a whole batch), before committing it"
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "after", 21), "21 events twice",
                   "the limit is 20", "after processing events 42-62")
    # commit 'before' is lucky when the crash comes late in a batch; at its worst it loses the whole batch
    assert_not_yet(judge(checks.check_lab3_commit_strategy, kafka, "before", 1), "1 event was never processed",
                   "after committing event 2")


def test_crash_drill_counts_what_each_strategy_does(kafka):
    after = checks.crash_drill(kafka, "after", 10, crash_at=25).tally
    before = checks.crash_drill(kafka, "before", 10, crash_at=25).tally
    assert (after.missing, after.duplicates) == (0, 5)
    assert (before.missing, before.duplicates) == (5, 0)
    worst_after = checks.crash_drill(kafka, "after", 10)      # the worst moment: a whole batch at stake
    worst_before = checks.crash_drill(kafka, "before", 10)
    assert (worst_after.tally.missing, worst_after.tally.duplicates) == (0, 10)
    assert (worst_before.tally.missing, worst_before.tally.duplicates) == (10, 0)
    assert worst_before.crash == "after committing events 20-29 (a whole batch), before processing any of them"
    with pytest.raises(ValueError, match="commit"):
        checks.crash_drill(kafka, "sometimes", 10)


def test_lab3_audit(kafka):
    from helpers.backlog import producers

    def with_sets(produced_ids, records):  # a different correct solution: sets, no Counter
        first, again = set(), 0
        for r in records:
            if r.get("kind") != "processed":
                continue
            if r["event_id"] in first:
                again += 1
            first.add(r["event_id"])
        return {"missing": len(set(produced_ids) - first), "duplicates": again}

    assert_passes(judge(checks.check_lab3_audit, with_sets))
    topic = kafka.create_topic(prefix="t-audit")
    ids = producers.produce_backlog(kafka, topic, 20)
    real = [{"kind": "processed", "event_id": i, "partition": 0, "offset": n} for n, i in enumerate(ids)]
    real += [dict(r) for r in real[5:9]] + [{"kind": "committed", "offsets": {"0": 20}}]
    result = judge(checks.check_lab3_audit, with_sets, ids, real)
    assert_passes(result)
    assert "your drill's real report" in result.message

    def every_line(produced_ids, records):
        seen = collections.Counter(r["event_id"] for r in records)
        return {"missing": len(set(produced_ids) - set(seen)), "duplicates": sum(n - 1 for n in seen.values())}

    def subtracts(produced_ids, records):
        lines = [r for r in records if r["kind"] == "processed"]
        return {"missing": len(set(produced_ids) - {r["event_id"] for r in lines}),
                "duplicates": len(lines) - len(produced_ids)}

    def subtracts_missing(produced_ids, records):
        lines = [r for r in records if r["kind"] == "processed"]
        seen = collections.Counter(r["event_id"] for r in lines)
        return {"missing": max(0, len(produced_ids) - len(lines)), "duplicates": sum(n - 1 for n in seen.values())}

    assert_not_yet(judge(checks.check_lab3_audit, every_line), "'committed' lines")
    assert_not_yet(judge(checks.check_lab3_audit, subtracts), "cancel out")
    assert_not_yet(judge(checks.check_lab3_audit, subtracts_missing), "repeats hide the losses")
    assert_not_yet(judge(checks.check_lab3_audit, lambda p, r: (0, 0)), "should return a dict")


def test_lab3_idempotent_handler(kafka):
    class Ledger:  # a different correct solution: a helper object kept in the state
        def __init__(self):
            self.applied = set()

    def charge(state, event):
        ledger = state.setdefault("ledger", Ledger())
        if event.event_id not in ledger.applied:
            ledger.applied.add(event.event_id)
            state.setdefault("charged", collections.defaultdict(float))[event.payload["customer"]] += \
                event.payload["amount"]

    assert_passes(judge(checks.check_lab3_idempotent_handler, kafka, charge))

    def naive(state, event):
        charged = state.setdefault("charged", {})
        charged[event.payload["customer"]] = charged.get(event.payload["customer"], 0) + event.payload["amount"]

    def by_order(state, event):
        seen = state.setdefault("orders", set())
        if event.payload["order_id"] not in seen:
            seen.add(event.payload["order_id"])
            naive(state, event)

    assert_not_yet(judge(checks.check_lab3_idempotent_handler, kafka, naive), "charged them again", "event ids",
                   "a whole batch")
    assert_not_yet(judge(checks.check_lab3_idempotent_handler, kafka, by_order), "two different payments",
                   "not by order id")
    assert_not_yet(judge(checks.check_lab3_idempotent_handler, kafka, lambda state, event: None),
                   "nobody was charged anything")

    def replaces(state, event):  # throws away the totals it was given
        state["charged"] = [event.payload["amount"]]

    assert_not_yet(judge(checks.check_lab3_idempotent_handler, kafka, replaces), "`state['charged']` is not a dict")


def test_lab3_task3_natural_code_passes(kafka):
    """The code the task's words invite: `state['charged'][customer] += amount` on the state it is given, and
    the handled ids kept in `state` as the hint says (the check gave `{}` before issue 19: KeyError)."""
    def charge(state, event):
        if event.event_id in state.setdefault("handled", set()):
            return
        state["handled"].add(event.event_id)
        state["charged"][event.payload["customer"]] += event.payload["amount"]

    def with_get(state, event):
        seen = state.setdefault("seen", set())
        if event.event_id not in seen:
            seen.add(event.event_id)
            customer = event.payload["customer"]
            state["charged"][customer] = state["charged"].get(customer, 0) + event.payload["amount"]

    assert_passes(judge(checks.check_lab3_idempotent_handler, kafka, charge))
    assert_passes(judge(checks.check_lab3_idempotent_handler, kafka, with_get))


def test_lab3_rejects_a_handler_that_passes_only_with_a_lucky_crash(kafka):
    """A handler that remembers only the last 8 ids it applied survives a crash that repeats 7 events (the
    check's drill before issue 19 crashed mid-batch, at event 27 of batches of 10), not one at the worst
    moment, which repeats the whole batch of 10."""
    def recent_only(state, event):
        recent = state.setdefault("recent", collections.deque(maxlen=8))
        if event.event_id in recent:
            return
        recent.append(event.event_id)
        state["charged"][event.payload["customer"]] += event.payload["amount"]

    state = {"charged": collections.Counter()}
    lucky = checks.crash_drill(kafka, "after", 10, crash_at=27, handle=lambda e: recent_only(state, e))
    assert lucky.tally.duplicates == 7
    assert math.isclose(sum(state["charged"].values()), sum(e.payload["amount"] for e in lucky.produced),
                        abs_tol=0.01)   # charged exactly right: the lucky crash hid the bug
    assert_not_yet(judge(checks.check_lab3_idempotent_handler, kafka, recent_only), "charged them again",
                   "10 orders were delivered again")


# =========================================================================== (c) lab 4: drain the backlog


def test_lab4_plan():
    def with_headroom(produce_rate, process_rate, backlog, deadline, max_lag):  # different: +20 % headroom
        n = math.ceil(1.2 * (produce_rate + max(0, backlog - max_lag) / deadline) / process_rate)
        return 2 * n, n

    assert_passes(judge(checks.check_lab4_plan, with_headroom))

    def ignores_new_orders(produce_rate, process_rate, backlog, deadline, max_lag):
        n = max(1, math.ceil(backlog / (process_rate * deadline)))
        return n, n

    def idle_consumers(produce_rate, process_rate, backlog, deadline, max_lag):
        n = math.ceil((produce_rate + max(0, backlog - max_lag) / deadline) / process_rate)
        return 2, n

    def only_keeps_up(produce_rate, process_rate, backlog, deadline, max_lag):
        n = max(1, math.ceil(produce_rate / process_rate))
        return n, n

    assert_not_yet(judge(checks.check_lab4_plan, ignores_new_orders), "keep arriving while they drain")
    assert_not_yet(judge(checks.check_lab4_plan, idle_consumers), "would sit idle")
    def rounds_down(produce_rate, process_rate, backlog, deadline, max_lag):
        n = max(1, int((produce_rate + (backlog - max_lag) / deadline) / process_rate))
        return n, n

    assert_not_yet(judge(checks.check_lab4_plan, only_keeps_up), "never shrinks")
    assert_not_yet(judge(checks.check_lab4_plan, rounds_down), "still be about", "round up")
    assert_not_yet(judge(checks.check_lab4_plan, lambda *a: (64, 50)), "far more than")
    assert_not_yet(judge(checks.check_lab4_plan, lambda *a: 3), "should return a pair")


#: The lab-4 runs the checks judge below: name -> (partitions, consumers, new orders per second or None).
#: 300 waiting, 100/s arriving, 100/s per consumer, target 60 within 2 s: 3 consumers needed.
#: In this order: the good run drains last, when the others' processes have stopped.
DRAINS = {"starved": (1, 1, 100.0), "quiet": (3, 3, None), "good": (3, 3, 100.0)}


@pytest.fixture(scope="module")
def drains(kafka):
    """Each run of :data:`DRAINS`, a different correct run than the lab's: a bare LagMonitor, no
    chart; 10x the lab's rates. ``None`` for the rate: no new orders arrive while it drains.

    The groups start paused and join at once (joining takes seconds and is not what is judged,
    as in helpers.backlog.drains.compare_drains); then each in turn is resumed, sampled and stopped.
    Returns name -> its LagMonitor.
    """
    import contextlib

    from helpers.backlog import consumers, producers
    from helpers.kafka import lag

    # Sampled as long as the check lets a busy machine reach the target for a 2 s deadline.
    backlog, process, seconds = 300, 100.0, 1.25 * 2.0 + 0.5
    groups = {}
    try:
        for name, (partitions, n_consumers, _produce) in DRAINS.items():
            topic = kafka.create_topic(prefix="t-drain", partitions=partitions)
            groups[name] = consumers.ConsumerGroup(kafka, topic, n_consumers, rate=process, paused=True).start()
        for group in groups.values():  # while the groups join
            producers.produce_backlog(kafka, group.topic, backlog)
        for group in groups.values():
            group.wait_assigned()
        monitors = {}
        for name, group in groups.items():
            produce = DRAINS[name][2]
            monitor = lag.LagMonitor(kafka, group.topic, group.group_id, interval=0.2)
            arrivals = producers.ProducerRunner(kafka, group.topic, rate=produce) if produce \
                else contextlib.nullcontext()
            with arrivals:
                group.resume()
                with monitor:
                    time.sleep(seconds)
            group.stop()  # drained: the next one drains with fewer processes around
            monitors[name] = monitor
    finally:
        for group in groups.values():
            group.stop()
    return monitors


def test_lab4_drain(kafka, drains):
    from helpers.kafka import lag

    good, starved = drains["good"], drains["starved"]
    assert_passes(judge(checks.check_lab4_drain, good, deadline=2.0, max_lag=60, consumers=3))
    assert_not_yet(judge(checks.check_lab4_drain, starved, deadline=2.0, max_lag=60, consumers=1),
                   "the lag was still", "Too few consumers")
    assert_not_yet(judge(checks.check_lab4_drain, good, deadline=2.0, max_lag=60, consumers=5), "sat idle")

    def synthetic(points):
        monitor = lag.LagMonitor(kafka, "t", "g")
        monitor.samples = [lag.LagSample(t, 0, v) for t, v in points]
        return monitor

    late = synthetic([(0, 20), (0.5, 10), (1.0, 12), (1.5, 8)])
    assert_not_yet(judge(checks.check_lab4_drain, late, deadline=2.0, max_lag=60), "never exceeded")
    short = synthetic([(0, 300), (0.5, 250), (1.0, 200)])
    assert_not_yet(judge(checks.check_lab4_drain, short, deadline=2.0, max_lag=60), "before the deadline")
    rebound = synthetic([(0, 300), (1.0, 50), (1.5, 200), (2.5, 400)])
    assert_not_yet(judge(checks.check_lab4_drain, rebound, deadline=2.0, max_lag=60), "climbed back")


def test_lab4_drain_judges_the_arrivals_too(drains):
    """With the backlog and the produce rate, the check also sees whether new orders kept arriving."""
    assert_passes(judge(checks.check_lab4_drain, drains["good"], deadline=2.0, max_lag=60, consumers=3,
                        backlog=300, produce_rate=100.0))
    # drains fast: nothing new arrives
    assert_not_yet(judge(checks.check_lab4_drain, drains["quiet"], deadline=2.0, max_lag=60, consumers=3,
                         backlog=300, produce_rate=100.0), "new orders", "ProducerRunner")


# =========================================================================== (c) lab 5: embrace the async


def _place(shop, order, correlation_id="fresh", flush=True):
    import uuid

    from helpers.kafka import events

    cid = uuid.uuid4().hex if correlation_id == "fresh" else correlation_id
    events.publish(shop.producer, shop.orders,
                   events.Event("OrderPlaced", dict(order), key=order["order_id"], correlation_id=cid))
    if flush:
        shop.producer.flush()
    return cid


def _wait(consumer, correlation_id, deadline):
    from helpers.kafka import events

    until = time.monotonic() + deadline
    while time.monotonic() < until:
        for records in consumer.poll(timeout_ms=50).values():
            for record in records:
                event = events.decode(record)
                if event.correlation_id == correlation_id:
                    return event
    return None


def test_lab5_correlation(kafka):
    import itertools

    counter = itertools.count()

    def numbered(shop, order):  # a different correct solution: unique ids without uuid, acks via futures
        from helpers.kafka import events

        cid = f"web-{time.time_ns()}-{next(counter)}"
        future = events.publish(shop.producer, shop.orders, events.Event(
            "OrderPlaced", order, key=order["order_id"], source="web", correlation_id=cid))
        future.get(timeout=10)
        return cid

    assert_passes(judge(checks.check_lab5_correlation, kafka, numbered))
    assert_not_yet(judge(checks.check_lab5_correlation, kafka, lambda shop, o: _place(shop, o, None)),
                   "carry no correlation id")
    assert_not_yet(judge(checks.check_lab5_correlation, kafka, lambda shop, o: _place(shop, o, o["order_id"])),
                   "placed order W-1 twice", "not the order")
    assert_not_yet(judge(checks.check_lab5_correlation, kafka, lambda shop, o: _place(shop, o, "web")),
                   "the same correlation id")
    assert_not_yet(judge(checks.check_lab5_correlation, kafka, lambda shop, o: _place(shop, o, flush=False)),
                   "not yet acknowledged")
    assert_not_yet(judge(checks.check_lab5_correlation, kafka, lambda shop, o: (_place(shop, o), "x")[1]),
                   "but the event carries")


def test_lab5_wait_for_result(kafka):
    from helpers.kafka import events

    def one_record_at_a_time(consumer, correlation_id, deadline):  # different: max_records=1, wall clock
        stop_at = time.time() + deadline
        while time.time() < stop_at:
            for records in consumer.poll(timeout_ms=20, max_records=1).values():
                event = events.decode(records[0])
                if event.correlation_id == correlation_id:
                    return event
        return None

    assert_passes(judge(checks.check_lab5_wait_for_result, kafka, one_record_at_a_time))

    def first_seen(consumer, correlation_id, deadline):
        until = time.monotonic() + deadline
        while time.monotonic() < until:
            for records in consumer.poll(timeout_ms=50).values():
                return events.decode(records[0])

    def forever(consumer, correlation_id, deadline):
        return _wait(consumer, correlation_id, 3600)

    def raises(consumer, correlation_id, deadline):
        found = _wait(consumer, correlation_id, deadline)
        if found is None:
            raise TimeoutError("no result")
        return found

    def single_poll(consumer, correlation_id, deadline):
        return _wait(consumer, correlation_id, 0.05)

    assert_not_yet(judge(checks.check_lab5_wait_for_result, kafka, first_seen), "the result of another request")
    started = time.monotonic()
    assert_not_yet(judge(checks.check_lab5_wait_for_result, kafka, forever), "still waiting")
    assert time.monotonic() - started < 20
    assert_not_yet(judge(checks.check_lab5_wait_for_result, kafka, raises), "raised TimeoutError", "Return None")
    assert_not_yet(judge(checks.check_lab5_wait_for_result, kafka, single_poll), "returned None",
                   "Keep polling until the deadline")


def test_lab5_pending(kafka):
    outcome = {"OrderShipped": "shipped", "PaymentDeclined": "declined"}

    def status(shop, order, deadline):  # a different correct solution: the deadline split in two waits
        cid = _place(shop, order)
        consumer = shop.results_consumer()
        result = _wait(consumer, cid, deadline / 2) or _wait(consumer, cid, deadline / 2)
        return outcome[result.type] if result else "pending"

    result = judge(checks.check_lab5_pending, kafka, status)
    assert_passes(result)
    assert "scanned the results from offset 0" in result.message  # passes, and says what the scans cost

    def with_the_dispatcher(shop, order, deadline):  # the pattern: the shop's one long-lived result consumer
        answer = shop.dispatcher.wait(_place(shop, order), timeout=deadline)
        return outcome[answer.event.type] if answer.found else "pending"

    result = judge(checks.check_lab5_pending, kafka, with_the_dispatcher)
    assert_passes(result)
    assert "without a scan per request" in result.message

    def optimistic(shop, order, deadline):
        _place(shop, order)
        return "shipped"

    def says_failed(shop, order, deadline):
        result = _wait(shop.results_consumer(), _place(shop, order), deadline)
        return outcome[result.type] if result else "failed"

    def raises(shop, order, deadline):
        result = _wait(shop.results_consumer(), _place(shop, order), deadline)
        if result is None:
            raise TimeoutError("order timed out")
        return outcome[result.type]

    def no_deadline(shop, order, deadline):
        return outcome[_wait(shop.results_consumer(), _place(shop, order), 30).type]

    def any_result_ships(shop, order, deadline):
        return "shipped" if _wait(shop.results_consumer(), _place(shop, order), deadline) else "pending"

    assert_not_yet(judge(checks.check_lab5_pending, kafka, optimistic), "a guess")
    assert_not_yet(judge(checks.check_lab5_pending, kafka, says_failed), "you answered 'failed'", "'pending'")
    assert_not_yet(judge(checks.check_lab5_pending, kafka, raises), "raised TimeoutError")
    assert_not_yet(judge(checks.check_lab5_pending, kafka, no_deadline), "past the 1.0 s deadline")
    assert_not_yet(judge(checks.check_lab5_pending, kafka, any_result_ships), "was declined")


def test_lab5_shop_answers_each_request_with_its_correlation_id(kafka):
    with checks.lab5_shop(kafka, fast=0.05, slow=2.0) as shop:
        big = _place(shop, {"order_id": "T-2", "customer": "grace", "items": 6})
        small = _place(shop, {"order_id": "T-1", "customer": "ada", "items": 1})
        declined = _place(shop, {"order_id": "T-3", "customer": "mallory", "items": 1})
        started = time.monotonic()
        first = _wait(shop.results_consumer(), small, 5)
        assert first.type == "OrderShipped" and first.key == "T-1" and time.monotonic() - started < 1.5
        assert _wait(shop.results_consumer(), declined, 5).type == "PaymentDeclined"
        assert _wait(shop.results_consumer(), big, 0.1) is None, "a big order takes `slow` seconds"
        assert _wait(shop.results_consumer(), big, 5).type == "OrderShipped"
        # the same answers through the dispatcher, which read each result once
        assert shop.dispatcher.wait(declined, timeout=5).event.type == "PaymentDeclined"
        assert shop.dispatcher.wait(big, timeout=5).found
        assert shop.dispatcher.count() == 3 and shop.fulfilment.outcomes() == {
            "T-1": "shipped", "T-2": "shipped", "T-3": "declined"}
    assert not shop.fulfilment.running and not shop.dispatcher.running


def test_lab5_fulfilment_is_an_event_service_on_its_own_clocks(kafka):
    """Lab 5's back office is the library's EventService (no copy of the poll loop): no group, every order
    on its own clock, so a big order does not hold up the small ones behind it."""
    from helpers.core import lifecycle
    from helpers.shop.service import EventService

    with checks.lab5_shop(kafka, fast=0.05, slow=1.0) as shop:
        assert isinstance(shop.fulfilment, EventService) and not shop.fulfilment.use_group
        assert {e.name for e in lifecycle.running()} >= {"fulfilment", "shop-dispatcher"}
        big = _place(shop, {"order_id": "U-1", "customer": "ada", "items": 9})
        small = _place(shop, {"order_id": "U-2", "customer": "ada", "items": 1})
        assert shop.dispatcher.wait(small, timeout=0.8).found, "the small order waited for the big one"
        assert not shop.dispatcher.wait(big, timeout=0.1).found
    assert not any(e.kind == "shop" for e in lifecycle.running())
    with pytest.raises(ValueError, match="fast"):
        checks.Fulfilment(kafka, "o", "r", fast=-1, slow=1)
    # helpers.stop_all() (here its "shop" kind only) closes a shop left running, services and all
    shop = checks.lab5_shop(kafka, fast=0.05, slow=1.0)
    assert lifecycle.stop_all("shop") == 1
    assert not shop.fulfilment.running and not shop.dispatcher.running
    assert not {e.name for e in lifecycle.running()} & {"fulfilment", "shop-dispatcher", shop.orders}


# =========================================================================== (d) progress


def _python(code: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_progress_survives_a_new_process_and_reset_works(tmp_path):
    env = {**os.environ, progress.ENV_PROGRESS_FILE: str(tmp_path / "deep" / "progress.json")}
    _python("""
        from helpers import checks
        from helpers.core import progress
        from helpers.kafka import events
        progress.record(1, "weakest_link")
        checks.check_lab2_envelope(lambda o: events.Event("OrderPlaced", dict(o), key=o["order_id"]), quiet=True)
    """, env)
    shown = _python("""
        import json
        from helpers.core import progress
        s = progress.status()
        print(json.dumps({n: sorted(v["passed"]) for n, v in s.items()}))
        print(repr(progress.show()))
    """, env)
    passed = json.loads(shown.splitlines()[0])
    assert passed["1"] == ["weakest_link"] and passed["2"] == ["envelope"] and passed["3"] == []
    assert "Lab 2: From calls to events" in shown and "1/3 checks" in shown
    _python("""
        from helpers.core import progress
        for check in progress.LABS[4].checks:
            progress.record(4, check)
        progress.reset(1)
    """, env)
    after = _python("""
        import json
        from helpers.core import progress
        s = progress.status()
        print(json.dumps({n: [v["done"], sorted(v["passed"])] for n, v in s.items()}))
        print(progress.show()._repr_html_())
    """, env)
    state = json.loads(after.splitlines()[0])
    assert state["1"] == [False, []] and state["4"][0] is True and state["2"] == [False, ["envelope"]]
    assert "✅" in after and '<a href="../labs/04_drain_the_backlog.ipynb">' in after
    _python("from helpers.core import progress; progress.reset()", env)
    assert not (tmp_path / "deep" / "progress.json").exists()
    assert "not started" in _python("from helpers.core import progress; print(repr(progress.show()))", env)


def test_progress_rejects_unknown_labs_and_checks_and_failed_checks_are_not_recorded():
    with pytest.raises(ValueError, match="lab must be one of"):
        progress.record(9, "x")
    with pytest.raises(ValueError, match="check must be one of"):
        progress.record(1, "nonsense")
    with pytest.raises(ValueError, match="lab must be one of"):
        progress.reset(0)
    judge(checks.check_lab2_envelope, dict)
    assert progress.status()[2]["passed"] == {}


def test_an_unreadable_progress_file_means_no_progress_not_an_error(tmp_path, monkeypatch):
    bad = tmp_path / "progress.json"
    bad.write_text("{not json")
    monkeypatch.setenv(progress.ENV_PROGRESS_FILE, str(bad))
    assert not any(v["passed"] for v in progress.status().values())
    progress.record(3, "audit")
    assert progress.status()[3]["passed"].keys() == {"audit"}


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_running_a_solution_notebook_does_not_count_as_doing_the_lab(source):
    learner, solution = (nbformat.read(p, as_version=4) for p in labgen.targets(source))
    switch = "checks.RECORD_PROGRESS = False"
    first_check = next(i for i, c in enumerate(solution.cells) if "check" in tags(c))
    assert any(switch in c.source for c in solution.cells[:first_check])
    assert not any("RECORD_PROGRESS" in c.source for c in learner.cells)


def test_checks_do_not_record_progress_when_switched_off(monkeypatch):
    from helpers.kafka import events

    def to_event(order):
        return events.Event("OrderPlaced", dict(order), key=order["order_id"])

    monkeypatch.setattr(checks, "RECORD_PROGRESS", False)
    result = judge(checks.check_lab2_envelope, to_event)
    assert result.passed and "not recorded" in result.message
    assert progress.status()[2]["passed"] == {}
    monkeypatch.setattr(checks, "RECORD_PROGRESS", True)
    assert judge(checks.check_lab2_envelope, to_event).passed
    assert list(progress.status()[2]["passed"]) == ["envelope"]


def test_welcome_notebook_shows_lab_progress_after_the_course_map():
    nb = nbformat.read(ROOT / "lessons" / "00_welcome.ipynb", as_version=4)
    course_map = next(i for i, c in enumerate(nb.cells) if c.source.startswith(("## The course map", "## Course map")))
    shows = [i for i, c in enumerate(nb.cells) if "progress.show()" in c.source]
    assert len(shows) == 1 and shows[0] > course_map and nb.cells[shows[0]].cell_type == "code"
    setup = next(i for i, c in enumerate(nb.cells) if "import helpers" in c.source)
    assert setup < shows[0]


def test_a_progress_file_from_before_the_renumbering_moves_the_capstone_to_lab_7(tmp_path, monkeypatch):
    """Version 1 files knew the capstone as lab 6; its checks move to lab 7 and nothing else changes."""
    old = tmp_path / "progress.json"
    old.write_text(json.dumps({"version": 1, "labs": {"3": {"audit": "2026-11-01 10:00:00"},
                                                      "6": {"scenarios": "2026-11-02 10:00:00"}}}))
    monkeypatch.setenv(progress.ENV_PROGRESS_FILE, str(old))
    status = progress.status()
    assert status[7]["passed"] == {"scenarios": "2026-11-02 10:00:00"} and status[7]["missing"] == ["verdict"]
    assert status[3]["passed"] == {"audit": "2026-11-01 10:00:00"}
    progress.record(7, "verdict")
    saved = json.loads(old.read_text())
    assert saved["version"] == progress.VERSION and "6" not in saved["labs"]
    assert set(saved["labs"]["7"]) == {"scenarios", "verdict"}
