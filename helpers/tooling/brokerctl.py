"""``python -m helpers broker start|stop|status [--json]``: the embedded broker.

``broker start`` starts a *kept* broker: a deliberate, long-lived one that only ``broker stop``
stops (``$COURSE_BROKER_IDLE`` does not apply to it). A broker that ``helpers.connect()``
started lives as :mod:`helpers.kafka.embedded` says (on a laptop until ``broker stop``; with
``$COURSE_BROKER_IDLE``, that long after its last kernel and Jupyter server are gone).
"""
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
        state = embedded.start_embedded(keep=True)
        how = "reused" if state["reused"] else f"started in {state['ready_seconds']} s"
        print(f"embedded broker {how}: {state['bootstrap_servers']} (pid {state['pid']}); "
              "it runs until `python -m helpers broker stop`")
        return 0
    if args.action == "stop":
        print("embedded broker stopped" if embedded.stop_embedded() else "no embedded broker was running")
        return 0
    info = broker.status()
    if args.json:
        print(json.dumps(info))
    elif info["running"]:
        print(f"{info['kind']} at {info['bootstrap_servers']} (pid {info['pid']}); why: {info['why']}")
        if info["kind"] == "embedded":
            print(lifetime(info))
    else:
        print(f"not running: {info.get('error', '')}")
    return 0 if info["running"] else 1


def lifetime(info: dict) -> str:
    """How long the embedded broker of ``info`` (from :func:`helpers.kafka.broker.status`) lives."""
    if info.get("kept"):
        return "kept: it runs until `python -m helpers broker stop`"
    used = f"{info.get('owners', 0)} running process(es) use it"
    if info.get("idle_seconds") is None:
        return f"{used}; it runs until `python -m helpers broker stop` (no ${embedded.ENV_IDLE})"
    return f"{used}; it stops {info['idle_seconds']:g} s after the last of them is gone"
