"""Slide boundaries for presenting a lesson live with RISE (``python -m helpers slides``).

A teacher opens a lesson in JupyterLab and presents it as slides with ``jupyterlab-rise``
(View > Open as Reveal Slideshow, or ``Alt R`` for the side preview), running the live demos
from the slides. RISE reads each cell's ``metadata.slideshow.slide_type``; this module sets
it from the lesson's structure (docs/authoring.md), so no one places boundaries by hand:

* the title cell (``# Lesson N: ...``), ``## Objectives``, every ``##`` section (the
  experiment, clean up, check yourself, ``## Recap``): a **slide**;
* every claim demo (the cell tagged ``claim-Cn``) with its figure: a **slide**, starting at
  the prose that introduces it (a prediction, say) when a markdown cell sits right before the
  demo, or the section's slide when only prose comes before the demo on it;
* the verdict (the ``# check: Cn`` cell right after the demo): a **fragment**, revealed with
  the figure drawn right after it (``-``); the prose after code that draws a figure (what to
  look at in it): a **fragment** of the figure's slide;
* the parameters cell: a **subslide** (the setup under the objectives); ``###`` headings and
  prose that follows code: **subslides**; everything else continues its slide (``-``).

The notebook's ``metadata.rise`` turns on scrolling, so a slide taller than the screen (a demo
with its table and figure) scrolls instead of being cut.

``apply(path)`` writes the boundaries (True if the file changed), ``problems(path)`` lists the
cells whose boundary is missing or wrong (the structure test asserts it is empty).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from . import UsageError, standalone
from .paths import LESSONS, ROOT

SLIDE, SUBSLIDE, FRAGMENT, CONTINUE = "slide", "subslide", "fragment", "-"
SLIDE_TYPES = (SLIDE, SUBSLIDE, FRAGMENT, CONTINUE, "skip", "notes")
BOUNDARIES = (SLIDE, SUBSLIDE)
#: Notebook-level RISE settings (``metadata.rise``): long slides scroll.
RISE_SETTINGS = {"scroll": True}

_CLAIM_TAG = re.compile(r"^claim-C\d+$")
_CHECK = re.compile(r"^\s*#\s*check:\s*C\d+", re.IGNORECASE)
# A call or display that draws a figure: plots.waterfall(...), eventplots.pace_figure(...),
# experiment.widget, experiment (not "configure": the name must start at a dot or underscore).
_FIGURE = re.compile(r"(^|\.)\w*plots\.\w+$|(^|\.|_)figure|waterfall|(^|\.)widget$|^experiment$")


def default_notebooks() -> list[Path]:
    """The notebooks a teacher presents: every lesson."""
    return sorted(LESSONS.glob("*.ipynb"))


def _heading_level(cell: NotebookNode) -> int:
    """1 for ``# ...``, 2 for ``## ...``, ...; 0 for a code cell or markdown that is not a heading."""
    if cell.cell_type != "markdown":
        return 0
    match = re.match(r"^(#{1,6})\s", cell.source.lstrip())
    return len(match.group(1)) if match else 0


