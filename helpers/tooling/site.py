"""The course website (``python -m helpers site``): every lesson and lab as a web page.

Built with Sphinx + myst-nb (the engine of Jupyter Book 1) and the Sphinx Book Theme from
EXECUTED notebooks: a folder mirroring ``lessons/`` and ``labs/solutions/``. By default
``build/learner-run/`` (the tests' learners' pass at time scale 1.0), else ``build/run/``
(``python -m helpers run --time-scale 1.0``); ``--from`` names another. Nothing is
executed here, and the build needs no network: the theme, the search index and plotly.js
all come from installed packages.

What the pages get, on top of myst-nb's rendering:

* **course order** (lessons and labs interleaved, as ``helpers.tooling.links.COURSE_PATH``);
  a lab is published at ``labs/NN_*.html`` from its executed solution (``--labs solutions``,
  the self-paced course's default) or, for a class (``--labs learner``, the default where
  ``labs/solutions/`` is absent, as in a copy made by ``python -m helpers release``), from its
  learner notebook **not executed** and without its "Show a solution" cells: an exercise to
  launch, with no answer in it (executed, a learner notebook would stop at its first check
  with "Not yet", which shows nothing a reader needs); the teacher's guide is left out;
* **plotly.js once**: every plotly figure becomes a small ``<div>`` holding its JSON, drawn
  by ``_static/course-figures.js`` with the site's one copy of ``plotly.min.js`` (the figure
  stays interactive: hover, zoom). The notebooks' saved widget state (which embeds
  plotly.js again, 5 MB per notebook) is dropped: a widget's HTML read-out is published as
  HTML, its figure as a plotly figure unless it was redrawn after it was first shown (the
  saved state keeps only the first drawing), and a note names its sliders and points to
  the launch buttons. Only the pages that have a figure load plotly.js (4.8 MB to parse:
  seconds on a slow machine) and ``course-figures.js``;
* **launch buttons**: Binder and, with ``--hub``, a JupyterHub (nbgitpuller) link per page,
  from ``helpers.tooling.links``; without a GitHub repository (``--repo`` or the git
  remote) the pages have none;
* links between notebooks point to their pages; links to other repository files point to
  GitHub when the repository is known;
* the glossary, further reading, the claims and the teacher's guide from ``docs/``, when present;
* Sphinx's own search (a local index, no service).

Sources of the site itself (``conf.py``, the home page, CSS and JS) are in ``docs/site/``;
a build stages them with the prepared notebooks in ``OUT-src/`` (``build/site-src/``) and
runs Sphinx there.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import UsageError, standalone
from .labgen import class_copy
from .links import COURSE_PATH, Repo, binder_link, check_hub, current_branch, hub_link, origin_url, parse_github
from .paths import BUILD, DOCS, ROOT

#: Where executed notebooks are looked for when --from is not given, in this order.
DEFAULT_FROM = (BUILD / "learner-run", BUILD / "run")
DEFAULT_OUT = BUILD / "site"
SITE_SOURCES = DOCS / "site"
#: Documents from docs/ published under "Reference" when they exist, in this order.
DOC_PAGES = ("glossary.md", "further-reading.md", "claims.md", "teaching.md", "instructor-notes.md", "sizing.md")
#: Documents for teachers only: a class site (``--labs learner``) leaves them out.
TEACHER_DOCS = ("teaching.md", "instructor-notes.md", "sizing.md")
LAB_SOURCES = ("solutions", "learner")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
TITLE = "Asynchronous Events"

_LINK = re.compile(r"(\]\()(<[^>]+>|[^)\s]+)(\s+\"[^\"]*\")?(\))")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#|/)", re.IGNORECASE)
#: The site's script elements for plotly.js and the figure drawer, as Sphinx writes them.
_FIGURE_SCRIPTS = re.compile(
    r'[ \t]*<script\b[^>]*\bsrc="[^"]*_static/(?:plotly\.min|course-figures)\.js[^"]*"[^>]*>\s*</script>\n?')
_REMOTE_RESOURCE = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)",
    re.IGNORECASE)


@dataclass(frozen=True)
class Page:
    """One published notebook: where it was executed from, where it goes, what it launches."""

    source: str    # repository path of the executed notebook, e.g. labs/solutions/01_break_the_chain.ipynb
    executed: Path
    staged: str    # its path in the site's sources, e.g. labs/01_break_the_chain.ipynb
    launch: str    # the notebook a learner opens, e.g. labs/01_break_the_chain.ipynb
    exercise: bool = False  # a learner lab, not executed: published without its solutions


@dataclass
class BuildResult:
    """What ``build`` made."""

    out: Path
    source: Path                                           # the folder of executed notebooks
    pages: list[Page]
    docs: list[str]
    seconds: float
    bytes: int
    missing: list[str] = field(default_factory=list)       # course notebooks with no executed copy
    with_errors: list[str] = field(default_factory=list)   # pages showing an error output
    warnings: list[str] = field(default_factory=list)      # Sphinx warnings
    labs: str = "solutions"                                # what the lab pages were made from

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"site: {len(self.pages)} notebook pages and {len(self.docs)} documents in {self.out} "
                 f"({self.bytes / 1e6:.1f} MB) built in {self.seconds:.1f} s"]
        lines.append("  labs: " + ("executed solutions" if self.labs == "solutions"
                                   else "learner notebooks, not executed, without solutions (a class site)"))
        if self.missing:
            lines.append(f"  not executed, so not published: {', '.join(self.missing)}")
        if self.with_errors:
            lines.append(f"  pages showing an error output: {', '.join(self.with_errors)}")
        if self.warnings:
            lines.append(f"  {len(self.warnings)} Sphinx warning(s), e.g. {self.warnings[0][:200]}")
        return "\n".join(lines)


# ------------------------------------------------------------------ which pages

def course_pages(from_dir: Path, labs: str = "solutions") -> tuple[list[Page], list[str]]:
    """The executed notebooks under ``from_dir`` in course order, and the repository's course
    notebooks that have no executed copy there. With ``labs="learner"`` the labs are the
    repository's learner notebooks instead (exercises, not executed)."""
    pages, missing = [], []
    for folder, number in COURSE_PATH:
        if folder == "labs" and labs == "learner":
            pages += [Page(f"labs/{p.name}", p, f"labs/{p.name}", f"labs/{p.name}", exercise=True)
                      for p in sorted((ROOT / "labs").glob(f"{number}_*.ipynb"))[:1]]
            continue
        if folder == "lessons":
            candidates = sorted((from_dir / "lessons").glob(f"{number}_*.ipynb"))
            in_repo = sorted((ROOT / "lessons").glob(f"{number}_*.ipynb"))
        else:
            candidates = sorted((from_dir / "labs" / "solutions").glob(f"{number}_*.ipynb"))
            in_repo = sorted((ROOT / "labs" / "solutions").glob(f"{number}_*.ipynb"))
        if not candidates:
            missing += [p.relative_to(ROOT).as_posix() for p in in_repo]
            continue
        executed = candidates[0]
        source = executed.relative_to(from_dir).as_posix()
        staged = source if folder == "lessons" else f"labs/{executed.name}"
        pages.append(Page(source, executed, staged, staged))
    return pages, missing


