"""Lab 7, the capstone: the twin shop (both sides with an orders service and its database, each
service a process, under one clock and one fault), the definitions both sides are counted by
(on hand-made ledgers and on live runs), the course's reference fix and the switch that loads
the learner's, the capstone's own broker, and the lab's checks: each passes a different correct
solution and gives typical mistakes their own feedback, on reference runs recorded from real runs.

The notebook-level tests (sources in sync, the unsolved notebook stopping at its first check
with "not yet", solutions not counting as progress) are tests/test_labs.py's, parametrized over
every lab source, this one included."""
from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time

import pytest
from checking import assert_not_yet, assert_passes, judge

from helpers import capstone, checks
from helpers.capstone import chaos
from helpers.capstone.fixswitch import LEARNER_LABEL, choose_fix, reference_fix
from helpers.capstone.processes import ServiceProcess
from helpers.capstone.records import Answer, join
from helpers.capstone.runs import DEFINITIONS, NO_FIX, SIDES, Fault, Order, Run, run_from_dict
from helpers.capstone.workers import call
from helpers.checks import lab7
from helpers.core import lifecycle, progress
from helpers.kafka import clients
from helpers.kafka.private import PrivateBroker, available
from helpers.kafka.probe import probe
from helpers.patterns import fix

TIME_SCALE = 0.1


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    """Every test records progress into its own file."""
    monkeypatch.setenv(progress.ENV_PROGRESS_FILE, str(tmp_path / "progress.json"))


# =========================================================================== the plan and the scenarios


@pytest.mark.parametrize("time_scale", [0.1, 0.3, 1.0])
def test_plan_derives_every_duration_with_its_margins_at_every_time_scale(time_scale):
    plan = capstone.plan(time_scale)
    assert all(m.holds for m in plan.margins), str(plan)
    assert plan.outage == 4 * plan.timeout and plan.outage >= 2 * plan.timeout
    assert plan.drain == capstone.drain_deadline(plan.outage) > plan.outage + capstone.JOIN_ALLOWANCE_S
    assert plan.timeout >= capstone.TIMEOUT_FLOOR_S and plan.bin >= 2.5 * plan.interval
    assert plan.before >= 2 * plan.timeout


@pytest.mark.parametrize("kwargs, name", [({"rate": 0}, "rate"), ({"hop": -1}, "hop"),
                                          ({"timeout": math.nan}, "timeout")])
def test_plan_names_a_bad_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        capstone.plan(1.0, **kwargs)
    with pytest.raises(ValueError, match="time_scale"):
        capstone.plan(0)


def test_scenarios_from_dicts_and_their_errors_name_the_parameter():
    kill = capstone.as_scenario({"fault": "kill", "service": "payments", "seconds": 2.0})
    assert kill == capstone.Scenario("kill", "payments", 2.0) and kill.label == "kill payments for 2 s"
    assert capstone.as_scenario({"fault": "flood", "seconds": 1.0}).service == "orders"
    crash = capstone.as_scenario({"fault": "crash", "seconds": 4.0})
    assert crash.service == "orders" and crash.crashes == capstone.CRASHES and "crash orders 8 times" in crash.label
    assert capstone.as_scenario({"fault": "crash", "seconds": 4.0, "level": 5}).crashes == 5
    broker = capstone.as_scenario({"fault": "broker", "seconds": 3.0})
    assert broker.service == "broker" and broker.label == "broker unavailable for 3 s" and kill.crashes == 0
    bad = [({"fault": "melt", "service": "payments", "seconds": 1}, "fault"),
           ({"fault": "kill", "service": "orders", "seconds": 1}, "service"),
           ({"fault": "kill", "service": "payments", "seconds": -1}, "seconds"),
           ({"fault": "flood", "seconds": 1, "level": 0.5}, "level"),
           ({"fault": "pause", "service": "shipping", "seconds": 1, "level": 0.5}, "at most seconds / 4"),
           ({"fault": "crash", "seconds": 1, "level": 2.5}, "whole number"),
           ({"fault": "crash", "service": "payments", "seconds": 1}, "service must be 'orders'"),
           ({"fault": "broker", "seconds": 1, "level": 2}, "level must be None"),
           ({"fault": "kill", "service": "payments", "seconds": 1, "speed": 2}, "keys"),
           ({"fault": "kill", "service": "payments"}, "seconds"),
           ("kill payments", "dict")]
    for spec, name in bad:
        with pytest.raises(ValueError, match=name):
            capstone.as_scenario(spec)
    with pytest.raises(ValueError, match="scenario 1"):
        capstone.as_scenarios([kill, {"fault": "melt", "seconds": 1}])


