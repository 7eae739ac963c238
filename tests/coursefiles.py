"""The course's files as the tests see them: the root and the notebook lists, in one place.

The root and folders come from :mod:`helpers.tooling.paths`, every committed notebook from
:func:`helpers.tooling.lint.all_notebooks`; the lists here only split it by folder, so no
test globs the folders again. Not a test module: the tests import it as ``coursefiles``
(pytest's "prepend" import mode puts tests/ on sys.path, as for ``checking``).
"""
from __future__ import annotations

from pathlib import Path

from helpers.tooling.lint import all_notebooks
from helpers.tooling.paths import LABS, LESSONS, ROOT

#: Every committed notebook: lessons, lab sources, learner labs and solutions (sorted by path).
NOTEBOOKS: list[Path] = all_notebooks()
LESSON_NOTEBOOKS: list[Path] = [p for p in NOTEBOOKS if p.parent == LESSONS]
LAB_SOURCES: list[Path] = [p for p in NOTEBOOKS if p.parent == LABS / "sources"]
LEARNER_LABS: list[Path] = [p for p in NOTEBOOKS if p.parent == LABS]
LAB_SOLUTIONS: list[Path] = [p for p in NOTEBOOKS if p.parent == LABS / "solutions"]


def rel(path: Path) -> str:
    """``path`` relative to the repository root, with forward slashes (a test id, a course path)."""
    return path.relative_to(ROOT).as_posix()


def lesson(number: str) -> Path | None:
    """The lesson numbered ``number`` ("04"), or None if it does not exist."""
    return next((p for p in LESSON_NOTEBOOKS if p.name.startswith(f"{number}_")), None)
