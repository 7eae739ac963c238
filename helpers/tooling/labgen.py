"""Labs are authored once: one source notebook per lab, two generated notebooks.

A source ``labs/sources/NN_slug.ipynb`` marks the solution inside code cells the
nbgrader way::

    def publish(producer, topic, orders):
        ### BEGIN SOLUTION
        for order in orders:
            ...
        ### END SOLUTION

:func:`generate` makes

* the **learner** notebook (``labs/NN_slug.ipynb``): each region becomes a stub,
  ``# TODO: your code here`` and ``raise NotImplementedError(...)`` at the region's
  indentation. A line ``### STUB: <code>`` inside a region replaces that default
  (e.g. ``### STUB: PARTITIONS = ...`` for a top-level answer: the check that follows
  then says "not yet" instead of the cell failing). Cells tagged ``solution`` are
  dropped (an explanation, or the solution notebook's ``checks.RECORD_PROGRESS = False``).
  After the check that follows a task (the next cell tagged ``check``) and its hints, a
  collapsed ``<details>`` cell shows the solution code on demand;
* the **solution** notebook (``labs/solutions/NN_slug.ipynb``): the markers removed,
  everything else kept.

Cells tagged ``hint`` are kept in both. Outputs are stripped. Relative links are
written so they work from each notebook's folder (a link to a sibling source points
to the sibling generated notebook of the same kind). ``python -m helpers labs build``
regenerates; ``python -m helpers labs check`` exits 1 when a generated notebook is
out of date with its source (a test runs the same check), 2 when a source's markers
do not pair up.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path

import nbformat

from .lint import strip_cell, tags
from .paths import LABS

LABS_DIR = LABS
BEGIN, END, STUB = "### BEGIN SOLUTION", "### END SOLUTION", "### STUB:"
TODO = "# TODO: your code here"
NOT_IMPLEMENTED = 'raise NotImplementedError("your code here: replace this line")'
_LINK = re.compile(r"(\]\(|href=\")([^)\"\s]+?\.(?:ipynb|md))(#[^)\"\s]*)?(?=[)\"])")  # notebooks and docs


class LabSourceError(ValueError):
    """A source notebook whose solution markers do not pair up; the message names the cell."""


def _split_regions(source: str, where: str) -> tuple[list[str], list[str], bool]:
    """(learner lines, solution lines, had a region) of one code cell's source."""
    learner: list[str] = []
    solution: list[str] = []
    stub: list[str] | None = None
    inside, indent, found = False, "", False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise LabSourceError(f"{where}, line {number}: {BEGIN} inside another region")
            inside, stub, indent, found = True, None, line[: len(line) - len(line.lstrip())], True
        elif stripped == END:
            if not inside:
                raise LabSourceError(f"{where}, line {number}: {END} without {BEGIN}")
            learner.extend([indent + TODO] + (stub if stub is not None else [indent + NOT_IMPLEMENTED]))
            inside = False
        elif inside and stripped.startswith(STUB):
            stub = (stub or []) + [indent + stripped[len(STUB):].strip()]
        elif inside:
            solution.append(line)
        else:
            learner.append(line)
            solution.append(line)
    if inside:
        raise LabSourceError(f"{where}: {BEGIN} without {END}")
    return learner, solution, found


def _relink(text: str, source_dir: Path, out_dir: Path) -> str:
    """Rewrite relative .ipynb links written for ``source_dir`` so they work from ``out_dir``."""
    def repl(match: re.Match[str]) -> str:
        prefix, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if "://" in target or target.startswith("/"):
            return match.group(0)
        resolved = Path(os.path.normpath(source_dir / target))
        if resolved.parent == Path(os.path.normpath(source_dir)):
            resolved = out_dir / resolved.name  # a sibling lab: the generated notebook of the same kind
        return prefix + Path(os.path.relpath(resolved, out_dir)).as_posix() + anchor
    return _LINK.sub(repl, text)


def _solution_details(code: str, cell_id: str) -> nbformat.NotebookNode:
    body = code.strip("\n")
    cell = nbformat.v4.new_markdown_cell(
        "<details><summary>Show a solution</summary>\n\n```python\n" + body + "\n```\n\n"
        "Try the hint first: the check accepts any code that behaves right, not only this one.\n</details>",
        metadata={"tags": ["solution-reveal"]})
    cell.id = (cell_id[:55] + "-solution")  # deterministic, so regenerating gives the same file
    return cell