def test_a_crash_plan_is_seeded_and_spreads_its_crashes_over_the_fault():
    from helpers.capstone.injectors import crash_plan

    plan = crash_plan(8, 6.0, seed=7)
    assert plan == crash_plan(8, 6.0, seed=7) != crash_plan(8, 6.0, seed=8)
    assert len(plan) == 8 and all(0 <= c.fraction < 1 for c in plan)
    slices = [int(c.after // (6.0 / 8)) for c in plan]
    assert slices == list(range(8)), "one crash in each slice of the fault, in its first half"
    assert sorted(int(c.fraction * 8) for c in plan) == list(range(8)), "one in each eighth of an order's handling"


# =========================================================================== the definitions, on hand-made ledgers


def _ledgers() -> Run:
    """Seven orders of one side, one story each (times: monotonic 100 = run start, wall 5000 = run start)."""
    t0, wall0 = 100.0, 5000.0
    answers = {1: Answer(101.0, 101.2, True),              # told yes, charged, shipped: a whole order
               2: Answer(101.5, 101.6, False, "refused"),  # told no, nothing written: failed, not lost
               3: Answer(102.0, 102.1, True),              # told yes, never charged nor shipped: lost
               4: Answer(102.5, 103.9, True),              # answered yes after the customer's timeout: failed
               5: Answer(103.0, None),                     # no answer (the service crashed), held: lost
               6: Answer(103.5, 103.6, False, "502"),      # told no, charged, not shipped: half-done
               7: Answer(104.0, 104.1, True)}              # told yes, charged twice, shipped twice
    statuses = {1: "accepted", 2: "rejected", 3: "accepted", 4: "accepted", 5: "pending", 6: "rejected",
                7: "accepted"}
    charges = {1: (1, 5001.5), 4: (1, 5003.0), 6: (1, 5003.7), 7: (2, 5004.2)}
    shipments = {1: (1, 5001.8), 4: (1, 5003.2), 7: (2, 5004.4)}
    orders = join("events", answers, statuses, charges, shipments, t0=t0, wall0=wall0, now=106.0, timeout=1.0)
    return Run(Fault("kill", "payments", 2.0, 3.0), orders, [(0.5, 1), (2.5, 4), (4.5, 0)], bin=1.0, timeout=1.0,
               ended=6.0)


def test_join_reads_each_order_from_the_records_not_from_the_answer():
    orders = {o.number: o for o in _ledgers().orders("events")}
    assert orders[1].ok and orders[1].held and orders[1].charges == orders[1].shipments == 1
    assert orders[1].placed == pytest.approx(1.0) and orders[1].shipped == pytest.approx(1.8)
    assert not orders[4].ok and orders[4].shipments == 1, "an answer after the timeout is a no, the shipment stands"
    assert not orders[5].ok and orders[5].held and orders[5].error == "no answer within the customer's timeout"
    assert not orders[6].held and orders[6].charges == 1 and orders[6].shipped is None


def test_every_definition_on_hand_made_ledgers():
    run = _ledgers()
    numbers = {name: [o.number for o in orders] for name, orders in (
        ("accepted", run.accepted("events")), ("failed", run.failed("events")),
        ("completed", run.completed("events")), ("lost", run.lost("events")),
        ("half-done", run.half_done("events")), ("done though told no", run.told_no_but_done("events")),
        ("duplicated", run.duplicated("events")))}
    assert numbers == {"accepted": [1, 3, 7], "failed": [2, 4, 5, 6], "completed": [1, 4, 7], "lost": [3, 5],
                       "half-done": [6], "done though told no": [4], "duplicated": [7]}
    table = run.table()["events"]
    assert {k: table[k] for k in numbers} == {k: len(v) for k, v in numbers.items()}
    assert set(DEFINITIONS) <= set(table), "the table counts every definition"
    assert [o.number for o in run.unshipped("events", 2.4)] == [3], "owed at 2.4 s: told yes by then, not shipped"
    assert [o.number for o in run.unshipped("events", 2.6)] == [3, 4], "held by the database: owed, whatever the answer"
    assert run.back_to_normal("events") == 1.0, "the bin after the fault (3-4 s) failed its orders and lagged"
    backlog = Run(run.fault, run.orders("events"), [(0.5, 1), (2.5, 4), (4.2, 3), (4.8, 2), (5.5, 0)], bin=1.0,
                  timeout=1.0, ended=6.0)
    assert backlog.series("events").lag == [1, 1, 4, 4, 2, 0], "the lowest lag of each bin (the last one carried)"
    assert backlog.back_to_normal("events") == 2.0, "still a backlog (2 > the normal peak 1) in 4-5 s"
    assert backlog.back_to_normal("events", use_lag=False) == 1.0 and run.drained_at is None


def test_the_definitions_move_when_the_records_do():
    """A definition that cannot fail is a defect: change one record, the count follows."""
    base = _ledgers()
    orders = base.orders("events")
    shipped_3 = [Order(**{**o.__dict__, "shipped": 4.0, "shipments": 1, "charged": 3.9, "charges": 1})
                 if o.number == 3 else o for o in orders]
    moved = Run(base.fault, shipped_3, base.lag, bin=1.0, timeout=1.0, ended=6.0)
    assert [o.number for o in moved.lost("events")] == [5] and 3 in [o.number for o in moved.completed("events")]
    unheld = [Order(**{**o.__dict__, "held": False}) if o.number == 5 else o for o in orders]
    assert [o.number for o in Run(base.fault, unheld, ended=6.0).lost("events")] == [3], "not held, told no: not lost"


def test_a_run_is_data_and_reads_back_the_same():
    run = _ledgers()
    back = run_from_dict(json.loads(json.dumps(run.as_dict())))
    counts = [name for name in DEFINITIONS if name != "back to normal (s)"]
    assert [back.table()["events"][n] for n in counts] == [run.table()["events"][n] for n in counts]
    assert back.back_to_normal("events") == pytest.approx(run.back_to_normal("events"), abs=1e-3)
    assert back.label == run.label and back.fix == NO_FIX and back.lag == run.lag
    with pytest.raises(ValueError, match="not a recorded capstone run"):
        run_from_dict({"orders": []})
    with pytest.raises(ValueError, match="side"):
        run.orders("both")


@pytest.mark.slow  # over a second: the first figure imports plotly
def test_run_figure_and_numbers_cover_both_sides_in_their_roles():
    from helpers.core import style

    run, _ = lab7.recorded_runs()[0]
    fig = chaos.run_figure(run)
    assert len(fig.data) == 7 and len(fig.layout.shapes) == 4
    colours = {t.line.color for t in fig.data}
    assert {style.color("sync"), style.color("events"), style.color("lag")} <= colours
    assert {t.marker.symbol for t in fig.data} >= {style.symbol("sync"), style.symbol("events")}
    numbers = chaos.numbers_html(run)
    assert "failed during the fault" in numbers and "half-done" in numbers and "lost" in numbers
    assert "owed, not completed yet" in chaos.numbers_html(Run(run.fault, run.orders("sync"), ended=1.0,
                                                               finished=False))


# =========================================================================== the reference fix


@pytest.mark.parametrize("isolation", [None, ""], ids=["autocommit", "default mode"])
def test_the_reference_fix_writes_both_or_neither_and_applies_once(tmp_path, isolation):
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=isolation)
    fix.setup(db)
    fix.setup(db)  # idempotent
    db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT)")
    db.commit()
    fix.save_with_outbox(db, lambda c: c.execute("INSERT INTO orders VALUES ('a')"), "t", b"k", b"v", "e1")

    def half(c):
        c.execute("INSERT INTO orders VALUES ('b')")
        raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        fix.save_with_outbox(db, half, "t", b"k", b"v2", "e2")
    assert db.execute("SELECT id FROM orders").fetchall() == [("a",)]
    assert db.execute("SELECT event_id FROM outbox").fetchall() == [("e1",)], "neither the order nor its row"
    apply = lambda c: c.execute("INSERT INTO orders VALUES ('c')")  # noqa: E731
    assert fix.process_once(db, "x", apply) is True and fix.process_once(db, "x", apply) is False
    assert db.execute("SELECT COUNT(*) FROM orders WHERE id = 'c'").fetchone() == (1,)
    with pytest.raises(RuntimeError):
        fix.process_once(db, "y", half)
    assert db.execute("SELECT COUNT(*) FROM processed_events WHERE event_id = 'y'").fetchone() == (0,)
    with pytest.raises(ValueError, match="event_id"):
        fix.process_once(db, "", apply)
    with pytest.raises(ValueError, match="limit"):
        fix.relay(db, None, limit=0)  # type: ignore[arg-type]


