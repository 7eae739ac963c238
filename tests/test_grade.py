"""``python -m helpers grade``: submissions scored as their answers deserve (issue 20, item 2).

The unit tests build graded notebooks and gradebooks without a kernel; one test grades a
mix of lab 2 submissions for real (kernels, each with its own embedded broker) and checks
every total against what the submission deserves."""
from __future__ import annotations

import copy
import csv
import json
import shutil

import nbformat
import psutil
import pytest

from helpers.checks.feedback import CheckResult
from helpers.core import progress, verdicts
from helpers.kafka.embedded import ENV_STATE_DIR
from helpers.services import faults
from helpers.tooling import examiner, grade, marks, samples, submission
from helpers.tooling.cli import main
from helpers.tooling.paths import ROOT

pytestmark = pytest.mark.timeout(600)

LAB = 2
LEARNER = ROOT / "labs" / "02_from_calls_to_events.ipynb"
SOLUTION = ROOT / "labs" / "solutions" / "02_from_calls_to_events.ipynb"


def _cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


# =========================================================================== the graded notebook

def test_answers_come_from_the_submission_and_every_other_cell_from_the_course():
    course = nbformat.read(LEARNER, as_version=4)
    answer = _cell(nbformat.read(SOLUTION, as_version=4), "02-007").source
    mine = copy.deepcopy(course)
    _cell(mine, "02-007").source = answer                                  # task 1 answered
    _cell(mine, "02-008").source = 'print("[Lab 2 · envelope] Passed")'     # its check cell edited
    _cell(mine, "02-002").source = "TIME_SCALE = 0.01\nN_ORDERS = 1"      # the parameters edited
    _cell(mine, "02-025").source = "payments_lag = 0"                     # a demo's assertion edited
    helper = nbformat.v4.new_code_cell("def my_helper():\n    return 42", id="my-helper")
    mine.cells.insert(mine.cells.index(_cell(mine, "02-007")) + 1, helper)
    mine.cells.remove(_cell(mine, "02-019"))                              # task 3's answer cell deleted

    graded = submission.assemble(mine, LAB)
    cells = {c.get("id"): c for c in graded.nb.cells}
    ids = [c.get("id") for c in graded.nb.cells]
    first = graded.nb.cells[0]
    assert "__course_examiner__.arm(2, reruns=1)" in first.source and "grader" in first.metadata["tags"]
    assert cells["02-007"].source == answer                                # the learner's answer
    assert ids[ids.index("02-007") + 1] == "my-helper"                     # their own cell, where they put it
    for course_cell in ("02-002", "02-025", "02-003", "02-017"):           # the course's, whatever was edited
        assert cells[course_cell].source == _cell(course, course_cell).source
    assert "02-019" not in cells and any("task 3" in n for n in graded.notes)
    check = cells["02-008"].source
    assert "Passed" not in check and check.startswith("__course_examiner__.grade('envelope', ")
    assert "__course_examiner__.check('envelope')(to_event, stop=False, quiet=True)" in check
    assert graded.nonces["02-008"] in check and len(set(graded.nonces.values())) == 3
    assert [t.check for t in graded.tasks] == list(progress.LABS[LAB].checks)
    assert [t.title for t in graded.tasks] == ["the envelope", "the producer", "the consumer"]
    assert graded.flags == ["cell 02-007 is the course's solution, character for character"]


@pytest.mark.parametrize("lab", [1, 3, 4, 5, 7])
def test_every_lab_can_be_put_together_and_its_check_cells_compile(lab):
    course = nbformat.read(submission.course_notebook(lab), as_version=4)
    graded = submission.assemble(course, lab)
    rewritten = [c for c in graded.nb.cells if "check" in c.metadata.get("tags", [])]
    assert len(rewritten) == len(progress.LABS[lab].checks) == len(graded.tasks)
    for cell in rewritten:
        compile(cell.source, cell.id, "exec")
        assert "stop=False, quiet=True" in cell.source and "checks." not in cell.source
    assert all(t.answers for t in graded.tasks)


