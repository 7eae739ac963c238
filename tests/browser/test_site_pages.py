"""The course website in a real browser (headless Chromium), served from 127.0.0.1.

The site is built (``helpers.tooling.site``) from the session's executed notebooks
(``learner_run`` of tests/conftest.py), served by a local http.server, and every page is
opened: each plotly figure is drawn with a non-zero size, the console shows no error, no
response has a status of 400 or more, no request leaves 127.0.0.1 (the site works offline),
and axe-core (axe-playwright-python) finds no serious or critical accessibility violation.
Sphinx's search answers a query without a network. A failure names the URL: a console error
with where it came from (its text names none), a response with its status. Nothing is let off,
the page's icon included: a page is checked once the network has been quiet, since the browser
asks for the icon after the load event.

The browser is ``offline_browser_context`` (conftest.py, rig.py): it cannot reach anything but
127.0.0.1 and keeps its HTTP cache, and each page records every request that tried to leave.
``PARALLEL_PAGES`` pages are checked at once (each has its own renderer process, and axe takes
seconds per page). A hand-made page proves the check fails on each thing it looks for.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import http.server
import re
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import rig

from helpers.tooling import site

SCREENSHOTS = rig.SCREENSHOTS / "site"
REPO, REF, HUB = "https://github.com/example/async-events", "main", "https://hub.example.edu"
BLOCKING = ("serious", "critical")
FIGURES_TIMEOUT_S = 30
SEARCH_TIMEOUT_S = 20
PARALLEL_PAGES = 3
QUIET_S = 0.5          # no request for this long: the page has asked for everything (its icon too)
QUIET_TIMEOUT_S = 10

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

#: Start axe in the page and return at once (the caller collects ``window.__courseAxe`` later),
#: so that several pages' renderers run axe at the same time.
AXE_START_JS = "(options) => { window.__courseAxe = axe.run(options); return true; }"
AXE_RESULT_JS = "() => window.__courseAxe.then(results => results.violations)"

#: A page with one of each thing the check must catch: requests leaving 127.0.0.1 (a script
#: from a CDN, an image from an IP literal, a fetch), a figure box plotly never draws, a
#: console error, and an image without alternative text (axe: image-alt, critical).
BAD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A page that breaks every rule</title>
<script src="https://cdn.example.org/plotly.min.js"></script></head>
<body><main><h1>Broken</h1>
<div class="course-plotly"><div class="course-plotly-plot"></div></div>
<img src="http://192.0.2.1/pixel.png">
<script>console.error("the check must see this"); fetch("https://api.example.org/data").catch(() => {});</script>
</main></body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def _serve(folder: Path):
    """``folder`` served on http://127.0.0.1:<free port> (yielded) while the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, name="course-site-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def served_site(executed_dir, tmp_path_factory):
    """The site built from the session's ``learner_run``, served on 127.0.0.1:<free port>."""
    out = tmp_path_factory.mktemp("course-site") / "site"
    result = site.build(executed_dir, out, repo=REPO, ref=REF, hub=HUB)
    print(result.summary())
    with _serve(out) as base:
        yield result, base


def _pages(result) -> list[str]:
    """Every page a reader meets: home, each notebook in course order, the documents, search."""
    pages = ["index.html"]
    pages += [p.staged.replace(".ipynb", ".html") for p in result.pages]
    pages += [d.replace(".md", ".html") for d in result.docs]
    return pages + ["search.html"]


def _console_error(message) -> str:
    """A console error with where it came from: "Failed to load resource" names no URL in its
    text, only in its location."""
    where = (message.location or {}).get("url")
    return f"{message.text} (at {where})" if where else message.text


def _open(context, url: str, base: str, seen: dict):
    """A new page that records console errors (with their location), every response with a
    status of 400 or more (with its URL), and every request leaving ``base`` (the offline
    browser fails them) with how it failed. Nothing is filtered out: a favicon that is not
    there fails a page like any other missing file."""
    page = context.new_page()
    seen.update(console=[], remote=[], failed={}, bad_status=[], pending=set(), last_request=time.monotonic())
    page.on("request", lambda r: (seen["pending"].add(r), seen.update(last_request=time.monotonic())))
    page.on("requestfinished", lambda r: seen["pending"].discard(r))
    page.on("requestfailed", lambda r: seen["pending"].discard(r))
    page.on("console", lambda m: m.type == "error" and seen["console"].append(_console_error(m)))
    page.on("pageerror", lambda e: seen["console"].append(f"page error: {e}"))
    page.on("response", lambda r: r.status >= 400 and seen["bad_status"].append(f"{r.status} {r.url}"))
    leaves = lambda url: not (url.startswith(base + "/") or url.startswith("data:"))  # noqa: E731
    page.on("request", lambda r: leaves(r.url) and seen["remote"].append(r.url))
    page.on("requestfailed", lambda r: leaves(r.url) and seen["failed"].update({r.url: r.failure}))
    page.goto(url, wait_until="load")
    return page


