"""Lint and types: ``ruff check helpers tests`` and mypy (configured in pyproject.toml) pass."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib

import pytest

from helpers.tooling.paths import ROOT


def _run(tool: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: `pip install -e '.[test]'` installs it")
        pytest.skip(f"{tool} not installed (pip install {tool})")
    return subprocess.run([sys.executable, "-m", tool, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, check=False)


def test_ruff_passes():
    out = _run("ruff", ["check", "helpers", "tests"])
    assert out.returncode == 0, f"ruff check helpers tests:\n{out.stdout}{out.stderr}"


@pytest.mark.slow  # mypy over helpers/ (4 s)
def test_mypy_passes():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("mypy", {})
    configured = any(config.get(key) for key in ("files", "packages", "modules"))
    args = [] if configured else ["-p", "helpers"]  # what pyproject names, else the package
    out = _run("mypy", args)
    command = " ".join(["mypy", *args]) if args else "mypy (what pyproject's [tool.mypy] names)"
    assert out.returncode == 0, f"{command}:\n{out.stdout}{out.stderr}"