def doc_pages(docs_dir: Path = DOCS, labs: str = "solutions") -> list[str]:
    """The documents of ``DOC_PAGES`` that exist, as repository paths (docs/NAME.md); a class
    site (``labs="learner"``) leaves out :data:`TEACHER_DOCS`."""
    return [f"docs/{name}" for name in DOC_PAGES if (docs_dir / name).is_file()
            and not (labs == "learner" and name in TEACHER_DOCS)]


# ------------------------------------------------------------------ outputs

def plotly_html(figure: dict, label: str | None = None) -> str:
    """A placeholder ``<div>`` holding the figure's JSON; ``course-figures.js`` draws it."""
    layout = figure.get("layout") or {}
    title = layout.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    name = label or (" ".join(re.sub(r"<[^>]+>", " ", str(title)).split()) if title else "") or "plotly figure"
    payload = json.dumps({"data": figure.get("data") or [], "layout": layout,
                          "config": figure.get("config") or {}}, separators=(",", ":"))
    payload = payload.replace("</", "<\\/")  # never close the script element early
    height = layout.get("height")
    height = height if isinstance(height, (int, float)) else 450
    return (f'<div class="course-plotly" role="figure" aria-label="Interactive figure: {html.escape(name)}">'
            f'<div class="course-plotly-plot" style="min-height: {int(height)}px"></div>'
            f'<script type="application/json" class="course-plotly-data">{payload}</script></div>')


