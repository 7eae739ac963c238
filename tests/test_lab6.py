"""Lab 6: the learner's outbox, relay and durable idempotent consumer, judged under real kills.

The lab's own solution (assembled from the solution notebook's ``%%writefile`` cells) and a
different correct fix pass every check; the course's reference fix (``helpers/patterns/fix.py``)
does when it exists; each typical wrong design gets its own "Not yet", and those that only fail
when a kill lands in a narrow window (the "lucky timing" answers) are rejected at every seed tried:
``COURSE_LAB6_SEEDS=40`` tries 40 (the default, 1, keeps the suite short). The harness kills for
real (SIGKILL, the worker's exit status says so) and leaves no process behind.
"""
from __future__ import annotations

import os
import re
import signal
import textwrap
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from checking import assert_not_yet, assert_passes, judge

from helpers import checks
from helpers.checks import crashes, roles
from helpers.core import lifecycle, processes, progress
from helpers.patterns.fix import connect as open_db
from helpers.patterns.fix import load as load_fix
from helpers.tooling.paths import ROOT

SOLUTION_NOTEBOOK = ROOT / "labs" / "solutions" / "06_outbox_and_idempotency.ipynb"
LEARNER_NOTEBOOK = ROOT / "labs" / "06_outbox_and_idempotency.ipynb"
SEEDS = range(int(os.environ.get("COURSE_LAB6_SEEDS") or 1))


@pytest.fixture(autouse=True)
def _private_progress(tmp_path, monkeypatch):
    monkeypatch.setenv(progress.ENV_PROGRESS_FILE, str(tmp_path / "progress.json"))


def _file_from(notebook: Path) -> str:
    """The learner_fix.py a notebook's ``%%writefile`` cells write, in order (a plain write starts again)."""
    text = ""
    for cell in nbformat.read(notebook, as_version=4).cells:
        first, _, body = cell.source.partition("\n")
        if cell.cell_type == "code" and first.startswith("%%writefile"):
            text = (text if " -a " in f"{first} " else "") + body + "\n"
    return text


SOLUTION = _file_from(SOLUTION_NOTEBOOK)


def _replace(source: str, body: str) -> str:
    """``source`` with the function that ``body`` defines replaced by ``body``."""
    body = textwrap.dedent(body).strip("\n")
    name = re.search(r"^def (\w+)\(", body, re.M).group(1)
    start = source.index(f"\ndef {name}(") + 1
    end = source.find("\ndef ", start)
    end = len(source) if end == -1 else end + 1
    return source[:start] + body + "\n\n\n" + source[end:]


