"""The teacher's guide and the instructor notes (issue 20, "A guide a teacher can teach from").

- docs/instructor-notes.md has a section per lesson and lab of the course path, each with its
  objectives, misconceptions, discussion prompts, what to cut and (labs) the questions learners ask;
  a lab not written yet may be a stub that says so.
- Each notebook's "Check yourself" questions have an answer in its section, matched by number.
- docs/teaching.md's session plans start with a setup buffer, add up, and give every lab at least its
  own estimate from docs/durations.json (a lesson given less names what is cut).
- The hub recipe names no home folder, and its ``.pth`` line makes ``helpers`` importable from the
  copy nbgitpuller pulls into any home.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import coursefiles
import nbformat
import pytest

from helpers.tooling import durations
from helpers.tooling.links import COURSE_PATH
from helpers.tooling.paths import DOCS, ROOT

NOTES = DOCS / "instructor-notes.md"
GUIDE = DOCS / "teaching.md"
#: every section of the notes has these subsections (labs also "Questions learners ask")
SUBSECTIONS = ("Objectives", "Misconceptions", "Discussion prompts", "What to cut when short", "Check yourself")
LAB_SUBSECTIONS = ("Questions learners ask",)
SETUP_MIN = 10  # minutes: the least a setup buffer gives a room to open its links

NOTEBOOK_HEADING = re.compile(r"^## (Lesson|Lab) (\d+)\b.*$", re.MULTILINE)
SUBHEADING = re.compile(r"^### (.+?)\s*$", re.MULTILINE)
NUMBERED = re.compile(r"^\s*(\d+)\.\s", re.MULTILINE)
DETAILS = re.compile(r"<details>.*?</details>", re.DOTALL)


# ------------------------------------------------------------------ reading the notes and the notebooks

def course_entries() -> list[tuple[str, str, Path | None]]:
    """(kind "Lesson"/"Lab", number without zeros, its notebook or None) for every step of COURSE_PATH."""
    out = []
    for folder, number in COURSE_PATH:
        found = [p for p in (coursefiles.LESSON_NOTEBOOKS if folder == "lessons" else coursefiles.LAB_SOURCES)
                 if p.name.startswith(f"{number}_")]
        out.append(("Lesson" if folder == "lessons" else "Lab", str(int(number)), found[0] if found else None))
    return out


def sections(text: str) -> dict[tuple[str, str], str]:
    """The notes' ``## Lesson N`` / ``## Lab N`` sections: (kind, number) -> text up to the next one."""
    heads = list(NOTEBOOK_HEADING.finditer(text))
    return {(m[1], m[2]): text[m.end():(heads[i + 1].start() if i + 1 < len(heads) else len(text))]
            for i, m in enumerate(heads)}


def subsections(section: str) -> dict[str, str]:
    """A section's ``### Name`` subsections: name -> text."""
    heads = list(SUBHEADING.finditer(section))
    return {m[1]: section[m.end():(heads[i + 1].start() if i + 1 < len(heads) else len(section))]
            for i, m in enumerate(heads)}


def numbers(text: str) -> list[int]:
    """The numbers of a numbered list (``1. ...``), outside ``<details>`` blocks."""
    return [int(n) for n in NUMBERED.findall(DETAILS.sub("", text))]


def check_yourself(path: Path) -> list[int]:
    """The numbers of a notebook's "Check yourself" questions (its ``## Check yourself`` part of a cell)."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown" and "## Check yourself" in cell.source:
            part = cell.source.split("## Check yourself", 1)[1]
            return numbers(re.split(r"^## ", part, maxsplit=1, flags=re.MULTILINE)[0])
    return []


def unanswered(questions: list[int], notes_section: str) -> list[int]:
    """The questions with no answer in the section's "Check yourself" list."""
    answered = set(numbers(subsections(notes_section).get("Check yourself", "")))
    return [q for q in questions if q not in answered]


# ------------------------------------------------------------------ the notes

def test_every_step_of_the_course_has_its_notes_in_course_order():
    text = NOTES.read_text()
    found = [(m[1], m[2]) for m in NOTEBOOK_HEADING.finditer(text)]
    assert found == [(kind, number) for kind, number, _ in course_entries()], found


@pytest.mark.parametrize(("kind", "number", "path"), course_entries(), ids=lambda v: str(v) if v else "-")
def test_each_section_has_what_a_teacher_needs(kind, number, path):
    section = sections(NOTES.read_text())[(kind, number)]
    if path is None:  # a lab that is not written yet (lab 6): a stub that says what it does
        assert "TODO" in section and len(section.split()) > 20, f"{kind} {number}: a stub naming what the lab does"
        return
    parts = subsections(section)
    wanted = SUBSECTIONS + (LAB_SUBSECTIONS if kind == "Lab" else ())
    missing = [name for name in wanted if len(parts.get(name, "").split()) < 5]
    assert not missing, f"{kind} {number}: no (or an empty) ### {', ### '.join(missing)}"
    assert "TODO" not in section, f"{kind} {number}: the notebook exists, so its notes are due"


