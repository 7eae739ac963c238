"""The real-browser rig: JupyterLab on 127.0.0.1 with a token, headless Chromium via Playwright.

``lab`` (session fixture) starts JupyterLab on a free port over a *copy* of the course
(lessons/, labs/ and tests/browser/fixtures/ copied into a temporary root), so running
cells in the browser never writes outputs into the committed notebooks. The kernels
inherit COURSE_STATE_DIR from tests/conftest.py and so share the session's broker.

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
root with ``lab.add``) without running anything, and checks what its saved outputs render
(figures, widgets from the saved widget state, no error output).

The executed notebooks come from the session's ``learner_run`` (tests/conftest.py: every
lesson and lab solution executed once at time scale 1.0 into build/learner-run/;
``COURSE_LEARNER_RUN_NOTEBOOKS`` narrows it on a laptop); ``executed_dir`` is its folder.

Chromium comes from Debian (``apt-get install -y chromium``) because Playwright's own
browser download cannot work here; without it (or without ``pip install playwright``)
the tests skip with the reason, except in CI (``$CI`` set) where they fail.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCREENSHOTS = ROOT / "build" / "screenshots"

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: real-browser test (JupyterLab + headless Chromium driven by Playwright)")


def unavailable(reason: str) -> None:
    """Skip with ``reason`` on a laptop; fail in CI, where the browser must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run; .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


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

