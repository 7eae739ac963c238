"""Notebooks as source files: list them, read tags, strip outputs, and lint the claims.

The claims and the lessons that demonstrate them live in ``docs/claims.md`` (a markdown
table: ``| C1 | the claim | 1, 2 |``). :func:`claim_problems` checks that a claim is
tagged ``claim-Cn`` on a code cell of its lesson and that the next code cell starts
``# check: Cn`` and asserts on something measured: an ``assert``, or
``verdicts.check("Cn", holds, ...)`` (:mod:`helpers.core.verdicts`) whose conditions are
computed from measured values. Only claims whose first lesson exists are required
(:func:`required_claims`), so a claim can be listed before its lesson is written.

``python -m helpers strip [NOTEBOOK ...]`` strips outputs (all notebooks by default).
"""
from __future__ import annotations

import argparse
import ast
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import UsageError
from .paths import DOCS, LABS, LESSONS, ROOT

CLAIMS_FILE = DOCS / "claims.md"
_ROW = re.compile(r"^\|\s*(C\d+)\s*\|(.*)\|\s*([\d,\s]+?)\s*\|\s*$")


def all_notebooks() -> list[Path]:
    """Every committed notebook: lessons, lab sources, learner labs and solutions."""
    return sorted(p for folder in (LESSONS, LABS) for p in folder.rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """The cell's tags (empty list if none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def is_stripped(nb: nbformat.NotebookNode) -> bool:
    """True if no code cell keeps outputs or an execution count."""
    return all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")


def strip_cell(cell: nbformat.NotebookNode) -> None:
    """Remove a cell's outputs, execution count and run-time metadata, in place."""
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    for key in ("execution", "collapsed", "scrolled"):
        cell.metadata.pop(key, None)


def strip_outputs(paths: list[Path]) -> list[Path]:
    """Strip the notebooks at ``paths`` that have outputs, in place; return those that changed."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if is_stripped(nb):
            continue
        for cell in nb.cells:
            strip_cell(cell)
        nbformat.write(nb, path)
        changed.append(path)
    return changed


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A claim of docs/claims.md: its id, its text, and its lessons ("01", ...; the first must show it)."""

    id: str
    text: str
    lessons: tuple[str, ...]


def claims(path: Path = CLAIMS_FILE) -> dict[str, Claim]:
    """The claims table of ``path``, by id, in order; ValueError naming a malformed row."""
    found: dict[str, Claim] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not re.match(r"^\|\s*C\d+\s*\|", line):
            continue
        match = _ROW.match(line)
        if match is None:
            raise ValueError(f"{path.name}, line {number}: a claim row must be '| Cn | claim | lessons |', "
                             f"e.g. '| C1 | ... | 1, 2 |'")
        claim_id, text, lessons = match.group(1), match.group(2).strip(), match.group(3)
        numbers = tuple(f"{int(n):02d}" for n in lessons.replace(",", " ").split())
        if claim_id in found or not numbers:
            raise ValueError(f"{path.name}, line {number}: {claim_id} is listed twice or names no lesson")
        found[claim_id] = Claim(claim_id, text, numbers)
    if not found:
        raise ValueError(f"{path.name} holds no claims table")
    return found


def lesson_exists(number: str, lessons_dir: Path = LESSONS) -> bool:
    """True if ``lessons_dir`` holds a notebook ``NN_*.ipynb`` for ``number`` ("09")."""
    return any(lessons_dir.glob(f"{number}_*.ipynb"))


def required_claims(path: Path = CLAIMS_FILE, lessons_dir: Path = LESSONS) -> list[str]:
    """The claims whose first lesson exists (those the lessons must demonstrate now)."""
    return [c.id for c in claims(path).values() if lesson_exists(c.lessons[0], lessons_dir)]


def claim_problems(lessons: list[Path], claim: str, table: dict[str, Claim] | None = None) -> list[str]:
    """What is wrong with how ``claim`` is demonstrated across ``lessons`` (empty: all good).

    The claim must be tagged ``claim-Cn`` on a code cell in its lesson, and the next code
    cell must start ``# check: Cn`` and assert on something measured (not constants only).
    """
    allowed = list((table if table is not None else claims())[claim].lessons)
    problems: list[str] = []
    found: list[str] = []
    for path in lessons:
        cells = nbformat.read(path, as_version=4).cells
        for i, cell in enumerate(cells):
            if f"claim-{claim}" not in tags(cell):
                continue
            found.append(path.stem[:2])
            if cell.cell_type != "code":
                problems.append(f"{path.name}: claim-{claim} must tag a code cell that measures")
                continue
            following = [c for c in cells[i + 1:] if c.cell_type == "code"]
            check = following[0].source if following else ""
            if not check.lstrip().startswith(f"# check: {claim}"):
                problems.append(f"{path.name}: the code cell after claim-{claim} must start '# check: {claim}'")
                continue
            problems += [f"{path.name}: {problem}" for problem in _check_cell_problems(check, claim)]
    if allowed[0] not in found:
        problems.append(f"{claim} must be demonstrated in lesson {allowed[0]} (tagged in: {found or 'none'})")
    if not set(found) <= set(allowed):
        problems.append(f"{claim} is tagged in lessons {found}; docs/claims.md places it in {allowed}")
    return problems


def _measured(node: ast.AST) -> bool:
    """True if the expression reads something (a name, an attribute, a call), not constants only."""
    return any(isinstance(n, (ast.Name, ast.Attribute, ast.Call)) for n in ast.walk(node))


def _verdict_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "check" and isinstance(n.func.value, ast.Name) and n.func.value.id == "verdicts"]


def _check_cell_problems(source: str, claim: str) -> list[str]:
    """What is wrong with the check cell of ``claim``: it must assert, or call verdicts.check,
    on measured values."""
    tree = ast.parse(source)
    asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    verdicts = _verdict_calls(tree)
    if not asserts and not verdicts:
        return [f"the check for {claim} must assert (or call verdicts.check) on what was measured"]
    problems = [f"an assert for {claim} compares constants only" for node in asserts if not _measured(node.test)]
    for call in verdicts:
        named = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "claim"), None)
        if not (isinstance(named, ast.Constant) and named.value == claim):
            problems.append(f"the check for {claim} calls verdicts.check with another claim "
                            f"({ast.unparse(named) if named is not None else 'none'})")
        holds = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "holds"),
                                                                  None)
        conditions = holds.values if isinstance(holds, ast.Dict) else [holds]
        if any(c is None or not _measured(c) for c in conditions):
            problems.append(f"a verdicts.check for {claim} compares constants only")
    return problems


# --------------------------------------------------------------------------- `strip` subcommand


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Notebooks to strip (default: all)."""
    parser.add_argument("notebooks", nargs="*", help="only these notebooks")


def run(args: argparse.Namespace) -> int:
    """Strip, naming each file that changed."""
    paths = [Path(p) for p in args.notebooks]
    missing = [str(p) for p in paths if p.suffix != ".ipynb" or not p.is_file()]
    if missing:
        raise UsageError(f"notebooks: no such notebook: {', '.join(missing)}")
    for path in strip_outputs(paths or all_notebooks()):
        print(f"stripped {path.resolve().relative_to(ROOT) if ROOT in path.resolve().parents else path}")
    return 0