def test_the_reference_relay_publishes_oldest_first_and_marks_after_the_ack(kafka, tmp_path):
    topic = clients.create_topic(kafka, prefix="capstone-relay")
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    fix.setup(db)
    for i in range(3):
        fix.save_with_outbox(db, lambda c: None, topic, f"k{i}".encode(), f"v{i}".encode(), f"e{i}")
    producer = clients.producer(kafka, linger_ms=0)
    try:
        assert fix.relay(db, producer, limit=2) == 2 and fix.relay(db, producer) == 1 and fix.relay(db, producer) == 0
    finally:
        producer.close(timeout=5)
    from helpers.checks.scenarios import read_all

    assert [r.value for r in read_all(kafka, topic, 3)] == [b"v0", b"v1", b"v2"]
    assert db.execute("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone() == (0,)

    class Unacknowledged:
        def send(self, *args, **kwargs):
            raise TimeoutError("no acknowledgement")

    fix.save_with_outbox(db, lambda c: None, topic, None, b"v3", "e3")
    with pytest.raises(TimeoutError):
        fix.relay(db, Unacknowledged())  # type: ignore[arg-type]
    assert db.execute("SELECT event_id FROM outbox WHERE published_at IS NULL").fetchall() == [("e3",)]


# =========================================================================== the switch for the learner's fix


LEARNER_FIX = '''
import os
from helpers.patterns import fix as reference

def _note(what):
    with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as log:
        log.write(what + "\\n")

def setup(db):
    _note("setup")
    reference.setup(db)

def save_with_outbox(db, write, topic, key, value, event_id):
    _note("save_with_outbox")
    reference.save_with_outbox(db, write, topic, key, value, event_id)

def relay(db, producer, *, limit=100):
    moved = reference.relay(db, producer, limit=limit)
    if moved:
        _note("relay")
    return moved

def process_once(db, event_id, apply):
    _note("process_once")
    return reference.process_once(db, event_id, apply)
'''


def test_the_switch_says_which_fix_and_why(tmp_path):
    absent = choose_fix(tmp_path)
    assert absent.path is None and absent.label == fix.LABEL and "No learner_fix.py" in absent.message
    (tmp_path / "learner_fix.py").write_text("def setup(db):\n    return (\n")
    broken = choose_fix(tmp_path)
    assert broken.path is None and "does not import" in broken.message and broken.label == fix.LABEL
    (tmp_path / "learner_fix.py").write_text("def setup(db):\n    pass\n")
    partial = choose_fix(tmp_path)
    assert partial.path is None and "save_with_outbox, relay, process_once" in partial.message
    (tmp_path / "learner_fix.py").write_text(LEARNER_FIX.replace("reference.setup(db)", "1 / 0"))
    assert "setup() fails" in choose_fix(tmp_path).message
    (tmp_path / "learner_fix.py").write_text(LEARNER_FIX)
    mine = choose_fix(tmp_path)
    assert mine.is_learners and mine.label == LEARNER_LABEL and "Using your fix" in mine.message
    assert not reference_fix().is_learners


# =========================================================================== the capstone's broker and processes


def test_a_private_broker_pauses_resumes_and_leaves_nothing(kafka):
    if available(kafka):
        pytest.skip(available(kafka))
    with PrivateBroker("test") as broker:
        assert broker.kafka is not None and broker.kafka.bootstrap_servers != kafka.bootstrap_servers
        host, port = broker.kafka.bootstrap_servers.split(":")
        broker.pause()
        assert probe(host, int(port), timeout=0.5) != "kafka", "a paused broker answers nothing"
        broker.resume()
        assert probe(host, int(port), timeout=2.0) == "kafka"
        pid = broker.pid
    import psutil

    assert pid is not None and (not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    assert broker not in [e.resource for e in lifecycle.running()] and broker.folder is None


def test_a_dead_kernels_folders_are_removed_by_the_next_shop(tmp_path, monkeypatch):
    import tempfile

    from helpers.kafka.private import temporary_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, alive = tmp_path / "course-capstone-999999999-abc", tmp_path / f"course-capstone-{os.getpid()}-def"
    dead.mkdir()
    alive.mkdir()
    new = temporary_folder("capstone")
    assert not dead.exists() and alive.exists() and new.name.startswith(f"course-capstone-{os.getpid()}-")


def test_where_the_notebook_cannot_pause_the_broker_it_says_so_and_skips_that_fault():
    for kind, where in (("docker", "the bundled container"), ("environment", "your cluster")):
        kafka = clients.Kafka("127.0.0.1:9", kind)
        assert where in available(kafka) and "skipped" in available(kafka)
        shop = capstone.TwinShop(kafka, capstone.plan(TIME_SCALE), fix=reference_fix())  # not started: nothing runs
        assert shop.skip_reason({"fault": "broker", "seconds": 2.0}) == available(kafka)
        assert shop.skip_reason({"fault": "kill", "service": "payments", "seconds": 2.0}) is None
        with pytest.raises(capstone.FaultSkipped, match="cannot pause"):
            shop.inject({"fault": "broker", "seconds": 2.0})
        panel = chaos.ChaosPanel(shop)
        assert panel.apply(fault="broker") is None and "skipped" in panel.status.value and not panel.history


@pytest.mark.slow  # over a second: a service process, a request in flight
def test_a_kill_is_abrupt_the_request_in_flight_dies_with_the_process(tmp_path):
    shipping = ServiceProcess("sync shipping", {"role": "sync-shipping", "db": str(tmp_path / "s.db"), "hop": 2.0,
                                                "timeout": 5.0}, tmp_path).start()
    try:
        answers = []
        caller = threading.Thread(target=lambda: answers.append(call(shipping.port, "r", 1, 10.0)))
        caller.start()
        time.sleep(0.5)  # the request is in flight: shipping works on it for 2 s
        shipping.kill()
        caller.join(timeout=5)
        assert answers and not answers[0][0] and "connection lost" in answers[0][1], answers
        shipping.revive(wait=True)
        assert call(shipping.port, "r", 2, 10.0) == (True, ""), "back on the same port"
        rows = sqlite3.connect(tmp_path / "s.db").execute("SELECT number FROM shipments").fetchall()
        assert rows == [(2,)], "the killed request never shipped: it died with the process, it did not finish"
    finally:
        shipping.stop()
    assert shipping.pid is None


# =========================================================================== the twin shop, live


@pytest.fixture(scope="module")
def learner_fix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    (folder / "learner_fix.py").write_text(LEARNER_FIX)
    return folder


@pytest.fixture(scope="module")
def shop(kafka, learner_fix):
    plan = capstone.plan(TIME_SCALE)
    choice = choose_fix(learner_fix)
    (learner_fix / "calls.log").unlink(missing_ok=True)  # the switch's own first calls prove nothing below
    with capstone.TwinShop(kafka, plan, fix=choice) as twin:
        yield twin
    left = lifecycle.leftovers()
    assert not any(left.values()), f"the twin shop left {left}"


@pytest.fixture(scope="module")
def killed(shop):
    """Payments killed for the plan's outage on both sides at once."""
    return shop.run({"fault": "kill", "service": "payments", "seconds": shop.plan.outage})


@pytest.fixture(scope="module")
def crashed(shop):
    """The orders services crashed at the same random moments, the event side without and with the fix."""
    crash = {"fault": "crash", "seconds": shop.plan.outage}
    return {fixed: shop.run(crash, fix=fixed) for fixed in (False, True)}


def test_a_kill_fails_the_chain_and_the_event_side_loses_nothing(shop, killed):
    run = killed
    assert run.fault.kind == "kill" and run.fault.seconds >= shop.plan.outage and run.fix == NO_FIX
    sync, events = (run.window(side, run.fault.start, run.fault.end) for side in SIDES)
    assert sync.placed == events.placed >= 10, "both sides get the same orders"
    assert [o.placed for o in run.orders("sync")] == [o.placed for o in run.orders("events")], "at the same moments"
    assert sync.failed >= sync.placed / 2 and not run.lost("sync"), run.report()
    assert events.availability >= 0.9 and not run.lost("events") and run.drained_at is not None, run.report()
    assert run.unshipped("events", run.fault.end), "at the fault's end the event side owed orders (its backlog)"
    assert max(run.series("events").lag) > run.normal("events").lag, "payments' lag grew while it was down"
    late = [o.shipped - run.fault.start for o in run.orders("events")
            if run.fault.start <= o.placed < run.fault.end and o.shipped is not None]
    assert min(late) > shop.session, ("killed without leaving its group, payments is replaced only after the group "
                                      f"waited out its {shop.session:g} s session: the first order placed during the "
                                      f"fault shipped {min(late):.1f} s after the kill")
    assert run.back_to_normal("sync") < run.back_to_normal("events")
    assert all(s.ready for svcs in shop.services.values() for s in svcs.values()), "every service is back"


def test_a_crash_loses_what_the_event_side_holds_without_the_fix_and_nothing_with_it(shop, crashed, learner_fix):
    naive, fixed = crashed[False], crashed[True]
    assert naive.crashes and [c["order"] for c in naive.crashes] == [c["order"] for c in fixed.crashes] or \
        [c["fraction"] for c in naive.crashes] == [c["fraction"] for c in fixed.crashes], "the same crash plan"
    landed = [c for c in naive.crashes if c.get("events")]
    assert len(landed) >= len(naive.crashes) - 2, f"most crashes land: {naive.crashes}"
    assert naive.lost("events") and all(o.held for o in naive.lost("events")), naive.report()
    assert not fixed.lost("events"), fixed.report()
    assert fixed.fix == LEARNER_LABEL and naive.fix == NO_FIX
    assert naive.told_no_but_done("sync"), "the synchronous side's crashes land while orders waits on payments"
    assert all(o.held and not o.ok for o in naive.lost("sync")), "its own gap: written, never sent on"
    calls = (learner_fix / "calls.log").read_text().split()
    assert {"setup", "save_with_outbox", "relay", "process_once"} <= set(calls), \
        "the event services ran the learner's file, in their own processes"


def test_the_broker_fault_hurts_the_event_side_only(shop):
    if shop.broker_note:
        with pytest.raises(capstone.FaultSkipped, match="cannot pause"):
            shop.run({"fault": "broker", "seconds": shop.plan.outage})
        return
    run = shop.run({"fault": "broker", "seconds": shop.plan.outage})
    sync, events = (run.window(side, run.fault.start, run.fault.end) for side in SIDES)
    assert events.failed > sync.failed and events.latency > sync.latency, run.report()
    assert not shop.broker.paused and all(s.ready for s in shop.services["events"].values())


def test_lab7_verdict_on_a_live_run(killed, crashed):
    assert_passes(judge(checks.check_lab7_verdict, _verdict, killed))
    assert lab7.reference(killed)["lost_none"] == "both"
    assert lab7.reference(crashed[False])["lost_none"] in ("sync", "neither")
    assert lab7.reference(crashed[True])["lost_none"] in ("both", "events")


def test_the_chaos_panel_applies_a_fault_headless_and_shows_it(shop):
    panel = chaos.ChaosPanel(shop)
    assert panel.seconds.min == pytest.approx(2 * shop.timeout) and tuple(panel.fault.options) == capstone.FAULTS
    run = panel.apply(fault="flood", seconds=2 * shop.timeout)
    assert run is not None and panel.history == [run] and run.fault.kind == "flood" and run.fault.service == "orders"
    assert run.window("sync", run.fault.start, run.fault.end).placed > \
        2 * run.normal("sync").placed * run.fault.seconds / run.fault.start, "a flood places orders faster"
    assert not run.lost("events"), "a flood is drained, not lost"
    assert panel.board.last is run and "flood the shop" in panel.board.numbers.value
    assert not panel.button.disabled and panel.service.disabled
    with pytest.raises(ValueError, match="shop"):
        chaos.ChaosPanel("not a shop")


def test_inject_hits_both_sides_at_once_and_lifting_restores_them(shop):
    both = [shop.services[side]["shipping"] for side in SIDES]
    lift = shop.inject({"fault": "slow", "service": "shipping", "seconds": 1.0, "level": 0.2})
    assert all(s.config["slow"] == 0.2 for s in both)
    lift()
    assert all(s.config["slow"] == 0.0 for s in both)
    lift = shop.inject(capstone.Scenario("pause", "shipping", 2.0, level=0.3))
    import psutil

    time.sleep(0.1)
    assert all(psutil.Process(s.pid).status() == psutil.STATUS_STOPPED for s in both), "frozen, both at once"
    lift()
    assert not any(s.suspended for s in both)
    assert all(psutil.Process(s.pid).status() != psutil.STATUS_STOPPED for s in both)
    lift = shop.inject({"fault": "flood", "seconds": 1.0, "level": 4})
    assert shop._rate_factor == 4
    lift()
    assert shop._rate_factor == 1.0


def test_stop_all_stops_a_twin_shop_and_all_it_started(kafka):
    """Last in the module: stop_all("shop") also stops the module's shop (its teardown then finds it stopped)."""
    twin = capstone.TwinShop(kafka, capstone.plan(TIME_SCALE)).start(wait=False)
    pids = [s.pid for svcs in twin.services.values() for s in svcs.values()]
    assert twin in [e.resource for e in lifecycle.running("shop")] and all(pids)
    lifecycle.stop_all("shop")
    assert twin not in [e.resource for e in lifecycle.running()]
    assert not any(s.pid for svcs in twin.services.values() for s in svcs.values())
    assert twin.broker is None and twin.folder is None


# =========================================================================== lab 7, task 1: the scenarios


def _six(seconds):
    return [{"fault": "kill", "service": "payments", "seconds": seconds},
            {"fault": "slow", "service": "shipping", "seconds": seconds},
            {"fault": "pause", "service": "payments", "seconds": seconds},
            {"fault": "flood", "seconds": seconds},
            {"fault": "crash", "seconds": seconds},
            {"fault": "broker", "seconds": seconds}]


def test_lab7_scenarios():
    def as_objects(timeout):  # a different correct solution: Scenario objects, different durations and levels
        return [capstone.Scenario("kill", "payments", 3 * timeout), capstone.Scenario("kill", "shipping", 5 * timeout),
                capstone.Scenario("slow", "payments", 6 * timeout, level=timeout / 2),
                capstone.Scenario("pause", "shipping", 8 * timeout, level=timeout),
                capstone.Scenario("flood", "orders", 2.5 * timeout, level=3),
                capstone.Scenario("crash", "orders", 4 * timeout, level=6),
                capstone.Scenario("broker", "broker", 3 * timeout)]

    assert_passes(judge(checks.check_lab7_scenarios, as_objects, 0.5))
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _six(timeout / 2), 0.5),
                   "shorter than the customer's timeout", "at least twice the timeout")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _six(1.5 * timeout), 0.5),
                   "less than twice the timeout")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _six(2.0), 0.5),
                   "6 times the lab's", "Derive every duration from the `timeout` argument")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _six(4 * timeout)[:3], 0.5),
                   "no flood and no crash and no broker scenario")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _six(4 * timeout)[1:], 0.5),
                   "no kill scenario")
    shipping_only = lambda timeout: [dict(s, service="shipping") if s["fault"] == "kill" else s  # noqa: E731
                                     for s in _six(4 * timeout)]
    assert_not_yet(judge(checks.check_lab7_scenarios, shipping_only, 0.5), "none of your scenarios kills payments")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: _six(20 * timeout), 0.5),
                   "more than 10 customer timeouts")
    assert_not_yet(judge(checks.check_lab7_scenarios,
                         lambda timeout: [*_six(4 * timeout), {"fault": "kill", "service": "orders", "seconds": 1}],
                         0.5), "not valid", "service must be one of")
    too_long_pauses = lambda timeout: [*_six(4 * timeout), {"fault": "pause", "service": "shipping",  # noqa: E731
                                                            "seconds": 4 * timeout, "level": 2 * timeout}]
    assert_not_yet(judge(checks.check_lab7_scenarios, too_long_pauses, 0.5),
                   "at most seconds / 4", "a pause's level at most a quarter of its seconds")
    trickle = {"fault": "flood", "level": 1.5}
    assert_not_yet(judge(checks.check_lab7_scenarios,
                         lambda timeout: [*_six(4 * timeout), {**trickle, "seconds": 4 * timeout}], 0.5),
                   "busy afternoon")
    few = lambda timeout: [*_six(4 * timeout), {"fault": "crash", "seconds": 4 * timeout, "level": 2}]  # noqa: E731
    assert_not_yet(judge(checks.check_lab7_scenarios, few, 0.5), "2 times only", "at least 4")
    assert_not_yet(judge(checks.check_lab7_scenarios, lambda timeout: None, 0.5), "returned None")

    def stub(timeout):
        raise NotImplementedError("your code here")

    assert_not_yet(judge(checks.check_lab7_scenarios, stub, 0.5), "still has the TODO stub")
    assert_not_yet(judge(checks.check_lab7_scenarios, as_objects, "0.5"), "the check needs the customer's timeout")


