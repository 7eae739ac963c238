"""The real-browser rig: JupyterLab on 127.0.0.1 with a token, headless Chromium via Playwright.

The browser tests' harness, beside them; conftest.py holds only the fixtures that call into it
(``lab``, ``browser_context``, ``offline_browser_context``, ``executed_dir``).

``jupyterlab()`` (the session fixture ``lab``) starts JupyterLab on a free port over a *copy* of the course
(lessons/, labs/ and tests/browser/fixtures/ copied into a temporary root), so running
cells in the browser never writes outputs into the committed notebooks. The kernels
inherit COURSE_STATE_DIR from tests/conftest.py and so share the session's broker.

JupyterLab is loaded once, in one browser page (``lab.page()``: loading it takes seconds);
each notebook opens in it as a double-click in the file browser does (``docmanager:open``)
and closes again (its kernel shut down), and after a failure the page is reloaded, so that
nothing carries over from one notebook to the next.

``lab.run("lessons/01_x.ipynb")`` opens one notebook, runs all cells from the Run menu,
waits until every cell has executed and the kernel is idle, checks what rendered,
moves a slider and watches its figure change (clicking the widget's button if it only
runs on demand; if the notebook's last cells stopped what the widget drives, it re-runs
up to the widget's cell with Kernel > Restart Kernel and Run up to Selected Cell first),
saves a screenshot, optionally hands the page to ``after`` (e.g. ``lab.present``, which
enters RISE slide mode: :func:`present_as_slides`), and shuts the kernel down. It returns
a :class:`NotebookReport`; the tests assert on it. The lessons in the copy have their slide boundaries applied
(``helpers.tooling.slides``), as a teacher's copy would.

``lab.open("executed/lessons/02_x.ipynb")`` opens an already EXECUTED notebook (copied into the
root with ``lab.add``) without running anything or starting a kernel, and checks what its
saved outputs render (every cell, every plotly figure drawn, no error output). Its widgets are
NOT checked as widgets: the copy is untrusted, so JupyterLab shows each widget's text fallback,
and trusted (signed) copies did not restore the views from the saved widget state without a
kernel either (tried 2026-11-29). Widgets are checked live: the live lesson and the fixtures.

Each report's ``phases`` says where its seconds went (open, kernel, run, check, screenshot...).

``offline_chromium()`` (the fixture ``offline_browser_context``) is a second Chromium that can
reach nothing but 127.0.0.1, for the course website (test_site_pages.py).

The executed notebooks come from the session's ``learner_run`` (tests/conftest.py: every
lesson and lab solution executed once at time scale 1.0 into build/learner-run/;
``COURSE_LEARNER_RUN_NOTEBOOKS`` narrows it on a laptop); ``executed_dir`` is its folder.

Chromium comes from Debian (``apt-get install -y chromium``) because Playwright's own
browser download cannot work here; without it (or without ``pip install playwright``)
the tests skip with the reason, except in CI (``$CI`` set) where they fail.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helpers.tooling.paths import BUILD, ROOT

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCREENSHOTS = BUILD / "screenshots"  # git-ignored (build/)

CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")  # Debian's chromium package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
LAB_START_TIMEOUT_S = 90
KERNEL_READY_TIMEOUT_S = 90
EXECUTION_TIMEOUT_S = 240      # one notebook at COURSE_TIME_SCALE=0.1 (lessons aim for < 30 s)
RENDER_SETTLE_S = 15           # how long widgets/figures may take to appear after the last cell
INTERACTION_TIMEOUT_S = 30     # a slider's callback may re-run a (scaled) simulation
MAX_SCREENSHOT_HEIGHT = 14000

# User settings for the rig's JupyterLab: render every cell (no windowing, so off-screen
# figures have a real size), never autosave, no news pop-up over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when pytest dies (Linux), so no server is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# ------------------------------------------------------------------ the browser

def chromium(driver, profile: Path, *args: str):
    """A headless Chromium (Playwright's persistent context) with a fresh user-data-dir ``profile``."""
    return driver.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM,
                                                     args=[*CHROMIUM_ARGS, *args], headless=True, viewport=VIEWPORT)


@contextlib.contextmanager
def offline_chromium(driver, profile: Path) -> Iterator:
    """A headless Chromium that reaches 127.0.0.1 and nothing else.

    Every other request goes to a proxy port that refuses connections (Chromium never proxies
    loopback), so it fails at once, whatever the host, IP literals included. Unlike
    ``page.route()``, which turns Chromium's HTTP cache off, this keeps the cache, so pages that
    share scripts do not download and compile them again. Tests still watch ``page.on("request")``
    to fail on any request that tried to leave 127.0.0.1."""
    with socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        context = chromium(driver, profile, f"--proxy-server=http://127.0.0.1:{refused.getsockname()[1]}")
        try:
            yield context
        finally:
            context.close()


# ------------------------------------------------------------------ JupyterLab

@contextlib.contextmanager
def timed(phases: dict, name: str):
    """Add the seconds the ``with`` block takes to ``phases[name]``."""
    started = time.monotonic()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.monotonic() - started


def _phases(phases: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in phases.items()) or "-"


