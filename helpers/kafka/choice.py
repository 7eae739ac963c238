"""Which Kafka the learner chose: ``embedded``, ``docker`` or a cluster's ``host:port``.

One setting, explicit and per user, read in this order (the first that is set wins):

1. ``$COURSE_KAFKA`` (``embedded``, ``docker`` or ``host:port[,host:port]``): what a class
   JupyterHub sets for everyone (``COURSE_KAFKA=embedded``: nobody adopts another user's
   broker on 127.0.0.1:9092);
2. ``$KAFKA_BOOTSTRAP_SERVERS`` (and ``$KAFKA_CONFIG``, a client.properties for SASL_SSL): a
   cluster, as before;
3. the learner's own file, :func:`config_file` (``~/.config/asynchronous-events/kafka`` on
   Linux; ``$COURSE_KAFKA_FILE`` moves it), written by ``python -m helpers kafka use ...``.

With none of them set, :func:`helpers.kafka.broker.resolve` keeps the laptop's order: Kafka
answering on 127.0.0.1:9092 (the ``docker/`` container), else the embedded broker.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .probe import ENV_BOOTSTRAP, parse_bootstrap

ENV_KAFKA = "COURSE_KAFKA"
ENV_KAFKA_FILE = "COURSE_KAFKA_FILE"
ENV_CONFIG = "KAFKA_CONFIG"
EMBEDDED, DOCKER = "embedded", "docker"
USE_COMMAND = "python -m helpers kafka use embedded|docker|HOST:PORT"
_FILE_HEADER = ("# The Kafka the course uses: embedded, docker (the container on 127.0.0.1:9092) or host:port.\n"
                "# Written by `python -m helpers kafka use ...`; `python -m helpers kafka use auto` removes it.\n")


@dataclass(frozen=True)
class Choice:
    """The learner's setting: ``value`` is ``embedded``, ``docker``, a bootstrap list (empty when
    only ``$KAFKA_CONFIG`` names the cluster) or None (no setting); ``source`` says where it was
    set; ``ignored`` lists settings that are present but lose to it."""

    value: str | None
    source: str = ""
    ignored: tuple[str, ...] = ()

    @property
    def kind(self) -> str | None:
        """``embedded``, ``docker``, ``url`` (a cluster) or None (no setting)."""
        if self.value is None:
            return None
        return self.value if self.value in (EMBEDDED, DOCKER) else "url"

    def describe(self) -> str:
        """One line: what was chosen, and where."""
        if self.value is None:
            return (f"none, so the first that answers: Kafka on 127.0.0.1:9092 (the docker/ container), "
                    f"else the embedded broker. Choose one: `{USE_COMMAND}` (saved in {config_file()})")
        shown = {EMBEDDED: "embedded (the Tansu broker, your own)", DOCKER: "docker (the container on 127.0.0.1:9092)"}
        what = shown.get(self.value) or (f"your cluster {self.value}" if self.value else "your cluster")
        also = f"; {', '.join(self.ignored)} ignored" if self.ignored else ""
        return f"{what}, set by {self.source}{also}"


def config_file() -> Path:
    """The learner's own setting file: ``$COURSE_KAFKA_FILE``, else ``asynchronous-events/kafka`` in
    the user's configuration folder (``$XDG_CONFIG_HOME`` or ``~/.config`` on Linux,
    ``~/Library/Application Support`` on macOS, ``%APPDATA%`` on Windows)."""
    raw = os.environ.get(ENV_KAFKA_FILE, "").strip()
    if raw:
        return Path(raw).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "asynchronous-events" / "kafka"


def parse(value: str, where: str) -> str:
    """``embedded``, ``docker`` or a checked ``host:port[,host:port]``; ValueError naming ``where``."""
    text = value.strip()
    if text.lower() in (EMBEDDED, DOCKER):
        return text.lower()
    try:
        parse_bootstrap(text)
    except ValueError:
        raise ValueError(f"{where} must be 'embedded', 'docker' or host:port[,host:port], got {value!r}") from None
    return text


def _from_file(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    values = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return parse(values[0], f"the setting in {path}") if values else None


def current() -> Choice:
    """The learner's setting, from the environment or their file (see the module's order)."""
    env = os.environ.get(ENV_KAFKA, "").strip()
    servers = os.environ.get(ENV_BOOTSTRAP, "").strip()
    properties = os.environ.get(ENV_CONFIG, "").strip()
    stored = _from_file(config_file())
    file_name = str(config_file())
    if env:
        ignored = tuple(f"${n}" for n, v in ((ENV_BOOTSTRAP, servers), (ENV_CONFIG, properties)) if v)
        value = parse(env, f"${ENV_KAFKA}")
        if value not in (EMBEDDED, DOCKER):
            ignored = tuple(i for i in ignored if i != f"${ENV_CONFIG}")  # its SASL settings still apply
        return Choice(value, f"${ENV_KAFKA}", ignored + ((file_name,) if stored else ()))
    if servers or properties:
        return Choice(servers, f"${ENV_BOOTSTRAP}" if servers else f"${ENV_CONFIG}", (file_name,) if stored else ())
    if stored:
        return Choice(stored, file_name)
    return Choice(None)


def save(value: str) -> Path:
    """Write ``value`` (``embedded``, ``docker`` or ``host:port``) to the learner's file; ``auto``
    removes the file (no setting). Returns the file's path."""
    path = config_file()
    if value.strip().lower() == "auto":
        path.unlink(missing_ok=True)
        return path
    checked = parse(value, "the Kafka to use")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(_FILE_HEADER + checked + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