# =========================================================================== lab 7, task 2: the verdict


def _verdict(run, *, window=True, after_drain=True, refused_is_lost=False, told_yes_only=False, by_answer=False,
             lag=True):
    """The lab's solution, with one switch per typical mistake."""
    def who(sides):
        return "both" if len(sides) == 2 else sides[0] if sides else "neither"

    def back(side):
        normal, s, last = run.normal(side), run.series(side), run.fault.end
        for t, a, lg in zip(s.t, s.availability, s.lag):
            if t >= run.fault.end and ((a is not None and a < normal.availability) or (lag and lg > normal.lag)):
                last = t + run.bin
        return math.inf if last > run.ended else last - run.fault.end

    judged = {side: run.window(side, run.fault.start, run.fault.end) if window else run.total(side) for side in SIDES}
    kept = [side for side in SIDES if judged[side].availability >= 0.95]
    at = None if after_drain else run.fault.end
    lost_none = [side for side in SIDES
                 if not [o for o in run.unshipped(side, at) if o.ok or not told_yes_only]
                 and not (refused_is_lost and run.total(side).failed)]
    if by_answer:
        whole = [side for side in SIDES if not any(not o.ok and (o.charges or o.shipments) for o in run.orders(side))]
    else:
        whole = [side for side in SIDES if not run.half_done(side)]
    backs = {side: back(side) for side in SIDES}
    if math.isinf(backs["sync"]) and math.isinf(backs["events"]):
        faster = "neither"
    elif abs(backs["sync"] - backs["events"]) <= run.bin:
        faster = "both"
    else:
        faster = min(backs, key=backs.get)
    return {"kept_taking_orders": who(kept), "lost_none": who(lost_none), "half_done_none": who(whole),
            "recovered_faster": faster}


