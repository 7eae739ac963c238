"""``python -m helpers broker start|stop|status [--json]``: the embedded broker."""
from __future__ import annotations

import argparse
import json

from ..kafka import broker, embedded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The action, and ``--json`` for status."""
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--json", action="store_true", help="status as JSON")


def run(args: argparse.Namespace) -> int:
    """0 done (status: running), 1 status: not running."""
    if args.action == "start":
        state = embedded.start_embedded()
        how = "reused" if state["reused"] else f"started in {state['ready_seconds']} s"
        print(f"embedded broker {how}: {state['bootstrap_servers']} (pid {state['pid']})")
        return 0
    if args.action == "stop":
        print("embedded broker stopped" if embedded.stop_embedded() else "no embedded broker was running")
        return 0
    info = broker.status()
    if args.json:
        print(json.dumps(info))
    elif info["running"]:
        print(f"{info['kind']} at {info['bootstrap_servers']} (pid {info['pid']})")
    else:
        print(f"not running: {info.get('error', '')}")
    return 0 if info["running"] else 1
