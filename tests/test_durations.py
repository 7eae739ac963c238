"""Every duration and memory figure comes from docs/durations.json (issue 20, "A guide a teacher can
teach from"): each notebook's header, lesson 0's course map, README's and the guide's tables, and the
verdict lines the instructor notes quote agree with the file (``python -m helpers durations check``);
an edited place is caught and ``apply`` puts it back; ``update`` rebuilds the file from a learners'
pass; and the test suite's own pass holds the file to a fresh run within the stated tolerance.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import coursefiles
import nbformat
import pytest

from helpers.tooling import UsageError, durations
from helpers.tooling.links import notebooks as course_notebooks
from helpers.tooling.paths import ROOT


def _copy_course(to: Path) -> Path:
    """The places the check reads, copied under ``to`` (notebooks without outputs: small)."""
    for folder in ("lessons", "labs", "docs"):
        shutil.copytree(ROOT / folder, to / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "site"))
    shutil.copy(ROOT / "README.md", to / "README.md")
    return to


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return _copy_course(tmp_path_factory.mktemp("course"))


@pytest.fixture
def copy(course, tmp_path) -> Path:
    """A fresh copy of the course for a test that edits it."""
    shutil.copytree(course, tmp_path / "c")
    return tmp_path / "c"


def _edit_first_cell(path: Path, old: str, new: str) -> None:
    nb = nbformat.read(path, as_version=4)
    assert old in nb.cells[0].source, (path, old)
    nb.cells[0].source = nb.cells[0].source.replace(old, new, 1)
    path.write_text(nbformat.writes(nb) + "\n")


# ------------------------------------------------------------------ the committed file and every place

def test_every_place_agrees_with_the_durations_file():
    problems = durations.check()
    assert not problems, ("places that disagree with docs/durations.json (python -m helpers durations apply):\n  "
                          + "\n  ".join(problems))


def test_the_file_has_every_notebook_of_the_course_with_its_figures():
    data = durations.load()
    keys = [p.relative_to(ROOT).as_posix() for p in course_notebooks()]
    assert list(data["notebooks"]) == keys, "the file lists the course's notebooks in course order"
    for key, entry in data["notebooks"].items():
        assert entry["minutes"] > 0 and entry["seconds"] > 0 and entry["peak_memory_mb"] > 0, (key, entry)
        assert entry["measured_as"] == durations.measured_as(key)
    run = data["pass"]
    assert run["time_scale"] == 1.0 and run["date"][:4].isdigit() and run["machine"]["cpus"]
    assert run["load_average_1m"]["start"] is not None, "the pass's load says what its seconds mean"


def test_each_estimate_leaves_room_for_running_the_notebook():
    """A learner's time can never be shorter than the cells' own run time plus a few minutes of reading."""
    for key, entry in durations.load()["notebooks"].items():
        assert entry["minutes"] >= entry["seconds"] / 60 + 5, (key, entry)


def test_every_lesson_with_claims_has_its_verdicts_in_the_file():
    verdicts = durations.load()["verdicts"]
    for path in coursefiles.LESSON_NOTEBOOKS:
        claims = {t[len("claim-"):] for c in nbformat.read(path, as_version=4).cells
                  for t in c.metadata.get("tags", []) if t.startswith("claim-")}
        found = {line.split()[0] for line in verdicts.get(coursefiles.rel(path), [])}
        assert claims <= found, f"{coursefiles.rel(path)}: no verdict line in the file for {sorted(claims - found)}"


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
def test_the_agreement_check_parses_every_place_it_names(course):
    """The check reads real numbers: each header, each map row, both tables, each quoted verdict."""
    data = durations.load(course)
    for key in data["notebooks"]:
        for path in durations.notebook_files(key, course):
            assert durations.header_numbers(nbformat.read(path, as_version=4).cells[0].source) is not None, path
    welcome = nbformat.read(course / "lessons" / "00_welcome.ipynb", as_version=4)
    course_map = next(c.source for c in welcome.cells if c.source.startswith(durations.MAP_HEADING))
    rows = durations.MAP_ROW.findall(course_map)
    assert len(rows) == len(data["notebooks"]) and durations.MAP_TOTAL.search(course_map)
    for name, rel in durations.PAGES.items():
        assert durations.block((course / rel).read_text(), name) is not None, rel
    quotes = durations.QUOTE.findall((course / "docs" / "instructor-notes.md").read_text())
    assert len(quotes) >= 15, "the notes answer misconceptions with the course's measured verdicts"


def _bump_header(path: Path) -> None:
    """One more minute in the notebook's ``**Duration:**`` line."""
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = durations.HEADER.sub(lambda m: f"{m[1]}{int(m[2]) + 1}{m[3]}{m[4]}{m[5]}",
                                              nb.cells[0].source, count=1)
    path.write_text(nbformat.writes(nb) + "\n")