def _by_orders(run):
    """A different correct solution: from the orders themselves, recovery from the last bad bin backwards."""
    def answer(yes):
        return {(True, True): "both", (True, False): "sync", (False, True): "events"}.get(
            (yes["sync"], yes["events"]), "neither")

    kept, lost_none, whole, back = {}, {}, {}, {}
    for side in SIDES:
        orders = run.orders(side)
        placed = [o for o in orders if run.fault.start <= o.placed < run.fault.end]
        kept[side] = sum(o.ok for o in placed) >= 0.95 * len(placed)
        lost_none[side] = not any((o.ok or o.held) and o.shipped is None for o in orders)
        whole[side] = all(bool(o.charges) == bool(o.shipments) for o in orders)
        normal, s = run.normal(side), run.series(side)
        bins = [(t, a, lg) for t, a, lg in zip(s.t, s.availability, s.lag) if t >= run.fault.end]
        bad = next((t for t, a, lg in reversed(bins) if (a is not None and a < normal.availability)
                    or lg > normal.lag), None)
        back[side] = 0.0 if bad is None else (math.inf if bad + run.bin > run.ended else bad + run.bin - run.fault.end)
    if math.isinf(back["sync"]) and math.isinf(back["events"]):
        faster = "neither"
    else:
        gap = back["sync"] - back["events"]
        faster = "both" if abs(gap) <= run.bin else "events" if gap > 0 else "sync"
    return {"kept_taking_orders": answer(kept), "lost_none": answer(lost_none), "half_done_none": answer(whole),
            "recovered_faster": faster}


