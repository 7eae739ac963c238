"""Nothing outlives a notebook kernel: no listening service, no consumer process.

A lesson that is interrupted (kernel restarted or shut down before its clean-up cell)
must not leave services listening or consumer processes running. The embedded broker is
the one deliberate exception: it is shared and outlives kernels (see helpers.broker).
"""
from __future__ import annotations

import json
import os
import time

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from helpers import broker

SETUP = """
import json, helpers
from helpers import services, consumers
kafka = helpers.connect(quiet=True)
chain = services.start_chain(3, latency=0.001)      # never stopped: the kernel dies first
assert chain.call().ok
topic = kafka.create_topic(prefix="cleanup")
member = consumers.ConsumerProcess(kafka, topic, helpers.unique_name("cleanup")).start()
print(json.dumps({"ports": [s.port for s in chain.services], "child": member.pid}))
"""


def _run(client, code: str) -> str:
    out = []
    reply = client.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m))
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")


def _gone(check, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_services_and_consumers_die_with_their_kernel(kafka, how):
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        started = json.loads(_run(client, SETUP).strip().splitlines()[-1])
        kernel_pid = manager.provisioner.pid
    finally:
        client.stop_channels()
        if how == "kill":
            os.kill(manager.provisioner.pid, 9)
            manager.cleanup_resources()
        else:
            manager.shutdown_kernel(now=False)
    listening = lambda: {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"}  # noqa: E731
    assert _gone(lambda: not set(started["ports"]) & listening()), f"services still listening on {started['ports']}"
    assert _gone(lambda: not psutil.pid_exists(started["child"])
                 or psutil.Process(started["child"]).status() == psutil.STATUS_ZOMBIE), "consumer process outlived its kernel"
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    assert broker.live_state() is not None or kafka.kind != "embedded", "the shared broker is meant to outlive kernels"
