"""The course website (helpers.tooling.site), built from stand-in executed notebooks.

The notebooks are copies of lessons 00 and 01 and the lab 2 solution with outputs written in
by hand (a plotly figure, a widget with its saved state, an inlined plotly.js bundle, a CDN
script), so this test needs no kernel and no broker; tests/browser/test_site_pages.py opens a
site built from really executed notebooks in Chromium.
"""
from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from helpers.tooling import site
from helpers.tooling.links import Repo, binder_link, hub_link
from helpers.tooling.paths import ROOT

REPO, REF, HUB = "https://github.com/example/async-events", "term-2026", "https://hub.example.edu"
SOURCES = ("lessons/00_welcome.ipynb", "lessons/01_synchronous_calls.ipynb",
           "labs/solutions/02_from_calls_to_events.ipynb")
FIGURE_TITLE = "Calls <b>and</b> hops"
TRACE = "hop </script> time"  # must not close the page's script element
SLIDER = "services in chain"


def _figure(title: str) -> dict:
    return {"data": [{"type": "bar", "x": [1.0, 2.0], "y": ["a", "b"], "orientation": "h", "name": TRACE}],
            "layout": {"title": {"text": title}, "height": 300}}


def _widget_state() -> dict:
    """A VBox(slider, HTML read-out, FigureWidget) as nbclient saves it; the FigureWidget's
    model carries plotly.js in its ``_esm`` (5 MB in a real run)."""
    def model(name, module, **state):
        return {"model_name": name, "model_module": module, "model_module_version": "2.0.0", "state": state}

    return {"version_major": 2, "version_minor": 0, "state": {
        "box": model("VBoxModel", "@jupyter-widgets/controls",
                     children=["IPY_MODEL_slider", "IPY_MODEL_readout", "IPY_MODEL_figure", "IPY_MODEL_redrawn"]),
        "slider": model("IntSliderModel", "@jupyter-widgets/controls", description=SLIDER, value=2),
        "readout": model("HTMLModel", "@jupyter-widgets/controls", value="<b>10/10 ok</b> &middot; p50 31 ms"),
        "figure": model("AnyModel", "anywidget", _esm="/* plotly.js */ " + "x" * 200_000,
                        _widget_data=_figure("Live widget figure")["data"],
                        _widget_layout={"title": {"text": "Live widget figure"}, "height": 250},
                        _last_trace_edit_id=0, _last_layout_edit_id=0),
        # redrawn after it was shown: its saved data is the first drawing, out of date
        "redrawn": model("AnyModel", "anywidget", _widget_data=[], _last_trace_edit_id=3, _last_layout_edit_id=5,
                         _widget_layout={"title": {"text": "Stale placeholder"}}),
    }}


def _execute_by_hand(source: Path, target: Path) -> None:
    nb = nbformat.read(source, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        cell.execution_count = 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="measured: 42 ms\n")]
    params = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if params is not None:
        injected = nbformat.v4.new_code_cell("# Parameters\nTIME_SCALE = 1.0  # INJECTED-BY-PAPERMILL\n")
        injected.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(params + 1, injected)
    if "01_" in source.name:
        code[-1].outputs = [
            nbformat.v4.new_output("display_data", data={"text/html": "<script>/* plotly.js v9 */"
                                                                      + "p" * 600_000 + "</script>"}),
            nbformat.v4.new_output("display_data", data={site.PLOTLY_MIME: _figure(FIGURE_TITLE)}),
            nbformat.v4.new_output("display_data", data={
                "text/html": '<script src="https://cdn.plot.ly/plotly-2.0.min.js"></script><div>kept-html</div>'}),
        ]
        code[-2].outputs = [nbformat.v4.new_output("display_data", data={
            site.WIDGET_MIME: {"model_id": "box", "version_major": 2, "version_minor": 0},
            "text/plain": "VBox(children=(IntSlider(...),))"})]
        nb.metadata["widgets"] = {site.WIDGET_STATE: _widget_state()}
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    executed = base / "executed"
    for rel in SOURCES:
        _execute_by_hand(ROOT / rel, executed / rel)
    result = site.build(executed, base / "site", repo=REPO, ref=REF, hub=HUB)
    print(result.summary())
    return result


