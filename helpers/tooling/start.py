"""``python -m helpers start``: ensure Kafka, then open JupyterLab on the first lesson.

Options it does not know (``--ServerApp.port=8899`` ...) are passed on to JupyterLab.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import connect_kafka
from .paths import LESSONS, ROOT

FIRST_LESSON = (LESSONS / "00_welcome.ipynb").relative_to(ROOT).as_posix()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-browser``; anything else goes to JupyterLab."""
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.set_defaults(passes_extra_arguments=True)


def run(args: argparse.Namespace) -> int:
    """Replace this process with JupyterLab (Ctrl-C stops it; no orphan)."""
    kafka = connect_kafka(quiet=False)
    if kafka.kind == "embedded":
        print("The embedded broker keeps running after JupyterLab exits; "
              "`python -m helpers broker stop` stops it.")
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
    if kafka.kind == "docker":  # kernels then skip the probe order and use the container directly
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    os.chdir(ROOT)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # JupyterLab replaces this process
    return 0  # not reached
