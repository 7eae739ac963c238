"""``python -m helpers release DIR``: the class copy holds no solution, links to the class
repository, and its site publishes the labs as exercises (issue 20, item 1)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.tooling import labgen, links, release, site
from helpers.tooling.lint import tags
from helpers.tooling.paths import ROOT

pytestmark = pytest.mark.timeout(300)

CLASS_REPO = "https://github.com/example-school/async-events-fall"
REF = "term-1"


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> release.Release:
    return release.build(tmp_path_factory.mktemp("release") / "class", CLASS_REPO, REF)


def _solution_lines() -> set[str]:
    """Every distinctive line of every lab's solutions: the code between the markers of
    labs/sources/ and the cells tagged ``solution``, less the lines the learner is given anyway
    (in the lab, or shown by a lesson: lesson 7 calls ``group.resume()`` too)."""
    solution, given = set(), set()
    for lesson in sorted((ROOT / "lessons").glob("*.ipynb")):
        given |= {line.strip() for c in nbformat.read(lesson, as_version=4).cells for line in c.source.splitlines()}
    for source in labgen.sources():
        for cell in nbformat.read(source, as_version=4).cells:
            inside = "solution" in tags(cell)
            for line in cell.source.splitlines():
                if line.strip() in (labgen.BEGIN, labgen.END):
                    inside = line.strip() == labgen.BEGIN
                elif cell.cell_type == "code":
                    (solution if inside else given).add(line.strip())
    return {line for line in solution - given
            if len(line) > 12 and not line.startswith(("#", "return", labgen.STUB))}


def _leaks(nb: nbformat.NotebookNode, lines: set[str]) -> list[str]:
    """What of a solution a notebook holds, in any cell of any kind (and in its outputs)."""
    found = []
    for cell in nb.cells:
        text = json.dumps(cell)  # the source, the outputs, the attachments: everything the cell holds
        found += [f"{cell.get('id')}: marker" for marker in (labgen.BEGIN, labgen.END, "Show a solution")
                  if marker in text]
        own = {line.strip() for line in cell.source.splitlines()}
        found += [f"{cell.get('id')}: {line}" for line in lines if line in own or (len(line) > 30 and line in text)]
        found += [f"{cell.get('id')}: tagged {t}" for t in ("solution", "solution-reveal") if t in tags(cell)]
    return found


def _notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.ipynb") if ".git" not in p.parts)


def test_no_notebook_in_the_release_holds_a_solution(copy):
    lines = _solution_lines()
    assert len(lines) > 40, "too few solution lines to compare with"
    notebooks = _notebooks(copy.dest)
    assert len(notebooks) == len(copy.lessons) + len(copy.labs) >= 16
    leaks = {p.relative_to(copy.dest).as_posix(): _leaks(nbformat.read(p, as_version=4), lines) for p in notebooks}
    assert not any(leaks.values()), {k: v[:5] for k, v in leaks.items() if v}
    # The same reading finds the solutions where they are: in the course's learner notebooks (the
    # reveals) and its solution notebooks, so the test above could fail.
    for lab in copy.labs:
        assert _leaks(nbformat.read(ROOT / lab, as_version=4), lines), lab
        assert _leaks(nbformat.read(ROOT / "labs" / "solutions" / Path(lab).name, as_version=4), lines), lab
    # ... and the class copies keep every other cell, with its id (the grader matches them)
    for lab in copy.labs:
        course = nbformat.read(ROOT / lab, as_version=4)
        mine = nbformat.read(copy.dest / lab, as_version=4)
        assert [c.id for c in mine.cells] == [c.id for c in course.cells if "solution-reveal" not in tags(c)]
        assert "ask your teacher" in mine.cells[1].source and mine.metadata["course"]["variant"] == "class"


def test_the_release_holds_what_a_class_runs_and_nothing_for_teachers(copy):
    dest = copy.dest
    for name in ("README.md", "pyproject.toml", "environment.yml", "binder/environment.yml", "binder/postBuild",
                 "docker/compose.yml", "helpers/__main__.py", "helpers/checks/lab2.py", "docs/glossary.md",
                 "docs/setup.md", "docs/site/conf.py", release.MARKER):
        assert (dest / name).is_file(), name
    # what Binder's build and the Docker image copy from the repository is there
    for path in re.findall(r"\b(jupyter-config/\S+\.json)", (ROOT / "binder" / "postBuild").read_text()):
        assert (dest / path).is_file(), path
    # and every document the learner's library names in its messages (doctor, the broker's errors)
    learner_code = [*dest.glob("helpers/*.py"), *dest.glob("helpers/kafka/*.py"), *dest.glob("helpers/core/*.py")]
    named = {m for p in learner_code for m in re.findall(r"docs/[a-z0-9-]+\.md", p.read_text())}
    assert named and all((dest / doc).is_file() for doc in named - {"docs/architecture.md"}), named
    assert sorted(p.name for p in (dest / "lessons").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "lessons").glob("*.ipynb"))
    for gone in ("labs/solutions", "labs/sources", "docs/teaching.md", "docs/grading.md", "docs/authoring.md",
                 "tests", ".github", "build", "conftest.py"):
        assert not (dest / gone).exists(), gone
    assert not list(dest.rglob("__pycache__"))
    marker = json.loads((dest / release.MARKER).read_text())
    assert marker["repo"] == CLASS_REPO and marker["ref"] == REF and len(marker["course_commit"]) == 40


def test_every_relative_link_in_the_release_resolves(copy):
    dest, broken = copy.dest, []
    documents = [p for p in dest.rglob("*.md") if ".git" not in p.parts and "site" not in p.relative_to(dest).parts]
    texts = [(p.relative_to(dest).as_posix(), p.read_text(encoding="utf-8")) for p in documents]
    texts += [(p.relative_to(dest).as_posix(), c.source) for p in _notebooks(dest)
              for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown"]
    for doc, text in texts:
        dropped: list[str] = []
        release.unlink_missing(text, doc, dest, dropped)
        broken += dropped
    assert not broken, broken
    # what the copy unlinked: the guide's anchor and the authors' notes, nothing a learner needs
    assert copy.unlinked and all("teaching" in u or "authoring" in u or "#in-a-classroom" in u for u in copy.unlinked)
    dropped = []
    lab2 = "[lab 2](labs/02_from_calls_to_events.ipynb)"
    assert release.unlink_missing(f"see [the guide](docs/teaching.md) or {lab2}", "README.md", dest,
                                  dropped) == f"see the guide or {lab2}"
    assert dropped == ["README.md: docs/teaching.md"]


def test_its_links_name_the_class_repository(copy):
    readme = (copy.dest / "README.md").read_text(encoding="utf-8")
    badge = re.search(r"\[!\[Binder\]\([^)]+\)\]\(([^)]+)\)", readme).group(1)
    assert badge == f"https://mybinder.org/v2/gh/example-school/async-events-fall/{REF}?urlpath=lab/tree/lessons/00_welcome.ipynb"
    course = links.notebooks(ROOT)
    assert readme.count("example-school/async-events-fall") == len(course) + 1 and "OWNER/REPO" not in readme
    # `python -m helpers links` inside the copy runs the copy's helpers and finds the class repository
    out = subprocess.run([sys.executable, "-m", "helpers", "links", "--format", "csv"], cwd=copy.dest,
                         capture_output=True, text=True, timeout=60, check=True)
    rows = out.stdout.strip().splitlines()[1:]
    assert len(rows) == len(course) and all(f"/gh/example-school/async-events-fall/{REF}?" in r for r in rows), rows[:2]
    assert f"of {CLASS_REPO} at {REF}" in out.stderr
    assert "git" in copy.git and CLASS_REPO in copy.git


def test_a_folder_that_is_not_a_release_is_never_overwritten(tmp_path, copy):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.md").write_text("mine")
    with pytest.raises(Exception, match="not empty and holds no earlier release"):
        release.build(precious, CLASS_REPO)
    assert (precious / "chapter1.md").read_text() == "mine"
    with pytest.raises(ValueError, match="--repo"):
        release.build(tmp_path / "new", "https://gitlab.com/x/y")
    # an earlier release is replaced, its git repository kept
    again = release.build(copy.dest, CLASS_REPO, REF)
    assert (again.dest / ".git").is_dir() and (again.dest / "labs" / "02_from_calls_to_events.ipynb").is_file()


def test_the_command_line(tmp_path, capsys):
    from helpers.tooling.cli import main

    assert main(["release", str(tmp_path / "c"), "--repo", CLASS_REPO, "--no-git"]) == 0
    out = capsys.readouterr().out
    assert "'Show a solution' cells dropped" in out and "not made (--no-git)" in out
    assert not (tmp_path / "c" / ".git").exists()
    assert main(["release", str(tmp_path / "d")]) == 2  # --repo is required
    assert "--repo is required" in capsys.readouterr().err
    assert main(["release", str(tmp_path / "e"), "--repo", "not a url"]) == 2
    assert "--repo must be a GitHub repository" in capsys.readouterr().err


@pytest.mark.slow  # Sphinx: 5-30 s
def test_the_class_site_is_built_from_the_copy_without_solutions(copy, tmp_path):
    # Two lessons executed by hand stand in for the learners' pass; the labs come from the copy.
    executed = tmp_path / "executed"
    for name in ("00_welcome.ipynb", "04_asynchronous_events.ipynb"):
        nb = nbformat.read(ROOT / "lessons" / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
        (executed / "lessons").mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed / "lessons" / name)
    out = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "helpers", "site", "--from", str(executed), "--out", str(out)],
                         cwd=copy.dest, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "labs: learner notebooks, not executed, without solutions" in run.stdout
    lines = _solution_lines()
    pages = {p.relative_to(out).as_posix(): p.read_text(encoding="utf-8") for p in out.rglob("*.html")}
    labs = {k: v for k, v in pages.items() if k.startswith("labs/")}
    assert len(labs) == len(copy.labs)
    for name, text in labs.items():
        assert "Show a solution" not in text and "BEGIN SOLUTION" not in text, name
        assert not [line for line in lines if len(line) > 30 and line in text], name
        assert "example-school/async-events-fall" in text, name   # its launch button: the class repository
    assert not any(k.startswith("docs/teaching") for k in pages)
    assert "published as exercises" in pages["index.html"]


def test_the_self_paced_site_keeps_its_solutions():
    assert site.default_labs() == "solutions"       # in the course, labs/solutions/ exists
    assert "docs/teaching.md" in site.doc_pages() and "docs/teaching.md" not in site.doc_pages(labs="learner")
    pages, _ = site.course_pages(ROOT / "no-such-folder", labs="learner")
    assert pages and all(p.exercise and p.executed.parent == ROOT / "labs" for p in pages)
    with pytest.raises(ValueError, match="--labs"):
        site.build(ROOT / "no-such-folder", labs="answers")
