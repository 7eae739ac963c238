"""``python -m helpers``: doctor, broker start|stop|status, start, run, strip."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import broker

ROOT = Path(__file__).resolve().parent.parent
FIRST_LESSON = "lessons/00_welcome.ipynb"


def _cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return doctor.main()


def _cmd_broker(args: argparse.Namespace) -> int:
    if args.action == "start":
        state = broker.start_embedded()
        how = "reused" if state["reused"] else f"started in {state['ready_seconds']} s"
        print(f"embedded broker {how}: {state['bootstrap_servers']} (pid {state['pid']})")
    elif args.action == "stop":
        print("embedded broker stopped" if broker.stop_embedded() else "no embedded broker was running")
    else:
        info = broker.status()
        if args.json:
            print(json.dumps(info))
        else:
            print(f"{info['kind']} at {info['bootstrap_servers']} (pid {info['pid']})" if info["running"]
                  else f"not running: {info.get('error', '')}")
        return 0 if info["running"] else 1
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    kafka = broker.connect()
    if kafka.kind == "embedded":
        print("The embedded broker keeps running after JupyterLab exits; "
              "`python -m helpers broker stop` stops it.")
    cmd = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={ROOT}", *args.jupyter_args, FIRST_LESSON]
    if args.no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ)
    if kafka.kind == "docker":  # kernels then skip the probe order and use the container directly
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    os.chdir(ROOT)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # JupyterLab replaces this process: Ctrl-C stops it, no orphan
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import runner

    try:
        print(broker.connect(quiet=True).describe())
    except (broker.BrokerUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = [Path(p).resolve() for p in args.notebooks] or None
    results = runner.run_all(paths, time_scale=args.time_scale)
    print(runner.table(results))
    return 0 if results and all(r.ok for r in results) else 1


def _cmd_strip(args: argparse.Namespace) -> int:
    from . import notebooks

    changed = notebooks.strip_outputs([Path(p) for p in args.notebooks] or notebooks.all_notebooks())
    for path in changed:
        print(f"stripped {path}")
    return 0


def _cmd_labs(args: argparse.Namespace) -> int:
    from . import labs

    return labs.main([args.action])


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check Python, packages and Kafka; exit non-zero naming the fix") \
        .set_defaults(func=_cmd_doctor)
    b = sub.add_parser("broker", help="the embedded broker: start | stop | status [--json]")
    b.add_argument("action", choices=["start", "stop", "status"])
    b.add_argument("--json", action="store_true", help="status as JSON")
    b.set_defaults(func=_cmd_broker)
    s = sub.add_parser("start", help="ensure Kafka, then open JupyterLab on the first lesson")
    s.add_argument("--no-browser", action="store_true")
    s.set_defaults(func=_cmd_start)
    r = sub.add_parser("run", help="execute every lesson and lab solution headless; print a table")
    r.add_argument("notebooks", nargs="*", help="only these notebooks")
    r.add_argument("--time-scale", type=float, default=0.1, help="TIME_SCALE for the run (default 0.1)")
    r.set_defaults(func=_cmd_run)
    st = sub.add_parser("strip", help="strip outputs from notebooks (all by default)")
    st.add_argument("notebooks", nargs="*")
    st.set_defaults(func=_cmd_strip)
    lb = sub.add_parser("labs", help="labs: build learner notebooks and solutions from labs/sources | check they are in sync")
    lb.add_argument("action", choices=["build", "check"])
    lb.set_defaults(func=_cmd_labs)
    be = sub.add_parser("bench", add_help=False, help="benchmark table (notebook seconds, broker readiness, throughput ratios, memory)")
    be.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if args.command == "start":
        args.jupyter_args = extra  # e.g. --ServerApp.port=8899, passed on to JupyterLab
    elif args.command == "bench":
        args.bench_args = extra  # --quick, --json PATH: parsed by helpers.bench
    elif extra:
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except broker.BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
