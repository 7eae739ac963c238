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