def _write(tmp_path: Path, source: str, name: str = "learner_fix.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


# --------------------------------------------------------------------------- fixes that are right

ANOTHER_RIGHT_FIX = [
    """
    def save_with_outbox(db, write, topic, key, value, event_id):
        try:  # explicit commit and rollback, the outbox row first: still one transaction
            db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                       (event_id, topic, key, value))
            write(db)
        except BaseException:
            db.rollback()
            raise
        db.commit()
    """,
    """
    def relay(db, producer, *, limit=100):
        rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                          (limit,)).fetchall()
        futures = [producer.send(topic, key=key, value=value) for _, topic, key, value in rows]
        for future in futures:  # the whole batch in flight, then every acknowledgement, then one mark
            future.get(timeout=10)
        with db:
            db.executemany("UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), r[0]) for r in rows])
        return len(rows)
    """,
    """
    def process_once(db, event_id, apply):
        db.execute("BEGIN IMMEDIATE")
        try:  # the id first, in the same transaction as the effect
            if db.execute("INSERT OR IGNORE INTO processed (event_id) VALUES (?)", (event_id,)).rowcount == 0:
                db.rollback()
                return False
            apply(db)
        except BaseException:
            db.rollback()
            raise
        db.commit()
        return True
    """,
]


def _right_fixes() -> dict[str, str]:
    other = SOLUTION
    for body in ANOTHER_RIGHT_FIX:
        other = _replace(other, body)
    fixes = {"the lab's solution": SOLUTION, "a different correct fix": other}
    reference = ROOT / "helpers" / "patterns" / "fix.py"
    if reference.exists():
        fixes["the course's reference fix"] = reference.read_text()
    return fixes


def test_the_solution_file_is_what_the_notebook_writes():
    assert SOLUTION.startswith('"""The fix of lab 6') and SOLUTION.count("\ndef ") == 4, SOLUTION
    learner = _file_from(LEARNER_NOTEBOOK)
    assert learner.count("raise NotImplementedError") == 3 and "def setup(" in learner


@pytest.mark.parametrize("name", list(_right_fixes()))
def test_a_right_fix_passes_every_check(kafka, tmp_path, name):
    path = _write(tmp_path, _right_fixes()[name])
    for check in (checks.check_lab6_outbox, checks.check_lab6_relay, checks.check_lab6_consumer):
        result = judge(check, kafka, path, seed=11)
        assert_passes(result)
        assert "seed 11" in result.message and "killed" in result.message


def test_the_unsolved_file_is_a_todo_and_a_missing_one_says_what_to_run(kafka, tmp_path):
    stub = _write(tmp_path, _file_from(LEARNER_NOTEBOOK))
    result = judge(checks.check_lab6_outbox, kafka, stub, seed=1)
    assert_not_yet(result, "`save_with_outbox` still has the TODO stub", "TODO")
    assert_not_yet(judge(checks.check_lab6_outbox, kafka, tmp_path / "nothing.py"), "there is no", "%%writefile")
    header = _write(tmp_path, SOLUTION[:SOLUTION.index("\ndef save_with_outbox")], "header.py")
    assert_not_yet(judge(checks.check_lab6_relay, kafka, header), "has no function `save_with_outbox`")
    broken = _write(tmp_path, SOLUTION + "\ndef oops(:\n", "broken.py")
    assert_not_yet(judge(checks.check_lab6_consumer, kafka, broken), "does not import: SyntaxError")


# --------------------------------------------------------------------------- fixes that are wrong

#: (name, check, the wrong function, phrases its "Not yet" must hold). The first kind fails in the calm
#: calls; "crash:" names fail only when a kill lands between two of their steps.
WRONG = [
    ("no commit", "outbox", """
        def save_with_outbox(db, write, topic, key, value, event_id):
            write(db)
            db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                       (event_id, topic, key, value))
        """, ["nothing was committed"]),
    ("swallows the failed write", "outbox", """
        def save_with_outbox(db, write, topic, key, value, event_id):
            with db:
                try:
                    write(db)
                except sqlite3.Error:
                    pass
                db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                           (event_id, topic, key, value))
        """, ["still committed the outbox row", "invented"]),
    ("crash: order and outbox row in two transactions", "outbox", """
        def save_with_outbox(db, write, topic, key, value, event_id):
            with db:
                write(db)
            with db:
                db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                           (event_id, topic, key, value))
        """, ["no outbox row", "two transactions", "ONE transaction"]),
    ("crash: autocommit, two statements back to back", "outbox", """
        def save_with_outbox(db, write, topic, key, value, event_id):
            db.isolation_level = None  # each statement commits on its own: a window of one statement
            try:
                write(db)
                db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                           (event_id, topic, key, value))
            finally:
                db.isolation_level = ""
        """, ["no outbox row", "two transactions"]),
    ("crash: outbox row first, undone if the write fails", "outbox", """
        def save_with_outbox(db, write, topic, key, value, event_id):
            with db:
                db.execute("INSERT INTO outbox (event_id, topic, key, value) VALUES (?, ?, ?, ?)",
                           (event_id, topic, key, value))
            try:
                with db:
                    write(db)
            except Exception:
                with db:
                    db.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
                raise
        """, ["no order in the database", "committed before the order"]),
    ("never marks", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, key=key, value=value).get(timeout=10)
            return len(rows)
        """, ["published rows again", "never marked"]),
    ("newest first", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL "
                              "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, key=key, value=value).get(timeout=10)
                with db:
                    db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
            return len(rows)
        """, ["other events than the oldest 3"]),
    ("ignores the limit", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL "
                              "ORDER BY id").fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, key=key, value=value).get(timeout=10)
                with db:
                    db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
            return len(rows)
        """, ["more than `limit` rows"]),
    ("without the key", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, value=value).get(timeout=10)
                with db:
                    db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
            return len(rows)
        """, ["without its key"]),
    ("publishes without waiting for the ack", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, key=key, value=value)
                with db:
                    db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
            return len(rows)
        """, ["still waiting in the producer", "not yet acknowledged", ".get(timeout=10)"]),
    ("crash: marks the row before publishing", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                with db:
                    db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
                producer.send(topic, key=key, value=value).get(timeout=10)
            return len(rows)
        """, ["never published although your relay had marked", "before the broker acknowledged"]),
    ("crash: deletes the row before publishing", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                with db:
                    db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                producer.send(topic, key=key, value=value).get(timeout=10)
            return len(rows)
        """, ["(or deleted them)", "before the broker acknowledged"]),
    ("crash: marks the batch, then flushes it", "relay", """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, key=key, value=value)
            with db:  # marked while the batch may still sit in the producer
                db.executemany("UPDATE outbox SET published_at = ? WHERE id = ?", [(time.time(), r[0]) for r in rows])
            producer.flush(timeout=10)
            return len(rows)
        """, ["never published although your relay had marked"]),
    ("no deduplication", "consumer", """
        def process_once(db, event_id, apply):
            with db:
                apply(db)
            return True
        """, ["same running process was charged twice", "does not skip"]),
    ("ids kept in memory, as in lab 3", "consumer", """
        SEEN = set()


        def process_once(db, event_id, apply):
            if event_id in SEEN:
                return False
            with db:
                apply(db)
            SEEN.add(event_id)
            return True
        """, ["after a restart", "lives in memory"]),
    ("id recorded first, in its own transaction", "consumer", """
        def process_once(db, event_id, apply):
            with db:
                if db.execute("SELECT 1 FROM processed WHERE event_id = ?", (event_id,)).fetchone():
                    return False
                db.execute("INSERT INTO processed (event_id) VALUES (?)", (event_id,))
            with db:
                apply(db)
            return True
        """, ["recorded the id although the effect had failed"]),
    ("swallows the failed effect", "consumer", """
        def process_once(db, event_id, apply):
            with db:
                if db.execute("SELECT 1 FROM processed WHERE event_id = ?", (event_id,)).fetchone():
                    return False
                try:
                    apply(db)
                except Exception:
                    pass
                db.execute("INSERT INTO processed (event_id) VALUES (?)", (event_id,))
            return True
        """, ["raised halfway", "still committed"]),
    ("crash: id recorded first, undone if the effect fails", "consumer", """
        def process_once(db, event_id, apply):
            with db:
                if db.execute("SELECT 1 FROM processed WHERE event_id = ?", (event_id,)).fetchone():
                    return False
                db.execute("INSERT INTO processed (event_id) VALUES (?)", (event_id,))
            try:
                with db:
                    apply(db)
            except Exception:
                with db:
                    db.execute("DELETE FROM processed WHERE event_id = ?", (event_id,))
                raise
            return True
        """, ["never charged, yet recorded as processed", "before applying the effect"]),
    ("crash: effect first, id recorded in its own transaction", "consumer", """
        def process_once(db, event_id, apply):
            if db.execute("SELECT 1 FROM processed WHERE event_id = ?", (event_id,)).fetchone():
                return False
            with db:
                apply(db)
            with db:
                db.execute("INSERT INTO processed (event_id) VALUES (?)", (event_id,))
            return True
        """, ["charged twice after the kills", "two transactions"]),
]
CHECK = {"outbox": checks.check_lab6_outbox, "relay": checks.check_lab6_relay, "consumer": checks.check_lab6_consumer}


def _wrong(name: str) -> tuple[str, str, list[str]]:
    _, check, body, phrases = next(w for w in WRONG if w[0] == name)
    return check, _replace(SOLUTION, body), phrases


@pytest.mark.parametrize("name", [w[0] for w in WRONG if not w[0].startswith("crash:")])
def test_a_wrong_design_gets_its_own_not_yet_before_any_kill(kafka, tmp_path, name):
    check, source, phrases = _wrong(name)
    started = time.monotonic()
    result = judge(CHECK[check], kafka, _write(tmp_path, source), seed=1)
    assert_not_yet(result, *phrases)
    assert "seed" not in result.message and time.monotonic() - started < 20, "caught by the calm calls, no kill"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", [w[0] for w in WRONG if w[0].startswith("crash:")])
def test_a_design_that_fails_only_in_a_crash_window_is_rejected_at_every_seed(kafka, tmp_path, name, seed):
    """The "lucky timing" answers: right in every calm call, wrong only when a kill lands between two
    of their steps. Each check kills often enough, and at both kinds of random moment, to catch them."""
    check, source, phrases = _wrong(name)
    result = judge(CHECK[check], kafka, _write(tmp_path, source), seed=1000 + seed)
    assert_not_yet(result, f"seed {1000 + seed}", *phrases)


def test_at_least_four_typical_wrong_designs_each_get_specific_feedback():
    hints = {tuple(w[3]) for w in WRONG}
    assert len(WRONG) >= 4 and len(hints) == len(WRONG)
    assert {w[1] for w in WRONG} == set(CHECK)


# --------------------------------------------------------------------------- the harness


def test_the_kill_plan_is_seeded_and_mixes_both_kinds_of_moment():
    plan = crashes.plan(7, 40, 0.2, 100)
    assert plan == crashes.plan(7, 40, 0.2, 100) and plan != crashes.plan(8, 40, 0.2, 100)
    times = [k.at for k in plan if k.mode == "time"]
    ops = [k.at for k in plan if k.mode == "op"]
    assert len(times) == len(ops) == 20
    assert all(0 <= t <= 0.2 for t in times) and all(1 <= o <= 100 and o == int(o) for o in ops)
    assert all(k.mode == "time" for k in crashes.plan(7, 5, 0.2, 0)), "no operations seen: time kills only"
    with pytest.raises(ValueError, match="kills"):
        crashes.plan(7, 0, 0.2, 10)


def _children() -> dict[int, str]:
    """This process's live descendants (zombies waiting to be reaped excepted): pid -> command line."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:
            pass
    return found