def _page(built, rel: str) -> str:
    return (built.out / rel).read_text(encoding="utf-8")


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_the_pages_follow_the_course_path(built, tmp_path):
    assert [p.staged for p in built.pages] == ["lessons/00_welcome.ipynb", "lessons/01_synchronous_calls.ipynb",
                                               "labs/02_from_calls_to_events.ipynb"]
    index = _page(built, "index.html")
    body = index[index.index('class="bd-article"'):]
    hrefs = [h for h in re.findall(r'href="((?:lessons|labs)/[^"#]+\.html)"', body)]
    assert list(dict.fromkeys(hrefs)) == ["lessons/00_welcome.html", "lessons/01_synchronous_calls.html",
                                          "labs/02_from_calls_to_events.html"]
    assert "lessons/02_cascading_failures.ipynb" in built.missing
    # the whole path, from file names alone: lessons and labs interleaved
    for folder, number in site.COURSE_PATH:
        sub = tmp_path / (folder if folder == "lessons" else "labs/solutions")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{number}_x.ipynb").write_text("{}")
    order = [p.staged for p in site.course_pages(tmp_path)[0]]
    assert order[:7] == ["lessons/00_x.ipynb", "lessons/01_x.ipynb", "lessons/02_x.ipynb", "lessons/03_x.ipynb",
                         "labs/01_x.ipynb", "lessons/04_x.ipynb", "labs/02_x.ipynb"]
    assert order[-5:] == ["lessons/08_x.ipynb", "labs/05_x.ipynb", "lessons/09_x.ipynb", "labs/06_x.ipynb",
                          "labs/07_x.ipynb"]


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_plotly_js_ships_once_and_nothing_loads_from_the_network(built):
    bundles = [p for p in built.out.rglob("*") if p.is_file() and "window.Plotly = Plotly" in
               p.read_text(encoding="utf-8", errors="replace")]
    assert [p.relative_to(built.out).as_posix() for p in bundles] == ["_static/plotly.min.js"]
    assert site.remote_resources(built.out) == []
    page = _page(built, "lessons/01_synchronous_calls.html")
    assert '<script src="../_static/plotly.min.js' in page
    assert "cdn.plot.ly" not in page and "kept-html" in page          # the CDN script went, the HTML stayed
    assert "p" * 1000 not in page and "x" * 1000 not in page          # no inlined bundle, no widget _esm
    assert max(p.stat().st_size for p in built.out.rglob("*.html")) < 1_000_000
    assert built.bytes < 30_000_000


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_only_pages_with_a_figure_load_plotly_js(built):
    with_figure = _page(built, "lessons/01_synchronous_calls.html")
    assert 'class="course-plotly"' in with_figure and "_static/course-figures.js" in with_figure
    for rel in ("index.html", "lessons/00_welcome.html", "labs/02_from_calls_to_events.html", "search.html"):
        page = _page(built, rel)
        assert 'class="course-plotly"' not in page, rel
        assert "plotly.min.js" not in page and "course-figures.js" not in page, rel
        assert "_static/doctools.js" in page, rel  # only those two scripts went


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_figures_and_widgets_become_interactive_plotly_divs(built):
    page = _page(built, "lessons/01_synchronous_calls.html")
    payloads = re.findall(r'<script type="application/json" class="course-plotly-data">(.*?)</script>', page, re.S)
    figures = [json.loads(p) for p in payloads]
    titles = [f["layout"]["title"]["text"] for f in figures]
    assert sorted(titles) == sorted([FIGURE_TITLE, "Live widget figure"]), titles
    assert all(f["data"][0]["name"] == TRACE for f in figures)
    assert 'aria-label="Interactive figure: Calls and hops"' in page
    assert SLIDER in page and "10/10 ok" in page                      # the controls named, the read-out kept
    assert "Stale placeholder" not in page and "a figure it redraws as it runs" in page
    assert "TIME_SCALE = 1.0  # INJECTED-BY-PAPERMILL" not in page    # papermill's injected cell is dropped


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_every_page_has_its_launch_buttons(built):
    repo = Repo("example", "async-events")
    for path, launch in (("lessons/01_synchronous_calls.html", "lessons/01_synchronous_calls.ipynb"),
                         ("labs/02_from_calls_to_events.html", "labs/02_from_calls_to_events.ipynb")):
        page = _page(built, path)
        assert f'href="{html.escape(binder_link(repo, REF, launch))}"' in page, path
        assert f'href="{html.escape(hub_link(HUB, repo, REF, launch))}"' in page, path
    assert "labs/solutions/" not in _page(built, "labs/02_from_calls_to_events.html").split("course-launch")[1][:2000]


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_links_between_notebooks_lead_to_their_pages(built):
    page = _page(built, "lessons/01_synchronous_calls.html")
    assert 'href="00_welcome.html"' in page
    assert f'href="{REPO}/blob/{REF}/lessons/02_cascading_failures.ipynb"' in page   # not published: GitHub
    assert not re.search(r'href="(?!https?:)[^"]*\.ipynb"', page), "a relative link to a raw notebook"


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_docs_pages_and_search(built):
    for name in site.DOC_PAGES:
        if (ROOT / "docs" / name).is_file():
            assert (built.out / "docs" / name.replace(".md", ".html")).is_file(), name
            assert f"docs/{name}" in built.docs
    assert (built.out / "search.html").is_file()
    index = (built.out / "searchindex.js").read_text(encoding="utf-8")
    assert "synchron" in index.lower()


