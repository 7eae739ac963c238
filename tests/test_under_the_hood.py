"""Under the hood: the plain kafka-python code behind a helper, in view and checked against it.

Wherever a lesson relies on a helper that hides Kafka calls, a markdown cell starting
``#### Under the hood`` is followed by a code cell tagged ``under-the-hood``, collapsed
(metadata ``{"jupyter": {"source_hidden": true}}``), that does the same with kafka-python
itself in at most 15 lines (blank lines, comments and the final assert not counted) and
ends with an ``assert`` comparing its result with the helper's (so the assert names
something imported from ``helpers``). nbval executes these cells with the notebooks; this
test checks their form in every lesson and lab source, and that lessons 4, 6, 7 and 8
each have one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from coursefiles import LAB_SOURCES, LESSON_NOTEBOOKS, lesson, rel

NOTEBOOKS = LESSON_NOTEBOOKS + LAB_SOURCES
TAG = "under-the-hood"
HEADING = "#### Under the hood"
MAX_LINES = 15
#: lessons that rely on helpers hiding Kafka calls: each must open at least one of them
REQUIRED = ("04", "06", "07", "08")


def _id(path: Path) -> str:
    return rel(path)


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def helper_names(nb: nbformat.NotebookNode) -> set[str]:
    """Every name the notebook's code binds from the ``helpers`` package (``import helpers``,
    ``from helpers.kafka import lag``, ``from helpers.kafka.lag import total_lag``,
    ``import helpers.kafka.lag as h``)."""
    names: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "helpers" or alias.name.startswith("helpers."):
                        names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                if node.module == "helpers" or node.module.startswith("helpers."):
                    names.update(alias.asname or alias.name for alias in node.names)
    return names


def _imports_kafka(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module == "kafka" or node.module.startswith("kafka."):
                return True
        if isinstance(node, ast.Import) and any(a.name == "kafka" or a.name.startswith("kafka.") for a in node.names):
            return True
    return False


def code_lines(source: str, tree: ast.Module) -> int:
    """Lines of code: not blank, not a comment, not part of the final statement (the assert)."""
    final = tree.body[-1] if tree.body else None
    skip = set(range(final.lineno, (final.end_lineno or final.lineno) + 1)) if isinstance(final, ast.Assert) else set()
    return sum(1 for number, line in enumerate(source.splitlines(), start=1)
               if number not in skip and line.strip() and not line.strip().startswith("#"))


def snippet_problems(nb: nbformat.NotebookNode, where: str = "notebook") -> list[str]:
    """What is wrong with the under-the-hood cells of ``nb`` (empty: all good)."""
    problems = []
    known = helper_names(nb)
    for index, cell in enumerate(nb.cells):
        if TAG not in _tags(cell):
            continue
        name = f"{where} cell {index}"
        if cell.cell_type != "code":
            problems.append(f"{name}: the tag {TAG!r} belongs on a code cell")
            continue
        if cell.get("metadata", {}).get("jupyter", {}).get("source_hidden") is not True:
            problems.append(f'{name}: collapse it with metadata {{"jupyter": {{"source_hidden": true}}}}')
        before = nb.cells[index - 1] if index > 0 else None
        if before is None or before.cell_type != "markdown" or not before.source.lstrip().startswith(HEADING):
            problems.append(f"{name}: the cell before it must be markdown starting {HEADING!r}")
        try:
            tree = ast.parse(cell.source)
        except SyntaxError as exc:
            problems.append(f"{name}: does not parse: {exc}")
            continue
        if not _imports_kafka(tree):
            problems.append(f"{name}: must use kafka-python itself (import from kafka)")
        lines = code_lines(cell.source, tree)
        if lines > MAX_LINES:
            problems.append(f"{name}: {lines} lines of code; at most {MAX_LINES} (blank lines, comments and the "
                            "final assert not counted)")
        final = tree.body[-1] if tree.body else None
        if not isinstance(final, ast.Assert):
            problems.append(f"{name}: must end with an assert comparing its result with the helper's")
        elif not {n.id for n in ast.walk(final) if isinstance(n, ast.Name)} & known:
            problems.append(f"{name}: the final assert must compare with a helper: name something imported from "
                            f"helpers (imported here: {sorted(known) or 'nothing'})")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_under_the_hood_cells_are_short_collapsed_plain_kafka_and_checked_against_the_helper(path):
    problems = snippet_problems(nbformat.read(path, as_version=4), _id(path))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("number", REQUIRED)
def test_lessons_relying_on_kafka_helpers_open_one(number):
    found = lesson(number)
    assert found, f"lesson {number} does not exist"
    nb = nbformat.read(found, as_version=4)
    assert any(TAG in _tags(c) for c in nb.cells), (
        f"{_id(found)} relies on helpers that hide Kafka calls: add a cell tagged {TAG!r} after a markdown "
        f"cell starting {HEADING!r} (see docs/authoring.md)")


# --------------------------------------------------------------------------- the rules, on small notebooks


def _notebook(snippet: str, *, heading: str = f"{HEADING}: a poll loop", hidden: bool = True,
              setup: str = "from helpers.kafka import lag") -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(snippet, metadata={"tags": [TAG]})
    if hidden:
        cell.metadata["jupyter"] = {"source_hidden": True}
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup), nbformat.v4.new_markdown_cell(heading),
                                           cell])


GOOD = """\
from kafka import KafkaConsumer

# a comment does not count

consumer = KafkaConsumer("t")
n = 3
assert n == lag.total_lag(
    kafka, "t", "g")
"""


def test_a_good_snippet_passes():
    assert snippet_problems(_notebook(GOOD)) == []


@pytest.mark.parametrize(("change", "complaint"), [
    ({"hidden": False}, "source_hidden"),
    ({"heading": "### Under the hood"}, HEADING),
    ({"snippet": GOOD.replace("from kafka import KafkaConsumer", "from helpers.kafka import clients")},
     "import from kafka"),
    ({"snippet": GOOD + "print(n)\n"}, "end with an assert"),
    ({"snippet": GOOD.replace("lag.total_lag(", "max(")}, "compare with a helper"),
    ({"setup": "import json"}, "compare with a helper"),
    ({"snippet": GOOD.replace("n = 3\n", "n = 3\n" * 14)}, "16 lines of code"),
])
def test_each_rule_names_what_is_wrong(change, complaint):
    snippet = change.pop("snippet", GOOD)
    problems = snippet_problems(_notebook(snippet, **change))
    assert any(complaint in p for p in problems), problems


def test_helper_names_cover_every_import_form():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import helpers\nfrom helpers.kafka import lag\nfrom helpers.shop import results as r\n"
        "from helpers.kafka.events import publish\n"
        "import helpers.shop.workflow as wf\nfrom kafka import KafkaProducer\nimport json")])
    assert helper_names(nb) == {"helpers", "lag", "r", "publish", "wf"}
