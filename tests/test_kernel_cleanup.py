"""Nothing outlives a notebook kernel: no listening service, no consumer process, no Kafka client.

A lesson that is interrupted (kernel restarted or shut down before its clean-up cell)
must not leave services listening, consumer processes running or Kafka clients connected
(lag monitors, live lag charts and lab 5's shop keep theirs open while they run). In a live kernel,
``helpers.stop_all()`` stops everything and ``helpers.leftovers()`` is then empty. The
embedded broker is the one deliberate exception: it is shared and outlives kernels (see
helpers.kafka.embedded).
"""
from __future__ import annotations

import json
import os

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

from helpers.core.wait import wait_until
from helpers.kafka import embedded
from helpers.kafka.probe import parse_bootstrap

SETUP = """
import json, helpers
from helpers import services
from helpers.backlog import consumers, lagplots, producers
from helpers.kafka import lag
kafka = helpers.connect(quiet=True)
chain = services.start_chain(3, latency=0.001)      # never stopped: the kernel dies first
assert chain.call().ok
topic = kafka.create_topic(prefix="cleanup", partitions=2)
group = helpers.unique_name("cleanup")
member = consumers.ConsumerProcess(kafka, topic, group).start()
runner = producers.ProducerRunner(kafka, topic, rate=20).start()
monitor = lag.LagMonitor(kafka, topic, group, interval=0.1).start()
chart = lagplots.LiveLagPlot(kafka, topic, group, interval=0.1).start()
from helpers import checks                          # lab 5's shop: back office, dispatcher, producer
shop = checks.lab5_shop(kafka, fast=0.05, slow=1.0)
print(json.dumps({"ports": [s.port for s in chain.services], "child": member.pid}))
"""

STOP_ALL = """
import json, threading, time
helpers.core.wait.wait_until(lambda: len(chart.series()[0]) >= 3 and len(monitor.series()[0]) >= 3, 30, "lag samples")
stopped = helpers.stop_all()
print(json.dumps({"stopped": stopped, "leftovers": helpers.leftovers(),
                  "threads": [t.name for t in threading.enumerate()], "child_alive": member.alive}))
"""


def _run(client, code: str) -> dict:
    out = []
    reply = client.execute_interactive(code, timeout=90, output_hook=lambda m: out.append(m))
    text = "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
    errors = ["\n".join(m["content"]["traceback"]) for m in out if m["msg_type"] == "error"]
    assert reply["content"]["status"] == "ok", "\n".join(errors) or text
    return json.loads(text.strip().splitlines()[-1])


def _broker_connections(pid: int, port: int) -> list:
    """Established TCP connections of process ``pid`` to the broker's ``port``."""
    try:
        conns = psutil.Process(pid).net_connections("tcp")
    except psutil.NoSuchProcess:
        return []
    return [c for c in conns if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED]


def _kafka_port(kafka) -> int:
    return parse_bootstrap(kafka.bootstrap_servers)[0][1]


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_services_consumers_and_lag_monitors_die_with_their_kernel(kafka, how):
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        started = _run(client, SETUP)
        kernel_pid = manager.provisioner.pid
        port = _kafka_port(kafka)
        clients_before = _broker_connections(kernel_pid, port)
        assert clients_before, "the lag monitor, the chart and the producer are connected while they run"
        local_ports = {c.laddr.port for c in clients_before}
    finally:
        client.stop_channels()
        if how == "kill":
            os.kill(manager.provisioner.pid, 9)
            manager.cleanup_resources()
        else:
            manager.shutdown_kernel(now=False)

    def listening() -> set[int]:
        return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}

    def kernel_side_open() -> list:
        return [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port in local_ports
                and c.status == psutil.CONN_ESTABLISHED]

    assert wait_until(lambda: not set(started["ports"]) & listening(), 15, "ports", strict=False), \
        f"services still listening on {started['ports']}"
    assert wait_until(lambda: not psutil.pid_exists(started["child"])
                      or psutil.Process(started["child"]).status() == psutil.STATUS_ZOMBIE, 15, "child",
                      strict=False), "consumer process outlived its kernel"
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    assert wait_until(lambda: not kernel_side_open(), 15, "clients", strict=False), \
        f"Kafka connections of the dead kernel still open: {kernel_side_open()}"
    assert embedded.live_state() is not None or kafka.kind != "embedded", \
        "the shared broker is meant to outlive kernels"


def test_stop_all_leaves_nothing_in_a_live_kernel(kafka):
    """helpers.stop_all() stops services, consumers, producers, lag monitors and charts; leftovers() is empty."""
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        started = _run(client, SETUP)
        kernel_pid = manager.provisioner.pid
        result = _run(client, STOP_ALL)
        child_gone = wait_until(lambda: not psutil.pid_exists(started["child"])
                                or psutil.Process(started["child"]).status() == psutil.STATUS_ZOMBIE, 10, "child",
                                strict=False)
        connections = _broker_connections(kernel_pid, _kafka_port(kafka))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    print(f"\nstop_all stopped {result['stopped']}; leftovers {result['leftovers']}")
    assert result["stopped"] >= 6  # chain, consumer, producer, monitor, chart (and its monitor), lab 5's shop
    assert not any(result["leftovers"].values()), result["leftovers"]
    assert not result["child_alive"] and child_gone, "stop_all() stopped the consumer process"
    assert not [t for t in result["threads"] if t.startswith(("course-", "kafka"))], result["threads"]
    assert connections == [], f"Kafka clients still connected after stop_all: {connections}"
