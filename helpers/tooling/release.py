"""``python -m helpers release DIR --repo URL``: the class copy of the course, without solutions.

What a teacher pushes to the class repository (the one the class's Binder and nbgitpuller
links name):

* ``lessons/``, as they are;
* ``labs/NN_*.ipynb``, the learner notebooks less their "Show a solution" cells
  (:func:`helpers.tooling.labgen.class_copy`; the cell ids stay, so the grader matches a
  submission's cells with the course's); no ``labs/solutions/``, no ``labs/sources/``;
* ``helpers/`` (the library every notebook imports; it holds the checks too, which is no
  leak: a check judges what code does and keeps no answer), ``binder/``, ``docker/``,
  ``jupyter-config/`` (the JupyterLab settings binder/postBuild and docker/ install),
  ``pyproject.toml``, ``environment.yml``;
* the learners' documents of ``docs/`` (:data:`LEARNER_DOCS`) and the site's sources
  ``docs/site/``; not the teacher's guide, the grading guide, nor the authors' notes;
* a README for the class: the Binder badge and a launch link per notebook, for ``--repo``;
* a git repository (no commit) whose remote ``origin`` is ``--repo`` on branch ``--ref``, so
  ``python -m helpers links`` and ``python -m helpers site`` run inside it name the class
  repository; ``.course-release.json`` says what it was built from.

A relative link to a file the copy leaves out becomes its plain text, so no page of the copy
links to something missing. ``DIR`` must be new, empty, or an earlier release (replaced, its
``.git`` kept).
"""
from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import UsageError, standalone
from .labgen import class_copy
from .links import Repo, binder_link, notebooks, parse_github, title
from .paths import DOCS, LABS, LESSONS, ROOT

#: The documents of docs/ that a learner reads (lessons and labs link to them).
LEARNER_DOCS = ("setup.md", "glossary.md", "further-reading.md", "claims.md", "durations.json")
TOP_FILES = ("pyproject.toml", "environment.yml", ".gitignore", ".dockerignore")
#: binder/postBuild and docker/ copy the course's JupyterLab settings from jupyter-config/.
TOP_DIRS = ("binder", "docker", "jupyter-config")
MARKER = ".course-release.json"
DEFAULT_REF = "main"

_MD_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")            # [text](target), not an image
_HTML_LINK = re.compile(r"<a\s+href=\"([^\"]+)\"[^>]*>(.*?)</a>", re.DOTALL)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|/)", re.IGNORECASE)


@dataclass
class Release:
    """What :func:`build` wrote."""

    dest: Path
    repo: Repo
    ref: str
    lessons: list[str]
    labs: list[str]
    reveals_dropped: int
    unlinked: list[str] = field(default_factory=list)   # "file: target" of links made plain text
    git: str = ""                                        # what became of the git repository

    def summary(self) -> str:
        """A few lines for the terminal."""
        files = [p for p in self.dest.rglob("*") if p.is_file() and ".git" not in p.relative_to(self.dest).parts]
        return "\n".join([
            f"release: {len(self.lessons)} lessons and {len(self.labs)} labs in {self.dest} "
            f"({len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB) "
            f"for {self.repo.url} at {self.ref}",
            f"  labs without their solutions: {self.reveals_dropped} 'Show a solution' cells dropped; "
            "no labs/solutions/, no labs/sources/, no teacher's guide",
            f"  links to files left out, made plain text: {len(self.unlinked)}",
            f"  git: {self.git}",
        ])


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".ipynb_checkpoints") or n.endswith((".pyc", ".egg-info"))}


def _prepare(dest: Path) -> None:
    """Make ``dest`` ready: new, empty, or an earlier release (emptied, its .git kept)."""
    if dest == ROOT or ROOT in dest.parents and dest.parts[len(ROOT.parts)] != "build":
        raise UsageError(f"DIR must be outside the course (or under its build/), got {dest}")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"DIR must be a folder, got the file {dest}")
    if dest.is_dir():
        content = [p for p in dest.iterdir() if p.name != ".git"]
        if content and not (dest / MARKER).is_file():
            raise UsageError(f"DIR {dest} is not empty and holds no earlier release ({MARKER}): "
                             "name a new or empty folder")
        for path in content:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    dest.mkdir(parents=True, exist_ok=True)


