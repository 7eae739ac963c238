"""Launch links for every lesson and lab, in course order (``python -m helpers links``).

For each notebook: a Binder link (``https://mybinder.org/v2/gh/OWNER/REPO/REF?urlpath=lab/tree/PATH``)
and, given ``--hub URL``, an nbgitpuller link that clones the repository into a class
JupyterHub user's home and opens the notebook in JupyterLab
(``URL/hub/user-redirect/git-pull?repo=...&branch=...&urlpath=lab/tree/REPO/PATH``, the format
of nbgitpuller's link generator). The repository defaults to the git remote ``origin``; a
teacher who forks the course to pin it for a term passes ``--repo`` and ``--ref``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from . import UsageError, standalone
from .paths import ROOT

#: The course path (README's table "The course"): (folder, number) in the order a class meets them.
#: A notebook is the one ``folder/NN_*.ipynb``; entries whose file does not exist are skipped.
COURSE_PATH: tuple[tuple[str, str], ...] = (
    ("lessons", "00"), ("lessons", "01"), ("lessons", "02"), ("lessons", "03"), ("labs", "01"),
    ("lessons", "04"), ("labs", "02"), ("lessons", "05"), ("lessons", "06"), ("labs", "03"),
    ("lessons", "07"), ("labs", "04"), ("lessons", "08"), ("labs", "05"),
    ("lessons", "09"), ("labs", "06"), ("labs", "07"),
)
BINDER_URL = "https://mybinder.org"
DEFAULT_REF = "main"
FORMATS = ("markdown", "csv")

_GITHUB = re.compile(
    r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<name>[A-Za-z0-9._-]+?)(?:\.git)?/?$"
)


@dataclass(frozen=True)
class Repo:
    """A GitHub repository: owner and name."""

    owner: str
    name: str

    @property
    def url(self) -> str:
        """The https clone URL (what nbgitpuller's ``repo`` takes)."""
        return f"https://github.com/{self.owner}/{self.name}"


@dataclass(frozen=True)
class Link:
    """One notebook's launch links."""

    step: int
    kind: str  # "lesson" | "lab"
    path: str  # repository-relative, with forward slashes
    title: str
    binder: str
    hub: str | None = None


def parse_github(url: str, option: str = "--repo") -> Repo:
    """OWNER/REPO of a GitHub URL (https, git@ or ssh form); ValueError naming ``option`` otherwise."""
    match = _GITHUB.match(url.strip())
    if not match or match["name"] in (".", ".."):
        raise ValueError(f"{option} must be a GitHub repository like https://github.com/OWNER/REPO, got {url!r}")
    return Repo(match["owner"], match["name"])


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def origin_url(root: Path = ROOT) -> str | None:
    """The URL of the git remote ``origin`` of ``root``, or None if there is none."""
    return _git(root, "remote", "get-url", "origin")


def current_branch(root: Path = ROOT) -> str:
    """The checked-out branch of ``root``; DEFAULT_REF when detached or not a git clone."""
    return _git(root, "symbolic-ref", "--quiet", "--short", "HEAD") or DEFAULT_REF


def notebooks(root: Path = ROOT) -> list[Path]:
    """The lessons and labs that exist under ``root``, in course order (COURSE_PATH)."""
    found = []
    for folder, number in COURSE_PATH:
        matches = sorted((root / folder).glob(f"{number}_*.ipynb"))
        if len(matches) > 1:
            raise ValueError(f"{folder}/ holds {len(matches)} notebooks numbered {number}: "
                             f"{', '.join(m.name for m in matches)}")
        found.extend(matches)
    return found


def title(path: Path) -> str:
    """The notebook's ``# heading`` (first markdown cell), without emphasis; the file stem otherwise."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            text = "".join(cell.get("source", "")).strip()
            if text.startswith("# "):
                return re.sub(r"[*_`]", "", text.splitlines()[0][2:]).strip()
            break
    return path.stem


def check_hub(hub: str) -> str:
    """A JupyterHub base URL without its trailing slash; ValueError naming --hub otherwise."""
    parts = urlsplit(hub.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"--hub must be the JupyterHub's base URL like https://hub.example.edu, got {hub!r}")
    return hub.strip().rstrip("/")


def binder_link(repo: Repo, ref: str, path: str) -> str:
    """mybinder.org link that builds ``repo`` at ``ref`` and opens ``path`` in JupyterLab."""
    return (f"{BINDER_URL}/v2/gh/{repo.owner}/{repo.name}/{quote(ref, safe='')}"
            f"?urlpath={quote(f'lab/tree/{path}', safe='/')}")


def hub_link(hub: str, repo: Repo, ref: str, path: str) -> str:
    """nbgitpuller link: pull ``repo`` at branch ``ref`` into the user's home, open ``path``."""
    query = urlencode({"repo": repo.url, "branch": ref, "urlpath": f"lab/tree/{repo.name}/{path}"},
                      quote_via=quote, safe="/")
    return f"{check_hub(hub)}/hub/user-redirect/git-pull?{query}"


def links(repo: Repo, ref: str, hub: str | None = None, root: Path = ROOT) -> list[Link]:
    """Every lesson's and lab's launch links, in course order."""
    if not ref.strip():
        raise ValueError("--ref must name a branch, tag or commit, got an empty string")
    out = []
    for step, nb in enumerate(notebooks(root), start=1):
        path = nb.relative_to(root).as_posix()
        kind = "lab" if path.startswith("labs/") else "lesson"
        out.append(Link(step, kind, path, title(nb), binder_link(repo, ref, path),
                        hub_link(hub, repo, ref, path) if hub else None))
    return out


def render(rows: list[Link], fmt: str = "markdown") -> str:
    """The links as a Markdown table or CSV (with a ``jupyterhub`` column when a hub was given)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    with_hub = any(r.hub for r in rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["step", "kind", "title", "path", "binder"] + (["jupyterhub"] if with_hub else []))
        for r in rows:
            writer.writerow([r.step, r.kind, r.title, r.path, r.binder] + ([r.hub] if with_hub else []))
        return buf.getvalue()
    head = "| # | notebook | Binder |" + (" JupyterHub |" if with_hub else "")
    lines = [head, "|---|---|---|" + ("---|" if with_hub else "")]
    for r in rows:
        line = f"| {r.step} | {r.title} (`{r.path}`) | [launch]({r.binder}) |"
        lines.append(line + (f" [open]({r.hub}) |" if with_hub else ""))
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``links`` options: --repo, --ref, --hub, --format."""
    parser.add_argument("--repo", help="GitHub repository, https://github.com/OWNER/REPO "
                                       "(default: the git remote 'origin')")
    parser.add_argument("--ref", help="branch, tag or commit to launch (default: the current branch, else main)")
    parser.add_argument("--hub", metavar="URL", help="a class JupyterHub's base URL: adds nbgitpuller links")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default: markdown)")


def run(args: argparse.Namespace) -> int:
    """Print the links. An unknown or non-GitHub repository, a bad --hub or --ref is a
    :class:`~helpers.tooling.UsageError` naming the option (the CLI exits 2)."""
    try:
        if args.repo:
            repo = parse_github(args.repo, "--repo")
        else:
            remote = origin_url()
            if not remote:
                raise ValueError("this clone has no git remote 'origin' and no --repo was given: "
                                 "pass --repo https://github.com/OWNER/REPO")
            repo = parse_github(remote, "the git remote 'origin' (or pass --repo)")
        hub = check_hub(args.hub) if args.hub else None
        ref = args.ref or current_branch()
        rows = links(repo, ref, hub)
        text = render(rows, args.format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"{len(rows)} notebooks of {repo.url} at {ref}", file=sys.stderr)  # stdout stays the table
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.links``: the same as ``python -m helpers links``."""
    return standalone("python -m helpers links", "Binder and JupyterHub (nbgitpuller) launch links "
                                                 "for every lesson and lab, in course order.", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