def _bump_map_row(path: Path) -> None:
    """One more second in the first row of lesson 0's map."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.source.startswith(durations.MAP_HEADING))
    cell.source = durations.MAP_ROW.sub(lambda m: f"{m[1]}{m[2]}{m[3]}{m[4]}{m[5]}{int(m[6]) + 1}{m[7]}",
                                        cell.source, count=1)
    path.write_text(nbformat.writes(nb) + "\n")


def _bump_first_quote(path: Path) -> None:
    """A different number in the first verdict the notes quote."""
    text = path.read_text()
    quote = durations.QUOTE.search(text)
    assert quote is not None, path
    claim, _, rest = quote[1].partition(" holds: ")
    changed = claim + " holds: " + re.sub(r"\d", lambda d: str((int(d[0]) + 1) % 10), rest, count=1)
    path.write_text(text[:quote.start(1)] + changed + text[quote.end(1):])


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
@pytest.mark.parametrize(("place", "edit"), [
    ("a lesson's header", lambda c: _bump_header(c / "lessons" / "05_temporal_coupling.ipynb")),
    ("a generated lab's header", lambda c: _bump_header(c / "labs" / "solutions" / "04_drain_the_backlog.ipynb")),
    ("lesson 0's map", lambda c: _bump_map_row(c / "lessons" / "00_welcome.ipynb")),
    ("README's table", lambda c: _replace(c / "README.md", " MB | ", " MB | 1")),
    ("the guide's table", lambda c: _replace(c / "docs" / "teaching.md", "| **all", "| **every")),
    ("a quoted verdict", lambda c: _bump_first_quote(c / "docs" / "instructor-notes.md")),
])
def test_an_edited_place_is_caught_and_apply_puts_it_back(copy, place, edit):
    assert durations.check(copy) == []
    edit(copy)
    problems = durations.check(copy)
    assert problems, f"editing {place} went unnoticed"
    assert any("docs/durations.json says" in p for p in problems), problems
    durations.apply(copy)
    assert durations.check(copy) == [], f"apply did not restore {place}"


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _replace_in_notebook(path: Path, old: str, new: str) -> None:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if old in c.source)
    cell.source = cell.source.replace(old, new, 1)
    path.write_text(nbformat.writes(nb) + "\n")


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
def test_a_missing_row_or_header_is_named_and_left_to_a_person(copy):
    _replace_in_notebook(copy / "lessons" / "00_welcome.ipynb", "[Lesson 8: Embracing asynchrony]", "Lesson 8")
    _edit_first_cell(copy / "lessons" / "03_cascading_delays.ipynb", "**Duration:** about", "**Duration:** roughly")
    problems = durations.check(copy)
    assert any("no row for lessons/08_embracing_async.ipynb" in p for p in problems), problems
    assert any("lessons/03_cascading_delays.ipynb, first cell: says no" in p for p in problems), problems
    with pytest.raises(UsageError, match="fix these by hand"):
        durations.apply(copy)


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
def test_a_notebook_not_in_the_file_is_named_with_the_command_that_adds_it(copy):
    data = json.loads((copy / durations.FILE).read_text())
    del data["notebooks"]["labs/05_embrace_the_async.ipynb"]
    (copy / durations.FILE).write_text(json.dumps(data))
    problems = durations.check(copy)
    assert any(p.startswith("labs/05_embrace_the_async.ipynb: not in docs/durations.json")
               and "python -m helpers durations update" in p for p in problems), problems


# ------------------------------------------------------------------ the command that regenerates the file

def _fake_pass(folder: Path, root: Path, seconds: float, memory: float, broken: str | None = None) -> Path:
    """A learners' pass as learnerpass writes it: summary.json and executed notebooks with verdicts."""
    verdicts = durations.load(root)["verdicts"]
    ran = {}
    for path in course_notebooks(root):
        key = path.relative_to(root).as_posix()
        measured = durations.measured_as(key)
        ran[measured] = {"seconds": seconds, "ok": measured != broken, "error": "" if measured != broken else "boom",
                         "peak_memory_mb": memory}
        nb = nbformat.read(root / measured, as_version=4)
        lines = [claim + " holds: " + re.sub(r"\d", "7", rest)        # the same verdicts, other numbers
                 for claim, _, rest in (line.partition(" holds: ") for line in verdicts.get(key, []))]
        nb.cells.append(nbformat.v4.new_code_cell("print('verdicts')", outputs=[nbformat.v4.new_output(
            "stream", name="stdout", text="".join(line + "\n" for line in lines))]))
        (folder / measured).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / measured)
    summary = {"time_scale": 1.0, "kafka": "Kafka: a test", "seconds": seconds * len(ran), "workers": 2,
               "machine": {"cpus": 2, "cpu": "a test CPU", "memory_gb": 1.0, "platform": "Linux", "python": "3.11",
                           "load_average_1m": 0.5, "date": "2030-01-02 03:04:05 UTC"},
               "load_average_1m_after": 0.7, "notebooks": ran}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