@dataclass
class NotebookReport:
    """What the rig saw in one notebook."""

    path: str
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    interaction: str = "not tried"
    screenshot: str = ""
    console_errors: list[str] = field(default_factory=list)
    after: object = None  # what ``run(..., after=...)`` returned (e.g. a SlidesReport)
    phases: dict = field(default_factory=dict)  # seconds per step (``timed``): where the time goes

    def summary(self) -> str:
        lines = [f"{self.path}: {len(self.problems)} problem(s) after {self.seconds:.1f} s; counts {self.counts}; "
                 f"interaction: {self.interaction}; screenshot {self.screenshot}"]
        lines.append(f"  seconds: {_phases(self.phases)}")
        lines += [f"  - {p}" for p in self.problems]
        if self.console_errors:
            lines.append("  browser console errors (context):")
            lines += [f"    {e[:300]}" for e in self.console_errors[:10]]
        return "\n".join(lines)


class Lab:
    """A running JupyterLab plus the browser that drives it."""

    def __init__(self, url: str, token: str, root: Path, context):
        self.url, self.token, self.root, self.context = url, token, root, context
        self._page = None
        self._load_errors: list[str] = []

    def page(self):
        """The rig's JupyterLab page: loaded on first use, then every notebook opens and closes in
        it (loading JupyterLab takes seconds; opening a notebook in it, a fraction of that)."""
        if self._page is None or self._page.is_closed():
            page = self.context.new_page()
            errors = self._load_errors = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            try:
                page.goto(f"{self.url}/lab?reset&token={self.token}", wait_until="domcontentloaded")
                page.wait_for_function("() => window.jupyterapp", timeout=LAB_START_TIMEOUT_S * 1000)
                page.evaluate("async () => { await window.jupyterapp.restored; return true; }")
            except BaseException:
                page.close()
                raise
            self._page = page
        return self._page

    def take_load_errors(self) -> list[str]:
        """The console errors of the page's load (once: the first notebook's report shows them)."""
        errors = list(self._load_errors)
        self._load_errors.clear()
        return errors

    def discard_page(self) -> None:
        """Close the page (after a failure it may hold a dialog or a half-open notebook): the
        next notebook gets a freshly loaded one."""
        if self._page is not None and not self._page.is_closed():
            self._page.close()
        self._page = None

    def run(self, relpath: str, screenshot: Path | None = None, interact: bool = True,
            settle: float = RENDER_SETTLE_S, after=None) -> NotebookReport:
        return run_notebook(self, relpath, screenshot, interact, settle, after)

    def open(self, relpath: str, screenshot: Path | None = None, settle: float = RENDER_SETTLE_S) -> NotebookReport:
        return open_notebook(self, relpath, screenshot, settle)

    def present(self, page, relpath: str, screenshot: Path | None = None):
        """RISE slide mode for the notebook open in ``page``: a :class:`SlidesReport`."""
        return present_as_slides(self, page, relpath, screenshot)

    def add(self, folder: Path, under: str) -> None:
        """Copy ``folder`` into the lab's root as ``under`` (replacing it)."""
        target = self.root / under
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))


def _copy_course(dest: Path) -> None:
    from helpers.tooling import slides

    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    for folder in ("lessons", "labs"):
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    shutil.copytree(FIXTURES, dest / "fixtures", ignore=ignore)
    for lesson in sorted((dest / "lessons").glob("*.ipynb")):
        slides.apply(lesson)  # a teacher's copy: ready to present with RISE


def _wait_for_lab(url: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + LAB_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"JupyterLab did not answer within {LAB_START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM JupyterLab (it shuts its kernels down), then SIGKILL anything left of its tree."""
    import psutil

    try:
        tree = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "tansu" not in " ".join(p.cmdline())]  # the session broker belongs to tests/conftest.py
    except psutil.Error:
        tree = []
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for child in tree:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(tree, timeout=10)


