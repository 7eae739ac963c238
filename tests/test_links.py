"""``python -m helpers links``: a Binder and an nbgitpuller link for every notebook, in course order."""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from coursefiles import LEARNER_LABS, LESSON_NOTEBOOKS, rel

from helpers.tooling import links
from helpers.tooling.paths import ROOT

REPO = "https://github.com/example/async-events"
HUB = "https://hub.example.edu"
# The course path as README's table "The course" lists it, written out here independently of
# helpers.tooling.links.COURSE_PATH.
PATH_ORDER = ["lessons/00", "lessons/01", "lessons/02", "lessons/03", "labs/01", "lessons/04", "labs/02",
              "lessons/05", "lessons/06", "labs/03", "lessons/07", "labs/04", "lessons/08", "labs/05",
              "lessons/09", "labs/06", "labs/07"]


def _expected() -> list[str]:
    """The lessons and learner labs in PATH_ORDER (the committed notebooks, not links.notebooks())."""
    committed = [rel(p) for p in LESSON_NOTEBOOKS + LEARNER_LABS]
    return [path for prefix in PATH_ORDER for path in committed if path.startswith(f"{prefix}_")]


@pytest.fixture(scope="module")
def command() -> list[str]:
    """``python -m helpers links`` once the CLI registers it, the module itself until then."""
    probe = subprocess.run([sys.executable, "-m", "helpers", "links", "--help"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode == 0 and "--hub" in probe.stdout:
        return [sys.executable, "-m", "helpers", "links"]
    return [sys.executable, "-m", "helpers.tooling.links"]


def _run(command: list[str], *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def _check_binder(url: str, path: str, owner: str = "example", name: str = "async-events", ref: str = "main"):
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "mybinder.org", f"/v2/gh/{owner}/{name}/{ref}"), url
    assert parse_qs(parts.query, strict_parsing=True) == {"urlpath": [f"lab/tree/{path}"]}, url


def _check_hub(url: str, path: str):
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "hub.example.edu", "/hub/user-redirect/git-pull"), url
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {"repo": [REPO], "branch": ["main"], "urlpath": [f"lab/tree/async-events/{path}"]}, url
    assert re.match(r"repo=.*&branch=.*&urlpath=", parts.query), f"parameters out of order: {url}"


def test_markdown_has_both_links_for_every_notebook_in_course_order(command):
    result = _run(command, "--repo", REPO, "--hub", HUB, "--ref", "main")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    paths = [re.search(r"\(`([^`]+)`\)", row).group(1) for row in rows]
    expected = _expected()
    assert len(expected) >= 14, f"the course has at least 9 lessons and 5 labs, found {expected}"
    assert paths == expected, f"order or set differs:\n got {paths}\nwant {expected}"
    assert len(set(paths)) == len(paths), "a notebook appears twice"
    for row, path in zip(rows, paths, strict=True):
        assert (ROOT / path).is_file(), f"{path} does not exist"
        urls = re.findall(r"\]\((https://[^)\s]+)\)", row)
        assert len(urls) == 2, f"expected a Binder and a JupyterHub link: {row}"
        _check_binder(urls[0], path)
        _check_hub(urls[1], path)


def test_csv_parses_and_agrees_with_the_course_path(command):
    result = _run(command, "--repo", REPO, "--hub", HUB, "--ref", "main", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["path"] for r in rows] == _expected()
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert r["kind"] == ("lab" if r["path"].startswith("labs/") else "lesson")
        assert r["title"].startswith(("Lesson", "Lab")), r
        _check_binder(r["binder"], r["path"])
        _check_hub(r["jupyterhub"], r["path"])


def test_without_hub_there_is_no_hub_column(command):
    result = _run(command, "--repo", REPO, "--ref", "main", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "step,kind,title,path,binder"


@pytest.mark.parametrize("repo", ["https://gitlab.com/example/async-events", "example/async-events",
                                  "https://github.com/example", "not a url"])
def test_bad_repo_exits_2_naming_the_option(command, repo):
    result = _run(command, "--repo", repo)
    assert result.returncode == 2, result.stdout
    assert "--repo" in result.stderr and repr(repo) in result.stderr, result.stderr
    assert not result.stdout


def test_bad_hub_exits_2_naming_the_option(command):
    result = _run(command, "--repo", REPO, "--hub", "hub.example.edu")
    assert result.returncode == 2 and "--hub" in result.stderr, result.stderr


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def test_repository_and_ref_default_to_the_git_remote_and_branch(command, tmp_path):
    _git("init", "-q", cwd=tmp_path)
    _git("symbolic-ref", "HEAD", "refs/heads/term-2026", cwd=tmp_path)
    _git("remote", "add", "origin", "git@github.com:teacher/async-events-fall.git", cwd=tmp_path)
    result = _run(command, "--format", "csv", env={"GIT_DIR": str(tmp_path / ".git")})
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and [r["path"] for r in rows] == _expected()
    for r in rows:
        _check_binder(r["binder"], r["path"], owner="teacher", name="async-events-fall", ref="term-2026")


def test_no_remote_and_no_repo_exits_2(command, tmp_path):
    _git("init", "-q", cwd=tmp_path)
    result = _run(command, env={"GIT_DIR": str(tmp_path / ".git")})
    assert result.returncode == 2, result.stdout
    assert "origin" in result.stderr and "--repo" in result.stderr, result.stderr


@pytest.mark.parametrize("url", ["https://github.com/o-1/r.x", "https://github.com/o-1/r.x.git",
                                 "https://github.com/o-1/r.x/", "git@github.com:o-1/r.x.git",
                                 "ssh://git@github.com/o-1/r.x.git"])
def test_github_url_forms(url):
    assert links.parse_github(url) == links.Repo("o-1", "r.x")


def test_refs_and_paths_are_url_encoded():
    repo = links.Repo("o", "r")
    binder = links.binder_link(repo, "term/2026", "labs/a b#1.ipynb")
    parts = urlsplit(binder)
    assert parts.path == "/v2/gh/o/r/term%2F2026" and not parts.fragment, binder
    assert parse_qs(parts.query) == {"urlpath": ["lab/tree/labs/a b#1.ipynb"]}
    hub = urlsplit(links.hub_link("https://hub.example.edu/jupyter/", repo, "term/2026", "x&y.ipynb"))
    assert hub.path == "/jupyter/hub/user-redirect/git-pull"
    assert parse_qs(hub.query) == {"repo": ["https://github.com/o/r"], "branch": ["term/2026"],
                                   "urlpath": ["lab/tree/r/x&y.ipynb"]}
