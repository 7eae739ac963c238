"""Every notebook follows docs/authoring.md: stripped, its links resolving, parameterised, claims tagged.

The navigation line, the course path and the rest of the learning design are tests/test_learning_design.py's.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from coursefiles import LAB_SOLUTIONS, LEARNER_LABS, LESSON_NOTEBOOKS, NOTEBOOKS

from helpers.tooling import slides
from helpers.tooling.lint import claim_problems, claims, is_stripped, lesson_exists, required_claims, tags
from helpers.tooling.paths import ROOT

LESSONS = LESSON_NOTEBOOKS
LAB_NOTEBOOKS = LEARNER_LABS + LAB_SOLUTIONS
COURSE_NOTEBOOKS = LESSONS + LAB_NOTEBOOKS
EXPECTED_LESSONS = ["00_welcome", "01_synchronous_calls", "02_cascading_failures", "03_cascading_delays",
                    "04_asynchronous_events", "05_temporal_coupling", "06_increased_reliability",
                    "07_slow_consumers", "08_embracing_async", "09_price_of_asynchrony"]
LINK = re.compile(r"\]\(([^)#\s]+\.ipynb)\)")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_lesson_of_the_course_exists():
    assert [p.stem for p in LESSONS] == EXPECTED_LESSONS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_is_committed_without_outputs(path):
    assert is_stripped(_read(path)), f"{_id(path)} has outputs: run `python -m helpers strip {_id(path)}`"


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=_id)
def test_links_to_notebooks_resolve(path):
    text = "\n".join(c.source for c in _read(path).cells if c.cell_type == "markdown")
    broken = [link for link in LINK.findall(text) if not (path.parent / link).resolve().exists()]
    assert not broken, f"links to missing notebooks: {broken}"


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=_id)
def test_sections_a_reader_expects(path):
    text = "\n".join(c.source for c in _read(path).cells if c.cell_type == "markdown")
    for heading in ("## Objectives", "## Recap"):
        assert heading in text, f"missing section {heading!r}"
    if path.parent.name == "lessons":
        assert "## Check yourself" in text and "<details>" in text, "check-yourself answers open on demand"


@pytest.mark.parametrize("path", LESSONS, ids=_id)
def test_lesson_has_its_slide_boundaries(path):
    """A teacher presents any lesson live with jupyterlab-rise: title, objectives, each demo with
    its figure, the verdicts and the recap start slides (helpers/tooling/slides.py sets them)."""
    problems = slides.problems(path)
    assert not problems, (f"{_id(path)}: run `python -m helpers slides apply {_id(path)}`:\n  "
                          + "\n  ".join(problems))


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=_id)
def test_parameters_cell_holds_plain_assignments_and_time_scale(path):
    cells = _read(path).cells
    marked = [c for c in cells if "parameters" in tags(c)]
    assert len(marked) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(marked[0].source)
    assert all(isinstance(node, ast.Assign) for node in tree.body), "parameters cell: assignments only"
    names = {t.id for node in tree.body for t in node.targets}
    assert "TIME_SCALE" in names
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "time_scale(TIME_SCALE)" in code, "TIME_SCALE must go through helpers.time_scale()"


CLAIMS = claims()


@pytest.mark.parametrize("claim", required_claims())
def test_claim_is_tagged_and_followed_by_an_assertion_on_a_measurement(claim):
    problems = claim_problems(LESSONS, claim)
    assert not problems, "\n".join(problems)


def test_the_claims_table_lists_c1_to_c20_and_only_requires_claims_whose_lesson_exists(tmp_path):
    assert list(CLAIMS) == [f"C{i}" for i in range(1, 21)]
    assert CLAIMS["C1"].lessons == ("01", "02") and CLAIMS["C7"].lessons == ("04", "05")
    required = required_claims()
    for claim in CLAIMS.values():
        exists = lesson_exists(claim.lessons[0])
        assert (claim.id in required) == exists, claim
    # A lesson written later makes its claims required.
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    (lessons / "09_the_price.ipynb").write_text("{}")
    assert required_claims(lessons_dir=lessons) == ["C16", "C17", "C18", "C19", "C20"]


def test_a_malformed_claims_row_is_named(tmp_path):
    table = tmp_path / "claims.md"
    table.write_text("| id | claim | lesson |\n|---|---|---|\n| C1 | fine | 1 |\n| C2 | no lesson |  |\n")
    with pytest.raises(ValueError, match="line 4"):
        claims(table)


@pytest.mark.parametrize("check, says", [
    ('verdicts.check("C3", ratio > 2, {"ratio": ratio}, expected="more than 2x")', None),
    ('verdicts.check("C3", {"slower": deep.p50 > shallow.p50, "all answered": ok == n}, {}, expected="x")', None),
    ("assert measured.p99 > 2 * baseline.p99", None),
    ('verdicts.check("C3", True, {"ratio": ratio}, expected="x")', "compares constants only"),
    ('verdicts.check("C3", {"slower": deep > 1, "always": True}, {}, expected="x")', "compares constants only"),
    ('verdicts.check("C4", ratio > 2, {}, expected="x")', "another claim (\'C4\')"),
    ("print(ratio)", "must assert"),
])
def test_a_claim_check_asserts_or_gives_a_verdict_on_measured_values(tmp_path, check, says):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("ratio = measure()", metadata={"tags": ["claim-C3"]}),
                nbformat.v4.new_code_cell(f"# check: C3\n{check}")]
    path = tmp_path / "03_lesson.ipynb"
    nbformat.write(nb, path)
    problems = claim_problems([path], "C3")
    if says is None:
        assert problems == []
    else:
        assert any(says in p for p in problems), problems


def test_claim_check_fails_when_a_tag_disappears(tmp_path):
    """The claim test is not vacuous: removing a tag, or a check's measured value, is caught."""
    tagged = next(((p, c) for p in LESSONS for c in required_claims() if CLAIMS[c].lessons[0] == p.stem[:2]
                   and any(f"claim-{c}" in tags(cell) for cell in _read(p).cells)), None)
    if tagged is None:
        pytest.fail("no lesson tags any claim")
    path, claim = tagged
    nb = _read(path)
    for cell in nb.cells:
        cell.metadata["tags"] = [t for t in tags(cell) if t != f"claim-{claim}"]
    broken = tmp_path / path.name
    nbformat.write(nb, broken)
    others = [p for p in LESSONS if p != path]
    assert any("must be demonstrated" in p for p in claim_problems(others + [broken], claim))
    constant = _read(path)
    for i, cell in enumerate(constant.cells):
        if f"claim-{claim}" in tags(cell):
            check = next(c for c in constant.cells[i + 1:] if c.cell_type == "code")
            check.source = f"# check: {claim}\nassert 1 < 2"
    nbformat.write(constant, broken)
    assert any("constants only" in p for p in claim_problems(others + [broken], claim))
