"""``python -m helpers start``: show the Kafka setting, ensure Kafka, then run JupyterLab on the first lesson.

Options it does not know (``--ServerApp.port=8899`` ...) are passed on to JupyterLab, which runs
as a child of this process (on every system; Windows has no ``exec``): this process waits for it,
passes Ctrl-C and SIGTERM on, and exits with its exit code.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from ..kafka import choice, embedded
from . import connect_kafka, kafkactl
from .paths import LESSONS, ROOT

FIRST_LESSON = (LESSONS / "00_welcome.ipynb").relative_to(ROOT).as_posix()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-browser``, ``--kafka CHOICE``; anything else goes to JupyterLab."""
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument("--kafka", metavar="CHOICE",
                        help="save this choice first (embedded, docker, HOST:PORT or auto), as `kafka use` does")
    parser.set_defaults(passes_extra_arguments=True)


def lifetime_note() -> str:
    """What happens to the embedded broker when JupyterLab exits (said before it starts)."""
    idle = embedded.idle_seconds()
    if idle is None:
        return ("The embedded broker keeps running after JupyterLab exits (so your topics survive a restart); "
                "`python -m helpers broker stop` stops it.")
    return (f"The embedded broker stops {idle:g} s after JupyterLab and its kernels are gone "
            f"(${embedded.ENV_IDLE}={idle:g}).")


def run(args: argparse.Namespace) -> int:
    """Start JupyterLab as a child and wait for it; its exit code is ours."""
    if args.kafka:
        print(f"saved in {kafkactl.save(args.kafka)}")
    setting = kafkactl.setting()
    print(f"Kafka setting: {setting.describe()}")
    kafka = connect_kafka(quiet=False)
    if kafka.kind == "embedded":
        print(lifetime_note())
    cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={ROOT}", *args.extra, FIRST_LESSON]
    if args.no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ)
    # The course's JupyterLab settings (no news prompt over lesson 0): an editable install
    # carries no data files, so point JupyterLab at the repository's jupyter-config/.
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "jupyter-config"), env.get("JUPYTER_CONFIG_PATH")]))
    if kafka.kind == "docker" and setting.kind is None:  # kernels then use the container without probing again
        env[choice.ENV_KAFKA] = choice.DOCKER
    sys.stdout.flush()
    lab = subprocess.Popen(cmd, cwd=ROOT, env=env)
    if kafka.kind == "embedded":
        embedded.register_owner(lab.pid)  # the broker's owners: this process, JupyterLab, its kernels
    return wait_for(lab)


def wait_for(proc: subprocess.Popen[Any]) -> int:
    """Wait for ``proc``; pass SIGTERM on, and Ctrl-C (on Windows the console sends it to every
    process attached to it, JupyterLab included, so there is nothing to pass on)."""
    def terminate(signum: int, frame: Any) -> None:
        proc.terminate()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                if sys.platform != "win32" and proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
