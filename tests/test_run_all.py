"""Every lesson and lab solution executes once at the CI scale, within its budget.

nbval executes the notebooks (pyproject's testpaths hold ``lessons`` and
``labs/solutions``); tests/conftest.py adds up each notebook's nbval items (kernel start,
every cell, kernel shutdown), and the budget test below runs after the last of them
(marker ``after_notebooks``), so no notebook executes twice for its timing.
"""
from __future__ import annotations

import os
import re
import tomllib

import pytest

from helpers.tooling.paths import ROOT
from helpers.tooling.runner import course_notebooks

CI_TIME_SCALE = 0.1


def budget(notebook: str) -> float:
    """Seconds a notebook may take at COURSE_TIME_SCALE=0.1 (the issues' bars)."""
    lesson = re.match(r"lessons/(\d+)_", notebook)
    if lesson:
        return 30 if int(lesson.group(1)) <= 3 else 45
    if notebook.startswith("labs/solutions/"):
        return 60
    raise ValueError(f"notebook: no budget for {notebook!r} (lessons/NN_*.ipynb or labs/solutions/*.ipynb)")


def test_budgets():
    assert budget("lessons/03_cascading_delays.ipynb") == 30
    assert budget("lessons/09_the_price.ipynb") == 45
    assert budget("labs/solutions/07_capstone.ipynb") == 60
    with pytest.raises(ValueError, match="notebook"):
        budget("labs/01_break_the_chain.ipynb")


def test_nbval_executes_every_course_notebook():
    """pytest's testpaths reach every lesson and lab solution, and nbval runs them (lax)."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    paths = [ROOT / p for p in options["testpaths"]]
    notebooks = course_notebooks()
    assert notebooks
    unreached = [str(nb.relative_to(ROOT)) for nb in notebooks if not any(p in nb.parents for p in paths)]
    assert not unreached, f"not under pytest's testpaths {options['testpaths']}: {unreached}"
    assert "--nbval-lax" in options["addopts"]


@pytest.mark.after_notebooks
def test_every_notebook_ran_within_its_ci_budget(notebook_seconds):
    if not notebook_seconds:
        pytest.skip("no notebook executed in this session (`python -m pytest` runs them all)")
    scale = float(os.environ.get("COURSE_TIME_SCALE", "1"))
    if scale != CI_TIME_SCALE:
        pytest.skip(f"the budgets are for COURSE_TIME_SCALE={CI_TIME_SCALE}; this session runs at {scale}")
    table = "\n".join(f"  {nb:<50} {s:6.1f} s (budget {budget(nb):.0f} s)" for nb, s in notebook_seconds.items())
    print(table)
    slow = {nb: round(s, 1) for nb, s in notebook_seconds.items() if s > budget(nb)}
    assert not slow, f"over budget at COURSE_TIME_SCALE={CI_TIME_SCALE} (seconds): {slow}\n{table}"