def _recorded(label_part: str) -> Run:
    return next(run for run, _ in lab7.recorded_runs() if label_part in run.title())


def test_the_reference_runs_are_recorded_real_runs_with_the_command_that_records_them():
    data = json.loads(lab7.REFERENCE_RUNS.read_text())
    assert data["recorded_with"] == "python -m helpers.checks.reference_runs" and data["time_scale"] == 1.0
    from helpers.checks.reference_runs import SCENARIOS

    runs = lab7.recorded_runs()
    assert len(runs) == len(SCENARIOS) and all(r.finished and len(r.orders("sync")) > 20 for r, _ in runs)
    kinds = [r.fault.kind for r, _ in runs]
    assert {"crash", "broker"} <= set(kinds) and set(kinds) == set(capstone.FAULTS)
    crash = _recorded("crash orders")
    assert crash.crashes and crash.seed is not None, "the crash moments are stored with the run"


def test_recorded_runs_each_have_their_own_verdict():
    for key in lab7.KEYS:
        answers = {lab7.reference(run)[key] for run, keys in lab7.recorded_runs() if key in keys}
        assert len(answers) >= 2, f"every recorded run answers {key} the same: {answers}"
    for run, keys in lab7.recorded_runs():
        assert set(keys) >= {"lost_none", "half_done_none"}, run.title()
        for key in keys:
            assert _verdict(run)[key] == lab7.reference(run)[key] == _by_orders(run)[key], (run.title(), key)


