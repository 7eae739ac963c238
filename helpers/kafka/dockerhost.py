"""How much memory Docker gives the course's containers, and whether that is enough.

``docker/compose.yml`` runs Apache Kafka and JupyterLab side by side in Docker's memory. On
Docker Desktop (macOS, Windows) that is the memory of its Linux VM: by default up to half the
machine's (Settings > Resources > Advanced; with the WSL 2 backend Windows sets it, ``memory`` in
``.wslconfig``, 50 % of the machine's by default). What the two services need, part by part:

- Kafka's heap, 1 GiB: the apache/kafka image sets no ``KAFKA_HEAP_OPTS``, so
  ``bin/kafka-server-start.sh`` starts the JVM with its default ``-Xmx1G -Xms1G`` (the whole
  heap taken at start);
- the JVM around that heap (classes, compiled code, threads, buffers): about 256 MiB, an
  estimate;
- JupyterLab, its kernels and the processes a lesson starts: 640 MiB, the peak of the test
  suite's learners' pass at time scale 1.0 (README's benchmark: 639 MB, which also counts the
  embedded broker that the Docker setup does not run, so it is an upper bound).

That is :data:`NEEDED_MIB` (1,920 MiB, about 2 GiB); :data:`RECOMMENDED_MIB` (3 GiB) leaves room
for the VM itself and a second notebook. :func:`docker_memory` reads what Docker has (``docker
info`` on the host; the cgroup limit or ``/proc/meminfo`` inside a container) and
:func:`check_memory` judges it; ``docker/entrypoint.py`` prints the verdict beside the URL, and
the doctor can call both.
"""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
KAFKA_HEAP_MIB = 1024       # kafka-server-start.sh: KAFKA_HEAP_OPTS defaults to -Xmx1G -Xms1G
KAFKA_JVM_OTHER_MIB = 256   # estimate: metaspace, code cache, thread stacks, direct buffers
NOTEBOOKS_MIB = 640         # two notebooks open at once: the heaviest is 369 MB in docs/durations.json
NEEDED_MIB = KAFKA_HEAP_MIB + KAFKA_JVM_OTHER_MIB + NOTEBOOKS_MIB
RECOMMENDED_MIB = 3 * 1024
DOCKER_INFO_TIMEOUT_S = 5.0

RAISE_IT = ("give Docker at least 3 GiB: Docker Desktop > Settings > Resources > Memory limit; with "
            "the WSL 2 backend set `memory=3GB` under [wsl2] in %UserProfile%\\.wslconfig, then "
            "`wsl --shutdown` (docs/setup.md)")


@dataclass(frozen=True)
class DockerMemory:
    """The memory Docker's containers can use, in bytes, and where it was read."""

    total_bytes: int
    source: str


@dataclass(frozen=True)
class MemoryVerdict:
    """Whether that memory is enough: ``ok``, the numbers, and the fix when it is not."""

    ok: bool
    detail: str
    fix: str = ""


def _docker_info(timeout: float = DOCKER_INFO_TIMEOUT_S) -> str | None:
    """``docker info --format {{.MemTotal}}``'s output, or None without a docker CLI or daemon."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        out = subprocess.run([docker, "info", "--format", "{{.MemTotal}}"], capture_output=True,
                             text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _from_container(root: Path) -> DockerMemory | None:
    """Inside a container: its cgroup v2 limit if it has one, else the VM's or host's total."""
    if not (root / ".dockerenv").exists():
        return None
    limit = root / "sys" / "fs" / "cgroup" / "memory.max"
    if limit.is_file() and limit.read_text().strip().isdigit():
        return DockerMemory(int(limit.read_text()), "this container's cgroup limit")
    meminfo = root / "proc" / "meminfo"
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return DockerMemory(int(line.split()[1]) * 1024, "/proc/meminfo inside the container")
    return None


def docker_memory(*, root: Path = Path("/"),
                  docker_info: Callable[[], str | None] = _docker_info) -> DockerMemory | None:
    """The memory Docker gives containers, or None when it cannot be seen from here.

    Inside a container (``/.dockerenv``) it reads the cgroup limit or ``/proc/meminfo``; on a
    host it asks ``docker info``. ``root`` and ``docker_info`` are for tests."""
    inside = _from_container(root)
    if inside is not None:
        return inside
    text = docker_info()
    if text is not None and text.strip().isdigit():
        return DockerMemory(int(text.strip()), "`docker info`")
    return None


def check_memory(seen: DockerMemory | None) -> MemoryVerdict:
    """Enough for Kafka plus JupyterLab (:data:`NEEDED_MIB`)? Below it, not ok with the fix;
    below :data:`RECOMMENDED_MIB`, ok but tight. Unseen memory is ok (nothing to judge)."""
    if seen is None:
        return MemoryVerdict(True, "Docker's memory could not be seen from here (no docker CLI or daemon)")
    if seen.total_bytes <= 0:
        raise ValueError(f"seen: total_bytes must be positive, got {seen.total_bytes}")
    have = seen.total_bytes / MIB
    numbers = (f"Docker has {have / 1024:.1f} GiB ({seen.source}); Kafka (1 GiB heap) and JupyterLab "
               f"need about {NEEDED_MIB / 1024:.1f} GiB")
    if have < NEEDED_MIB:
        return MemoryVerdict(False, numbers, RAISE_IT)
    if have < RECOMMENDED_MIB:
        return MemoryVerdict(True, numbers + f"; {RECOMMENDED_MIB // 1024} GiB leaves room for a second notebook")
    return MemoryVerdict(True, numbers)
