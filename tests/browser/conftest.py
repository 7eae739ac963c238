"""Fixtures of the browser tests. The rig they drive (JupyterLab over a copy of the course,
headless Chromium, the checks of a notebook run live or opened executed, RISE's slide mode,
the offline browser of the website tests) is :mod:`rig`, beside this file.

Chromium comes from Debian (``apt-get install -y chromium``) because Playwright's own browser
download cannot work here; without it (or without ``pip install playwright``) the tests skip
with the reason, except in CI (``$CI`` set) where they fail.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import rig


def unavailable(reason: str) -> None:
    """Skip with ``reason`` on a laptop; fail in CI, where the browser must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run; .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def playwright_driver():
    """Playwright's sync driver (one per session: a second sync_playwright() in the thread fails)."""
    if not Path(rig.CHROMIUM).exists():
        unavailable(f"{rig.CHROMIUM} is missing: `apt-get update && apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: `pip install playwright`")
    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture(scope="session")
def browser_context(playwright_driver, tmp_path_factory):
    """One headless Chromium (fresh user-data-dir) for the session."""
    context = rig.chromium(playwright_driver, tmp_path_factory.mktemp("chromium-profile"))
    yield context
    context.close()


@pytest.fixture(scope="session")
def offline_browser_context(playwright_driver, tmp_path_factory):
    """A headless Chromium that reaches 127.0.0.1 and nothing else (:func:`rig.offline_chromium`)."""
    with rig.offline_chromium(playwright_driver, tmp_path_factory.mktemp("chromium-offline-profile")) as context:
        yield context


@pytest.fixture(scope="session")
def lab(browser_context, kafka, tmp_path_factory):
    """JupyterLab on 127.0.0.1:<free port> with a token, over a copy of the course (:func:`rig.jupyterlab`)."""
    with rig.jupyterlab(browser_context, tmp_path_factory.mktemp("jupyterlab"), kafka) as running:
        yield running


@pytest.fixture(scope="session")
def executed_dir(learner_run) -> Path:
    """The folder of executed notebooks (mirroring lessons/ and labs/solutions/) that the
    session's ``learner_run`` (tests/conftest.py) made."""
    return Path(getattr(learner_run, "root", learner_run))