def _write_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def _labs(dest: Path) -> tuple[list[str], int]:
    names, dropped = [], 0
    for path in sorted(LABS.glob("*.ipynb")):
        learner = nbformat.read(path, as_version=4)
        copy = class_copy(learner)
        dropped += len(learner.cells) - len(copy.cells)
        _write_notebook(copy, dest / "labs" / path.name)
        names.append(f"labs/{path.name}")
    return names, dropped


def _section(text: str, heading: str) -> str:
    """The section of a Markdown text under ``## heading`` (to the next ``## ``), or ''."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    return f"## {heading}\n{match.group(1).rstrip()}\n" if match else ""


def _paragraph(text: str, start: str) -> str:
    match = re.search(rf"^{re.escape(start)}.*?(?=\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
    return match.group(0).strip() + "\n" if match else ""


def readme(repo: Repo, ref: str, root: Path = ROOT) -> str:
    """The class copy's README: badge, what the course is, how to start, a launch link per
    notebook (for ``repo`` at ``ref``), credit and troubleshooting from the course's README."""
    course = (root / "README.md").read_text(encoding="utf-8") if (root / "README.md").is_file() else ""
    rows = []
    for step, nb in enumerate(notebooks(root), start=1):
        path = nb.relative_to(root).as_posix()
        rows.append(f"| {step} | [{title(nb)}]({path}) | [launch on Binder]({binder_link(repo, ref, path)}) |")
    parts = [
        "# Asynchronous Events\n",
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_link(repo, ref, 'lessons/00_welcome.ipynb')})\n",
        _paragraph(course, "A hands-on course"),
        "This is your class's copy of the course. Work through the notebooks in order: lessons and labs "
        "alternate, and the **Next** link at the bottom of each notebook leads on. In a lab, the check "
        "under each task runs your code against Kafka and says what to fix; your teacher grades the "
        "labs you hand in with the same checks.\n",
        "## Start\n",
        "On Binder, with nothing to install: the badge above opens lesson 0, and the table below opens "
        "each notebook. On your own machine (Linux or macOS, Python 3.11+), in this folder:\n",
        "```bash\npython3 -m venv .venv && . .venv/bin/activate && pip install -e . && python -m helpers start\n```\n",
        "`python -m helpers doctor` checks your setup and names the fix for anything missing; "
        "[docs/setup.md](docs/setup.md) has the setup for each system.\n",
        "## The course\n",
        "| # | notebook | run it |\n|---|---|---|\n" + "\n".join(rows) + "\n",
        _paragraph(course, "**Credit.**"),
        _section(course, "The three ways to reach Kafka"),
        _section(course, "Troubleshooting"),
    ]
    return "\n".join(p for p in parts if p).rstrip() + "\n"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def _target_exists(dest: Path, doc: str, target: str, anchors: set[str]) -> bool:
    path, _, anchor = target.partition("#")
    if not path:
        return not anchor or anchor in anchors
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(doc), path))
    return not resolved.startswith("..") and (dest / resolved).exists()


def unlink_missing(text: str, doc: str, dest: Path, dropped: list[str]) -> str:
    """``text`` (of ``doc``, a path relative to ``dest``) with every relative link whose file is not
    in ``dest`` (or whose same-page anchor is not a heading of ``text``) replaced by its words."""
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}

    def unlinked(words_group: int, target_group: int) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            words, target = match.group(words_group), match.group(target_group)
            if _EXTERNAL.match(target) or _target_exists(dest, doc, target, anchors):
                return match.group(0)
            dropped.append(f"{doc}: {target}")
            return words
        return replace

    return _HTML_LINK.sub(unlinked(2, 1), _MD_LINK.sub(unlinked(1, 2), text))


def _fix_links(dest: Path) -> list[str]:
    dropped: list[str] = []
    for path in sorted(dest.rglob("*.md")):
        if ".git" in path.relative_to(dest).parts or "site" in path.relative_to(dest).parts:
            continue  # docs/site/ is the site's own sources: Sphinx resolves them
        doc = path.relative_to(dest).as_posix()
        text = path.read_text(encoding="utf-8")
        fixed = unlink_missing(text, doc, dest, dropped)
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")
    for path in sorted([*(dest / "lessons").glob("*.ipynb"), *(dest / "labs").glob("*.ipynb")]):
        nb = nbformat.read(path, as_version=4)
        doc, changed = path.relative_to(dest).as_posix(), False
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                fixed = unlink_missing(cell.source, doc, dest, dropped)
                changed, cell.source = changed or fixed != cell.source, fixed
        if changed:
            _write_notebook(nb, path)
    return dropped


