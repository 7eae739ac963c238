"""Sample submissions to try the grader on: ``python -m helpers grade --make-samples DIR --lab N``.

Thirty submissions of one lab, made from its learner and solution notebooks (so they follow the
lab as it is), each with the points it deserves in ``DIR/expected.json``:

* solved (the solution's answer cells in the learner notebook; three of them in a folder
  ``NAME/``, as a hub's collection gives them), half-solved (every proper subset of the tasks,
  in turn), unsolved (the learner notebook as handed out);
* an answer that raises, an answer with a syntax error, an answer rewritten in a cell of the
  learner's own (kept by the grader);
* tampered: check cells edited to print "Passed" or to call the check with ``stop=False``; a cell
  that writes every check into the progress file and replaces the checks with ones that pass;
  the course's solution notebook handed in (full points, flagged);
* broken or foreign: a truncated file, another lab's notebook, a folder without a notebook.
"""
from __future__ import annotations

import copy
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import nbformat

from ..core import progress
from .labgen import NOT_IMPLEMENTED
from .lint import tags
from .submission import Task, course_notebook, solution_notebook, tasks


def _with_answers(learner: nbformat.NotebookNode, solution: nbformat.NotebookNode, solved: list[Task]
                  ) -> nbformat.NotebookNode:
    """The learner notebook with the solution's answer cells for the ``solved`` tasks."""
    nb = copy.deepcopy(learner)
    answers = {c.id: c.source for c in solution.cells}
    wanted = {a for t in solved for a in t.answers}
    for cell in nb.cells:
        if cell.id in wanted:
            cell.source = answers[cell.id]
    return nb


def _answer(nb: nbformat.NotebookNode, task: Task) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.id == task.answers[0])


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def make_samples(dest: Path | str, lab: int) -> dict[str, dict[str, Any]]:
    """Write 30 submissions of ``lab`` into ``dest`` (replaced) and ``expected.json``; return it."""
    if lab not in progress.LABS:
        raise ValueError(f"lab must be one of {sorted(progress.LABS)}, got {lab!r}")
    sol_path = solution_notebook(lab)
    if sol_path is None:
        raise ValueError("samples are made from the solution notebooks: run this in the course, not a class copy")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    learner = nbformat.read(course_notebook(lab), as_version=4)
    solution = nbformat.read(sol_path, as_version=4)
    all_tasks = tasks(learner, lab)
    name = progress.LABS[lab].notebook
    expected: dict[str, dict[str, Any]] = {}

    def add(learner_name: str, nb: nbformat.NotebookNode, passed: list[Task], *, folder: bool = False,
            flagged: bool = False) -> None:
        _write(nb, dest / learner_name / name if folder else dest / f"{learner_name}.ipynb")
        points = {t.check: int(t in passed) for t in all_tasks}
        expected[learner_name] = {"status": "graded", "points": points, "total": sum(points.values()),
                                  "flagged": flagged}

    for i in range(1, 7):
        add(f"solved-{i}", _with_answers(learner, solution, all_tasks), all_tasks, folder=i <= 3)
    subsets = [list(s) for k in range(1, len(all_tasks)) for s in itertools.combinations(all_tasks, k)]
    for i, subset in zip(range(1, 11), itertools.cycle(subsets)):
        numbers = "".join(str(t.number) for t in subset)
        add(f"half-{i:02d}-tasks-{numbers}", _with_answers(learner, solution, subset), subset)
    for i in range(1, 5):
        add(f"unsolved-{i}", copy.deepcopy(learner), [])
    first, last = all_tasks[0], all_tasks[-1]
    raising = _with_answers(learner, solution, all_tasks[1:])
    cell = _answer(raising, first)
    if NOT_IMPLEMENTED in cell.source:
        cell.source = cell.source.replace(NOT_IMPLEMENTED, 'raise ValueError("a bug of mine")')
    else:
        cell.source = cell.source.replace("...", "1 / 0", 1)
    add("answer-raises", raising, all_tasks[1:])
    broken_syntax = _with_answers(learner, solution, all_tasks)
    _answer(broken_syntax, last).source += "\nprint('unclosed'"
    add("syntax-error", broken_syntax, all_tasks[:-1])
    own = _with_answers(learner, solution, all_tasks[1:])
    at = own.cells.index(_answer(own, first))
    mine = nbformat.v4.new_code_cell("# my answer, rewritten in a cell of my own\n"
                                     + next(c.source for c in solution.cells if c.id == first.answers[0]))
    own.cells.insert(at + 1, mine)
    add("own-cell", own, all_tasks)
    printed = copy.deepcopy(learner)
    for cell in printed.cells:
        if "check" in tags(cell):
            cell.source = f'print("[Lab {lab} · check] Passed: well done")'
    add("tampered-check-cells", printed, [])
    forged = copy.deepcopy(learner)
    checks = ", ".join(repr(c) for c in progress.LABS[lab].checks)
    forged.cells.insert(len(forged.cells) - 1, nbformat.v4.new_code_cell(
        "from helpers import checks\nfrom helpers.core import progress\n"
        f"for name in [{checks}]:\n    progress.record({lab}, name)\n"
        f"    setattr(checks, f'check_lab{lab}_{{name}}', lambda *a, **k: 'Passed')\n"
        f"print(progress.status()[{lab}])"))
    early = copy.deepcopy(forged.cells[len(forged.cells) - 2])
    early.id = "my-early-cell"
    forged.cells.insert(3, early)  # before the checks too
    add("tampered-progress", forged, [], flagged=True)
    half = _with_answers(learner, solution, [first])
    for cell in half.cells:
        if "check" in tags(cell):
            cell.source = cell.source.rstrip().rstrip(")") + ", stop=False)\nprint('Passed')"
    add("tampered-half", half, [first])
    add("solution-notebook", copy.deepcopy(solution), all_tasks, flagged=True)
    (dest / "broken-truncated.ipynb").write_text(nbformat.writes(learner)[:2000], encoding="utf-8")
    expected["broken-truncated"] = {"status": "broken", "total": 0}
    other = next(n for n in sorted(progress.LABS) if n != lab)
    shutil.copy(course_notebook(other), dest / "foreign-lab.ipynb")
    expected["foreign-lab"] = {"status": "foreign", "total": 0}
    (dest / "no-notebook").mkdir()
    (dest / "no-notebook" / "answers.txt").write_text("I wrote my answers here instead.\n", encoding="utf-8")
    expected["no-notebook"] = {"status": "broken", "total": 0}
    (dest / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    return expected