def _html_output(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={"text/html": text})


def _is_plotly_bundle(text: str) -> bool:
    """An output that inlines plotly.js itself (plotly's ``notebook`` renderer does this once)."""
    return len(text) > 500_000 and "plotly" in text.lower()


def _strip_remote_scripts(text: str) -> str:
    return re.sub(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script>", "", text, flags=re.IGNORECASE)


_REDRAWN = "\0figure redrawn live"  # marks a FigureWidget whose saved figure is out of date


class _Widgets:
    """A notebook's saved widget state, turned into static outputs."""

    def __init__(self, nb: nbformat.NotebookNode):
        self.state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})

    def outputs(self, model_id: str) -> list[nbformat.NotebookNode]:
        """The static outputs of one widget (its figures, read-outs and nested outputs), then a
        note naming its controls; a note alone when the state was not saved."""
        found: list[nbformat.NotebookNode] = []
        controls: list[str] = []
        self._walk(model_id, found, controls, set())
        if not found and not controls:
            return [_html_output('<p class="course-live-note">An interactive widget is shown here when the '
                                 'notebook runs: launch it to use it.</p>')]
        redrawn = _REDRAWN in controls
        names = ", ".join(html.escape(c) for c in dict.fromkeys(controls) if c != _REDRAWN)
        if names or redrawn:
            what = (f"live controls ({names}) that re-run the measurement" if names else "")
            what += (" and " if names and redrawn else "") + ("a figure it redraws as it runs" if redrawn else "")
            shown = "its last read-out" if redrawn else "the result of the run that built this page"
            found.append(_html_output(f'<p class="course-live-note">When the notebook runs, this output has {what}: '
                                      f'launch the notebook to use them. Shown here: {shown}.</p>'))
        return found

    def _walk(self, model_id: str, found: list, controls: list, seen: set) -> None:
        model = self.state.get(model_id)
        if model is None or model_id in seen:
            return
        seen.add(model_id)
        name, state = model.get("model_name", ""), model.get("state", {})
        if "_widget_data" in state or ("_data" in state and "_layout" in state):  # plotly FigureWidget
            # Its saved data is the figure as first displayed: later redraws travel as messages
            # that the saved state does not keep, so a figure edited since is not published.
            if state.get("_last_trace_edit_id") or state.get("_last_layout_edit_id"):
                controls.append(_REDRAWN)
            else:
                figure = {"data": state.get("_widget_data", state.get("_data")),
                          "layout": state.get("_widget_layout", state.get("_layout")),
                          "config": state.get("_config") or {}}
                found.append(_html_output(plotly_html(figure)))
        elif name == "OutputModel":
            found.extend(self.convert(state.get("outputs", [])))
        elif name in ("HTMLModel", "HTMLMathModel") and state.get("value"):
            found.append(_html_output(f'<div class="course-widget-html">{state["value"]}</div>'))
        elif name in ("LabelModel", "TextModel") and state.get("value"):
            found.append(nbformat.v4.new_output("stream", name="stdout", text=str(state["value"]) + "\n"))
        elif state.get("description") and not state.get("children"):
            controls.append(str(state["description"]))
        for child in state.get("children", []) or []:
            if isinstance(child, str) and child.startswith("IPY_MODEL_"):
                self._walk(child[len("IPY_MODEL_"):], found, controls, seen)

    def convert(self, outputs: list) -> list[nbformat.NotebookNode]:
        """One cell's outputs for a static page (see the module docstring)."""
        out = []
        for output in outputs:
            output = nbformat.from_dict(output)
            data = output.get("data", {})
            if WIDGET_MIME in data:
                out.extend(self.outputs(data[WIDGET_MIME].get("model_id", "")))
            elif PLOTLY_MIME in data:
                out.append(_html_output(plotly_html(data[PLOTLY_MIME])))
            elif "text/html" in data and _is_plotly_bundle("".join(data["text/html"])):
                continue
            elif "application/javascript" in data and _is_plotly_bundle("".join(data["application/javascript"])):
                continue
            else:
                if "text/html" in data:
                    data["text/html"] = _strip_remote_scripts("".join(data["text/html"]))
                out.append(output)
        return out