def test_a_broken_or_foreign_notebook_is_rejected_saying_why(tmp_path):
    cases = {"truncated.ipynb": LEARNER.read_text()[:500], "text.ipynb": "my answers: 42",
             "other.ipynb": json.dumps({"cells": [], "nbformat": 3})}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(submission.Rejected, match="not a notebook") as rejected:
            submission.read(tmp_path / name)
        assert rejected.value.kind == "broken"
    (tmp_path / "binary.ipynb").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(submission.Rejected, match="not text"):
        submission.read(tmp_path / "binary.ipynb")
    lab3 = nbformat.read(submission.course_notebook(3), as_version=4)
    with pytest.raises(submission.Rejected, match="made from labs/sources/03") as foreign:
        submission.assemble(lab3, LAB)
    assert foreign.value.kind == "foreign"
    blank = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    with pytest.raises(submission.Rejected, match="shares 0 of"):
        submission.assemble(blank, LAB)


def test_flags_name_learner_code_that_reaches_into_the_grading():
    course = nbformat.read(LEARNER, as_version=4)
    solution = nbformat.read(SOLUTION, as_version=4)
    cells = [nbformat.v4.new_code_cell(src, id=f"c{i}") for i, src in enumerate([
        "from helpers.core import progress\nprogress.record(2, 'envelope')",
        "checks.check_lab2_producer = lambda *a, **k: 'Passed'",
        "kafka = None",
        "import os\nos.environ['COURSE_PROGRESS_FILE'] = '/tmp/x'",
        "def to_event(order):\n    return order",                  # an answer of their own: fine
        "import collections\nfrom helpers import checks",            # the setup's imports again: fine
    ])]
    cells.append(copy.deepcopy(_cell(solution, "02-013")))
    found = submission.flags(cells, course, solution)
    text = "\n".join(found)
    assert "c0 refers to `progress.record(`" in text and "c0 refers to `from helpers.core import progress`" in text
    assert "c1 sets `checks.check_lab2_producer`" in text and "c2 sets `kafka`" in text
    assert "c3 refers to `COURSE_PROGRESS_FILE`" in text
    assert "cell 02-013 is the course's solution" in text
    assert "c4" not in text and "c5" not in text


def test_a_record_the_check_did_not_write_scores_nothing():
    def output(nonce):
        return {"output_type": "display_data", "data": {examiner.MIME: {"nonce": nonce, "status": "passed"}},
                "metadata": {}}
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [output("abc")]
    assert grade._record(cell, "abc")[0]["status"] == "passed"
    cell.outputs = [output("abc"), output("abc")]                  # the learner displayed one more
    record, why = grade._record(cell, "abc")
    assert record is None and "forged" in why
    cell.outputs = [output("guessed")]
    assert "forged" in grade._record(cell, "abc")[1]
    cell.outputs = [{"output_type": "error", "ename": "CellTimeout", "evalue": "ran over", "traceback": []}]
    assert grade._record(cell, "abc") == (None, "the check did not finish (CellTimeout: ran over)")


# =========================================================================== the examiner, in the kernel

def _busy(window):
    return verdicts.Machine(window, 0.9 if window else None, 0.0 if window else None, 3.0, "of the check")


def test_a_check_that_fails_on_a_busy_machine_runs_again_and_says_so(monkeypatch):
    shown = []
    monkeypatch.setattr(examiner, "display", lambda data, raw: shown.append(data[examiner.MIME]))
    monkeypatch.setattr(examiner.feedback, "show", lambda result: None)
    examiner.arm(LAB, reruns=1)
    outcomes = iter([CheckResult(LAB, "producer", False, "Not yet: slow", "not yet"),
                     CheckResult(LAB, "producer", True, "Passed: fine")])
    machines = iter([_busy(2.0), _busy(None)])
    monkeypatch.setattr(examiner.verdicts, "assess", lambda first, last, since: next(machines))
    examiner.grade("producer", "n1", lambda: next(outcomes))
    record = shown[-1]
    assert record["passed"] and record["nonce"] == "n1" and len(record["attempts"]) == 2
    assert record["attempts"][0]["busy"] and "looked BUSY" in record["attempts"][0]["machine"]
    # a failure on an idle machine, or one too quick to be measured (a stub), counts at once
    for machine in (verdicts.Machine(2.0, 0.05, 0.0, 0.2, "x"), _busy(None)):
        monkeypatch.setattr(examiner.verdicts, "assess", lambda first, last, since, m=machine: m)
        examiner.grade("producer", "n2", lambda: CheckResult(LAB, "producer", False, "Not yet: no", "not yet"))
        assert not shown[-1]["passed"] and len(shown[-1]["attempts"]) == 1
    # a check whose arguments the notebook never defined is "not yet", saying so
    examiner.grade("consumer", "n3", lambda: examiner.check("consumer")(undefined_name))  # noqa: F821
    assert shown[-1]["status"] == "not yet" and "NameError" in shown[-1]["message"]