def test_a_kill_is_a_real_sigkill_before_the_chosen_operation_and_nothing_is_left(kafka, tmp_path):
    """Nothing this test started is left: no life, no registration; the one process allowed to stay
    is multiprocessing's fork server (one per interpreter, with its resource tracker: kept on purpose
    for the next process, helpers.core.processes.kept). What other tests of the session left is not this test's to judge
    (tests/test_processes.py checks that nothing but that server outlives the course processes)."""
    before = _children()
    path = _write(tmp_path, SOLUTION)
    db_path = tmp_path / "orders.db"
    db = open_db(db_path)
    load_fix(path).setup(db)
    db.execute(roles.ORDERS_TABLE)
    db.commit()
    config = {"path": str(path), "db": str(db_path), "run": "t", "topic": "orders", "start": 0, "count": 50}
    with crashes.CrashLab(kafka) as lab:
        calm = lab.life("writer", config)
        assert calm.outcome == "finished" and calm.units == 50 and calm.ops == 50 * 4  # BEGIN, 2 INSERTs, COMMIT
        assert calm.signal is None
        killed = lab.life("writer", {**config, "start": 100}, crashes.Kill("op", 7))
        assert killed.killed and killed.signal == signal.SIGKILL
        timed = lab.life("writer", {**config, "start": 200, "count": 10_000}, crashes.Kill("time", 0.05))
        assert timed.killed and timed.signal == signal.SIGKILL
        pids = [calm.pid, killed.pid, timed.pid]
    # before op 7, the second order's INSERT INTO outbox: the first order committed, the second rolled back
    assert db.execute("SELECT COUNT(*) FROM orders WHERE order_id LIKE 'order-t-001%'").fetchone()[0] == 1
    left = {pid: command for pid, command in _children().items() if pid not in before}
    assert not set(pids) & set(_children()), f"a life is still running: {pids}"
    assert set(left) <= processes.kept(), f"this test left processes behind: {left}"
    assert not [e for e in lifecycle.running() if e.kind in ("process", "crash-harness")]