def generate(source: Path | str, labs_dir: Path | str | None = None
             ) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """(learner notebook, solution notebook) made from the source notebook at ``source``."""
    source = Path(source)
    labs_dir = Path(labs_dir) if labs_dir is not None else source.parent.parent
    src = nbformat.read(source, as_version=4)
    learner, solution = copy.deepcopy(src), copy.deepcopy(src)
    learner.cells, solution.cells = [], []
    pending_reveal: list[nbformat.NotebookNode] = []
    checked = False  # the task's check has passed by: reveal after its hints
    dirs = {"learner": labs_dir, "solution": labs_dir / "solutions"}
    for index, cell in enumerate(src.cells):
        cell_tags = tags(cell)
        where = f"{source.name}, cell {index}"
        if checked and "hint" not in cell_tags:
            learner.cells.extend(pending_reveal)
            pending_reveal, checked = [], False
        learn_cell, sol_cell = copy.deepcopy(cell), copy.deepcopy(cell)
        reveal = None
        if cell.cell_type == "code":
            learn_lines, sol_lines, found = _split_regions(cell.source, where)
            learn_cell.source, sol_cell.source = "\n".join(learn_lines), "\n".join(sol_lines)
            if found:
                reveal = _solution_details(sol_cell.source, cell.get("id") or f"cell{index}")
        elif BEGIN in cell.source or END in cell.source:
            raise LabSourceError(f"{where}: solution markers belong in code cells; tag a markdown cell 'solution'")
        else:
            learn_cell.source = _relink(cell.source, source.parent, dirs["learner"])
            sol_cell.source = _relink(cell.source, source.parent, dirs["solution"])
        for c in (learn_cell, sol_cell):
            strip_cell(c)
        solution.cells.append(sol_cell)
        if "solution" not in cell_tags:
            learner.cells.append(learn_cell)
        # The solution is revealed after the task's check and its hints (or at the end).
        if "check" in cell_tags and pending_reveal:
            checked = True
        if reveal is not None:
            pending_reveal.append(reveal)
    learner.cells.extend(pending_reveal)
    if solution.cells and solution.cells[0].cell_type == "markdown":
        first = solution.cells[0]
        lines = first.source.split("\n")
        if lines and lines[0].startswith("# ") and "(solution)" not in lines[0]:
            lines[0] += " (solution)"
            first.source = "\n".join(lines)
    rel = source.relative_to(labs_dir.parent).as_posix() if labs_dir.parent in source.parents else source.name
    for nb, variant in ((learner, "learner"), (solution, "solution")):
        nb.metadata["course"] = {"generated_from": rel, "variant": variant,
                                 "edit": "edit the source and run `python -m helpers labs build`"}
        nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    return learner, solution


#: The sentence of a lab's introduction that points to the solutions, and what a class copy says instead.
_SHOW_A_SOLUTION = re.compile(r",\s+then,\s+if\s+you\s+need\s+it,\s+\*\*Show\s+a\s+solution\*\*\.")
CLASS_INSTEAD = ", then ask your teacher."


def is_answer(cell: nbformat.NotebookNode) -> bool:
    """Whether a cell of a generated learner notebook is one the learner writes: a code cell
    holding the TODO stub of a solution region (the grader takes these from a submission)."""
    return cell.cell_type == "code" and any(line.strip() == TODO for line in cell.source.splitlines())


def class_copy(learner: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A learner notebook for a graded class (``python -m helpers release``): the same cells, with
    the same ids, less the "Show a solution" reveals, and the introduction's pointer to them
    replaced by "ask your teacher"."""
    nb = copy.deepcopy(learner)
    nb.cells = [c for c in nb.cells if "solution-reveal" not in tags(c)]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _SHOW_A_SOLUTION.sub(CLASS_INSTEAD, cell.source)
    nb.metadata.setdefault("course", {})["variant"] = "class"
    return nb


def sources(labs_dir: Path | str = LABS_DIR) -> list[Path]:
    """Every lab source notebook, in order."""
    return sorted(p for p in (Path(labs_dir) / "sources").glob("*.ipynb") if not p.name.startswith("."))


def targets(source: Path, labs_dir: Path | str = LABS_DIR) -> tuple[Path, Path]:
    """(learner path, solution path) generated from ``source``."""
    labs_dir = Path(labs_dir)
    return labs_dir / source.name, labs_dir / "solutions" / source.name


def _render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def _expected(labs_dir: Path) -> dict[Path, str]:
    expected = {}
    for src in sources(labs_dir):
        learner, solution = generate(src, labs_dir)
        learner_path, solution_path = targets(src, labs_dir)
        expected[learner_path], expected[solution_path] = _render(learner), _render(solution)
    return expected


def build_all(labs_dir: Path | str = LABS_DIR) -> list[Path]:
    """Write every learner and solution notebook; return the files that changed."""
    labs_dir = Path(labs_dir)
    changed = []
    for path, text in _expected(labs_dir).items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed


def out_of_date(labs_dir: Path | str = LABS_DIR) -> list[Path]:
    """Generated notebooks that differ from what their source gives now, are missing,
    or have no source any more."""
    labs_dir = Path(labs_dir)
    expected = _expected(labs_dir)
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text() != text]
    generated = list(labs_dir.glob("*.ipynb")) + list((labs_dir / "solutions").glob("*.ipynb"))
    stale += [p for p in generated if p not in expected]
    return sorted(stale)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``build`` or ``check`` (and a hidden ``--labs-dir`` for tests)."""
    parser.add_argument("action", choices=["build", "check"],
                        help="build: write labs/*.ipynb and labs/solutions/*.ipynb; check: exit 1 if out of date")
    parser.add_argument("--labs-dir", default=str(LABS_DIR), help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """0 built or up to date, 1 out of date, 2 a source whose markers do not pair up."""
    labs_dir = Path(args.labs_dir)
    try:
        if args.action == "build":
            changed = build_all(labs_dir)
            for path in changed:
                print(f"wrote {path.relative_to(labs_dir.parent)}")
            print(f"{len(sources(labs_dir))} lab sources, {len(changed)} notebooks changed")
            return 0
        stale = out_of_date(labs_dir)
    except LabSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"out of date: {path.relative_to(labs_dir.parent)}")
    if stale:
        print("Run `python -m helpers labs build` (and delete generated notebooks whose source is gone).")
        return 1
    print(f"{len(sources(labs_dir))} labs up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``labs build|check`` on its own (tests call it with ``--labs-dir``)."""
    parser = argparse.ArgumentParser(prog="python -m helpers labs", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
