"""pyproject.toml and environment.yml declare the same dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"python-confluent-kafka": "confluent-kafka"}
NOT_PACKAGES = {"python", "pip"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = data["dependencies"] + [s for extra in data["optional-dependencies"].values() for s in extra]
    return {_name(s): s.split(";")[0].replace(" ", "") for s in specs}


def _environment() -> dict[str, str]:
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    out = {}
    for item in deps:
        for spec in item["pip"] if isinstance(item, dict) else [item]:
            if spec.startswith("-e"):
                continue
            name = CONDA_TO_PYPI.get(_name(spec), _name(spec))
            if name not in NOT_PACKAGES:
                out[name] = spec.replace(" ", "").replace(_name(spec), name, 1)
    return out


def test_same_packages_in_both_files():
    pip, conda = _pyproject(), _environment()
    assert set(pip) == set(conda), (
        f"only in pyproject.toml: {sorted(set(pip) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(pip))}")


def test_same_version_bounds_in_both_files():
    pip, conda = _pyproject(), _environment()
    differ = {n: (pip[n], conda[n]) for n in pip if n in conda and pip[n] != conda[n]}
    assert not differ, f"version bounds differ (pyproject, environment.yml): {differ}"


def test_python_bound_agrees():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    assert f"python{requires}" in deps