def test_the_solution_notebook_writes_its_file_privately_and_publishes_it_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = checks.lab6_private_folder()
    private = Path.cwd()
    assert here == tmp_path and private != tmp_path
    Path("learner_fix.py").write_text("x = 1\n")
    published = checks.lab6_publish_fix(here)
    assert published == tmp_path / "learner_fix.py" and published.read_text() == "x = 1\n"
    assert Path.cwd() == tmp_path and [p.name for p in tmp_path.iterdir()] == ["learner_fix.py"]
    assert not private.exists()


# --------------------------------------------------------------------------- the drill


def test_the_drill_counts_the_whole_fix_under_fire(kafka, tmp_path):
    drill = checks.lab6_drill(kafka, _write(tmp_path, SOLUTION), orders=60, seed=3, time_scale=0.1, kills=2)
    assert drill.committed >= 55 and drill.published == drill.committed and drill.charged == drill.committed
    assert drill.lost == drill.invented == drill.charged_twice == 0
    assert drill.kills >= 1 and "seed 3" in str(drill)
    with pytest.raises(ValueError, match="orders"):
        checks.lab6_drill(kafka, tmp_path / "learner_fix.py", orders=0)


def test_the_drill_sees_a_fix_that_charges_twice(kafka, tmp_path):
    """Not vacuous: a relay that publishes every row twice and a consumer that never deduplicates."""
    source = _replace(_replace(SOLUTION, """
        def relay(db, producer, *, limit=100):
            rows = db.execute("SELECT id, topic, key, value FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            for row_id, topic, key, value in rows:
                producer.send(topic, key=key, value=value).get(timeout=10)
                producer.send(topic, key=key, value=value).get(timeout=10)
                with db:
                    db.execute("UPDATE outbox SET published_at = ? WHERE id = ?", (time.time(), row_id))
            return len(rows)
        """), """
        def process_once(db, event_id, apply):
            with db:
                apply(db)
            return True
        """)
    drill = checks.lab6_drill(kafka, _write(tmp_path, source), orders=30, seed=4, time_scale=0.1, kills=0)
    assert drill.committed == 30 and drill.repeats >= 30 and drill.charged_twice == 30 and drill.kills == 0


