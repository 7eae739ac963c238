"""Pointers in the code and the docs stay true: every dotted name ``helpers.a.b`` written in
helpers/ (docstrings, comments, strings), docs/*.md or README.md names a module or an attribute
that exists, every relative ``:mod:`.x``` of a package names one of its modules, and nothing
cites a ``COURSE.md`` the repository does not have."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.tooling.paths import DOCS, ROOT

HELPERS = ROOT / "helpers"
#: ``helpers`` and at least one dotted part, not inside a path or a longer name (``my.helpers.x``).
DOTTED = re.compile(r"(?<![\w./-])helpers(?:\.[A-Za-z_]\w*)+")
RELATIVE_MOD = re.compile(r":mod:`~?(\.[\w.]+)`")
SOURCES = sorted(HELPERS.rglob("*.py"))
TEXTS = [*SOURCES, *sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def dotted_names(text: str) -> set[str]:
    """Every ``helpers.a.b`` in ``text``."""
    return set(DOTTED.findall(text))


@functools.cache
def exists(name: str) -> bool:
    """True if ``name`` is a module of the repository, or an attribute reached from one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent is not a package
            found = False
        if found:
            break
    else:
        return False
    if cut == len(parts):
        return True
    if module == "helpers.__main__":  # importing it would run the CLI
        return False
    obj: Any = importlib.import_module(module)
    for attribute in parts[cut:]:
        if not hasattr(obj, attribute):
            return False
        obj = getattr(obj, attribute)
    return True


def test_the_scan_finds_names_and_tells_true_from_stale():
    text = ("see :mod:`helpers.core.wait` and helpers.core.wait.pace(); helpers.kafka.lag.LagMonitor.start,\n"
            "not tests/helpers.py nor my.helpers.thing; stale: helpers.core.waiting, helpers.core.wait.pacing")
    assert dotted_names(text) == {"helpers.core.wait", "helpers.core.wait.pace", "helpers.kafka.lag.LagMonitor.start",
                                  "helpers.core.waiting", "helpers.core.wait.pacing"}
    assert [n for n in sorted(dotted_names(text)) if not exists(n)] == ["helpers.core.wait.pacing",
                                                                        "helpers.core.waiting"]
    assert exists("helpers.unique_name")  # a name of helpers' lazy table
    assert not exists("helpers.kafka.broker.X")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_dotted_name_exists(path: Path):
    stale = sorted(n for n in dotted_names(path.read_text()) if not exists(n))
    assert stale == [], f"{path.relative_to(ROOT)} names what does not exist"


def test_every_relative_module_pointer_exists():
    stale = []
    for path in SOURCES:
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = ".".join(parts[:-1])  # an __init__'s own package, or a module's
        for target in RELATIVE_MOD.findall(path.read_text()):
            if not exists(package + target):
                stale.append(f"{path.relative_to(ROOT)}: {target}")
    assert stale == []


def test_nothing_cites_a_course_md_the_repository_does_not_have():
    if (ROOT / "COURSE.md").exists():
        pytest.skip("the repository has a COURSE.md")
    texts = [*TEXTS, *sorted((ROOT / "tests").rglob("*.py"))]
    citing = [p.relative_to(ROOT).as_posix() for p in texts
              if p != Path(__file__) and "COURSE.md" in p.read_text()]
    assert citing == []