# ------------------------------------------------------------------ links

def _rewrite_links(text: str, source: str, staged: str, page_of: dict[str, str], repo: Repo | None,
                   ref: str) -> str:
    """Relative links in ``text`` (a document at repository path ``source``, published at
    ``staged``): to a published notebook or document -> its page; to another file of the
    repository -> GitHub (when ``repo`` is known)."""

    def fix(match: re.Match) -> str:
        target = match.group(2)
        bracketed = target.startswith("<")
        bare = target[1:-1] if bracketed else target
        if _EXTERNAL.match(bare):
            return match.group(0)
        path, _, anchor = bare.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path)) if path else source
        if resolved in page_of:
            new = posixpath.relpath(page_of[resolved], posixpath.dirname(staged))
        elif repo is not None and not resolved.startswith("..") and (ROOT / resolved).exists():
            new = f"{repo.url}/blob/{ref}/{resolved}"
        else:
            return match.group(0)
        new += f"#{anchor}" if anchor else ""
        return f"{match.group(1)}{'<' + new + '>' if bracketed else new}{match.group(3) or ''}{match.group(4)}"

    return _LINK.sub(fix, text)


def _page_map(pages: list[Page], docs: list[str]) -> dict[str, str]:
    """Repository path -> published path, for links: a lab's learner notebook, source and
    solution all lead to the lab's page."""
    out = {doc: doc for doc in docs}
    for page in pages:
        out[page.source] = page.staged
        if page.staged.startswith("labs/"):
            name = posixpath.basename(page.staged)
            out[f"labs/{name}"] = out[f"labs/sources/{name}"] = out[f"labs/solutions/{name}"] = page.staged
    return out


def launch_html(page: Page, repo: Repo | None, ref: str, hub: str | None) -> str:
    """The launch buttons of one page (empty without a repository)."""
    if repo is None:
        return ""
    links = [(binder_link(repo, ref, page.launch), "Launch on Binder", "course-launch-binder")]
    if hub:
        links.append((hub_link(hub, repo, ref, page.launch), "Open on your JupyterHub", "course-launch-hub"))
    buttons = "".join(f'<a class="course-launch-button {cls}" href="{html.escape(url)}">{text}</a>'
                      for url, text, cls in links)
    what = "lab (the exercise version)" if page.launch.startswith("labs/") else "lesson"
    return (f'<div class="course-launch" role="group" aria-label="Run this {what}">{buttons}'
            f'<span class="course-launch-path">opens <code>{html.escape(page.launch)}</code></span></div>')


# ------------------------------------------------------------------ staging

def prepare_notebook(nb: nbformat.NotebookNode, page: Page, page_of: dict[str, str], repo: Repo | None,
                     ref: str, hub: str | None) -> tuple[nbformat.NotebookNode, bool]:
    """The notebook as published, and whether it shows an error output."""
    widgets = _Widgets(nb)
    cells, errors = [], False
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            continue  # papermill's run settings, not part of the lesson
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = widgets.convert(cell.get("outputs", []))
            errors = errors or any(o.output_type == "error" for o in cell.outputs)
        elif cell.cell_type == "markdown":
            cell.source = _rewrite_links(cell.source, page.source, page.staged, page_of, repo, ref)
        cells.append(cell)
    buttons = launch_html(page, repo, ref, hub)
    if buttons:
        at = 1 if cells and cells[0].cell_type == "markdown" else 0  # after the title
        cells.insert(at, nbformat.v4.new_markdown_cell(buttons))
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    return nb, errors


