"""The learner's first screen: ``python -m helpers start`` opens lesson 0 and nothing covers it.

JupyterLab 4 asks every new user "Would you like to get notified about official Jupyter news?"
in a toast over the notebook's corner (the ``@jupyterlab/apputils-extension:announcements``
plugin, when the ``notification`` setting ``fetchNews`` is ``"none"``, its default), and with
``checkForUpdates`` (default true) it asks the server whether a newer JupyterLab exists. The
course's settings (``jupyter-config/labconfig/default_setting_overrides.d/``) turn both off;
``helpers start`` hands them to JupyterLab (docs/setup.md, "What `helpers start` opens").

The browser test starts JupyterLab exactly as a learner does (``python -m helpers start
--no-browser``, with its own port and token, and empty user settings so no one's own choices
hide the default), opens the page ``helpers start`` hands the browser (jupyter_server's
``jpserver-file-to-run-<pid>-open.html``, which leads to lesson 0), and checks that lesson 0 is
the notebook on screen, that no toast or dialog covers it, and that no news or update check was
sent. It waits for the mechanism, not a clock: the announcements plugin acts as soon as its config
section (``/api/config/jupyterlabapputilsextensionannouncements``) has loaded and the app is
restored, so after that response and lesson 0 on screen it allows :data:`RENDER_GRACE_S` for a
toast to render. The control test gives the same JupyterLab a user setting that puts
``fetchNews`` back to ``"none"`` and must see the prompt within that grace (it shows in about
0.4 s), so the check can fail.

The static tests (no browser) check the settings file against JupyterLab's own schema and where
each route installs it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import rig

from helpers.tooling.paths import ROOT

SCREENSHOTS = rig.SCREENSHOTS
SETTINGS = ROOT / "jupyter-config" / "labconfig" / "default_setting_overrides.d" / "asynchronous-events.json"
PLUGIN = "@jupyterlab/apputils-extension:notification"
FIRST_LESSON = "lessons/00_welcome.ipynb"
START_TIMEOUT_S = 120       # helpers start: Kafka check, then JupyterLab's first start
PAGE_TIMEOUT_S = 90         # JupyterLab's page and lesson 0 in a headless Chromium on a busy machine
RENDER_GRACE_S = 3.0        # after the plugin's inputs arrived: time for a toast to render
ANNOUNCEMENTS_CONFIG = "/api/config/jupyterlabapputilsextensionannouncements"

#: What covers the notebook: JupyterLab's toasts (react-toastify) and modal dialogs.
COVERS_JS = """() => {
  const shown = el => el.getClientRects().length > 0;
  const toasts = [...document.querySelectorAll('.Toastify__toast')].filter(shown).map(t => t.innerText.trim());
  const dialogs = [...document.querySelectorAll('.jp-Dialog')].filter(shown).map(d => d.innerText.trim());
  return {toasts, dialogs};
}"""

#: The notebook on screen: the current main-area tab and the first heading it renders.
ON_SCREEN_JS = """() => {
  const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel');
  const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
  const heading = panel ? panel.querySelector('.jp-MarkdownOutput h1') : null;
  return {tab: tab ? tab.innerText.trim() : '', heading: heading ? heading.innerText.trim() : ''};
}"""


# ------------------------------------------------------------------ the settings file (no browser)

def _settings() -> dict:
    return json.loads(SETTINGS.read_text())


def test_the_settings_are_valid_for_jupyterlabs_own_schema():
    """A typo (``"fetchNews": false`` instead of ``"false"``) would be dropped by JupyterLab
    and the prompt would come back: validate against the schema JupyterLab ships."""
    import jsonschema
    from jupyterlab.commands import get_app_dir

    schema_file = Path(get_app_dir()) / "schemas" / "@jupyterlab" / "apputils-extension" / "notification.json"
    schema = json.loads(schema_file.read_text())
    ours = _settings()
    assert set(ours) == {PLUGIN}, ours
    assert ours[PLUGIN] == {"fetchNews": "false", "checkForUpdates": False}
    jsonschema.validate(ours[PLUGIN], schema)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail: the boolean a typo would give
        jsonschema.validate({"fetchNews": False}, schema)


def test_every_install_route_carries_the_settings():
    """A regular install (a hub's image) gets them as data files; an editable one does not
    (PEP 660), so Binder's postBuild and the Docker image point JupyterLab at them."""
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    rel = SETTINGS.relative_to(ROOT).as_posix()
    assert data_files == {"etc/jupyter/labconfig/default_setting_overrides.d": [rel]}
    assert rel in (ROOT / "binder" / "postBuild").read_text()
    assert "ENV JUPYTER_CONFIG_PATH=/course/jupyter-config" in (ROOT / "docker" / "Dockerfile").read_text()


# ------------------------------------------------------------------ helpers start, in a browser

class StartedLab:
    """``python -m helpers start --no-browser`` on its own port and token, its log, its URL."""

    def __init__(self, base: Path, user_settings: dict[str, dict]):
        self.port, self.token = rig._free_port(), os.urandom(16).hex()
        self.log, self.runtime = base / "helpers-start.log", base / "runtime"
        settings = base / "user-settings"
        # never autosave: opening lesson 0 must not write to the committed notebook
        user_settings = {"@jupyterlab/docmanager-extension:plugin": {"autosave": False}, **user_settings}
        for plugin, values in user_settings.items():
            package, _, name = plugin.partition(":")
            path = settings / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = {**os.environ,
               "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
               "JUPYTER_RUNTIME_DIR": str(self.runtime),
               "JUPYTER_CONFIG_DIR": str(base / "config")}  # not the machine's ~/.jupyter
        cmd = [sys.executable, "-m", "helpers", "start", "--no-browser", f"--ServerApp.port={self.port}",
               f"--ServerApp.token={self.token}", "--ServerApp.port_retries=0"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.url = ""

    def wait_for_url(self) -> str:
        """The page `helpers start` opens in the learner's browser: jupyter_server writes it as
        ``jpserver-file-to-run-<pid>-open.html`` (a redirect to the first lesson, token included)
        in the runtime folder, and hands that file to the browser (here: ``--no-browser``)."""
        pattern = re.compile(r'url=(http://127\.0\.0\.1:\d+/[^"\s]+)')
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for page in self.runtime.glob("jpserver-file-to-run-*-open.html"):
                found = pattern.search(page.read_text(errors="replace"))
                if found:
                    self.url = found.group(1)
                    return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        raise AssertionError(f"`helpers start` opened no page within {START_TIMEOUT_S} s "
                             f"(exit {self.proc.poll()}):\n{self.log.read_text(errors='replace')[-3000:]}")

    def schema_defaults(self) -> dict:
        """The notification plugin's defaults as this server serves them (overrides applied)."""
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/lab/api/settings/{PLUGIN}?token={self.token}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            schema = json.load(resp)["schema"]["properties"]
        return {key: schema[key]["default"] for key in ("fetchNews", "checkForUpdates")}

    def stop(self) -> None:
        """JupyterLab and its kernels (never the session's broker): the rig's stop."""
        rig._stop(self.proc)


def first_screen(browser_context, lab: StartedLab, screenshot: Path) -> dict:
    """Open the URL `helpers start` printed; wait until lesson 0 is on screen and the
    announcements plugin has its inputs, then :data:`RENDER_GRACE_S`; what the learner sees."""
    page = browser_context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        with page.expect_response(lambda r: ANNOUNCEMENTS_CONFIG in r.url, timeout=PAGE_TIMEOUT_S * 1000):
            page.goto(lab.url, wait_until="domcontentloaded")
        page.wait_for_function(f"() => ({ON_SCREEN_JS})().heading !== ''", timeout=PAGE_TIMEOUT_S * 1000)
        ready = time.monotonic()
        covers: dict = {"toasts": [], "dialogs": []}
        while time.monotonic() - ready < RENDER_GRACE_S and not (covers["toasts"] or covers["dialogs"]):
            time.sleep(0.1)
            covers = page.evaluate(COVERS_JS)
        seen = {**page.evaluate(ON_SCREEN_JS), **covers, "seconds_to_cover": None}
        if covers["toasts"] or covers["dialogs"]:
            seen["seconds_to_cover"] = round(time.monotonic() - ready, 2)
        seen["update_checks"] = [u for u in requests if "/lab/api/update" in u or "/lab/api/news" in u]
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        return seen
    finally:
        page.close()


@pytest.fixture
def start_lab(tmp_path, kafka):
    """Start ``helpers start`` with the given user settings; stopped after the test."""
    started: list[StartedLab] = []

    def start(user_settings: dict[str, dict]) -> StartedLab:
        started.append(StartedLab(tmp_path / f"lab{len(started)}", user_settings))
        started[-1].wait_for_url()  # after the append: a start that opens no page is stopped too
        return started[-1]

    yield start
    for lab in started:
        lab.stop()


@pytest.mark.browser
def test_helpers_start_opens_lesson_0_with_nothing_over_it(browser_context, start_lab):
    lesson = ROOT / FIRST_LESSON
    before = lesson.read_bytes()
    lab = start_lab({})
    defaults = lab.schema_defaults()
    seen = first_screen(browser_context, lab, SCREENSHOTS / "first-screen.png")
    print(f"page opened: {lab.url.replace(lab.token, '<token>')}\nserved defaults: {defaults}\nseen: {seen}")
    hint = (f"JupyterLab serves the notification defaults {defaults}; with the course's settings they are "
            f"fetchNews 'false', checkForUpdates false: `helpers start` must put {ROOT / 'jupyter-config'} first "
            f"on JUPYTER_CONFIG_PATH for JupyterLab (docs/setup.md)")
    assert lab.url == f"http://127.0.0.1:{lab.port}/lab/tree/{FIRST_LESSON}?token={lab.token}"
    assert seen["tab"] == Path(FIRST_LESSON).name and seen["heading"].startswith("Lesson 0: Welcome"), seen
    assert seen["toasts"] == [] and seen["dialogs"] == [], f"something covers lesson 0: {seen}\n{hint}"
    assert seen["update_checks"] == [], f"JupyterLab checked for news or updates: {seen['update_checks']}"
    assert defaults == {"fetchNews": "false", "checkForUpdates": False}, hint
    assert lesson.read_bytes() == before, "opening lesson 0 changed the committed notebook"


@pytest.mark.browser
def test_the_check_sees_the_news_prompt_when_the_setting_is_undone(browser_context, start_lab):
    """The control: a user setting that puts ``fetchNews`` back to its default ``"none"``
    brings the prompt back, and :func:`first_screen` sees it within the grace."""
    lab = start_lab({PLUGIN: {"fetchNews": "none"}})
    seen = first_screen(browser_context, lab, SCREENSHOTS / "first-screen-news-prompt.png")
    print(f"seen: {seen}")
    assert seen["tab"] == Path(FIRST_LESSON).name, seen
    assert any("Jupyter news" in toast for toast in seen["toasts"]), f"the news prompt was not seen: {seen}"
