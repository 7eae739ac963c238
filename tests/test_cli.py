"""The command line: doctor, broker, run. Each runs as a learner would run it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    return out, time.monotonic() - started


@pytest.fixture
def clean_env(tmp_path):
    """A machine where no Kafka is configured: no env cluster, a state dir of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONFIG")}
    env["COURSE_STATE_DIR"] = str(tmp_path)
    yield env
    subprocess.run([sys.executable, "-m", "helpers", "broker", "stop"], env=env, cwd=ROOT, timeout=60)


def _run_clean(env, *args, timeout=120):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env)
    return out, time.monotonic() - started


def test_doctor_starts_the_embedded_broker_and_passes_in_under_10_s(clean_env):
    out, seconds = _run_clean(clean_env, "doctor")
    print(out.stdout, f"doctor took {seconds:.2f} s")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embedded broker" in out.stdout and "round trip" in out.stdout
    assert seconds < 10
    status, _ = _run_clean(clean_env, "broker", "status", "--json")
    info = json.loads(status.stdout)
    assert info["kind"] == "embedded" and info["bootstrap_servers"].startswith("127.0.0.1:") and info["pid"]


def test_broker_start_status_stop(clean_env):
    started, _ = _run_clean(clean_env, "broker", "start")
    assert started.returncode == 0 and "started" in started.stdout
    again, _ = _run_clean(clean_env, "broker", "start")
    assert "reused" in again.stdout
    stopped, _ = _run_clean(clean_env, "broker", "stop")
    assert "stopped" in stopped.stdout
    status, _ = _run_clean(clean_env, "broker", "status", "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["running"] is False


@pytest.mark.parametrize("command", [["doctor"], ["run", "lessons/00_welcome.ipynb"]])
def test_unreachable_cluster_fails_fast_naming_the_fix(command):
    out, seconds = _cli(*command, env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and seconds < 15
    assert "KAFKA_BOOTSTRAP_SERVERS" in text and "broker start" in text


def test_bad_time_scale_is_refused_naming_it(kafka):
    out, _ = _cli("run", "lessons/00_welcome.ipynb", "--time-scale", "-1")
    assert out.returncode != 0 and "time_scale" in out.stdout + out.stderr


def test_run_executes_the_welcome_lesson_in_under_30_s(kafka):
    out, seconds = _cli("run", "lessons/00_welcome.ipynb")
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lessons/00_welcome.ipynb" in out.stdout and " ok" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("lessons/00_welcome.ipynb"))
    assert float(row.split()[1]) < 30
    assert (ROOT / "build" / "run" / "lessons" / "00_welcome.ipynb").exists()


def test_start_serves_jupyterlab_on_loopback_with_the_first_lesson(kafka, tmp_path):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "start", "--no-browser",
                             f"--ServerApp.port={port}", "--ServerApp.token=course-test"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 60, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/contents/lessons/00_welcome.ipynb?content=0&token=course-test"
                body = urllib.request.urlopen(url, timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.3)
        assert '"name": "00_welcome.ipynb"' in body or '"name":"00_welcome.ipynb"' in body
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "Kafka:" in output and f"127.0.0.1:{port}" in output