def test_the_kept_checks_are_those_of_before_the_learner_code():
    from helpers import checks

    examiner.arm(LAB)
    kept = examiner.check("envelope")
    original = checks.check_lab2_envelope
    try:
        checks.check_lab2_envelope = lambda *a, **k: "Passed"
        assert examiner.check("envelope") is kept is original
    finally:
        checks.check_lab2_envelope = original
    with pytest.raises(ValueError, match="lab must be"):
        examiner.arm(99)


# =========================================================================== the gradebook

def _outcome(name, statuses, status="graded", why=""):
    scores = [marks.Score(i + 1, f"task {i + 1}", check, 1.0, s, f"{'Passed' if s == 'passed' else 'Not yet'}: {check}")
              for i, (check, s) in enumerate(zip(progress.LABS[LAB].checks, statuses))]
    return marks.Outcome(name, f"{name}.ipynb", LAB, status, scores, why, seconds=12.0)


def test_the_gradebook_a_gradescope_results_file_and_a_feedback_page_each(tmp_path):
    done = _outcome("ada", ["passed"] * 3)
    half = _outcome("grace", ["passed", "not yet", "error"])
    half.scores[1].attempts = [{"status": "not yet", "busy": True, "machine": "looked BUSY"}] * 2
    half.flags = ["cell x refers to `progress.record(`"]
    broken = _outcome("linus", [marks.NOT_GRADED] * 3, "broken", "not a notebook: not valid JSON")
    path = marks.write([half, broken, done], tmp_path)
    rows = list(csv.DictReader(path.open()))
    assert [r["learner"] for r in rows] == ["ada", "grace", "linus"]
    assert list(rows[0])[:6] == ["learner", "status", "envelope", "producer", "consumer", "total"]
    assert [(r["total"], r["max"]) for r in rows] == [("3", "3"), ("1", "3"), ("0", "3")]
    assert rows[1]["reruns"] == "producer (ran 2x: not yet)" and "progress.record" in rows[1]["flags"]
    assert rows[2]["status"] == "broken" and "not valid JSON" in rows[2]["notes"]
    results = json.loads((tmp_path / "grace" / "results.json").read_text())
    assert results["score"] == 1.0 and results["execution_time"] == 12.0 and len(results["tests"]) == 3
    for test in results["tests"]:
        assert {"name", "score", "max_score", "output", "status"} <= set(test)
    assert results["tests"][0] == {**results["tests"][0], "name": "Task 1: task 1", "score": 1.0, "max_score": 1.0,
                                   "status": "passed", "output": "Passed: envelope"}
    assert "ran 2 times" in results["tests"][1]["output"] or "run 2 times" in results["tests"][1]["output"]
    page = (tmp_path / "linus" / "feedback.html").read_text()
    assert "0 of 3 points" in page and "not valid JSON" in page and page.count("<section>") == 3
    assert "Passed: envelope" in (tmp_path / "ada" / "feedback.html").read_text()
    text = marks.table([half, broken, done])
    assert "3 submissions (2 graded); totals from 0 to 3, 3 different" in text


def test_learners_are_named_by_their_file_or_folder(tmp_path):
    (tmp_path / "ada.ipynb").write_text("{}")
    (tmp_path / "grace" / "work").mkdir(parents=True)
    (tmp_path / "grace" / "work" / "scratch.ipynb").write_text("{}")
    (tmp_path / "grace" / "02_from_calls_to_events.ipynb").write_text("{}")
    (tmp_path / "linus").mkdir()
    (tmp_path / "notes.txt").write_text("not a submission")
    found = grade.find_submissions(tmp_path, LAB)
    assert [(n, p.relative_to(tmp_path).as_posix()) for n, p in found] == [
        ("ada", "ada.ipynb"), ("grace", "grace/02_from_calls_to_events.ipynb"), ("linus", "linus")]


def test_the_time_scale_must_keep_the_plans_margins(monkeypatch):
    assert grade.check_time_scale(2, 1.0) == []
    assert all("ok" in m for m in grade.check_time_scale(1, 1.0)) and grade.check_time_scale(7, 1.0)
    broken = faults.Timings("lab 1", 1.0, {"hang": 1.0}, (faults.Margin("a hang against the timeout", 1.0, 1.2, 2),))
    monkeypatch.setattr(faults, "lab1_timings", lambda ts: broken)
    with pytest.raises(ValueError, match="a hang against the timeout"):
        grade.check_time_scale(1, 1.0)