def test_the_recorded_runs_show_each_side_doing_better_somewhere():
    naive = _recorded("crash orders 8 times for 6 s (event side: no fix)")
    assert lab7.reference(naive)["lost_none"] == "sync", naive.report()
    assert not _recorded(f"event side: {fix.LABEL}").lost("events")
    broker = _recorded("broker unavailable")
    assert lab7.reference(broker)["kept_taking_orders"] == "sync", broker.report()
    killed = _recorded("kill payments")
    assert lab7.reference(killed)["kept_taking_orders"] == "events"
    assert lab7.reference(killed)["recovered_faster"] == "sync", killed.report()
    shipping = _recorded("kill shipping")
    assert shipping.half_done("sync") or lab7.reference(shipping)["half_done_none"] != "both", shipping.report()


def test_comparing_totals_is_told_so_where_it_changes_the_answer():
    """In the recorded runs a fault fails most of its orders or none of them, so totals and windows agree,
    but for the pause: 94 % during the fault, 96 % over the whole run."""
    run = _recorded("pause shipping")
    during, total = run.window("sync", run.fault.start, run.fault.end), run.total("sync")
    assert during.availability < lab7.KEPT <= total.availability, run.report()
    assert lab7.reference(run)["kept_taking_orders"] == "events" != _verdict(run, window=False)["kept_taking_orders"]
    feedback = lab7._diagnose("kept_taking_orders", run, "both", "events", "here")
    assert "Did you compare totals" in feedback.problem and "run.window" in feedback.hint


