"""Every notebook follows docs/authoring.md: stripped, navigable, parameterised, claims tagged."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from helpers.notebooks import ROOT, all_notebooks, is_stripped, tags

LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
LAB_NOTEBOOKS = sorted((ROOT / "labs").glob("*.ipynb")) + sorted((ROOT / "labs" / "solutions").glob("*.ipynb"))
COURSE_NOTEBOOKS = LESSONS + LAB_NOTEBOOKS
EXPECTED_LESSONS = ["00_welcome", "01_synchronous_calls", "02_cascading_failures", "03_cascading_delays",
                    "04_asynchronous_events", "05_temporal_coupling", "06_increased_reliability",
                    "07_slow_consumers", "08_embracing_async"]
# COURSE.md: claim -> the lesson that must demonstrate it (and others that may)
CLAIMS = {"C1": ["01", "02"], "C2": ["02"], "C3": ["03"], "C4": ["03"], "C5": ["04"], "C6": ["04"],
          "C7": ["04", "05"], "C8": ["08"], "C9": ["05"], "C10": ["05"], "C11": ["06"], "C12": ["06"],
          "C13": ["07"], "C14": ["07"], "C15": ["08"]}
NAV = re.compile(r"\[[^\]]*Contents[^\]]*\]\(([^)]+)\)")
LINK = re.compile(r"\]\(([^)#\s]+\.ipynb)\)")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_lesson_of_the_course_exists():
    assert [p.stem for p in LESSONS] == EXPECTED_LESSONS


@pytest.mark.parametrize("path", all_notebooks(), ids=_id)
def test_notebook_is_committed_without_outputs(path):
    assert is_stripped(_read(path)), f"{_id(path)} has outputs: run `python -m helpers strip {_id(path)}`"


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=_id)
def test_navigation_line_at_top_and_bottom(path):
    cells = _read(path).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), "first cell: a '# Title'"
    assert NAV.search(cells[0].source), "first cell needs the navigation line with a Contents link"
    assert cells[-1].cell_type == "markdown" and NAV.search(cells[-1].source), "last cell: the navigation line"


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


@pytest.mark.parametrize("claim, lessons", CLAIMS.items())
def test_claim_is_tagged_and_followed_by_an_assertion_on_a_measurement(claim, lessons):
    found = []
    for path in LESSONS:
        cells = _read(path).cells
        for i, cell in enumerate(cells):
            if f"claim-{claim}" not in tags(cell):
                continue
            found.append(path.stem[:2])
            assert cell.cell_type == "code", f"{path.name}: claim-{claim} must tag a code cell that measures"
            following = [c for c in cells[i + 1:] if c.cell_type == "code"]
            assert following, f"{path.name}: claim-{claim} needs a check cell after it"
            check = following[0].source
            assert check.lstrip().startswith(f"# check: {claim}"), f"{path.name}: next code cell must start '# check: {claim}'"
            assert "assert" in check, f"{path.name}: the check for {claim} must assert"
            _assert_not_constant(check, path.name, claim)
    assert lessons[0] in found, f"{claim} must be demonstrated in lesson {lessons[0]} (found in {found or 'none'})"
    assert set(found) <= set(lessons), f"{claim} tagged in lessons {found}, COURSE.md places it in {lessons}"


def _assert_not_constant(source: str, name: str, claim: str) -> None:
    """Every assert in a check cell must mention a name (a measured value), not constants only."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assert):
            names = [n for n in ast.walk(node.test) if isinstance(n, (ast.Name, ast.Attribute, ast.Call))]
            assert names, f"{name}: an assert for {claim} compares constants only"