def _git(dest: Path, repo: Repo, ref: str) -> str:
    """Make ``dest`` a git repository on branch ``ref`` whose origin is ``repo`` (no commit)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(dest), *args], capture_output=True, text=True, check=False)

    try:
        if not (dest / ".git").exists():
            made = git("init", "-q", "-b", ref)
            if made.returncode != 0:
                return f"not a git repository ({made.stderr.strip()[:120]})"
        known = git("remote", "get-url", "origin")
        if known.returncode != 0:
            git("remote", "add", "origin", repo.url)
        elif known.stdout.strip() != repo.url:
            git("remote", "set-url", "origin", repo.url)
    except OSError as exc:  # no git on this machine
        return f"not a git repository (git: {exc})"
    return (f"origin {repo.url}, branch {ref}: review, then `git -C {dest} add -A && git -C {dest} commit "
            f"-m 'Class release' && git -C {dest} push -u origin {ref}`")


def _course_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def build(dest: Path | str, repo: str, ref: str = DEFAULT_REF, *, git: bool = True) -> Release:
    """Write the class copy into ``dest`` for the GitHub repository ``repo`` at branch ``ref``.

    ValueError names ``repo`` or ``ref`` when they are malformed; UsageError names DIR when it
    holds something other than an earlier release."""
    github = parse_github(repo, "--repo")
    if not ref.strip() or any(c.isspace() for c in ref):
        raise ValueError(f"--ref must name a branch, got {ref!r}")
    dest = Path(dest).expanduser().resolve()
    _prepare(dest)
    shutil.copytree(ROOT / "helpers", dest / "helpers", ignore=_ignore)
    for name in TOP_DIRS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=_ignore)
    for name in TOP_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    (dest / "lessons").mkdir()
    lessons = []
    for path in sorted(LESSONS.glob("*.ipynb")):
        shutil.copy2(path, dest / "lessons" / path.name)
        lessons.append(f"lessons/{path.name}")
    labs, dropped = _labs(dest)
    (dest / "docs").mkdir(exist_ok=True)
    for name in LEARNER_DOCS:
        if (DOCS / name).is_file():
            shutil.copy2(DOCS / name, dest / "docs" / name)
    if (DOCS / "site").is_dir():
        shutil.copytree(DOCS / "site", dest / "docs" / "site", ignore=_ignore)
    (dest / "README.md").write_text(readme(github, ref), encoding="utf-8")
    unlinked = _fix_links(dest)
    (dest / MARKER).write_text(json.dumps({
        "repo": github.url, "ref": ref, "course_commit": _course_commit(),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "lessons": lessons, "labs": labs,
        "note": "a class copy made by `python -m helpers release`: the labs hold no solutions",
    }, indent=2) + "\n", encoding="utf-8")
    result = Release(dest, github, ref, lessons, labs, dropped, unlinked)
    result.git = _git(dest, github, ref) if git else "not made (--no-git)"
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """DIR and --repo (both required, checked by :func:`run`), --ref, --no-git."""
    parser.add_argument("dest", type=Path, metavar="DIR", nargs="?", default=None,
                        help="the folder for the class copy (new, empty, or an earlier release, which is replaced)")
    parser.add_argument("--repo", metavar="URL",
                        help="the class repository on GitHub, https://github.com/OWNER/REPO: "
                             "the README's badge and every launch link name it")
    parser.add_argument("--ref", default=DEFAULT_REF, help=f"its branch (default: {DEFAULT_REF})")
    parser.add_argument("--no-git", action="store_true", help="do not make DIR a git repository")


def run(args: argparse.Namespace) -> int:
    """Build the copy and print what it holds."""
    if args.dest is None:
        raise UsageError("DIR is required: the folder for the class copy")
    if not args.repo:
        raise UsageError("--repo is required: the class repository, https://github.com/OWNER/REPO, that every "
                         "launch link of the copy names")
    try:
        result = build(args.dest, args.repo, args.ref, git=not args.no_git)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(result.summary())
    print(f"  its site: cd {result.dest} && python -m helpers site --from {ROOT / 'build' / 'learner-run'} "
          "(lessons as they ran; labs as exercises, without solutions)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.release``: the same as ``python -m helpers release``."""
    return standalone("python -m helpers release", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