@pytest.mark.parametrize("path", coursefiles.LESSON_NOTEBOOKS + coursefiles.LAB_SOURCES, ids=coursefiles.rel)
def test_every_check_yourself_question_has_an_answer_in_the_notes(path):
    questions = check_yourself(path)
    assert questions, f"{coursefiles.rel(path)}: no numbered 'Check yourself' questions found"
    kind = "Lab" if path.parent.name == "sources" else "Lesson"
    section = sections(NOTES.read_text()).get((kind, str(int(path.name[:2]))))
    assert section is not None, f"{coursefiles.rel(path)}: no section in {NOTES.name}"
    missing = unanswered(questions, section)
    assert not missing, f"{coursefiles.rel(path)}: questions {missing} have no answer under ### Check yourself"
    extra = sorted(set(numbers(subsections(section)["Check yourself"])) - set(questions))
    assert not extra, f"{coursefiles.rel(path)}: the notes answer questions {extra} the notebook does not ask"


def test_the_coverage_check_sees_a_question_without_an_answer():
    notes = "\n### Check yourself\n\n1. **Why?** Because.\n2. **How?** So.\n\n### Other\n\n3. not an answer\n"
    assert unanswered([1, 2], notes) == []
    assert unanswered([1, 2, 3], notes) == [3]
    assert numbers("1. a question\n<details><summary>Answer</summary>\n2. not a question\n</details>\n2. b") == [1, 2]


# ------------------------------------------------------------------ the session plans

PLAN_HEAD = "| start | minutes | what |"
TEACHING_ROW = re.compile(r"^\*\*(Lesson|Lab) (\d+)\*\*")


def plans(text: str) -> list[list[tuple[int, int | None, str]]]:
    """Every table under "## Session plans" with the head ``| start | minutes | what |``: its rows as
    (start in minutes, minutes or None on the last row, what)."""
    part = text.split("## Session plans", 1)[1].split("\n## ", 1)[0]
    tables: list[list[tuple[int, int | None, str]]] = []
    rows: list[tuple[int, int | None, str]] | None = None
    for line in part.splitlines():
        if line.strip() == PLAN_HEAD:
            rows = []
            tables.append(rows)
        elif rows is not None and line.startswith("|") and not line.startswith("|---"):
            start, minutes, what = (cell.strip() for cell in line.strip().strip("|").split("|", 2))
            hours, mins = start.split(":")
            rows.append((60 * int(hours) + int(mins), int(minutes) if minutes else None, what))
        elif rows is not None and not line.startswith("|"):
            rows = None
    return tables


def plan_problems(table: list[tuple[int, int | None, str]], estimates: dict[tuple[str, str], int]) -> list[str]:
    """What is wrong with one plan: no setup buffer first, rows that do not add up, a lab slot shorter
    than the lab's estimate, a lesson cut short without saying what is cut, no end."""
    problems = []
    if not table or not table[0][2].startswith(("Setup buffer", "Relaunch buffer")) or (table[0][1] or 0) < SETUP_MIN:
        problems.append(f"the plan must start with a setup buffer of at least {SETUP_MIN} minutes")
    if not table or table[-1][1] is not None:
        problems.append("the last row is the end, with no minutes")
    for (start, minutes, what), following in zip(table, table[1:]):
        if minutes is None:
            problems.append(f"{what!r}: only the last row has no minutes")
            continue
        if start + minutes != following[0]:
            problems.append(f"{what!r} starts at {start // 60}:{start % 60:02d} and lasts {minutes} min, "
                            f"but the next row starts at {following[0] // 60}:{following[0] % 60:02d}")
        row = TEACHING_ROW.match(what)
        if row is None:
            continue
        estimate = estimates.get((row[1], row[2]))
        if estimate is None:
            if "TODO" not in what:
                problems.append(f"{what!r}: {row[1]} {row[2]} is not in {durations.FILE}")
        elif minutes < estimate and (row[1] == "Lab" or "cut:" not in what):
            problems.append(f"{what!r}: {minutes} min, shorter than its own estimate of {estimate} min"
                            + ("" if row[1] == "Lab" else " (say what is cut: 'cut: ...')"))
    return problems


def estimates() -> dict[tuple[str, str], int]:
    """(kind, number) -> the notebook's estimate in minutes, from docs/durations.json."""
    out = {}
    for key, entry in durations.load()["notebooks"].items():
        folder, _, name = key.partition("/")
        out[("Lab" if folder == "labs" else "Lesson", str(int(name[:2])))] = entry["minutes"]
    return out