@contextlib.contextmanager
def jupyterlab(context, base: Path, kafka) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1:<free port> with a token, over a copy of the course in ``base``,
    driven by the browser ``context``; its kernels use ``kafka`` (the session's)."""
    root = base / "root"
    _copy_course(root)
    settings = base / "settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    token, port = os.urandom(16).hex(), _free_port()
    env = {**os.environ,
           "COURSE_TIME_SCALE": os.environ.get("COURSE_TIME_SCALE", "0.1"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if kafka.kind == "docker":
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = base / "jupyterlab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_lab(url, token, proc, log)
        yield Lab(url, token, root, context)
    finally:
        _stop(proc)


# ------------------------------------------------------------------ driving one notebook
# The rig's JupyterLab runs with expose_app_in_browser, so the page scripts below read the
# notebook model (cells, outputs and their mime types, execution counts, kernel status)
# and the DOM each output rendered into. `path` is the notebook path relative to the root.

_PANEL = """
  const app = window.jupyterapp;
  const panel = app && [...app.shell.widgets('main')].find(w => w.context && w.context.path === path);
"""

STATE_JS = "(path) => {" + _PANEL + """
  const dialog = document.querySelector('.jp-Dialog');
  if (!app) return {stage: 'loading'};
  if (!panel) return {stage: 'opening', dialog: dialog && dialog.innerText};
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  let pending = 0, executed = 0, cells = 0, errors = 0;
  for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code' || !cell.model.sharedModel.getSource().trim()) continue;
    cells++;
    if (cell.promptNode && cell.promptNode.textContent.includes('*')) pending++;
    if (cell.model.executionCount !== null) executed++;
    for (let j = 0; j < cell.model.outputs.length; j++) if (cell.model.outputs.get(j).type === 'error') errors++;
  }
  return {stage: kernel ? kernel.status : 'no kernel', ready: panel.context.isReady, dialog: dialog && dialog.innerText,
          cells, pending, executed, errors};
}"""

CHECK_JS = "(path) => {" + _PANEL + """
  const problems = [], interactive = [];
  const counts = {code_cells: 0, executed: 0, figures_expected: 0, figures_rendered: 0, figures_in_page: 0,
                  widgets_expected: 0, widgets_rendered: 0, sliders: 0,
                  slider_outputs_with_figures: 0};
  const sized = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const shown = el => !el.checkVisibility || el.checkVisibility();
  const firstLine = t => (t || '').trim().split('\\n')[0].slice(0, 200);
  const TRACEBACK = /Traceback \\(most recent call last\\)|^\\w*(Error|Exception)\\b.*:/m;
  const lastTraceback = t => firstLine(t.split('\\n').filter(l => TRACEBACK.test(l)).pop());
  panel.content.widgets.forEach((cell, i) => {
    if (cell.model.type !== 'code' || !cell.model.sharedModel.getSource().trim()) return;
    counts.code_cells++;
    if (cell.model.executionCount === null) problems.push(`cell ${i}: not executed`);
    else counts.executed++;
    const outputs = cell.model.outputs;
    for (let j = 0; j < outputs.length; j++) {
      const o = outputs.get(j), raw = o.toJSON(), data = o.data || {};
      const child = cell.outputArea.widgets[j];
      const node = child ? child.node : null;
      const where = `cell ${i} output ${j}`;
      if (o.type === 'error') problems.push(`${where}: error output ${raw.ename}: ${firstLine(raw.evalue)}`);
      if (o.type === 'stream' && raw.name === 'stderr' && TRACEBACK.test(String(raw.text)))
        problems.push(`${where}: traceback on stderr: ${lastTraceback(String(raw.text))}`);
      if ('application/vnd.plotly.v1+json' in data) {
        counts.figures_expected++;
        const gd = node && node.querySelector('.js-plotly-plot');
        if (!gd) problems.push(`${where}: plotly figure not rendered (no .js-plotly-plot element)`);
        else if (!sized(gd) || !gd.querySelector('.main-svg') || !Array.isArray(gd.data))
          problems.push(`${where}: plotly figure not rendered (size 0 or no plot drawn)`);
        else counts.figures_rendered++;
      }
      if (node && node.querySelector('.widget-slider') && node.querySelector('.js-plotly-plot')) {
        counts.slider_outputs_with_figures++;
        if (!interactive.includes(i)) interactive.push(i);
      }
      if ('application/vnd.jupyter.widget-view+json' in data) {
        counts.widgets_expected++;
        // The widget renderer is the output element; the widget's view (an ipywidgets
        // .jupyter-widgets element, or an anywidget such as plotly's FigureWidget) is its child.
        const out = node && (node.querySelector('.jp-OutputArea-output') || node);
        const root = out && out.firstElementChild;
        const all = root ? [root, ...root.querySelectorAll('*')] : [];
        if (!out) problems.push(`${where}: ipywidget not rendered (no output element)`);
        else if (/Error displaying widget/.test(out.innerText))
          problems.push(`${where}: ipywidget not rendered: ${firstLine(out.innerText)}`);
        else if (!root) problems.push(`${where}: ipywidget not rendered (no widget view in the output)`);
        else if (!all.some(sized) && shown(root) &&
                 !(root.matches('.widget-output') && !root.querySelector('.jp-OutputArea-child')))
          problems.push(`${where}: ipywidget rendered with size 0`);
        else counts.widgets_rendered++;
      }
    }
  });
  // A renderer that throws while the notebook loads stops JupyterLab adding the cells after it.
  if (panel.content.widgets.length !== panel.content.model.cells.length)
    problems.push(`only ${panel.content.widgets.length} of ${panel.content.model.cells.length} cells rendered`);
  const nb = panel.content.node;
  nb.querySelectorAll('.js-plotly-plot').forEach((gd, k) => {
    if (!shown(gd)) return;
    if (sized(gd) && gd.querySelector('.main-svg')) counts.figures_in_page++;
    else problems.push(`figure ${k} in the page: plotly figure with size 0 or nothing drawn`);
  });
  nb.querySelectorAll('.jupyter-widgets-output-area .jupyter-widgets').forEach(el => {
    if (/^Error displaying widget/.test(el.innerText || ''))
      problems.push(`nested ipywidget not rendered: ${firstLine(el.innerText)}`);
  });
  const STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']";
  nb.querySelectorAll(`.jupyter-widgets-output-area ${STDERR}`).forEach(el => {
    if (TRACEBACK.test(el.innerText))
      problems.push(`traceback inside a widget's output: ${lastTraceback(el.innerText)}`);
  });
  counts.sliders = [...nb.querySelectorAll('.widget-slider')].filter(el => shown(el) && sized(el)).length;
  return {problems, counts, interactive};
}"""

FIGURES_JS = """(el) => {
  const plain = (k, v) => k.startsWith('_') ? undefined : (ArrayBuffer.isView(v) ? Array.from(v) : v);
  return [...el.querySelectorAll('.js-plotly-plot')].map(gd => {
    try { return JSON.stringify(gd.data || null, plain); } catch (e) { return String(e); }
  });
}"""

SCROLL_JS = "(path) => {" + _PANEL + """
  window.jupyterapp.shell.collapseLeft(); window.jupyterapp.shell.collapseRight();
  const outer = panel.content.node.querySelector('.jp-WindowedPanel-outer') || panel.content.node;
  outer.scrollTop = 0;
  const cells = panel.content.widgets, last = cells.length ? cells[cells.length - 1].node : null;
  const bottom = last ? last.getBoundingClientRect().bottom - outer.getBoundingClientRect().top + 40 : 0;
  return {scroll: Math.min(outer.scrollHeight, Math.max(bottom, outer.clientHeight)), client: outer.clientHeight};
}"""

#: The notebook's scroll size and each figure's box, after the next animation frame (lumino
#: lays out on frames): unchanged over a while, the page has settled after a resize.
LAYOUT_JS = "(path) => new Promise(done => requestAnimationFrame(() => {" + _PANEL + """
  const outer = panel.content.node.querySelector('.jp-WindowedPanel-outer') || panel.content.node;
  const boxes = [...panel.content.node.querySelectorAll('.js-plotly-plot')].map(gd => {
    const r = gd.getBoundingClientRect();
    return [Math.round(r.top), Math.round(r.width), Math.round(r.height)];
  });
  done(JSON.stringify([outer.scrollHeight, outer.clientHeight, boxes]));
}))"""

RERUN_TO_JS = "([path, index]) => {" + _PANEL + """
  app.shell.activateById(panel.id);
  return app.commands.execute('notebook:clear-all-cell-outputs').then(() => {
    panel.content.activeCellIndex = index;
    app.commands.execute('notebook:restart-and-run-to-selected');  // asks first: the caller accepts
    return true;
  });
}"""

CELL_DONE_JS = "([path, index]) => {" + _PANEL + """
  const cell = panel.content.widgets[index];
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const pending = panel.content.widgets.filter(c => c.promptNode && c.promptNode.textContent.includes('*')).length;
  if (pending || !kernel || kernel.status !== 'idle') return false;
  if (cell.model.executionCount !== null) return 'done';
  const errors = panel.content.widgets.some(c => c.model.type === 'code' &&
      [...Array(c.model.outputs.length).keys()].some(j => c.model.outputs.get(j).type === 'error'));
  return errors ? 'stopped by an error' : false;
}"""

#: Open ``path`` as a double-click in the file browser does, wait for its model, make it the
#: current tab. ``kernel`` false: open it without starting a kernel (an executed notebook whose
#: saved outputs are only looked at). JupyterLab 4 keeps the Notebook factory's "start a kernel"
#: in ``_preferKernel``; should that be renamed, a kernel simply starts as it used to.
OPEN_JS = """async ([path, kernel]) => {
  const app = window.jupyterapp;
  const factory = app.docRegistry.getWidgetFactory('Notebook');
  const prefer = factory._preferKernel;
  if (!kernel && typeof prefer === 'boolean') factory._preferKernel = false;
  try {
    const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
    await panel.context.ready;
    app.shell.activateById(panel.id);
    return true;
  } finally {
    if (typeof prefer === 'boolean') factory._preferKernel = prefer;
  }
}"""

#: Shut the notebook's kernel down and close its tab without the "save changes?" dialog (the
#: rig never saves); false if a dialog is still open (the page is then not reused).
CLOSE_JS = "async (path) => {" + _PANEL + """
  if (panel) {
    if (panel.sessionContext.session) await panel.sessionContext.shutdown();
    panel.dispose();
    await new Promise(done => setTimeout(done, 100));  // what the closing logs, before the next notebook listens
  }
  return !document.querySelector('.jp-Dialog');
}"""


def _poll(fn, timeout: float, interval: float = 0.25):
    """Call ``fn`` until it returns something truthy or ``timeout`` passes; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _wait_kernel_ready(page, path: str) -> None:
    state: dict = {}

    def ready():
        nonlocal state
        state = page.evaluate(STATE_JS, path)
        if state.get("dialog"):
            raise AssertionError(f"{path}: JupyterLab shows a dialog instead of the notebook: {state['dialog'][:300]}")
        return state.get("stage") == "idle" and state.get("ready")

    if not _poll(ready, KERNEL_READY_TIMEOUT_S, 0.5):
        raise AssertionError(f"{path}: kernel not ready within {KERNEL_READY_TIMEOUT_S} s (last state {state})")


def _run_all(page) -> str:
    """Run > Run All Cells, as a learner would."""
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    return "menu Run > Run All Cells"


def _wait_executed(page, path: str) -> dict:
    """Until the kernel is idle, no cell is pending ([*]) and something ran, in four polls in a
    row over 0.75 s (the kernel is briefly idle between two cells)."""
    state: dict = {}
    settled = 0
    deadline = time.monotonic() + EXECUTION_TIMEOUT_S
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS, path)
        if state.get("dialog"):
            raise AssertionError(f"{path}: dialog while running: {state['dialog'][:300]}")
        done = (state.get("stage") == "idle" and state.get("pending") == 0
                and (state.get("executed") or state.get("errors") or not state.get("cells")))
        settled = settled + 1 if done else 0
        if settled >= 4:
            return state
        time.sleep(0.25)
    raise AssertionError(f"{path}: cells still running after {EXECUTION_TIMEOUT_S} s (last state {state})")


#: Problems that waiting cannot fix: they are in the notebook's model (the cells ran, or not, and
#: kept their outputs), or ipywidgets said so ("model not found" is shown only once its manager
#: has restored every model it will ever have).
FINAL_PROBLEM = re.compile(r": error output |: traceback on stderr: |: not executed$|Error displaying widget")


def _check(page, path: str, settle: float = RENDER_SETTLE_S) -> dict:
    """The rendering check, repeated until it passes, or only problems that waiting cannot fix
    (``FINAL_PROBLEM``) are left, or ``settle`` seconds pass (widgets and figures render async)."""
    result: dict = {}

    def ok():
        nonlocal result
        result = page.evaluate(CHECK_JS, path)
        return all(FINAL_PROBLEM.search(p) for p in result["problems"])

    _poll(ok, settle, 0.5)
    return result


def _move_slider(page, slider) -> bool:
    """Drag the slider's handle across its track (keyboard as a fallback); True if its value changed."""
    readout = slider.locator(".widget-readout")
    before = readout.first.inner_text() if readout.count() else None
    slider.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target, .slider").first
    hb, tb = handle.bounding_box(), track.bounding_box()
    if hb and tb:
        cx, cy = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
        if tb["width"] >= tb["height"]:  # horizontal: go to the far side of where the handle is
            tx, ty = tb["x"] + tb["width"] * (0.25 if cx > tb["x"] + tb["width"] / 2 else 0.8), cy
        else:
            tx, ty = cx, tb["y"] + tb["height"] * (0.25 if cy > tb["y"] + tb["height"] / 2 else 0.8)
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(tx, ty, steps=12)
        page.mouse.up()
    changed = lambda: readout.count() == 0 or readout.first.inner_text() != before  # noqa: E731
    if not _poll(changed, 2.0, 0.2):
        handle.focus()
        for _ in range(5):
            handle.press("ArrowRight")
    return bool(_poll(changed, 2.0, 0.2))


def _wait_figure_change(page, path: str, output, before: list[str], timeout: float) -> float | None:
    """Seconds until a figure in ``output`` shows data it did not have, or None once the
    kernel has been idle for 2 s (it finished whatever was started) or ``timeout`` passed."""
    started, idle_since = time.monotonic(), None
    while time.monotonic() - started < timeout:
        if any(a not in before for a in output.evaluate(FIGURES_JS)):
            return time.monotonic() - started
        idle = page.evaluate(STATE_JS, path).get("stage") == "idle"
        idle_since = (idle_since or time.monotonic()) if idle else None
        if time.monotonic() - started > 3 and idle_since and time.monotonic() - idle_since > 2:
            return None
        time.sleep(0.25)
    return None


def _interact(page, path: str) -> str:
    """In each output that holds a slider and a figure (a widget and its figure), move the
    slider and watch that figure's data change; where the widget redraws only on its button
    (sliders pick parameters, a button runs), click the button after moving the slider."""
    outputs = (page.locator(".jp-Notebook .jp-OutputArea-child > .jp-OutputArea-output")
               .filter(has=page.locator(".widget-slider:visible")).filter(has=page.locator(".js-plotly-plot")))
    if outputs.count() == 0:
        return "no output holds both a slider and a figure"
    tried = []
    for i in range(min(outputs.count(), 3)):
        output = outputs.nth(i)
        sliders = output.locator(".widget-slider:visible")
        moved = False
        for k in range(min(sliders.count(), 2)):
            before = output.evaluate(FIGURES_JS)
            moved = _move_slider(page, sliders.nth(k))
            took = _wait_figure_change(page, path, output, before, INTERACTION_TIMEOUT_S)
            if took is not None:
                return f"updated: slider {k} of widget output {i} changed its figure's data after {took:.1f} s"
            tried.append(f"output {i} slider {k} {'moved' if moved else 'did not move'}")
        buttons = output.locator("button.widget-button:visible")
        if moved and buttons.count():
            label = buttons.first.inner_text().strip()
            before = output.evaluate(FIGURES_JS)
            buttons.first.click()
            took = _wait_figure_change(page, path, output, before, 2 * INTERACTION_TIMEOUT_S)
            if took is not None:
                return (f"updated: slider moved, then button {label!r} of widget output {i} "
                        f"changed its figure's data after {took:.1f} s")
            tried.append(f"output {i} button {label!r} clicked")
    return "no figure changed (" + ", ".join(tried) + ")"


def _interact_fresh(page, path: str, index: int) -> str:
    """Kernel > Restart Kernel and Run up to Selected Cell (the widget's cell), then interact:
    for lessons whose last cells stop the services the widget drives (as a learner would
    play with the widget before running the clean-up cells)."""
    page.evaluate(RERUN_TO_JS, [path, index])
    page.locator(".jp-Dialog .jp-mod-accept").click(timeout=30_000)
    state = _poll(lambda: page.evaluate(CELL_DONE_JS, [path, index]), EXECUTION_TIMEOUT_S, 0.5)
    if state != "done":
        return f"re-running up to cell {index}: {state or f'not finished within {EXECUTION_TIMEOUT_S} s'}"
    time.sleep(1.0)
    state = _poll(lambda: page.evaluate(CELL_DONE_JS, [path, index]), 30, 0.5)
    if state != "done":
        return f"re-running up to cell {index}: {state or 'did not settle'}"
    _check(page, path)  # let the widget render
    return _interact(page, path)


def _wait_layout(page, path: str, timeout: float = 3.0) -> None:
    """Until the notebook's size and every figure's box are the same over two frames 0.2 s apart."""
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        layout = page.evaluate(LAYOUT_JS, path)
        if layout == last:
            return
        last = layout
        time.sleep(0.2)


def _screenshot(page, path: str, target: Path) -> str:
    """One tall screenshot of the whole notebook (the viewport grows to the notebook's height)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = page.evaluate(SCROLL_JS, path)
    height = min(VIEWPORT["height"] + max(0, size["scroll"] - size["client"]), MAX_SCREENSHOT_HEIGHT)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(height)})
    _wait_layout(page, path)  # lumino and plotly re-layout on resize
    page.evaluate(SCROLL_JS, path)
    page.screenshot(path=str(target))
    page.set_viewport_size(VIEWPORT)
    return str(target)


@contextlib.contextmanager
def _opened(lab: Lab, report: NotebookReport, path: str, kernel: bool):
    """``path`` open in the rig's JupyterLab page (its console errors go to ``report``) for the
    ``with`` block; then its kernel is shut down and its tab closed. After an error the page is
    dropped, so that what went wrong cannot leak into the next notebook."""
    with timed(report.phases, "open"):
        page = lab.page()
        report.console_errors += lab.take_load_errors()
        on_console = lambda m: m.type == "error" and report.console_errors.append(m.text)  # noqa: E731
        on_error = lambda e: report.console_errors.append(f"page error: {e}")  # noqa: E731
        page.on("console", on_console)
        page.on("pageerror", on_error)
    reusable = False
    try:
        with timed(report.phases, "open"):
            page.evaluate(OPEN_JS, [path, kernel])
        yield page
        reusable = True
    finally:
        if not page.is_closed():
            # Closing is the rig's doing (it used to close the whole page): what the notebook's
            # extensions log while it goes is not the notebook's.
            page.remove_listener("console", on_console)
            page.remove_listener("pageerror", on_error)
        try:
            with timed(report.phases, "close"):
                reusable = page.evaluate(CLOSE_JS, path) and reusable
        except Exception:  # noqa: BLE001 - the page may be gone; the server shuts kernels down at the end anyway
            reusable = False
        if not reusable:
            lab.discard_page()


def run_notebook(lab: Lab, path: str, screenshot: Path | None = None, interact: bool = True,
                 settle: float = RENDER_SETTLE_S, after=None) -> NotebookReport:
    """Open ``path`` (relative to the lab root), run all cells, check, interact, screenshot;
    then ``after(page, path)`` (its result in ``report.after``) while the kernel still runs."""
    report = NotebookReport(path)
    started = time.monotonic()
    try:
        with _opened(lab, report, path, kernel=True) as page:
            with timed(report.phases, "kernel"):
                _wait_kernel_ready(page, path)
            page.evaluate(SCROLL_JS, path)
            with timed(report.phases, "run"):
                _run_all(page)
                _wait_executed(page, path)
            with timed(report.phases, "check"):
                result = _check(page, path, settle)
            report.problems, report.counts = list(result["problems"]), dict(result["counts"])
            if interact and result["interactive"]:
                with timed(report.phases, "interact"):
                    report.interaction = _interact(page, path)
                recheck = page.evaluate(CHECK_JS, path)  # a callback must not break anything either
                report.problems += [p for p in recheck["problems"] if p not in report.problems]
            if screenshot is not None:
                with timed(report.phases, "screenshot"):
                    report.screenshot = _screenshot(page, path, screenshot)
            if interact and result["interactive"] and not report.interaction.startswith("updated"):
                # The notebook's last cells may have stopped what the widget drives: re-run up to
                # the widget's cell on a fresh kernel and try again.
                first, index = report.interaction, result["interactive"][0]
                with timed(report.phases, "interact"):
                    report.interaction = f"{_interact_fresh(page, path, index)} [re-ran up to cell {index}; " \
                                         f"right after Run All: {first}]"
                recheck = page.evaluate(CHECK_JS, path)
                report.problems += [p for p in recheck["problems"]
                                    if p not in report.problems and "not executed" not in p]
            if after is not None:
                with timed(report.phases, "after"):
                    report.after = after(page, path)
    finally:
        report.seconds = time.monotonic() - started
    return report


def open_notebook(lab: Lab, path: str, screenshot: Path | None = None,
                  settle: float = RENDER_SETTLE_S) -> NotebookReport:
    """Open an EXECUTED notebook at ``path`` (relative to the lab root) without running it, and
    without a kernel, and check what its saved outputs render: every code cell ran and rendered,
    no error output, every plotly figure drawn; a widget output counts when something of a size
    shows in its place (its text fallback in this untrusted copy: see the module docstring)."""
    report = NotebookReport(path, interaction="not tried: an executed notebook (no live kernel behind its widgets)")
    started = time.monotonic()
    try:
        with _opened(lab, report, path, kernel=False) as page:
            dialog = page.evaluate(STATE_JS, path).get("dialog")
            if dialog:
                raise AssertionError(f"{path}: JupyterLab shows a dialog instead of the notebook: {dialog[:300]}")
            page.evaluate(SCROLL_JS, path)
            with timed(report.phases, "check"):
                result = _check(page, path, settle)
            report.problems, report.counts = list(result["problems"]), dict(result["counts"])
            if screenshot is not None:
                with timed(report.phases, "screenshot"):
                    report.screenshot = _screenshot(page, path, screenshot)
    finally:
        report.seconds = time.monotonic() - started
    return report


# ------------------------------------------------------------------ slide mode (jupyterlab-rise)

SLIDES_TIMEOUT_S = 60
MAX_SLIDE_STEPS = 250

#: Make the notebook the current widget, select its first cell (RISE starts at the selected
#: cell's slide) and run RISE's "Open as Reveal Slideshow": it saves the notebook and opens
#: /rise/PATH in a new browser tab.
OPEN_SLIDES_JS = "async (path) => {" + _PANEL + """
  app.shell.activateById(panel.id);
  panel.content.activeCellIndex = 0;
  await app.commands.execute('RISE:slideshow');
  return true;
}"""

#: The slide on screen: the innermost section.present, and the plotly outputs in it that the
#: audience can see (not in a fragment still hidden): "plot" when plotly drew it, "image"
#: when the renderer shows the PNG that JupyterLab saved with the output (jupyterlab-plotly
#: draws the live plot only once its output is re-run inside RISE); how many plotly outputs the
#: slide holds, shown or not; and where the presenter is (slide and fragments shown).
SLIDE_STATE_JS = """() => {
  const PLOTLY_OUTPUT = '.jp-RenderedPlotly, [data-mime-type="application/vnd.plotly.v1+json"]';
  const all = [...document.querySelectorAll('.reveal .slides section')];
  const present = all.filter(s => s.classList.contains('present') && !s.querySelector('section.present'));
  const slide = present[present.length - 1];
  const visible = el => !el.checkVisibility || el.checkVisibility({opacityProperty: true, visibilityProperty: true});
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const figures = slide ? [...slide.querySelectorAll('.jp-RenderedPlotly')].filter(visible).map(out => {
    const r = out.getBoundingClientRect(), img = out.querySelector('img.plot-img');
    const kind = out.querySelector('.js-plotly-plot .main-svg') ? 'plot'
               : (img && img.complete && img.naturalWidth > 0 ? 'image' : 'none');
    return {kind, width: r.width, height: r.height, cell: cells.indexOf(out.closest('.jp-Cell'))};
  }) : [];
  const horizontal = [...document.querySelectorAll('.reveal .slides > section')];
  return {sections: all.length, horizontal: horizontal.length,
          index: slide ? horizontal.findIndex(h => h === slide || h.contains(slide)) : -1,
          text: slide ? slide.innerText.trim().split('\\n')[0].slice(0, 80) : '', figures,
          outputs: slide ? slide.querySelectorAll(PLOTLY_OUTPUT).length : 0,
          position: `${all.indexOf(slide)}/${document.querySelectorAll('.reveal .fragment.visible').length}`};
}"""

#: One cell's state in RISE: its prompt, whether it shows an error, its live plot's size.
SLIDE_CELL_JS = """(index) => {
  const cell = [...document.querySelectorAll('.jp-Notebook .jp-Cell')][index];
  if (!cell) return null;
  const gd = cell.querySelector('.js-plotly-plot');
  const r = gd ? gd.getBoundingClientRect() : {width: 0, height: 0};
  const error = cell.querySelector('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  const prompt = cell.querySelector('.jp-InputPrompt');
  return {prompt: prompt ? prompt.innerText.trim() : '', error: error ? error.innerText.slice(0, 300) : '',
          drawn: !!(gd && gd.querySelector('.main-svg')), width: r.width, height: r.height};
}"""


@dataclass
class SlidesReport:
    """What the rig saw in RISE's slide mode."""

    url: str = ""
    slides: int = 0
    steps: int = 0
    figure_slide: int = -1
    figure_slide_text: str = ""
    figure_cell: int = -1
    figure_kind: str = ""                 # how the saved output showed: "plot" or "image"
    figure_size: tuple = (0.0, 0.0)
    rerun: str = "not tried"              # running the figure's cell from the slide
    rerun_size: tuple = (0.0, 0.0)        # the live plot it drew
    problems: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: str = ""
    phases: dict = field(default_factory=dict)  # seconds per step (``timed``)

    def summary(self) -> str:
        lines = [f"slides at {self.url}: {self.slides} slides; after {self.steps} step(s) slide {self.figure_slide} "
                 f"({self.figure_slide_text!r}) shows cell {self.figure_cell}'s figure as a {self.figure_kind or '-'} "
                 f"of {self.figure_size[0]:.0f}x{self.figure_size[1]:.0f} px; re-run from the slide: {self.rerun} "
                 f"({self.rerun_size[0]:.0f}x{self.rerun_size[1]:.0f} px); screenshot {self.screenshot}",
                 f"  seconds: {_phases(self.phases)}"]
        lines += [f"  - {p}" for p in self.problems]
        lines += [f"  console: {e[:200]}" for e in self.console_errors[:8]]
        return "\n".join(lines)


def _shown(figure: dict) -> bool:
    return figure["kind"] in ("plot", "image") and figure["width"] > 0 and figure["height"] > 0


def _step_to_a_figure(slides, report: SlidesReport) -> None:
    """Press space (the next fragment or slide, as a presenter does) until a slide shows a plotly
    figure; note it (or the problem) in ``report``."""

    def figure_shown() -> dict | None:
        state = slides.evaluate(SLIDE_STATE_JS)
        return state if any(_shown(f) for f in state["figures"]) else None

    state: dict = {}
    for step in range(MAX_SLIDE_STEPS):
        # A figure may take a moment to show (a fragment fading in, an image decoding); a slide
        # with no plotly output at all cannot show one, so the presenter moves on at once.
        state = slides.evaluate(SLIDE_STATE_JS)
        if state["outputs"]:
            state = _poll(figure_shown, 1.0, 0.25) or slides.evaluate(SLIDE_STATE_JS)
        report.slides, report.steps = state["horizontal"], step
        shown = [f for f in state["figures"] if _shown(f)]
        if shown:
            report.figure_slide, report.figure_slide_text = state["index"], state["text"]
            report.figure_cell, report.figure_kind = shown[0]["cell"], shown[0]["kind"]
            report.figure_size = (shown[0]["width"], shown[0]["height"])
            return
        slides.keyboard.press("Space")
        # until RISE has moved on (a slide or a fragment further; at the end it cannot)
        at = state["position"]
        _poll(lambda: slides.evaluate(SLIDE_STATE_JS)["position"] != at, 1.0, 0.05)  # noqa: B023 - called here
    report.problems.append(f"no slide showed a plotly figure after {MAX_SLIDE_STEPS} steps "
                           f"(last: slide {state.get('index')} of {state.get('horizontal')})")


def _rerun_the_figure(slides, report: SlidesReport) -> None:
    """Run the figure's cell from its slide (Ctrl+Enter), as a teacher runs a demo live, and wait
    for plotly to draw it; note the outcome (or the problem) in ``report``."""
    before = slides.evaluate(SLIDE_CELL_JS, report.figure_cell)["prompt"]
    slides.locator(".jp-Notebook .jp-Cell").nth(report.figure_cell).locator(".jp-InputPrompt").click()
    slides.keyboard.press("Control+Enter")  # notebook:run-cell: run it, stay on the slide

    def redrawn() -> dict | None:
        cell = slides.evaluate(SLIDE_CELL_JS, report.figure_cell)
        ran = cell["prompt"] not in (before, "[*]:")
        return cell if ran and (cell["error"] or (cell["drawn"] and cell["width"] > 0)) else None

    cell = _poll(redrawn, INTERACTION_TIMEOUT_S, 0.5) or slides.evaluate(SLIDE_CELL_JS, report.figure_cell)
    report.rerun_size = (cell["width"], cell["height"])
    if cell["error"]:
        report.rerun = f"failed: {cell['error']}"
    elif cell["drawn"] and cell["width"] > 0 and cell["height"] > 0:
        report.rerun = f"plotly drew the figure live (prompt {before} -> {cell['prompt']})"
    else:
        report.rerun = f"no live plot within {INTERACTION_TIMEOUT_S} s (prompt {before} -> {cell['prompt']})"
    if not report.rerun.startswith("plotly drew"):
        report.problems.append(f"running the figure's cell from the slide: {report.rerun}")


def present_as_slides(lab: Lab, page, path: str, screenshot: Path | None = None) -> SlidesReport:
    """Enter RISE slide mode from the notebook open in ``page`` (its kernel still running),
    step through the slides (space: the next fragment or slide, as a presenter does) until one
    shows a plotly figure, then run that figure's cell from the slide (Ctrl+Enter), as a
    teacher runs a demo live, and wait for plotly to draw it."""
    report = SlidesReport()
    with timed(report.phases, "open"), lab.context.expect_page(timeout=SLIDES_TIMEOUT_S * 1000) as opened:
        page.evaluate(OPEN_SLIDES_JS, path)
    slides = opened.value
    slides.on("console", lambda m: m.type == "error" and report.console_errors.append(m.text))
    slides.on("pageerror", lambda e: report.console_errors.append(f"page error: {e}"))
    try:
        report.url = slides.url.split("?")[0]
        with timed(report.phases, "open"):
            slides.wait_for_selector(".reveal .slides section", timeout=SLIDES_TIMEOUT_S * 1000)
            if not _poll(lambda: slides.evaluate(SLIDE_STATE_JS)["index"] >= 0, SLIDES_TIMEOUT_S, 0.5):
                raise AssertionError(f"RISE showed no slide within {SLIDES_TIMEOUT_S} s at {report.url}")
            time.sleep(1.0)  # let RISE settle on the first slide
        with timed(report.phases, "steps"):
            _step_to_a_figure(slides, report)
        if report.figure_cell >= 0:
            with timed(report.phases, "rerun"):
                _rerun_the_figure(slides, report)
        if screenshot is not None:
            with timed(report.phases, "screenshot"):
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                slides.screenshot(path=str(screenshot))
            report.screenshot = str(screenshot)
    finally:
        slides.close()
    return report
