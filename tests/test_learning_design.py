"""The learning design of issue 11 (docs/authoring.md), checked over every lesson and lab source.

One course path (``helpers.tooling.links.COURSE_PATH``): Next from lesson 0 reaches every lesson
and lab exactly once, in order, and Previous walks it back; every notebook states its duration
and prerequisites; a figure is followed by what to look at; a claim demo is preceded by a
prediction and checked through ``helpers.core.verdicts``; glossary links land on a heading; a lesson
followed by a lab sends the learner there from its Recap.

Labs are read from ``labs/sources/`` (the generated ``labs/`` and ``labs/solutions/`` follow
from them), and their links are written relative to ``labs/sources/`` (the lab generator
rewrites them). Each failure names the notebook
and the rule.
"""
from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import coursefiles
import nbformat
import pytest

from helpers.tooling.links import COURSE_PATH
from helpers.tooling.paths import ROOT

LAB_SOURCES = ROOT / "labs" / "sources"
GLOSSARY = ROOT / "docs" / "glossary.md"
WELCOME = "lessons/00_welcome.ipynb"

#: The glossary's terms (docs/authoring.md, "Glossary"); each is a ``## term`` heading.
TERMS = ("event", "broker", "topic", "partition", "offset", "producer", "consumer", "acknowledgement",
         "consumer group", "commit", "lag", "rebalance", "idempotence", "correlation id", "read model",
         "temporal coupling", "timeout", "retry", "circuit breaker", "availability", "tail latency",
         "at-least-once", "at-most-once", "dead-letter topic", "transactional outbox",
         "eventual consistency", "backlog", "fire-and-forget", "service", "synchronous call")