def _is_claim(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and any(_CLAIM_TAG.match(t) for t in cell.metadata.get("tags", []))


def _is_check(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and bool(_CHECK.match(cell.source))


def _dotted(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_figure(cell: NotebookNode) -> bool:
    """A code cell tagged ``figure``, or with a top-level expression that draws a figure or
    shows a widget."""
    if cell.cell_type != "code":
        return False
    if "figure" in cell.metadata.get("tags", []):
        return True
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:  # a magic or a shell escape
        return False
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr):
            value = stmt.value
            name = _dotted(value.func if isinstance(value, ast.Call) else value)
            if name and _FIGURE.search(name):
                return True
    return False


def expected(nb: NotebookNode) -> list[str]:
    """The slide type each cell of ``nb`` should have, from the lesson's structure."""
    cells = nb.cells
    types: list[str] = []
    in_demo = False  # inside a claim demo: the claim, its check, the figure right after them
    for i, cell in enumerate(cells):
        level = _heading_level(cell)
        previous = cells[i - 1] if i else cell  # (the first cell is the title: a slide)
        after_markdown = i > 0 and previous.cell_type == "markdown"
        if i == 0 or level in (1, 2):
            kind, in_demo = SLIDE, False
        elif level >= 3:
            kind, in_demo = SUBSLIDE, False
        elif _is_claim(cell):
            # The demo gets a slide of its own: the slide it is on, if only prose comes before
            # it there (a section's heading, a prediction); else one starting at the prose that
            # introduces it, unless that prose is what to look at in the figure before it.
            start = max(k for k, t in enumerate(types) if t in BOUNDARIES)
            if types[start] == SLIDE and all(c.cell_type == "markdown" for c in cells[start:i]):
                kind = CONTINUE
            elif after_markdown and types[i - 1] != FRAGMENT:
                types[i - 1], kind = SLIDE, CONTINUE
            else:
                kind = SLIDE
            in_demo = True
        elif _is_check(cell):
            kind = FRAGMENT  # the verdict is revealed after the measurement
        elif cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            kind, in_demo = SUBSLIDE, False
        elif cell.cell_type == "code":
            # The figure right after a demo's check (or the demo itself) stays on the demo's slide.
            in_demo = in_demo and (_is_check(previous) or _is_claim(previous))
            kind = CONTINUE
        elif not after_markdown:  # prose after code
            # what to look at in a figure drawn by the code above | the next step of the story
            run = i
            while run > 0 and cells[run - 1].cell_type == "code":
                run -= 1
            kind = FRAGMENT if in_demo or any(_is_figure(c) for c in cells[run:i]) else SUBSLIDE
            in_demo = False
        else:
            kind = CONTINUE
        types.append(kind)
    return types


def slide_type(cell: NotebookNode) -> str | None:
    """The cell's ``metadata.slideshow.slide_type`` (None if it has none)."""
    return cell.metadata.get("slideshow", {}).get("slide_type")


def _label(i: int, cell: NotebookNode) -> str:
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "(empty)")
    return f"cell {i} ({cell.cell_type}: {first[:50]!r})"


def notebook_problems(nb: NotebookNode) -> list[str]:
    """What is wrong with ``nb``'s slide boundaries (empty: it presents as the rules say)."""
    out = []
    if nb.metadata.get("rise", {}).get("scroll") is not True:
        out.append("notebook metadata: no RISE settings {'rise': {'scroll': true}} (long slides would be cut)")
    for i, (cell, want) in enumerate(zip(nb.cells, expected(nb))):
        have = slide_type(cell)
        if have is None:
            out.append(f"{_label(i, cell)}: no slide type (expected {want!r})")
        elif have not in SLIDE_TYPES:
            out.append(f"{_label(i, cell)}: unknown slide type {have!r} (expected {want!r})")
        elif want in BOUNDARIES and have != want:
            out.append(f"{_label(i, cell)}: missing boundary: expected {want!r}, found {have!r}")
        elif want not in BOUNDARIES and have in BOUNDARIES and not (_is_check(cell) and have == SUBSLIDE):
            out.append(f"{_label(i, cell)}: unexpected boundary {have!r} (expected {want!r})")
        elif _is_check(cell) and have not in (FRAGMENT, SUBSLIDE):
            out.append(f"{_label(i, cell)}: the verdict should be revealed as a fragment or subslide, found {have!r}")
        elif cell.cell_type == "code" and have in ("skip", "notes"):
            out.append(f"{_label(i, cell)}: a code cell marked {have!r} would not run from the slides")
    return out


def problems(path: Path | str) -> list[str]:
    """The missing or incorrect slide boundaries of the notebook at ``path`` (empty: all good)."""
    return notebook_problems(nbformat.read(Path(path), as_version=4))


def set_boundaries(nb: NotebookNode) -> bool:
    """Write the expected slide types and RISE settings into ``nb``; True if anything changed."""
    changed = False
    for cell, want in zip(nb.cells, expected(nb)):
        if slide_type(cell) != want:
            cell.metadata.setdefault("slideshow", {})["slide_type"] = want
            changed = True
    rise = nb.metadata.setdefault("rise", {})
    for key, value in RISE_SETTINGS.items():
        if rise.get(key) != value:
            rise[key] = value
            changed = True
    return changed


def apply(path: Path | str) -> bool:
    """Set the slide boundaries of the notebook at ``path`` in place; True if the file changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if not set_boundaries(nb):
        return False
    nbformat.write(nb, path)
    return True


def _paths(names: list[str]) -> list[Path]:
    if not names:
        return default_notebooks()
    paths = []
    for name in names:
        path = Path(name) if Path(name).is_absolute() else Path.cwd() / name
        if not path.is_file() and (ROOT / name).is_file():
            path = ROOT / name
        if not path.is_file() or path.suffix != ".ipynb":
            raise UsageError(f"NOTEBOOK must be an existing .ipynb file, got {name!r}")
        paths.append(path)
    return paths


def _show(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``slides apply [NOTEBOOK ...]`` | ``slides check [NOTEBOOK ...]`` (default: every lesson)."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("apply", "set slide boundaries from each lesson's structure (in place)"),
                         ("check", "list missing or wrong slide boundaries; exit 1 if any")):
        p = sub.add_parser(action, help=text, description=text)
        p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="notebooks (default: every lesson)")


def run(args: argparse.Namespace) -> int:
    """Apply or check; ``check`` exits 1 when a notebook has a problem."""
    paths = _paths(args.notebooks)
    if args.action == "apply":
        for path in paths:
            print(f"{_show(path)}: {'slide boundaries set' if apply(path) else 'unchanged'}")
        return 0
    failed = 0
    for path in paths:
        found = problems(path)
        failed += bool(found)
        print(f"{_show(path)}: {'ok' if not found else f'{len(found)} problem(s)'}")
        for line in found:
            print(f"  - {line}")
    if failed:
        print(f"{failed} notebook(s) need `python -m helpers slides apply`", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.slides``: the same as ``python -m helpers slides``."""
    return standalone("python -m helpers slides", "Slide boundaries for presenting lessons with RISE.",
                      add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
