"""The course website in a real browser (headless Chromium), served from 127.0.0.1.

The site is built (``helpers.tooling.site``) from the session's executed notebooks
(``learner_run`` of tests/conftest.py), served by a local http.server, and every page is
opened: each plotly figure is drawn with a non-zero size, the console shows no error, no
request leaves 127.0.0.1 (the site works offline), and axe-core (axe-playwright-python) finds
no serious or critical accessibility violation. Sphinx's search answers a query without a network.
"""
from __future__ import annotations

import functools
import http.server
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from helpers.tooling import site

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots" / "site"
REPO, REF, HUB = "https://github.com/example/async-events", "main", "https://hub.example.edu"
BLOCKING = ("serious", "critical")
FIGURES_TIMEOUT_S = 30
SEARCH_TIMEOUT_S = 20

# The first test to use ``learner_run`` waits for the whole learners' pass (minutes).
pytestmark = [pytest.mark.browser, pytest.mark.timeout(3600)]

#: Per page: the course's figure boxes, and those plotly drew with a non-zero size.
FIGURES_JS = """() => {
  const boxes = [...document.querySelectorAll('.course-plotly')];
  const drawn = boxes.filter(box => {
    const gd = box.querySelector('.js-plotly-plot');
    if (!gd || !gd.querySelector('.main-svg')) return false;
    const r = gd.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  });
  return {boxes: boxes.length, drawn: drawn.length};
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def served_site(executed_dir, tmp_path_factory):
    """The site built from the session's ``learner_run``, served on 127.0.0.1:<free port>."""
    out = tmp_path_factory.mktemp("course-site") / "site"
    result = site.build(executed_dir, out, repo=REPO, ref=REF, hub=HUB)
    print(result.summary())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, name="course-site-server", daemon=True)
    thread.start()
    try:
        yield result, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _pages(result) -> list[str]:
    """Every page a reader meets: home, each notebook in course order, the documents, search."""
    pages = ["index.html"]
    pages += [p.staged.replace(".ipynb", ".html") for p in result.pages]
    pages += [d.replace(".md", ".html") for d in result.docs]
    return pages + ["search.html"]


def _open(context, url: str, base: str, seen: dict):
    """A new page that records console errors and blocks (and records) requests leaving ``base``."""
    page = context.new_page()
    seen.update(console=[], remote=[])
    page.on("console", lambda m: m.type == "error" and seen["console"].append(m.text))
    page.on("pageerror", lambda e: seen["console"].append(f"page error: {e}"))

    def route(r):
        if r.request.url.startswith(base + "/") or r.request.url.startswith("data:"):
            r.continue_()
        else:
            seen["remote"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load")
    return page


def test_every_page_renders_offline_and_accessibly(served_site, browser_context):
    from axe_playwright_python.sync_playwright import Axe

    result, base = served_site
    axe, problems, lines = Axe(), [], []
    for rel in _pages(result):
        assert (result.out / rel).is_file(), f"{rel} was not built"
        seen: dict = {}
        started = time.monotonic()
        page = _open(browser_context, f"{base}/{urllib.parse.quote(rel)}", base, seen)
        try:
            figures = {}
            deadline = time.monotonic() + FIGURES_TIMEOUT_S
            while time.monotonic() < deadline:
                figures = page.evaluate(FIGURES_JS)
                if figures["drawn"] == figures["boxes"]:
                    break
                time.sleep(0.25)
            console = list(seen["console"])  # before axe, which re-fetches stylesheets by itself
            violations = axe.run(page).response["violations"]
            shot = SCREENSHOTS / (rel.replace("/", "_").replace(".html", ".png"))
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
        finally:
            page.close()
        impacts = {}
        for v in violations:
            impacts[v["impact"]] = impacts.get(v["impact"], 0) + 1
        lines.append(f"{rel}: {figures['drawn']}/{figures['boxes']} figures drawn, axe {impacts or 'clean'}, "
                     f"{time.monotonic() - started:.1f} s")
        if figures["drawn"] != figures["boxes"]:
            problems.append(f"{rel}: {figures['boxes'] - figures['drawn']} of {figures['boxes']} figures not drawn")
        problems += [f"{rel}: console error: {e[:300]}" for e in console]
        problems += [f"{rel}: request left 127.0.0.1: {u}" for u in seen["remote"]]
        for v in violations:
            if v["impact"] in BLOCKING:
                targets = [n["target"] for n in v["nodes"][:3]]
                problems.append(f"{rel}: axe {v['impact']} {v['id']}: {v['help']} "
                                f"({len(v['nodes'])} nodes, e.g. {targets})")
    print("\n".join(lines))
    assert any(r.startswith("lessons/") for r in _pages(result))
    assert not problems, "\n".join(problems + [""] + lines)


def test_search_answers_offline(served_site, browser_context):
    result, base = served_site
    seen: dict = {}
    page = _open(browser_context, f"{base}/search.html?q=synchronous", base, seen)
    try:
        page.wait_for_selector("ul.search li a", timeout=SEARCH_TIMEOUT_S * 1000)
        hits = page.eval_on_selector_all("ul.search li a", "els => els.map(e => e.getAttribute('href'))")
    finally:
        page.close()
    assert any("lessons/01_synchronous_calls" in h for h in hits), hits
    assert not seen["remote"], seen["remote"]