LINK = re.compile(r"\[([^\]]*)\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
PREVIOUS = re.compile(r"^(?:←\s*)?Previous:\s*(.+)$")
NEXT = re.compile(r"^Next:\s*(.+?)\s*(?:→)?$")
HEADING = re.compile(r"^#\s+(Lesson|Lab)\s+(\d+):\s+\S")
CHECK = re.compile(r"^#\s*check:\s*(C\d+)\b")


# ------------------------------------------------------------------ the path and its notebooks

def _source_of(folder: str, number: str) -> Path | None:
    """The notebook of one COURSE_PATH entry (labs from labs/sources/), None if not written yet."""
    notebooks = coursefiles.LAB_SOURCES if folder == "labs" else coursefiles.LESSON_NOTEBOOKS
    found = [p for p in notebooks if p.name.startswith(f"{number}_")]
    assert len(found) <= 1, f"{folder}/{number}: more than one notebook: {[p.name for p in found]}"
    return found[0] if found else None


#: The course path as course ids (``lessons/NN_slug.ipynb``, ``labs/NN_slug.ipynb``) -> source file.
PATH: dict[str, Path] = {}
for _folder, _number in COURSE_PATH:
    _source = _source_of(_folder, _number)
    if _source is not None:
        PATH[f"{_folder}/{_source.name}"] = _source
ORDER = list(PATH)
NOTEBOOKS = [PATH[cid] for cid in ORDER]


def _cid(path: Path) -> str:
    """The course id of a notebook file (a lab's source, learner and solution share one)."""
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith(("labs/sources/", "labs/solutions/")):
        return f"labs/{path.name}"
    return rel


def _id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _base(path: Path) -> Path:
    """The folder a notebook's relative links start from (its own folder: lab sources link
    relative to labs/sources/, and `python -m helpers labs build` rewrites them for labs/)."""
    return path.parent


def _target(path: Path, href: str) -> str | None:
    """Repository path (with its #anchor) a relative link of ``path`` points at; None if external
    or outside the repository."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I) or href.startswith(("#", "/")):
        return None
    file, _, anchor = href.partition("#")
    resolved = Path(os.path.normpath(_base(path) / file))
    try:
        rel = resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return None
    return rel + (f"#{anchor}" if anchor else "")


def _course_target(path: Path, href: str) -> str | None:
    target = _target(path, href)
    if target is None:
        return None
    target = target.partition("#")[0]
    if target.startswith(("labs/sources/", "labs/solutions/")):
        return "labs/" + target.rsplit("/", 1)[1]
    return target


@cache
def _cells(path: Path) -> list[nbformat.NotebookNode]:
    return nbformat.read(path, as_version=4).cells


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


# ------------------------------------------------------------------ the navigation line

def _nav_line(text: str) -> str | None:
    """The line holding the ``[Contents](...)`` link, or None."""
    return next((line.strip() for line in text.splitlines() if re.search(r"\[Contents\]\(", line)), None)


def _nav(path: Path) -> dict[str, tuple[str, str]]:
    """{"previous"|"contents"|"next": (link text, href)} of the first cell's navigation line."""
    line = _nav_line(_cells(path)[0].source) or ""
    out = {}
    for text, href in LINK.findall(line):
        text = text.strip()
        if text == "Contents":
            out["contents"] = (text, href)
        elif (m := PREVIOUS.match(text)):
            out["previous"] = (m.group(1).strip(), href)
        elif (m := NEXT.match(text)):
            out["next"] = (m.group(1).strip(), href)
    return out


def _names(cid: str) -> str:
    """'Lesson 4' or 'Lab 2': how a link to ``cid`` must start."""
    folder, name = cid.split("/")
    return f"{'Lab' if folder == 'labs' else 'Lesson'} {int(name[:2])}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_navigation_line_opens_and_closes_the_notebook(path):
    cells = _cells(path)
    first, last = cells[0], cells[-1]
    heading = HEADING.match(first.source.lstrip()) if first.cell_type == "markdown" else None
    kind = "Lab" if path.parent == LAB_SOURCES else "Lesson"
    assert heading and heading.group(1) == kind and int(heading.group(2)) == int(path.name[:2]), \
        f"{_id(path)}: the first cell must start '# {kind} {int(path.name[:2])}: Title' (navigation rule)"
    line = _nav_line(first.source)
    assert line, f"{_id(path)}: the first cell needs the navigation line with a [Contents](...) link"
    assert last.cell_type == "markdown" and _nav_line(last.source) == line, \
        f"{_id(path)}: the last cell must be a markdown cell with the same navigation line as the first: {line!r}"
    contents = _nav(path).get("contents")
    assert contents and _course_target(path, contents[1]) == WELCOME, \
        f"{_id(path)}: [Contents] must link to {WELCOME}, got {contents and contents[1]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_previous_and_next_follow_the_course_path(path):
    cid = _cid(path)
    at = ORDER.index(cid)
    nav = _nav(path)
    problems = []
    for key, expected in (("previous", ORDER[at - 1] if at else None),
                          ("next", ORDER[at + 1] if at + 1 < len(ORDER) else None)):
        name, link = key.title(), nav.get(key)
        if expected is None:
            if link is not None:
                target = _target(path, link[1])
                if _course_target(path, link[1]) in PATH:
                    problems.append(f"no {name} link here (the course path {'starts' if at == 0 else 'ends'} "
                                    f"here), got {link[1]!r}")
                elif not (target and (ROOT / target.partition("#")[0]).exists()):
                    problems.append(f"the {name} link {link[1]!r} points at a notebook that does not exist")
            continue
        if link is None:
            problems.append(f"the navigation line needs a '{name}: ...' link to {expected}")
            continue
        target = _course_target(path, link[1])
        if target != expected:
            problems.append(f"{name} goes to {target or link[1]!r}, the course path says {expected} "
                            f"(links are relative to {_base(path).relative_to(ROOT).as_posix()}/)")
        if not link[0].startswith(_names(expected) + ":"):
            problems.append(f"the {name} link's text must name its target as '{_names(expected)}: Title', "
                            f"got {link[0]!r}")
    assert not problems, f"{_id(path)} (Previous/Next follow the course path):\n  " + "\n  ".join(problems)


def test_next_walk_from_lesson_0_reaches_every_notebook_once_in_order():
    assert ORDER and ORDER[0] == WELCOME, f"the course path must start at {WELCOME}"
    walked, here = [], WELCOME
    while here is not None:
        assert here not in walked, f"the Next links loop: {' -> '.join(walked + [here])}"
        walked.append(here)
        link = _nav(PATH[here]).get("next")
        if link is None:
            break
        target = _course_target(PATH[here], link[1])
        assert target in PATH, f"{_id(PATH[here])}: Next goes to {target or link[1]!r}, which is not a notebook " \
                               f"of the course path; walked so far: {' -> '.join(walked)}"
        here = target
    assert walked == ORDER, "Next from lesson 0 walks " + " -> ".join(walked) + \
        "\nthe course path is  " + " -> ".join(ORDER)


def test_previous_walk_from_the_end_is_the_reverse():
    walked, here = [], ORDER[-1]
    while here is not None:
        assert here not in walked, f"the Previous links loop: {' -> '.join(walked + [here])}"
        walked.append(here)
        link = _nav(PATH[here]).get("previous")
        here = _course_target(PATH[here], link[1]) if link else None
        assert here is None or here in PATH, f"{_id(PATH[walked[-1]])}: Previous goes to {link and link[1]!r}, " \
                                             "not a notebook of the course path"
    assert walked == ORDER[::-1], "Previous from the end walks " + " -> ".join(walked)


# ------------------------------------------------------------------ the first cell, figures, claims

@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_first_cell_states_duration_and_prerequisites(path):
    first = _cells(path)[0].source
    missing = [field for field in ("**Duration:**", "**Prerequisites:**") if field not in first]
    assert not missing, f"{_id(path)}: the first cell must state {' and '.join(missing)} (after the navigation line)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_every_figure_is_followed_by_what_to_look_at(path):
    cells = _cells(path)
    problems = []
    for i, cell in enumerate(cells):
        if "figure" not in _tags(cell):
            continue
        after = next((c for c in cells[i + 1:] if not (c.cell_type == "code" and CHECK.match(c.source.lstrip()))), None)
        if not (after is not None and after.cell_type == "markdown"
                and after.source.lstrip().startswith("**What to look at:**")):
            problems.append(f"cell {i} ({cell.source.strip().splitlines()[0][:50]!r})")
    assert not problems, f"{_id(path)}: a cell tagged 'figure' must be followed (after its check cell, if any) " \
                         f"by a markdown cell starting '**What to look at:**': " + "; ".join(problems)


def _claims(cell: nbformat.NotebookNode) -> list[str]:
    return [t[len("claim-"):] for t in _tags(cell) if t.startswith("claim-C")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_every_claim_demo_is_preceded_by_a_prediction(path):
    cells = _cells(path)
    problems, since = [], 0
    for i, cell in enumerate(cells):
        claims = _claims(cell)
        if not claims:
            continue
        predicted = any(c.cell_type == "markdown" and c.source.lstrip().startswith("**Predict:**")
                        for c in cells[since:i])
        if not predicted:
            problems.append(f"cell {i} ({', '.join(claims)})")
        since = i + 1
    assert not problems, f"{_id(path)}: before each claim demo, a markdown cell starting '**Predict:**' " \
                         f"(after the previous claim cell): missing for " + "; ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_every_check_cell_calls_verdicts_check_with_its_claim(path):
    problems = []
    for i, cell in enumerate(_cells(path)):
        match = CHECK.match(cell.source.lstrip()) if cell.cell_type == "code" else None
        if match and not re.search(rf"verdicts\.check\(\s*[\"']{match.group(1)}[\"']", cell.source):
            problems.append(f"cell {i} ({match.group(1)})")
    assert not problems, f"{_id(path)}: a '# check: Cn' cell must call verdicts.check(\"Cn\", ...): " \
                         "not in " + "; ".join(problems)


# ------------------------------------------------------------------ glossary and recap

def _anchor(heading: str) -> str:
    return heading.strip().lower().replace(" ", "-")


@cache
def _glossary_anchors() -> frozenset[str]:
    text = GLOSSARY.read_text(encoding="utf-8")
    return frozenset(_anchor(m.group(1)) for m in re.finditer(r"^##\s+(.+?)\s*$", text, re.M))


def test_glossary_has_a_heading_for_every_term():
    assert GLOSSARY.is_file(), "docs/glossary.md is missing"
    missing = [term for term in TERMS if _anchor(term) not in _glossary_anchors()]
    assert not missing, f"docs/glossary.md: no '## term' heading for {missing}"
    text = GLOSSARY.read_text(encoding="utf-8")
    headings = re.findall(r"^##\s+(.+?)\s*$", text, re.M)
    assert all(h == h.lower() for h in headings), "docs/glossary.md: headings in lower case (anchors match everywhere)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_glossary_links_point_at_a_heading(path):
    broken = []
    for cell in _cells(path):
        if cell.cell_type != "markdown":
            continue
        for text, href in LINK.findall(cell.source):
            if "glossary.md" not in href:
                continue
            target = _target(path, href)
            file, _, anchor = (target or "").partition("#")
            if file != "docs/glossary.md" or (anchor and anchor not in _glossary_anchors()):
                broken.append(f"[{text}]({href})")
    assert not broken, f"{_id(path)}: glossary links must be ../docs/glossary.md#<an existing heading>: " \
                       + ", ".join(broken)


def _recap(path: Path) -> str | None:
    """The Recap section's text, without the navigation lines; None without a Recap."""
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    match = re.search(r"^##\s+Recap\b.*?$(.*?)(?=^##\s|\Z)", text, re.M | re.S)
    if match is None:
        return None
    return "\n".join(line for line in match.group(1).splitlines() if not re.search(r"\[Contents\]\(", line))


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.parent != LAB_SOURCES], ids=_id)
def test_a_lesson_followed_by_a_lab_sends_the_learner_there_from_its_recap(path):
    at = ORDER.index(_cid(path))
    following = ORDER[at + 1] if at + 1 < len(ORDER) else None
    if following is None or not following.startswith("labs/"):
        pytest.skip(f"{_id(path)} is not followed by a lab")
    recap = _recap(path)
    assert recap is not None, f"{_id(path)}: no '## Recap' section"
    linked = {_course_target(path, href) for _, href in LINK.findall(recap)}
    assert following in linked, f"{_id(path)}: the Recap must end by sending the learner to {following} " \
                                f"({_names(following)}) with a link"
