"""pyproject.toml, environment.yml and binder/environment.yml declare the same dependencies.

- pyproject's ``[project] dependencies`` (the learner's runtime) are in both conda files,
  with the same version bounds;
- every extra (``[project.optional-dependencies]``: test and dev tools) is in the root
  environment.yml (the developer's) and never in binder/environment.yml (the learner's);
- the Python bounds agree, and Binder's is pinned in the ``python=3.X`` form repo2docker reads.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers.tooling.paths import ROOT

ROOT_ENV = ROOT / "environment.yml"
BINDER_ENV = ROOT / "binder" / "environment.yml"
POSTBUILD = ROOT / "binder" / "postBuild"
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"python-confluent-kafka": "confluent-kafka"}
NOT_PACKAGES = {"python", "pip"}
# What repo2docker's conda buildpack matches (repo2docker/buildpacks/conda/__init__.py).
REPO2DOCKER_PYTHON = re.compile(r"python\s*=+\s*([\d\.]*)")


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower()


def _bounds(spec: str, name: str) -> str:
    """``spec`` without markers or spaces, under the PyPI ``name``."""
    spec = spec.split(";")[0].replace(" ", "")
    return name + spec[len(_name(spec)):]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _runtime() -> dict[str, str]:
    return {_name(s): _bounds(s, _name(s)) for s in _project()["dependencies"]}


def _extras() -> dict[str, str]:
    specs = [s for extra in _project().get("optional-dependencies", {}).values() for s in extra]
    return {_name(s): _bounds(s, _name(s)) for s in specs}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def _conda_deps(path: Path) -> list:
    return yaml.safe_load(path.read_text())["dependencies"]


def _environment(path: Path) -> dict[str, str]:
    """The packages of a conda environment file, under their PyPI names."""
    out = {}
    for item in _conda_deps(path):
        for spec in item["pip"] if isinstance(item, dict) else [item]:
            if spec.startswith("-e"):
                continue
            name = CONDA_TO_PYPI.get(_name(spec), _name(spec))
            if name not in NOT_PACKAGES:
                assert name not in out, f"{path.relative_to(ROOT)} lists {name} twice"
                out[name] = _bounds(spec, name)
    return out


def test_pyproject_sections_do_not_overlap():
    both = set(_runtime()) & set(_extras())
    assert not both, f"in both [project] dependencies and an extra of pyproject.toml: {sorted(both)}"


def test_root_environment_has_runtime_and_every_extra():
    want, conda = {**_runtime(), **_extras()}, _environment(ROOT_ENV)
    assert set(want) == set(conda), (
        f"only in pyproject.toml: {sorted(set(want) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(want))}")


def test_binder_environment_has_exactly_the_runtime():
    runtime, binder = _runtime(), _environment(BINDER_ENV)
    missing, extra = set(runtime) - set(binder), set(binder) - set(runtime)
    tools = extra & set(_extras())
    assert not tools, f"binder/environment.yml must not hold test or dev tools (pyproject extras): {sorted(tools)}"
    assert not missing and not extra, (
        f"runtime dependencies missing from binder/environment.yml: {sorted(missing)}; "
        f"in binder/environment.yml but not in pyproject's [project] dependencies: {sorted(extra)}")


@pytest.mark.parametrize("path", [ROOT_ENV, BINDER_ENV], ids=["environment.yml", "binder/environment.yml"])
def test_same_version_bounds(path):
    pip, conda = {**_runtime(), **_extras()}, _environment(path)
    differ = {n: (pip[n], conda[n]) for n in conda if n in pip and pip[n] != conda[n]}
    assert not differ, f"version bounds differ (pyproject, {path.relative_to(ROOT)}): {differ}"


def test_python_bound_agrees():
    assert f"python{_project()['requires-python']}" in _conda_deps(ROOT_ENV)


def test_binder_pins_python_in_the_form_repo2docker_reads():
    pins = [d for d in _conda_deps(BINDER_ENV) if isinstance(d, str) and REPO2DOCKER_PYTHON.match(d)]
    assert len(pins) == 1, f"binder/environment.yml needs exactly one `python=3.X` entry, found {pins}"
    version = REPO2DOCKER_PYTHON.match(pins[0]).group(1)
    minimum = _project()["requires-python"].removeprefix(">=")
    assert len(_version(version)) == 2, f"pin a minor version (python=3.X), got {pins[0]!r}"
    assert _version(version) >= _version(minimum), (
        f"binder pins python={version}, below pyproject's requires-python {_project()['requires-python']}")


def test_binder_installs_the_course_package():
    pip_sections = [d["pip"] for d in _conda_deps(BINDER_ENV) if isinstance(d, dict)]
    in_env = any(s.replace(" ", "") in ("-e.", "-e..") for section in pip_sections for s in section)
    install = re.compile(r"^[^#\n]*pip install .*-e \.\s*$", re.MULTILINE)
    in_postbuild = POSTBUILD.exists() and install.search(POSTBUILD.read_text())
    assert in_env or in_postbuild, "Binder must install the course package (binder/postBuild: pip install -e .)"
    if POSTBUILD.exists():
        assert POSTBUILD.stat().st_mode & 0o111, "binder/postBuild must be executable"


def test_same_channels():
    root, binder = (yaml.safe_load(p.read_text())["channels"] for p in (ROOT_ENV, BINDER_ENV))
    assert root == binder == ["conda-forge"], f"channels: environment.yml {root}, binder/environment.yml {binder}"
