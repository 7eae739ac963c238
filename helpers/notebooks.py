"""Notebook files as source: list them, strip outputs, read tags."""
from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def all_notebooks() -> list[Path]:
    """Every committed notebook: lessons, lab sources, learner labs and solutions."""
    return sorted(p for folder in ("lessons", "labs") for p in (ROOT / folder).rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def is_stripped(nb: nbformat.NotebookNode) -> bool:
    """True if no code cell keeps outputs or an execution count."""
    return all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")


def strip_outputs(paths: list[Path]) -> list[Path]:
    """Remove outputs and execution counts in place; return the files that changed."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if is_stripped(nb):
            continue
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, path)
        changed.append(path)
    return changed


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """The cell's tags (empty list if none)."""
    return list(cell.get("metadata", {}).get("tags", []))


#: COURSE.md: each claim -> the lessons that may demonstrate it (the first one must).
CLAIM_LESSONS = {"C1": ["01", "02"], "C2": ["02"], "C3": ["03"], "C4": ["03"], "C5": ["04"], "C6": ["04"],
                 "C7": ["04", "05"], "C8": ["08"], "C9": ["05"], "C10": ["05"], "C11": ["06"],
                 "C12": ["06"], "C13": ["07"], "C14": ["07"], "C15": ["08"]}


def claim_problems(lessons: list[Path], claim: str) -> list[str]:
    """What is wrong with how ``claim`` is demonstrated across ``lessons`` (empty: all good).

    The claim must be tagged ``claim-Cn`` on a code cell in its lesson, and the next code
    cell must start ``# check: Cn`` and assert on something measured (not constants only).
    """
    import ast

    allowed = CLAIM_LESSONS[claim]
    problems, found = [], []
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
            asserts = [n for n in ast.walk(ast.parse(check)) if isinstance(n, ast.Assert)]
            if not asserts:
                problems.append(f"{path.name}: the check for {claim} must assert")
            for node in asserts:
                if not any(isinstance(n, (ast.Name, ast.Attribute, ast.Call)) for n in ast.walk(node.test)):
                    problems.append(f"{path.name}: an assert for {claim} compares constants only")
    if allowed[0] not in found:
        problems.append(f"{claim} must be demonstrated in lesson {allowed[0]} (tagged in: {found or 'none'})")
    if not set(found) <= set(allowed):
        problems.append(f"{claim} is tagged in lessons {found}; COURSE.md places it in {allowed}")
    return problems
