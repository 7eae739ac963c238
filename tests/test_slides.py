"""Slide boundaries for RISE (helpers.tooling.slides), on copies of the lessons.

The lessons themselves are checked by the structure test once the boundaries are applied
(``python -m helpers slides apply``); here every lesson is copied to a temporary folder, so
the test never writes the committed notebooks.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from coursefiles import LESSON_NOTEBOOKS

from helpers.tooling import slides

LESSONS = LESSON_NOTEBOOKS


@pytest.fixture
def copies(tmp_path) -> list[Path]:
    """Every lesson, copied, with its slide boundaries applied."""
    out = []
    for path in LESSONS:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        slides.apply(copy)
        out.append(copy)
    return out


def _types(path: Path) -> list[str | None]:
    return [slides.slide_type(c) for c in nbformat.read(path, as_version=4).cells]


def _edit(path: Path, change) -> None:
    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)


def test_every_lesson_presents_without_problems_once_applied(copies):
    assert copies, "no lessons found"
    for copy in copies:
        assert slides.problems(copy) == [], copy.name
        assert slides.apply(copy) is False, f"{copy.name}: a second apply changed it"
        nb = nbformat.read(copy, as_version=4)
        assert nb.metadata["rise"]["scroll"] is True
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), f"{copy.name}: apply must keep it stripped"


def test_the_structure_sets_the_boundaries(copies):
    for copy in copies:
        nb = nbformat.read(copy, as_version=4)
        types = _types(copy)
        cells = nb.cells
        assert types[0] == "slide", f"{copy.name}: the title is a slide"
        for i, cell in enumerate(cells):
            first = cell.source.lstrip()
            if cell.cell_type == "markdown" and first.startswith("## "):
                assert types[i] == "slide", f"{copy.name} cell {i}: a ## section starts a slide"
            if any(t.startswith("claim-C") for t in cell.metadata.get("tags", [])):
                # the demo is on a slide of its own: only prose before it on that slide
                start = max(k for k in range(i + 1) if types[k] in ("slide", "subslide"))
                assert types[start] == "slide", f"{copy.name} cell {i}: a claim demo is on a slide"
                assert all(c.cell_type == "markdown" for c in cells[start:i]), \
                    f"{copy.name} cell {i}: a claim demo starts its slide (only prose before it)"
                following = next((j for j in range(i + 1, len(cells)) if cells[j].cell_type == "code"), None)
                if following is not None and cells[following].source.lstrip().startswith("# check:"):
                    assert types[following] == "fragment", f"{copy.name} cell {following}: the verdict is a fragment"
                    assert "slide" not in types[i + 1:following + 1], f"{copy.name}: the verdict is on the demo's slide"
        titles = [c.source.lstrip().splitlines()[0] for c in cells if c.cell_type == "markdown"]
        for heading in ("## Objectives", "## Recap"):
            if heading in titles:
                assert types[[i for i, c in enumerate(cells) if c.cell_type == "markdown"
                              and c.source.lstrip().startswith(heading)][0]] == "slide"


def test_a_removed_boundary_is_reported(copies):
    copy = next(c for c in copies if c.name.startswith("01_"))
    nb = nbformat.read(copy, as_version=4)
    claim = next(i for i, c in enumerate(nb.cells) if any(t.startswith("claim-C") for t in c.metadata.get("tags", [])))
    start = max(i for i in range(claim + 1) if slides.slide_type(nb.cells[i]) == "slide")  # where its slide starts

    def remove(nb):
        nb.cells[start].metadata["slideshow"]["slide_type"] = "-"

    _edit(copy, remove)
    found = slides.problems(copy)
    assert len(found) == 1 and f"cell {start} " in found[0] and "missing boundary" in found[0], found


def test_an_unexpected_boundary_and_an_untyped_cell_are_reported(copies):
    copy = next(c for c in copies if c.name.startswith("01_"))

    def change(nb):
        code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and slides.slide_type(c) == "-")
        nb.cells[code].metadata["slideshow"]["slide_type"] = "slide"
        nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_markdown_cell("A paragraph added later."))
        del nb.metadata["rise"]

    _edit(copy, change)
    found = slides.problems(copy)
    assert any("unexpected boundary 'slide'" in p for p in found), found
    assert any("no slide type" in p and "A paragraph added later" in p for p in found), found
    assert any("no RISE settings" in p for p in found), found
    assert slides.apply(copy) is True and slides.problems(copy) == []


def test_a_verdict_that_would_not_run_is_reported(copies):
    copy = next(c for c in copies if c.name.startswith("01_"))

    def skip(nb):
        check = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# check:"))
        check.metadata["slideshow"]["slide_type"] = "skip"

    _edit(copy, skip)
    assert any("fragment or subslide" in p for p in slides.problems(copy))


def test_the_command_line_checks_and_applies(tmp_path, capsys):
    copy = tmp_path / LESSONS[1].name
    shutil.copy(LESSONS[1], copy)
    _edit(copy, lambda nb: [c.metadata.pop("slideshow", None) for c in nb.cells])
    assert slides.main(["check", str(copy)]) == 1
    assert "problem(s)" in capsys.readouterr().out
    assert slides.main(["apply", str(copy)]) == 0
    assert "slide boundaries set" in capsys.readouterr().out
    assert slides.main(["check", str(copy)]) == 0
    assert slides.main(["check", str(tmp_path / "missing.ipynb")]) == 2
    assert "NOTEBOOK" in capsys.readouterr().err