def test_update_rebuilds_the_file_from_a_pass_and_rewrites_every_place(copy, tmp_path):
    before = durations.load(copy)
    run = _fake_pass(tmp_path / "pass", copy, seconds=42.0, memory=321.0)
    data, rewritten = durations.update(run, copy)
    assert {e["seconds"] for e in data["notebooks"].values()} == {42.0}
    assert {e["peak_memory_mb"] for e in data["notebooks"].values()} == {321}
    assert {k: e["minutes"] for k, e in data["notebooks"].items()} == \
        {k: e["minutes"] for k, e in before["notebooks"].items()}, "the estimates are kept"
    assert data["pass"]["date"].startswith("2030-01-02")
    assert data["pass"]["load_average_1m"] == {"start": 0.5, "end": 0.7}
    assert all(not re.search(r"[0-689]", line.split(" holds: ")[1]) for lines in data["verdicts"].values()
               for line in lines)
    assert rewritten and durations.check(copy) == []
    header = nbformat.read(copy / "lessons" / "04_asynchronous_events.ipynb", as_version=4).cells[0].source
    assert "(about 40 s of running at TIME_SCALE 1.0" in header
    assert "| 42.0 s | 321 MB |" in (copy / "README.md").read_text()
    assert "“C6 holds: send() returned in 777" in (copy / "docs" / "instructor-notes.md").read_text()


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
def test_update_records_the_spread_between_passes_and_the_guide_states_it(copy, tmp_path):
    first = _fake_pass(tmp_path / "one", copy, seconds=40.0, memory=300.0)
    second = _fake_pass(tmp_path / "two", copy, seconds=50.0, memory=330.0)
    data, _ = durations.update(first, copy, also=[second])
    assert data["spread"]["seconds"]["largest_ratio"] == 1.25
    assert data["spread"]["seconds"]["largest_difference_s"] == 10.0
    assert data["spread"]["peak_memory"]["largest_ratio"] == 1.1 and len(data["spread"]["passes"]) == 2
    assert "differed by at most 1.25x" in (copy / "docs" / "teaching.md").read_text()
    assert durations.check(copy) == []