def test_every_session_plan_has_a_setup_buffer_adds_up_and_gives_each_lab_its_estimate():
    tables = plans(GUIDE.read_text())
    assert len(tables) >= 10, "the taster, seven sessions and two days"
    known = estimates()
    problems = [f"plan {i + 1}: {p}" for i, table in enumerate(tables) for p in plan_problems(table, known)]
    assert not problems, "\n".join(problems)
    planned = {(m[1], m[2]) for table in tables for _, _, what in table if (m := TEACHING_ROW.match(what))}
    assert {k for k in known if k[0] == "Lab"} <= planned, "every lab has a slot in some plan"


def test_the_slot_check_catches_a_short_lab_a_gap_and_a_missing_buffer():
    known = {("Lab", "1"): 45, ("Lesson", "2"): 40}
    good = [(0, 10, "Setup buffer"), (10, 45, "**Lab 1**: Break the chain"), (55, 40, "**Lesson 2**: x"),
            (95, None, "End")]
    assert plan_problems(good, known) == []
    short = [(0, 10, "Setup buffer"), (10, 35, "**Lab 1**: Break the chain"), (45, None, "End")]
    assert any("shorter than its own estimate of 45" in p for p in plan_problems(short, known))
    cut = [(0, 10, "Setup buffer"), (10, 25, "**Lesson 2**: sections 1-4"), (35, None, "End")]
    assert any("say what is cut" in p for p in plan_problems(cut, known))
    assert plan_problems([(0, 10, "Setup buffer"), (10, 25, "**Lesson 2**: (cut: the breaker)"), (35, None, "End")],
                         known) == []
    gap = [(0, 10, "Setup buffer"), (15, 45, "**Lab 1**: x"), (60, None, "End")]
    assert any("next row starts at 0:15" in p for p in plan_problems(gap, known))
    assert any("setup buffer" in p for p in plan_problems([(0, 45, "**Lab 1**: x"), (45, None, "End")], known))
    unknown = [(0, 10, "Setup buffer"), (10, 45, "**Lab 6**: the outbox"), (55, None, "End")]
    assert any("not in docs/durations.json" in p for p in plan_problems(unknown, known))


# ------------------------------------------------------------------ the hub recipe

PTH_LINE = re.compile(r"'(import os, sys; sys\.path\.insert\(0, os\.path\.expanduser\(\"~/REPO\"\)\))\\n'")


def test_the_hub_recipe_names_no_home_folder():
    text = GUIDE.read_text()
    recipe = text.split("### On a class JupyterHub", 1)[1].split("\n## ", 1)[0]
    assert "/home/jovyan" not in recipe.replace("`/home/jovyan` on Zero to JupyterHub", "")
    assert "COURSE_STATE_DIR" in recipe and "COURSE_PROGRESS_FILE" in recipe


def _helpers_seen_from(home: Path, pth_line: str, site_dir: Path, cwd: Path) -> str:
    """Where ``import helpers`` comes from in a Python whose home is ``home`` and whose site folder
    holds the recipe's .pth file."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "asynchronous-events.pth").write_text(pth_line + "\n")
    code = f"import site; site.addsitedir({str(site_dir)!r}); import helpers; print(helpers.__file__)"
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow  # a fresh interpreter imports helpers
@pytest.mark.parametrize("home", ["home/jupyter-ada", "home/jovyan", "nfs/users/a/ada"])
def test_the_recipes_pth_line_imports_helpers_from_the_pulled_copy_in_any_home(tmp_path, home):
    match = PTH_LINE.search(GUIDE.read_text())
    assert match, "the hub recipe's .pth line"
    user_home = tmp_path / home
    user_home.mkdir(parents=True)
    (user_home / "REPO").symlink_to(ROOT)          # what nbgitpuller cloned into ~/REPO
    (tmp_path / "elsewhere").mkdir()
    found = _helpers_seen_from(user_home, match[1], tmp_path / "site", tmp_path / "elsewhere")
    assert found.startswith(str(user_home / "REPO")), found


@pytest.mark.slow  # a fresh interpreter imports helpers
def test_without_the_pulled_copy_the_import_does_not_come_from_the_home(tmp_path):
    """The control: the same line in a home with no ~/REPO does not find helpers there."""
    match = PTH_LINE.search(GUIDE.read_text())
    assert match
    (tmp_path / "home").mkdir()
    (tmp_path / "elsewhere").mkdir()
    found = _helpers_seen_from(tmp_path / "home", match[1], tmp_path / "site", tmp_path / "elsewhere")
    assert not found.startswith(str(tmp_path / "home")), found


def test_the_guide_keeps_marked_places_for_grading_and_sizing():
    text = GUIDE.read_text()
    for heading in ("## Grading", "## Sizing a shared host"):
        assert heading in text, heading
    assert "465 MB" not in text