def test_each_run_gets_its_own_broker_unless_the_teacher_chose_a_kafka(tmp_path, monkeypatch):
    for name in ("COURSE_KAFKA", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_KAFKA_FILE", str(tmp_path / "no-setting"))
    assert grade.kafka_setting() == {"COURSE_KAFKA": "embedded"}   # never the Kafka on 127.0.0.1:9092
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.school.edu:9092")
    assert grade.kafka_setting() == {}                             # the teacher's cluster, for every run
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    (tmp_path / "no-setting").write_text("docker\n")
    assert grade.kafka_setting() == {}


def test_the_command_line_names_a_bad_option(tmp_path, capsys):
    assert main(["grade", str(tmp_path), "--lab", "99"]) == 2
    assert "--lab must be one of" in capsys.readouterr().err
    assert main(["grade", str(tmp_path / "nothing"), "--lab", "2"]) == 2
    assert main(["grade", str(tmp_path), "--lab", "2", "--points", "speed=2"]) == 2
    assert "'speed' is not a check of lab 2" in capsys.readouterr().err
    assert main(["grade", str(tmp_path), "--lab", "2", "--jobs", "0"]) == 2
    assert main(["grade", str(tmp_path), "--lab", "2"]) == 2              # an empty folder: no notebooks
    assert "found none" in capsys.readouterr().err


# =========================================================================== for real

def _ours() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if "/grade-" in proc.environ().get(ENV_STATE_DIR, ""):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


GRADED_FOR_REAL = ("solved-1", "half-06-tasks-23", "unsolved-1", "own-cell", "tampered-check-cells",
                   "tampered-progress", "tampered-half", "broken-truncated", "foreign-lab")


@pytest.mark.slow  # kernels, each with its own broker: about 30 s
def test_mixed_submissions_score_as_their_answers_deserve(tmp_path):
    made = tmp_path / "samples"
    expected = samples.make_samples(made, LAB)
    assert len(expected) == 30 and len({e["total"] for e in expected.values()}) == 4
    subs = tmp_path / "submissions"
    subs.mkdir()
    for name in GRADED_FOR_REAL:
        source = made / name if (made / name).is_dir() else made / f"{name}.ipynb"
        (shutil.copytree if source.is_dir() else shutil.copy)(source, subs / source.name)
    before = progress.path().read_text() if progress.path().exists() else ""
    out = tmp_path / "grades"
    outcomes = grade.grade_all(subs, grade.Options(LAB), out, jobs=2)
    got = {o.learner: o for o in outcomes}
    assert sorted(got) == sorted(GRADED_FOR_REAL)
    for name, outcome in got.items():
        assert outcome.status == expected[name]["status"], (name, outcome.why, outcome.notes)
        assert outcome.total == expected[name]["total"], (name, [(s.check, s.message) for s in outcome.scores])
        if outcome.status == "graded":
            assert {s.check: int(s.points) for s in outcome.scores} == expected[name]["points"], name
            assert (out / name / "graded.ipynb").is_file()
        results = json.loads((out / name / "results.json").read_text())
        assert results["score"] == outcome.total and len(results["tests"]) == 3
        assert (out / name / "feedback.html").is_file()
    # the tampered ones earned what their answers deserve, and the teacher is told where to look
    assert got["tampered-progress"].total == got["tampered-check-cells"].total == 0
    assert any("progress.record" in f for f in got["tampered-progress"].flags)
    assert got["tampered-half"].total == 1
    # after task 1 failed, the course's answer stood in for it: the producer, which calls
    # to_event, was scored on publish_orders alone
    half = {s.check: s for s in got["half-06-tasks-23"].scores}
    assert half["envelope"].substituted and half["producer"].status == "passed"
    assert "still has the TODO stub" in half["envelope"].message
    # nothing the learners' cells wrote reached a progress file anyone reads; nothing left running
    assert (progress.path().read_text() if progress.path().exists() else "") == before
    assert not _ours()
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert len(rows) == len(GRADED_FOR_REAL) and {r["total"] for r in rows} == {"0", "1", "2", "3"}