def test_the_command_line_names_a_bad_option(tmp_path, capsys):
    assert site.main(["--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "site")]) == 2
    assert "--from" in capsys.readouterr().err
    executed = tmp_path / "executed"
    shutil.copytree(ROOT / "lessons", executed / "lessons", ignore=shutil.ignore_patterns("0[1-9]_*"))
    assert site.main(["--from", str(executed), "--out", str(tmp_path / "site"), "--repo", "not-a-repo"]) == 2
    assert "--repo" in capsys.readouterr().err
    assert site.main(["--from", str(executed), "--out", str(tmp_path / "site"), "--repo", REPO,
                      "--hub", "ftp://hub"]) == 2
    assert "--hub" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


@pytest.mark.slow  # builds the site (the module's `built`: 5 s)
def test_every_page_has_the_course_mark_as_its_icon(built):
    """A browser that finds no ``<link rel="icon">`` asks for /favicon.ico, which the site does
    not have (a 404 and a console error on the first page): every page, search included, names
    the course mark, and the file it names is there and not empty. The sidebar shows the mark
    too, with alternative text."""
    pages = sorted(p for p in built.out.rglob("*.html") if "_static" not in p.relative_to(built.out).parts)
    assert built.out / "search.html" in pages and built.out / "index.html" in pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        icons = re.findall(r'<link rel="icon" href="([^"]+)"', text)
        assert len(icons) == 1, f"{page.relative_to(built.out)}: icon links {icons}"
        target = (page.parent / icons[0]).resolve()
        assert target.is_file() and target.stat().st_size > 0, f"{page.relative_to(built.out)}: {icons[0]}"
        assert target.name == "course-mark.svg"
        for alt in re.findall(r'<img src="[^"]*course-mark\.svg"[^>]*\balt="([^"]*)"', text):
            assert alt.strip(), f"{page.relative_to(built.out)}: the course mark has no alternative text"
    index = _page(built, "index.html")
    assert re.search(r'<img src="[^"]*course-mark\.svg"[^>]*alt="The course mark', index), "no logo in the header"