def _index(docs: list[str], pages: list[Page]) -> str:
    home = (SITE_SOURCES / "index.md").read_text(encoding="utf-8")
    if any(p.exercise for p in pages):
        home = (home.rstrip() + "\n\nThe labs are published as exercises: their tasks and hints, without outputs "
                "and without solutions. Launch a lab to work on it; the check under each task tells you "
                "what to fix.\n")
    lessons = "\n".join(posixpath.splitext(p.staged)[0] for p in pages)
    text = f"{home.rstrip()}\n\n```{{toctree}}\n:caption: The course\n:maxdepth: 1\n\n{lessons}\n```\n"
    if docs:
        refs = "\n".join(posixpath.splitext(d)[0] for d in docs)
        text += f"\n```{{toctree}}\n:caption: Reference\n:maxdepth: 1\n\n{refs}\n```\n"
    return text


def stage(pages: list[Page], docs: list[str], src: Path, repo: Repo | None, ref: str,
          hub: str | None) -> list[str]:
    """Write the site's sources into ``src``; return the pages that show an error output."""
    import plotly

    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(SITE_SOURCES, src, ignore=shutil.ignore_patterns("index.md", "__pycache__"))
    static = src / "_static"
    static.mkdir(exist_ok=True)
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", static / "plotly.min.js")
    page_of = _page_map(pages, docs)
    with_errors = []
    for page in pages:
        nb = nbformat.read(page.executed, as_version=4)
        if page.exercise:
            nb = class_copy(nb)  # no "Show a solution" cell on a class site
        nb, errors = prepare_notebook(nb, page, page_of, repo, ref, hub)
        if errors:
            with_errors.append(page.source)
        target = src / page.staged
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    for doc in docs:
        target = src / doc
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (ROOT / doc).read_text(encoding="utf-8")
        target.write_text(_rewrite_links(text, doc, doc, page_of, repo, ref), encoding="utf-8")
    (src / "index.md").write_text(_index(docs, pages), encoding="utf-8")
    return with_errors


# ------------------------------------------------------------------ build

def needs_plotly(text: str) -> bool:
    """Whether a built page draws a plotly figure (or calls plotly.js from an output's script)."""
    return 'class="course-plotly"' in text or "Plotly." in text


def drop_unused_figure_scripts(html_dir: Path) -> list[str]:
    """Remove plotly.js and ``course-figures.js`` from the pages without a figure (conf.py adds
    them to every page); return those pages, relative to ``html_dir``."""
    dropped = []
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        if needs_plotly(text):
            continue
        stripped = _FIGURE_SCRIPTS.sub("", text)
        if stripped != text:
            page.write_text(stripped, encoding="utf-8")
            dropped.append(page.relative_to(html_dir).as_posix())
    return dropped