def _wait_quiet(page, seen: dict, quiet_s: float = QUIET_S, timeout_s: float = QUIET_TIMEOUT_S) -> None:
    """Until the page has no request open and started none for ``quiet_s`` (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not seen["pending"] and time.monotonic() - seen["last_request"] >= quiet_s:
            return
        page.wait_for_timeout(50)  # lets Playwright deliver the page's events meanwhile


def _start(context, base: str, rel: str, axe_script: str, figures_timeout: float) -> dict:
    """Open one page, wait for its figures, note its console, and start axe in it."""
    from axe_playwright_python.sync_playwright import DEFAULT_OPTIONS

    check = {"rel": rel, "seen": {}, "started": time.monotonic()}
    page = check["page"] = _open(context, f"{base}/{urllib.parse.quote(rel)}", base, check["seen"])
    try:
        deadline = time.monotonic() + figures_timeout
        while True:
            check["figures"] = page.evaluate(FIGURES_JS)
            if check["figures"]["drawn"] == check["figures"]["boxes"] or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        # The browser asks for the page's icon (or /favicon.ico) after the load event: wait until
        # no request is open and none started for QUIET_S, then take the console before axe,
        # which re-fetches stylesheets by itself and resolves their @import against the page (a
        # 404 of its own making). Playwright's "networkidle" never comes on some cached pages.
        _wait_quiet(page, check["seen"])
        check["console"] = list(check["seen"]["console"])
        check["bad_status"] = list(check["seen"]["bad_status"])
        page.evaluate(axe_script)
        page.evaluate(AXE_START_JS, DEFAULT_OPTIONS)
    except BaseException:
        page.close()
        raise
    return check


def _finish(check: dict, screenshots: Path | None, problems: list[str], lines: list[str]) -> None:
    """Collect one page's axe results, screenshot it, close it; add what it found."""
    rel, page, seen, figures = check["rel"], check["page"], check["seen"], check["figures"]
    try:
        violations = page.evaluate(AXE_RESULT_JS)
        if screenshots is not None:
            shot = screenshots / (rel.replace("/", "_").replace(".html", ".png"))
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
    finally:
        page.close()
    impacts = {}
    for v in violations:
        impacts[v["impact"]] = impacts.get(v["impact"], 0) + 1
    lines.append(f"{rel}: {figures['drawn']}/{figures['boxes']} figures drawn, axe {impacts or 'clean'}, "
                 f"{time.monotonic() - check['started']:.1f} s")
    if figures["drawn"] != figures["boxes"]:
        problems.append(f"{rel}: {figures['boxes'] - figures['drawn']} of {figures['boxes']} figures not drawn")
    problems += [f"{rel}: console error: {e[:300]}" for e in check["console"]]
    problems += [f"{rel}: response {r[:300]}" for r in check["bad_status"]]
    problems += [f"{rel}: request left 127.0.0.1: {u}" for u in seen["remote"]]
    for v in violations:
        if v["impact"] in BLOCKING:
            targets = [n["target"] for n in v["nodes"][:3]]
            problems.append(f"{rel}: axe {v['impact']} {v['id']}: {v['help']} "
                            f"({len(v['nodes'])} nodes, e.g. {targets})")


