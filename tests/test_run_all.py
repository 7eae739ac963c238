"""`python -m helpers run` executes every lesson and lab solution within its CI budget."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.runner import course_notebooks

ROOT = Path(__file__).resolve().parent.parent
# seconds at COURSE_TIME_SCALE=0.1 (the issues' bars)
BUDGETS = {"lessons/00": 30, "lessons/01": 30, "lessons/02": 30, "lessons/03": 30,
           "lessons/04": 45, "lessons/05": 45, "lessons/06": 45, "lessons/07": 45, "lessons/08": 45,
           "labs/solutions": 60}


def _budget(notebook: str) -> float:
    return next(v for k, v in BUDGETS.items() if notebook.startswith(k))


def test_every_notebook_runs_headless_within_its_budget(kafka):
    expected = [str(p.relative_to(ROOT)) for p in course_notebooks()]
    out = subprocess.run([sys.executable, "-m", "helpers", "run"], capture_output=True, text=True,
                         cwd=ROOT, timeout=1800)
    print(out.stdout)
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()
            if line.split() and line.split()[0] in expected}
    assert set(rows) == set(expected), f"missing from the table: {sorted(set(expected) - set(rows))}"
    failed = {nb: " ".join(r[1:]) for nb, r in rows.items() if r[1] != "ok"}
    assert not failed, f"failed notebooks: {failed}"
    slow = {nb: float(r[0]) for nb, r in rows.items() if float(r[0]) > _budget(nb)}
    assert not slow, f"over budget (seconds): {slow}"
    assert out.returncode == 0
