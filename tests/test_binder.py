"""What Binder would build: repo2docker picks binder/, the pinned Python and the lean environment.

``repo2docker --no-build --debug --no-run`` prints the Dockerfile it would build without a
Docker engine, so the test reads repo2docker's own decision rather than re-implementing it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from helpers.tooling.paths import ROOT

BINDER = ROOT / "binder"
# Tools that test or build the course; a learner's session needs none of them.
TOOLS = {"pytest", "pytest-timeout", "pytest-xdist", "nbval", "playwright", "confluent-kafka", "python-confluent-kafka",
         "pyyaml", "ruff", "mypy", "sphinx", "myst-nb", "jupyter-book", "mystmd", "jupyter-repo2docker",
         "axe-playwright-python", "actionlint"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower()


def _pinned_python() -> str:
    deps = yaml.safe_load((BINDER / "environment.yml").read_text())["dependencies"]
    pins = [m.group(1) for d in deps if isinstance(d, str) and (m := re.fullmatch(r"python=(\d+\.\d+)", d))]
    assert len(pins) == 1, f"binder/environment.yml needs one `python=3.X` entry, found {pins}"
    return pins[0]


@pytest.fixture(scope="module")
def repo2docker_output() -> str:
    if importlib.util.find_spec("repo2docker") is None:
        if os.environ.get("CI"):
            pytest.fail("repo2docker is not installed (CI is set): `pip install -e \".[test]\"` installs it")
        pytest.skip("repo2docker is not installed: `pip install -e \".[test]\"` (jupyter-repo2docker)")
    result = subprocess.run([sys.executable, "-m", "repo2docker", "--no-build", "--debug", "--no-run", "."],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"repo2docker exited {result.returncode}:\n{out[-3000:]}"
    return out


@pytest.mark.slow  # runs repo2docker (the module's fixture)
def test_repo2docker_uses_the_pinned_python(repo2docker_output):
    version = _pinned_python()
    assert version == "3.11", f"Binder pins python={version}; the course is measured on 3.11"
    lines = [line for line in repo2docker_output.splitlines() if "python" in line.lower()]
    print(*[line for line in lines if "Python" in line or "python=" in line], sep="\n")
    assert "Python version unspecified" not in repo2docker_output, "repo2docker did not read the Python pin"
    assert f"Building conda environment for python={version}" in repo2docker_output, "\n".join(lines[:10])
    # the server environment repo2docker starts from is the lock file of that same Python
    assert re.search(rf"environment-2epy-2d{version.replace('.', '-2e')}-2d", repo2docker_output) or \
        f"environment.py-{version}" in repo2docker_output, "repo2docker's base environment is not Python " + version


@pytest.mark.slow  # runs repo2docker (the module's fixture)
def test_repo2docker_uses_the_binder_environment(repo2docker_output):
    updates = re.findall(r'env update -p \S+ --file "([^"]+)"', repo2docker_output)
    print("environment file:", updates)
    assert updates == ["binder/environment.yml"], f"repo2docker updates the environment from {updates}"
    assert "RUN ./binder/postBuild" in repo2docker_output, "binder/postBuild (installs the course) is not run"


def test_binder_scripts_install_no_test_tools():
    """binder/environment.yml itself holds exactly the runtime (tests/test_environment_files.py);
    here, what Binder's scripts would install besides it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {_name(s) for specs in project.get("optional-dependencies", {}).values() for s in specs}
    for script in ("postBuild", "start", "requirements.txt"):
        path = BINDER / script
        code = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")] if path.exists() else []
        named = {t for t in TOOLS | extras | {"[test]"} for ln in code if t in ln}
        assert not named, f"binder/{script} installs test or dev tools: {sorted(named)}"


def test_repo2docker_runs_postbuild_after_copying_the_repository(repo2docker_output):
    """postBuild needs the checkout (jupyter-config/ included): repo2docker copies it first."""
    copy = repo2docker_output.index("COPY --chown=0:0 src/ ${REPO_DIR}/")
    assert copy < repo2docker_output.index("RUN ./binder/postBuild")


@pytest.mark.skipif(sys.platform == "win32", reason="runs binder/postBuild with bash and a shell stand-in for python")
def test_postbuild_installs_the_course_jupyterlab_settings(tmp_path):
    """Run binder/postBuild with a stand-in `python` (pip does nothing, sys.prefix is a temporary
    folder): the course's settings land where JupyterLab reads default settings, and
    jupyter_server's config manager (what JupyterLab uses for them) reads them from there."""
    from jupyter_server.services.config.manager import ConfigManager  # what JupyterLab reads labconfig with

    repo, prefix, bin_dir = tmp_path / "repo", tmp_path / "prefix", tmp_path / "bin"
    shutil.copytree(ROOT / "jupyter-config", repo / "jupyter-config")
    (repo / "binder").mkdir(parents=True)
    shutil.copy(BINDER / "postBuild", repo / "binder" / "postBuild")
    bin_dir.mkdir()
    shim = bin_dir / "python"
    shim.write_text('#!/bin/sh\n'
                    'case "$1" in -m) echo "$*" >> "$PIP_LOG";; -c) echo "$FAKE_PREFIX";; *) exit 9;; esac\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_PREFIX": str(prefix),
           "PIP_LOG": str(tmp_path / "pip.log")}
    run = subprocess.run(["bash", "binder/postBuild"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "pip install --no-cache-dir --no-deps -e ." in (tmp_path / "pip.log").read_text()
    labconfig = prefix / "etc" / "jupyter" / "labconfig"
    overrides = ConfigManager(read_config_path=[str(labconfig)]).get("default_setting_overrides")
    ours = json.loads((ROOT / "jupyter-config" / "labconfig" / "default_setting_overrides.d" /
                       "asynchronous-events.json").read_text())
    assert overrides == ours and overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