def check_pages(context, base: str, rels: list[str], screenshots: Path | None = SCREENSHOTS,
                figures_timeout: float = FIGURES_TIMEOUT_S) -> tuple[list[str], list[str]]:
    """Open every page of ``rels`` under ``base``, ``PARALLEL_PAGES`` at a time (one's axe runs
    while the next loads); return the problems found and one line per page (its seconds, from
    opening to closing, overlap the other pages')."""
    from axe_playwright_python.sync_playwright import Axe

    axe_script, problems, lines = Axe().axe_script, [], []
    in_flight: collections.deque = collections.deque()
    try:
        for rel in rels:
            in_flight.append(_start(context, base, rel, axe_script, figures_timeout))
            if len(in_flight) >= PARALLEL_PAGES:
                _finish(in_flight.popleft(), screenshots, problems, lines)
        while in_flight:
            _finish(in_flight.popleft(), screenshots, problems, lines)
    finally:
        for check in in_flight:
            check["page"].close()
    return problems, lines


def test_every_page_renders_offline_and_accessibly(served_site, offline_browser_context):
    result, base = served_site
    pages = _pages(result)
    for rel in pages:
        assert (result.out / rel).is_file(), f"{rel} was not built"
    problems, lines = check_pages(offline_browser_context, base, pages)
    print("\n".join(lines))
    assert len(lines) == len(pages)
    assert any(r.startswith("lessons/") for r in pages)
    assert not problems, "\n".join(problems + [""] + lines)


def test_the_page_check_fails_what_it_must(offline_browser_context, tmp_path):
    """The check's negative paths: a request leaving 127.0.0.1 (blocked at once, and reported), a
    figure that is not drawn, a console error, a critical axe violation."""
    (tmp_path / "bad.html").write_text(BAD_PAGE, encoding="utf-8")
    with _serve(tmp_path) as base:
        started = time.monotonic()
        problems, lines = check_pages(offline_browser_context, base, ["bad.html"], screenshots=None,
                                      figures_timeout=1)
        seen: dict = {}
        _open(offline_browser_context, f"{base}/bad.html", base, seen).close()
    print("\n".join(problems + lines))
    text = "\n".join(problems)
    for url in ("https://cdn.example.org/plotly.min.js", "http://192.0.2.1/pixel.png", "https://api.example.org/data"):
        assert f"bad.html: request left 127.0.0.1: {url}" in text, text
    assert "bad.html: 1 of 1 figures not drawn" in text, text
    assert "bad.html: console error: the check must see this" in text, text
    assert "bad.html: axe critical image-alt" in text, text
    # the offline browser failed every such request itself, without waiting for a network
    assert set(seen["failed"]) >= {"https://cdn.example.org/plotly.min.js", "http://192.0.2.1/pixel.png"}, seen
    assert time.monotonic() - started < 30, lines


def test_a_built_page_missing_a_file_fails_the_audit_naming_the_url(served_site, offline_browser_context, tmp_path):
    """A copy of the built site with its icon file removed and one page asking for an image that
    is not there: the audit fails both pages and names each URL with its status. Nothing in the
    audit lets a favicon (or any other file) off."""
    result, _ = served_site
    copy = tmp_path / "site"
    shutil.copytree(result.out, copy)
    icon = re.search(r'<link rel="icon" href="([^"]+)"', (copy / "index.html").read_text(encoding="utf-8"))
    assert icon, "index.html names no icon"
    (copy / icon.group(1)).unlink()
    search = copy / "search.html"
    search.write_text(search.read_text(encoding="utf-8").replace(
        "</main>", '<img src="_static/no-such-figure.png" alt="a figure that is not there"></main>', 1),
        encoding="utf-8")
    with _serve(copy) as base:
        problems, lines = check_pages(offline_browser_context, base, ["index.html", "search.html"],
                                      screenshots=None, figures_timeout=1)
    print("\n".join(problems + lines))
    text = "\n".join(problems)
    assert f"index.html: response 404 {base}/{icon.group(1)}" in text, text
    assert f"search.html: response 404 {base}/_static/no-such-figure.png" in text, text
    assert "search.html: console error: Failed to load resource" in text and "no-such-figure.png)" in text, text


def test_search_answers_offline(served_site, offline_browser_context):
    result, base = served_site
    seen: dict = {}
    page = _open(offline_browser_context, f"{base}/search.html?q=synchronous", base, seen)
    try:
        page.wait_for_selector("ul.search li a", timeout=SEARCH_TIMEOUT_S * 1000)
        hits = page.eval_on_selector_all("ul.search li a", "els => els.map(e => e.getAttribute('href'))")
    finally:
        page.close()
    assert any("lessons/01_synchronous_calls" in h for h in hits), hits
    assert not seen["remote"], seen["remote"]