@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    """One headless Chromium (fresh user-data-dir) for the session."""
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing: `apt-get update && apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: `pip install playwright`")
    pw = sync_playwright().start()
    try:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT)
    except Exception:
        pw.stop()
        raise
    yield context
    context.close()
    pw.stop()


# ------------------------------------------------------------------ JupyterLab

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

    def summary(self) -> str:
        lines = [f"{self.path}: {len(self.problems)} problem(s) after {self.seconds:.1f} s; counts {self.counts}; "
                 f"interaction: {self.interaction}; screenshot {self.screenshot}"]
        lines += [f"  - {p}" for p in self.problems]
        if self.console_errors:
            lines.append("  browser console errors (context):")
            lines += [f"    {e[:300]}" for e in self.console_errors[:10]]
        return "\n".join(lines)


class Lab:
    """A running JupyterLab plus the browser that drives it."""

    def __init__(self, url: str, token: str, root: Path, context):
        self.url, self.token, self.root, self.context = url, token, root, context

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


@pytest.fixture(scope="session")
def lab(browser_context, kafka, tmp_path_factory):
    """JupyterLab on 127.0.0.1:<free port> with a token, over a copy of the course."""
    base = tmp_path_factory.mktemp("jupyterlab")
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
        yield Lab(url, token, root, browser_context)
    finally:
        _stop(proc)


# ------------------------------------------------------------------ executed notebooks

@pytest.fixture(scope="session")
def executed_dir(learner_run) -> Path:
    """The folder of executed notebooks (mirroring lessons/ and labs/solutions/) that the
    session's ``learner_run`` (tests/conftest.py) made."""
    return Path(getattr(learner_run, "root", learner_run))


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

SHUTDOWN_JS = "async (path) => {" + _PANEL + """
  if (panel) await panel.sessionContext.shutdown();
  return true;
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
    """Until the kernel is idle, no cell is pending ([*]) and something ran, twice in a row."""
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
        if settled >= 3:
            return state
        time.sleep(0.5)
    raise AssertionError(f"{path}: cells still running after {EXECUTION_TIMEOUT_S} s (last state {state})")


def _check(page, path: str, settle: float = RENDER_SETTLE_S) -> dict:
    """The rendering check, repeated until it passes or ``settle`` seconds pass (widgets render async)."""
    result: dict = {}

    def ok():
        nonlocal result
        result = page.evaluate(CHECK_JS, path)
        return not result["problems"]

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


def _screenshot(page, path: str, target: Path) -> str:
    """One tall screenshot of the whole notebook (the viewport grows to the notebook's height)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = page.evaluate(SCROLL_JS, path)
    height = min(VIEWPORT["height"] + max(0, size["scroll"] - size["client"]), MAX_SCREENSHOT_HEIGHT)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(height)})
    time.sleep(1.0)  # lumino and plotly re-layout on resize
    page.evaluate(SCROLL_JS, path)
    page.screenshot(path=str(target))
    page.set_viewport_size(VIEWPORT)
    return str(target)


def _lab_url(lab: Lab, path: str) -> str:
    return f"{lab.url}/lab/tree/{urllib.parse.quote(path)}?reset&token={lab.token}"


def run_notebook(lab: Lab, path: str, screenshot: Path | None = None, interact: bool = True,
                 settle: float = RENDER_SETTLE_S, after=None) -> NotebookReport:
    """Open ``path`` (relative to the lab root), run all cells, check, interact, screenshot;
    then ``after(page, path)`` (its result in ``report.after``) while the kernel still runs."""
    report = NotebookReport(path)
    started = time.monotonic()
    page = lab.context.new_page()
    page.on("console", lambda m: m.type == "error" and report.console_errors.append(m.text))
    page.on("pageerror", lambda e: report.console_errors.append(f"page error: {e}"))
    try:
        page.goto(_lab_url(lab, path), wait_until="domcontentloaded")
        _wait_kernel_ready(page, path)
        page.evaluate(SCROLL_JS, path)
        _run_all(page)
        _wait_executed(page, path)
        result = _check(page, path, settle)
        report.problems, report.counts = list(result["problems"]), dict(result["counts"])
        if interact and result["interactive"]:
            report.interaction = _interact(page, path)
            recheck = page.evaluate(CHECK_JS, path)  # a callback must not break anything either
            report.problems += [p for p in recheck["problems"] if p not in report.problems]
        if screenshot is not None:
            report.screenshot = _screenshot(page, path, screenshot)
        if interact and result["interactive"] and not report.interaction.startswith("updated"):
            # The notebook's last cells may have stopped what the widget drives: re-run up to
            # the widget's cell on a fresh kernel and try again.
            first, index = report.interaction, result["interactive"][0]
            report.interaction = f"{_interact_fresh(page, path, index)} [re-ran up to cell {index}; " \
                                 f"right after Run All: {first}]"
            recheck = page.evaluate(CHECK_JS, path)
            report.problems += [p for p in recheck["problems"]
                                if p not in report.problems and "not executed" not in p]
        if after is not None:
            report.after = after(page, path)
    finally:
        try:
            page.evaluate(SHUTDOWN_JS, path)
        except Exception:  # noqa: BLE001 - the page may be gone; the server shuts kernels down at the end anyway
            pass
        page.close()
        report.seconds = time.monotonic() - started
    return report


def open_notebook(lab: Lab, path: str, screenshot: Path | None = None,
                  settle: float = RENDER_SETTLE_S) -> NotebookReport:
    """Open an EXECUTED notebook at ``path`` (relative to the lab root) without running it and
    check what its saved outputs render: every code cell ran, no error output, every plotly
    figure drawn, every widget drawn from the saved widget state."""
    report = NotebookReport(path, interaction="not tried: an executed notebook (no live kernel behind its widgets)")
    started = time.monotonic()
    page = lab.context.new_page()
    page.on("console", lambda m: m.type == "error" and report.console_errors.append(m.text))
    page.on("pageerror", lambda e: report.console_errors.append(f"page error: {e}"))
    try:
        page.goto(_lab_url(lab, path), wait_until="domcontentloaded")
        _wait_kernel_ready(page, path)
        page.evaluate(SCROLL_JS, path)
        result = _check(page, path, settle)
        report.problems, report.counts = list(result["problems"]), dict(result["counts"])
        if screenshot is not None:
            report.screenshot = _screenshot(page, path, screenshot)
    finally:
        try:
            page.evaluate(SHUTDOWN_JS, path)
        except Exception:  # noqa: BLE001 - the page may be gone; the server shuts kernels down at the end anyway
            pass
        page.close()
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
#: draws the live plot only once its output is re-run inside RISE).
SLIDE_STATE_JS = """() => {
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
          text: slide ? slide.innerText.trim().split('\\n')[0].slice(0, 80) : '', figures};
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

    def summary(self) -> str:
        lines = [f"slides at {self.url}: {self.slides} slides; after {self.steps} step(s) slide {self.figure_slide} "
                 f"({self.figure_slide_text!r}) shows cell {self.figure_cell}'s figure as a {self.figure_kind or '-'} "
                 f"of {self.figure_size[0]:.0f}x{self.figure_size[1]:.0f} px; re-run from the slide: {self.rerun} "
                 f"({self.rerun_size[0]:.0f}x{self.rerun_size[1]:.0f} px); screenshot {self.screenshot}"]
        lines += [f"  - {p}" for p in self.problems]
        lines += [f"  console: {e[:200]}" for e in self.console_errors[:8]]
        return "\n".join(lines)


def _shown(figure: dict) -> bool:
    return figure["kind"] in ("plot", "image") and figure["width"] > 0 and figure["height"] > 0


def present_as_slides(lab: Lab, page, path: str, screenshot: Path | None = None) -> SlidesReport:
    """Enter RISE slide mode from the notebook open in ``page`` (its kernel still running),
    step through the slides (space: the next fragment or slide, as a presenter does) until one
    shows a plotly figure, then run that figure's cell from the slide (Ctrl+Enter), as a
    teacher runs a demo live, and wait for plotly to draw it."""
    report = SlidesReport()
    with lab.context.expect_page(timeout=SLIDES_TIMEOUT_S * 1000) as opened:
        page.evaluate(OPEN_SLIDES_JS, path)
    slides = opened.value
    slides.on("console", lambda m: m.type == "error" and report.console_errors.append(m.text))
    slides.on("pageerror", lambda e: report.console_errors.append(f"page error: {e}"))
    try:
        report.url = slides.url.split("?")[0]
        slides.wait_for_selector(".reveal .slides section", timeout=SLIDES_TIMEOUT_S * 1000)
        if not _poll(lambda: slides.evaluate(SLIDE_STATE_JS)["index"] >= 0, SLIDES_TIMEOUT_S, 0.5):
            raise AssertionError(f"RISE showed no slide within {SLIDES_TIMEOUT_S} s at {report.url}")
        time.sleep(1.0)  # let RISE settle on the first slide

        def figure_shown() -> dict | None:
            state = slides.evaluate(SLIDE_STATE_JS)
            return state if any(_shown(f) for f in state["figures"]) else None

        state: dict = {}
        for step in range(MAX_SLIDE_STEPS):
            state = _poll(figure_shown, 1.0, 0.25) or slides.evaluate(SLIDE_STATE_JS)
            report.slides, report.steps = state["horizontal"], step
            shown = [f for f in state["figures"] if _shown(f)]
            if shown:
                report.figure_slide, report.figure_slide_text = state["index"], state["text"]
                report.figure_cell, report.figure_kind = shown[0]["cell"], shown[0]["kind"]
                report.figure_size = (shown[0]["width"], shown[0]["height"])
                break
            slides.keyboard.press("Space")
        else:
            report.problems.append(f"no slide showed a plotly figure after {MAX_SLIDE_STEPS} steps "
                                   f"(last: slide {state.get('index')} of {state.get('horizontal')})")
        if report.figure_cell >= 0:
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
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            slides.screenshot(path=str(screenshot))
            report.screenshot = str(screenshot)
    finally:
        slides.close()
    return report