def test_lab7_verdict_on_recorded_runs():
    run = _recorded("kill payments")
    assert_passes(judge(checks.check_lab7_verdict, _verdict, run))
    assert_passes(judge(checks.check_lab7_verdict, _by_orders, run))
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, after_drain=False), run),
                   "once the backlog drained: not lost, late", "Count losses after the backlog has drained")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, refused_is_lost=True), run),
                   "refused", "Lost means told yes or held")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, told_yes_only=True), run),
                   "written to the orders database", "`order.held`")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, by_answer=True), run),
                   "what the services did, not what the customer heard", "run.half_done(side)")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: _verdict(r, lag=False), run),
                   "took its time to drain", "*and* lag back to its normal")
    always = {"kept_taking_orders": "events", "lost_none": "both", "half_done_none": "both",
              "recovered_faster": "sync"}
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: dict(always), run), "on a recorded run", "you answered")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: "events", run), "not a dict")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: {"kept": "events"}, run), "it needs exactly")
    assert_not_yet(judge(checks.check_lab7_verdict, lambda r: {**always, "lost_none": "nobody"}, run),
                   "is not an answer")
    assert_not_yet(judge(checks.check_lab7_verdict, _verdict, "my run"), "the check needs the run you measured")

    def stub(run):
        raise NotImplementedError("your code here")

    assert_not_yet(judge(checks.check_lab7_verdict, stub, run), "still has the TODO stub")
