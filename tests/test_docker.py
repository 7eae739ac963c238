"""docker/compose.yml: valid, bound to 127.0.0.1 only, the learner's work kept in work/ (no Docker engine runs here)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.tooling.paths import ROOT

COMPOSE = ROOT / "docker" / "compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_is_valid():
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: .ci/run installs Debian's docker-compose package")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    out = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_kafka_is_pinned_kraft_single_node_with_a_healthcheck():
    kafka = _compose()["services"]["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka" and tag and tag != "latest"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka and kafka["healthcheck"]["test"]


def test_every_published_port_is_bound_to_loopback():
    ports = [p for svc in _compose()["services"].values() for p in svc.get("ports", [])]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports


def test_jupyter_reaches_kafka_on_its_internal_listener():
    services = _compose()["services"]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    bootstrap = services["jupyter"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert f"INTERNAL://{bootstrap}" in advertised
    assert (ROOT / services["jupyter"]["build"]["context"].replace("..", ".") /
            services["jupyter"]["build"]["dockerfile"]).exists()


# ------------------------------------------------------------------ the learner's folder

def test_no_deprecated_top_level_keys():
    """Compose v2 reads the Compose Specification and warns that `version` is obsolete."""
    def obsolete(compose: dict) -> list[str]:
        return [key for key in compose if key not in ("services", "volumes", "networks", "configs", "secrets",
                                                      "name", "include") and not key.startswith("x-")]

    assert obsolete(_compose()) == []
    assert obsolete({"version": "2.4", "services": {}}) == ["version"]  # the check can fail


def test_the_learners_work_is_a_bind_mount_holding_state_and_progress():
    jupyter = _compose()["services"]["jupyter"]
    mounts = [m for m in jupyter["volumes"] if isinstance(m, dict)]
    assert [(m["type"], m["source"]) for m in mounts] == [("bind", "../work")], jupyter["volumes"]
    target = mounts[0]["target"]
    env = jupyter["environment"]
    assert env["COURSE_WORK_DIR"] == target
    for name in ("COURSE_STATE_DIR", "COURSE_PROGRESS_FILE", "HOME"):  # all in the learner's folder
        assert env[name].startswith(target + "/"), (name, env[name])
    assert env["COURSE_PROGRESS_FILE"].startswith(env["COURSE_STATE_DIR"] + "/")
    # the host user's ids (not root), so a Linux learner owns what the container writes
    assert jupyter["user"] == "${COURSE_UID:-1000}:${COURSE_GID:-1000}"


def test_the_work_folder_is_in_git_but_its_contents_are_not_nor_in_the_image():
    """work/ exists in a fresh clone (owned by the learner, so Docker does not create it as
    root), `git pull` never touches what is in it, and the image build never copies it."""
    source = (COMPOSE.parent / _compose()["services"]["jupyter"]["volumes"][0]["source"]).resolve()
    assert source == ROOT / "work" and (source / ".gitignore").is_file()
    assert (source / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "work" in ignored and "docker/.env" in ignored
    assert "docker/.env" in (ROOT / ".gitignore").read_text().split()


def test_the_image_carries_the_jupyterlab_settings_and_starts_through_the_entrypoint():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ENV JUPYTER_CONFIG_PATH=/course/jupyter-config" in dockerfile
    assert (ROOT / "jupyter-config").is_dir()
    assert 'CMD ["python", "/course/docker/entrypoint.py"]' in dockerfile
    assert "USER learner" in dockerfile


def _entrypoint():
    spec = importlib.util.spec_from_file_location("course_entrypoint", ROOT / "docker" / "entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_sync_adds_updates_and_never_overwrites_the_learners_changes(tmp_path):
    entry = _entrypoint()
    course, work = tmp_path / "course", tmp_path / "work"
    for rel, text in {"lessons/00_a.ipynb": "a1", "lessons/01_b.ipynb": "b1", "labs/01_l.ipynb": "l1",
                      "labs/sources/01_l.ipynb": "source", "docs/glossary.md": "g1", "docs/site/conf.py": "x",
                      "lessons/.ipynb_checkpoints/00_a-checkpoint.ipynb": "x"}.items():
        _write(course / rel, text)
    assert entry.sync_course(course, work) == ["added lessons/00_a.ipynb", "added lessons/01_b.ipynb",
                                                "added labs/01_l.ipynb", "added docs/glossary.md"]
    assert not (work / "labs" / "sources").exists() and not (work / "lessons" / ".ipynb_checkpoints").exists()
    assert not (work / "docs" / "site").exists()
    assert entry.sync_course(course, work) == []  # a restart changes nothing

    (work / "lessons" / "00_a.ipynb").write_text("a1 with the learner's answers")
    (work / "labs" / "01_l.ipynb").unlink()  # deleted: the course's copy comes back
    for rel, text in {"lessons/00_a.ipynb": "a2", "lessons/01_b.ipynb": "b2", "lessons/02_c.ipynb": "c1"}.items():
        _write(course / rel, text)  # a course update
    assert entry.sync_course(course, work) == [
        "kept your lessons/00_a.ipynb; the course's new version is in course-updates/lessons/00_a.ipynb",
        "updated lessons/01_b.ipynb", "added lessons/02_c.ipynb", "added labs/01_l.ipynb"]
    assert (work / "lessons" / "00_a.ipynb").read_text() == "a1 with the learner's answers"
    assert (work / "course-updates" / "lessons" / "00_a.ipynb").read_text() == "a2"
    assert (work / "lessons" / "01_b.ipynb").read_text() == "b2"
    assert entry.sync_course(course, work) == []


def test_sync_over_a_folder_that_has_files_but_no_record_keeps_them(tmp_path):
    entry = _entrypoint()
    course, work = tmp_path / "course", tmp_path / "work"
    _write(course / "lessons" / "00_a.ipynb", "a1")
    _write(work / "lessons" / "00_a.ipynb", "the learner's own")
    assert entry.sync_course(course, work) == [
        "kept your lessons/00_a.ipynb; the course's new version is in course-updates/lessons/00_a.ipynb"]
    assert (work / "lessons" / "00_a.ipynb").read_text() == "the learner's own"


def test_the_token_is_the_learners_or_one_kept_across_restarts(tmp_path, monkeypatch):
    entry = _entrypoint()
    monkeypatch.setenv("JUPYTER_TOKEN", "chosen-in-docker-env")
    assert entry.token(tmp_path) == "chosen-in-docker-env"
    monkeypatch.setenv("JUPYTER_TOKEN", "")  # compose passes an empty one when docker/.env has none
    made = entry.token(tmp_path)
    kept = tmp_path / ".course-state" / "jupyter-token"
    assert len(made) == 48 and kept.read_text() == made
    if sys.platform != "win32":  # the container is Linux; Windows has no such mode bits
        assert kept.stat().st_mode & 0o077 == 0
    assert entry.token(tmp_path) == made


def test_the_banner_gives_the_url_with_its_token_and_the_memory_verdict():
    entry = _entrypoint()
    url = "http://127.0.0.1:8890/lab/tree/lessons/00_welcome.ipynb?token=abc"
    text = entry.banner(url, "memory: Docker has 4.0 GiB")
    assert f"    {url}\n" in text and "work/" in text and "memory: Docker has 4.0 GiB" in text
    print(text)


# ------------------------------------------------------------------ Docker's memory

def _dockerhost():
    from helpers.kafka import dockerhost

    return dockerhost


def test_the_memory_needed_adds_kafkas_heap_its_jvm_and_the_notebooks():
    d = _dockerhost()
    assert d.KAFKA_HEAP_MIB == 1024  # kafka-server-start.sh's default -Xmx1G
    assert d.NEEDED_MIB == d.KAFKA_HEAP_MIB + d.KAFKA_JVM_OTHER_MIB + d.NOTEBOOKS_MIB == 1920
    assert d.NEEDED_MIB < d.RECOMMENDED_MIB


def test_docker_memory_is_read_inside_a_container_or_from_docker_info(tmp_path):
    d = _dockerhost()
    assert d.docker_memory(root=tmp_path, docker_info=lambda: "4124618752\n") == d.DockerMemory(4124618752,
                                                                                              "`docker info`")
    assert d.docker_memory(root=tmp_path, docker_info=lambda: None) is None
    assert d.docker_memory(root=tmp_path, docker_info=lambda: "not a number") is None
    (tmp_path / ".dockerenv").touch()
    _write(tmp_path / "proc" / "meminfo", "MemTotal:        2014000 kB\nMemFree: 1 kB\n")
    _write(tmp_path / "sys" / "fs" / "cgroup" / "memory.max", "max\n")  # no limit: the VM's total
    assert d.docker_memory(root=tmp_path, docker_info=lambda: None) == d.DockerMemory(
        2014000 * 1024, "/proc/meminfo inside the container")
    _write(tmp_path / "sys" / "fs" / "cgroup" / "memory.max", "1073741824\n")
    assert d.docker_memory(root=tmp_path).total_bytes == 1073741824


def test_check_memory_fails_below_the_need_and_names_the_fix():
    d = _dockerhost()
    gib = 1024 ** 3
    low = d.check_memory(d.DockerMemory(int(1.5 * gib), "`docker info`"))
    assert not low.ok and "1.5 GiB" in low.detail and "Resources" in low.fix and ".wslconfig" in low.fix
    tight = d.check_memory(d.DockerMemory(int(2.5 * gib), "`docker info`"))
    assert tight.ok and "second notebook" in tight.detail
    assert d.check_memory(d.DockerMemory(8 * gib, "`docker info`")) == d.MemoryVerdict(
        True, "Docker has 8.0 GiB (`docker info`); Kafka (1 GiB heap) and JupyterLab need about 1.9 GiB")
    assert d.check_memory(None).ok
    with pytest.raises(ValueError, match="seen"):
        d.check_memory(d.DockerMemory(0, "`docker info`"))


def test_doctor_checks_dockers_memory_when_the_kafka_is_the_container(monkeypatch):
    """Issue 21: the memory Docker needs is checked by doctor when it can see it."""
    from helpers import doctor
    from helpers.kafka import dockerhost

    monkeypatch.setattr(dockerhost, "docker_memory", lambda: dockerhost.DockerMemory(1024 ** 3, "`docker info`"))
    low = doctor.check_docker_memory()
    assert not low.ok and "1.0 GiB" in low.detail and "3 GiB" in low.fix
    monkeypatch.setattr(dockerhost, "docker_memory", lambda: dockerhost.DockerMemory(8 * 1024 ** 3, "`docker info`"))
    assert doctor.check_docker_memory().ok