# --------------------------------------------------------------------------- the capstone's side of the contract


def test_the_capstone_gives_the_fix_a_connection_where_with_db_is_one_transaction(tmp_path):
    """FIX_INTERFACE: Python's default transaction handling, as lab 6 teaches `with db:`; in autocommit mode the
    lab's own solution would commit the order and its outbox row separately."""
    from helpers.capstone import workers

    fix = load_fix(_write(tmp_path, SOLUTION))
    for autocommit, begins in ((False, ["BEGIN DEFERRED", "COMMIT"]), (True, [])):
        db = workers.connect(str(tmp_path / f"orders-{autocommit}.db"), autocommit=autocommit)
        fix.setup(db)
        db.execute(roles.ORDERS_TABLE)
        trace: list[str] = []
        db.set_trace_callback(trace.append)
        fix.save_with_outbox(db, roles.write_order("o-1", 1.0), "orders", b"o-1", b"{}", "e-1")
        assert [s.strip() for s in trace if s.startswith(("BEGIN", "COMMIT"))] == begins, trace


def test_the_capstone_does_not_take_a_file_that_still_has_the_todo_stubs(tmp_path):
    from helpers.capstone.fixswitch import choose_fix

    _write(tmp_path, _file_from(LEARNER_NOTEBOOK))
    choice = choose_fix(tmp_path)
    assert not choice.is_learners and "save_with_outbox() still has lab 6's TODO stub" in choice.message
    _write(tmp_path, SOLUTION)
    assert choose_fix(tmp_path).is_learners