def folder_size(path: Path) -> int:
    """Bytes in the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remote_resources(out: Path) -> list[str]:
    """``file: URL`` for every http(s) script, stylesheet, image or frame a built page loads
    (the site must work offline: everything it loads is in it)."""
    found = []
    for page in sorted(out.rglob("*.html")):
        for url in _REMOTE_RESOURCE.findall(page.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{page.relative_to(out).as_posix()}: {url}")
    return found


def _repo(repo: str | None) -> Repo | None:
    if repo:
        return parse_github(repo, "--repo")
    remote = origin_url()
    try:
        return parse_github(remote) if remote else None
    except ValueError:
        return None


def default_from() -> Path:
    """The first folder of DEFAULT_FROM that exists (the first one if none does)."""
    return next((d for d in DEFAULT_FROM if d.is_dir()), DEFAULT_FROM[0])


def default_labs() -> str:
    """``solutions`` where the course has ``labs/solutions/`` (the self-paced course), else
    ``learner`` (a class copy from ``python -m helpers release``)."""
    return "solutions" if (ROOT / "labs" / "solutions").is_dir() else "learner"


def build(from_dir: Path | None = None, out: Path = DEFAULT_OUT, repo: str | None = None,
          ref: str | None = None, hub: str | None = None, labs: str | None = None) -> BuildResult:
    """Build the site from the executed notebooks in ``from_dir`` (default: :func:`default_from`)
    into ``out`` (replaced); the lab pages from the executed solutions or, with
    ``labs="learner"``, from the learner notebooks (default: :func:`default_labs`).

    ``repo`` (a GitHub URL; default: the git remote ``origin``), ``ref`` (default: the current
    branch) and ``hub`` (a JupyterHub base URL) make the launch buttons. ValueError names the
    bad parameter; RuntimeError carries Sphinx's output when the build fails.
    """
    started = time.monotonic()
    from_dir, out = Path(from_dir or default_from()).resolve(), Path(out).resolve()
    labs = labs or default_labs()
    if labs not in LAB_SOURCES:
        raise ValueError(f"--labs must be one of {', '.join(LAB_SOURCES)}, got {labs!r}")
    if not from_dir.is_dir() and labs == "solutions":
        raise ValueError(f"--from must be a folder of executed notebooks (`python -m helpers run --time-scale 1.0` "
                         f"writes build/run), got {str(from_dir)!r}, which does not exist")
    pages, missing = course_pages(from_dir, labs)
    if not pages:
        raise ValueError(f"--from {str(from_dir)!r} holds no executed lesson or lab "
                         f"(expected lessons/NN_*.ipynb and labs/solutions/NN_*.ipynb)")
    github = _repo(repo)
    hub = check_hub(hub) if hub else None
    ref = ref or current_branch()
    if not ref.strip():
        raise ValueError("--ref must name a branch, tag or commit, got an empty string")
    docs = doc_pages(labs=labs)
    src = out.with_name(out.name + "-src")
    with_errors = stage(pages, docs, src, github, ref, hub)
    html_dir = src / "_build" / "html"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(src / "_build" / "doctrees"),
           "-D", f"html_title={TITLE}", str(src), str(html_dir)]
    if github is not None:
        cmd += ["-D", f"html_theme_options.repository_url={github.url}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=src, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sphinx failed ({result.returncode}):\n{result.stderr[-4000:]}")
    drop_unused_figure_scripts(html_dir)
    for leftover in [*html_dir.glob("_static/**/*.map"), html_dir / ".buildinfo"]:
        leftover.unlink(missing_ok=True)  # source maps and build stamps: no use to a reader
    if (html_dir / "_sources").is_dir() and not any((html_dir / "_sources").iterdir()):
        (html_dir / "_sources").rmdir()
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(html_dir), str(out))
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    return BuildResult(out, from_dir, pages, docs, time.monotonic() - started, folder_size(out), missing,
                       with_errors, warnings, labs)


# ------------------------------------------------------------------ command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``site`` options: --from, --out, --repo, --ref, --hub."""
    parser.add_argument("--from", dest="from_dir", type=Path, default=None, metavar="DIR",
                        help="executed notebooks mirroring lessons/ and labs/solutions/ (default: "
                             "build/learner-run, the tests' learners' pass, else build/run, "
                             "from `python -m helpers run --time-scale 1.0`)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="where the site goes (default: build/site; replaced)")
    parser.add_argument("--repo", help="GitHub repository for the launch buttons, https://github.com/OWNER/REPO "
                                       "(default: the git remote 'origin'; none: no buttons)")
    parser.add_argument("--ref", help="branch, tag or commit the buttons launch (default: the current branch)")
    parser.add_argument("--hub", metavar="URL", help="a class JupyterHub's base URL: adds nbgitpuller buttons")
    parser.add_argument("--labs", choices=LAB_SOURCES, default=None,
                        help="lab pages from the executed solutions, or from the learner notebooks without "
                             "solutions, not executed (a class site); default: solutions where labs/solutions/ "
                             "exists, else learner")


def run(args: argparse.Namespace) -> int:
    """Build, print a summary; exit 1 if a page would load anything from the network."""
    try:
        result = build(args.from_dir, args.out, args.repo, args.ref, args.hub, args.labs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"from {result.source}")
    print(result.summary())
    if not args.repo and not origin_url():
        print("  no --repo and no git remote 'origin': the pages have no launch buttons", file=sys.stderr)
    remote = remote_resources(result.out)
    for line in remote:
        print(f"  loads from the network: {line}", file=sys.stderr)
    print(f"open {result.out / 'index.html'}")
    return 1 if remote else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.tooling.site``: the same as ``python -m helpers site``."""
    return standalone("python -m helpers site", "Build the course website from executed notebooks.",
                      add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