@pytest.mark.slow  # copies the course and reads every notebook: a second or more
def test_update_refuses_a_pass_with_a_failed_notebook(copy, tmp_path):
    run = _fake_pass(tmp_path / "pass", copy, 10.0, 200.0, broken="labs/solutions/03_survive_the_outage.ipynb")
    with pytest.raises(UsageError, match=r"labs/solutions/03_survive_the_outage.ipynb: failed \(boom\)"):
        durations.update(run, copy)
    with pytest.raises(UsageError, match="run a learners' pass first"):
        durations.update(tmp_path / "nothing", copy)


def test_the_command_checks_and_exits_1_naming_the_fix(copy, monkeypatch, capsys):
    assert durations.main(["check"]) == 0
    monkeypatch.setattr(durations, "check", lambda root=copy: ["README.md: says x, docs/durations.json says y"])
    assert durations.main(["check"]) == 1
    out = capsys.readouterr().out
    assert "python -m helpers durations apply" in out and "README.md: says x" in out


@pytest.mark.parametrize(("seconds", "shown"), [(0.4, 1), (1.6, 2), (9.4, 9), (9.6, 10), (12.4, 10), (12.6, 15),
                                                 (83.0, 85)])
def test_run_times_are_stated_to_the_second_then_to_five(seconds, shown):
    assert durations.about_seconds(seconds) == shown


# ------------------------------------------------------------------ the tolerance, and a fresh pass

@pytest.mark.parametrize(("recorded", "fresh", "within"), [
    (40.0, 79.0, True), (40.0, 81.0, False),     # above: 2x (80 s) is wider than +30 s (70 s)
    (40.0, 11.0, True), (40.0, 9.0, False),      # below: -30 s (10 s) is wider than half (20 s)
    (100.0, 51.0, True), (100.0, 49.0, False),   # below a long notebook: half (50 s) is wider
    (5.0, 34.0, True), (5.0, 36.0, False),       # above a short notebook: +30 s (35 s) is wider
    (5.0, 0.5, True),
])
def test_the_tolerance_is_2x_or_30_s_whichever_is_wider(recorded, fresh, within):
    assert durations.within_tolerance(recorded, fresh, durations.SECONDS_FACTOR, durations.SECONDS_SLACK_S) is within


def test_the_tolerance_refuses_nonsense():
    with pytest.raises(ValueError, match="recorded and fresh"):
        durations.within_tolerance(float("nan"), 1.0, 2.0, 30.0)
    with pytest.raises(ValueError, match="recorded and fresh"):
        durations.within_tolerance(1.0, -1.0, 2.0, 30.0)


def test_the_file_agrees_with_a_fresh_learners_pass(learner_run, learner_notebook):
    """The test suite's own learners' pass: each notebook's seconds and peak memory within the tolerance
    of the committed file (the spread between passes is stated in docs/teaching.md)."""
    result = learner_run.result(learner_notebook)
    if not result["ok"]:
        pytest.skip(f"{learner_notebook} failed in the pass (test_learner_run says why)")
    entry = next((e for e in durations.load()["notebooks"].values() if e["measured_as"] == learner_notebook), None)
    fix = f"if the change is meant, regenerate the file: {durations.UPDATE}"
    assert entry is not None, f"{learner_notebook} is not in {durations.FILE}: {fix}"
    assert durations.within_tolerance(entry["seconds"], result["seconds"], durations.SECONDS_FACTOR,
                                      durations.SECONDS_SLACK_S), (
        f"{learner_notebook} ran {result['seconds']:.1f} s at time scale 1.0; {durations.FILE} says "
        f"{entry['seconds']:.1f} s (tolerance: {durations.SECONDS_FACTOR:g}x or {durations.SECONDS_SLACK_S:g} s, "
        f"whichever is wider); {fix}")
    assert durations.within_tolerance(entry["peak_memory_mb"], result["peak_memory_mb"], durations.MEMORY_FACTOR,
                                      durations.MEMORY_SLACK_MB), (
        f"{learner_notebook} peaked at {result['peak_memory_mb']:.0f} MB; {durations.FILE} says "
        f"{entry['peak_memory_mb']} MB (tolerance: {durations.MEMORY_FACTOR:g}x or {durations.MEMORY_SLACK_MB:g} MB, "
        f"whichever is wider); {fix}")
