"""The JupyterLab container's start (docker/Dockerfile's CMD): the learner's folder, the URL, JupyterLab.

1. :func:`sync_course` copies the course's notebooks and docs (from the image, /course) into the
   learner's folder (/work, bind-mounted from the repository's work/), never overwriting a file
   the learner changed: a file the course updated is replaced only if the learner's copy is still
   the one the course gave; otherwise the new version goes to ``course-updates/`` beside it and a
   line says so. What the course gave is recorded in ``.course-state/course-files.json``.
2. The JupyterLab token: ``$JUPYTER_TOKEN`` if the learner set one (docker/.env), else one made
   once and kept in ``.course-state/jupyter-token``, so the URL stays the same across restarts.
3. It prints the URL to open (``docker compose logs jupyter`` shows it again) and whether Docker
   has the memory the course needs (helpers/kafka/dockerhost.py), then becomes JupyterLab.

tests/test_docker.py runs :func:`sync_course` and :func:`banner` on temporary folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

COURSE = Path(os.environ.get("COURSE_DIR", "/course"))
FIRST_LESSON = "lessons/00_welcome.ipynb"
#: What the learner gets a copy of (labs/sources/ is the authors' input to the lab generator,
#: docs/site/ the website's sources).
SHIPPED = ("lessons", "labs", "docs")
NOT_SHIPPED = ("labs/sources/", "docs/site/")
UPDATES = "course-updates"
SKIP_PARTS = {".ipynb_checkpoints", "__pycache__"}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def course_files(course: Path) -> list[str]:
    """The files the learner gets, relative to the course (posix paths, sorted)."""
    found = []
    for folder in SHIPPED:
        for path in sorted((course / folder).rglob("*")):
            rel = path.relative_to(course).as_posix()
            if path.is_file() and not SKIP_PARTS & set(path.parts) and not rel.startswith(NOT_SHIPPED):
                found.append(rel)
    return found


def sync_course(course: Path, work: Path) -> list[str]:
    """Bring ``work`` up to date with ``course`` without losing the learner's changes; one line
    per file that was added, updated, or kept with the course's new version put aside."""
    state = work / ".course-state"
    state.mkdir(parents=True, exist_ok=True)
    record_file = state / "course-files.json"
    given: dict[str, str] = json.loads(record_file.read_text()) if record_file.is_file() else {}
    lines = []
    for rel in course_files(course):
        src, dest, new = course / rel, work / rel, _digest(course / rel)
        if given.get(rel) == new and dest.exists():
            continue
        if not dest.exists():
            what = "added"
        elif _digest(dest) in (given.get(rel), new):  # the learner's copy is what the course gave
            what = "updated" if _digest(dest) != new else ""
        else:  # the learner changed it: keep theirs, put the course's version beside it
            aside = work / UPDATES / rel
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, aside)
            lines.append(f"kept your {rel}; the course's new version is in {UPDATES}/{rel}")
            given[rel] = new
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        given[rel] = new
        if what:
            lines.append(f"{what} {rel}")
    record_file.write_text(json.dumps(given, indent=1, sort_keys=True))
    return lines


def token(work: Path) -> str:
    """``$JUPYTER_TOKEN``, or the one kept in the learner's state folder (made on first start)."""
    chosen = os.environ.get("JUPYTER_TOKEN", "").strip()
    if chosen:
        return chosen
    kept = work / ".course-state" / "jupyter-token"
    if not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(secrets.token_hex(24))
        kept.chmod(0o600)
    return kept.read_text().strip()


def banner(url: str, memory: str) -> str:
    """What the learner reads in `docker compose up` (or `docker compose logs jupyter`)."""
    rule = "=" * 78
    return "\n".join([rule, "The course is ready. Open this address in your browser:", f"    {url}",
                      "Your work is in the work/ folder of the course (it survives `docker compose down`).",
                      memory, rule])


def _memory_line() -> str:
    sys.path.insert(0, str(COURSE))
    from helpers.kafka import dockerhost

    verdict = dockerhost.check_memory(dockerhost.docker_memory())
    return (f"memory: {verdict.detail}" if verdict.ok else
            f"memory: NOT ENOUGH. {verdict.detail}.\n        fix: {verdict.fix}")


def main() -> None:
    """Sync the learner's folder, print the URL, then replace this process with JupyterLab."""
    work = Path(os.environ.get("COURSE_WORK_DIR", "/work"))
    lines = sync_course(COURSE, work)
    added = [line for line in lines if line.startswith("added ")]
    if len(added) > 5:  # a first start: one line, not one per notebook
        lines = [f"added {len(added)} files (lessons, labs, docs)"] + [ln for ln in lines if ln not in added]
    for line in lines:
        print(f"work/: {line}")
    os.environ["JUPYTER_TOKEN"] = secret = token(work)
    port = os.environ.get("JUPYTER_PORT", "8888")
    print(banner(f"http://127.0.0.1:{port}/lab/tree/{FIRST_LESSON}?token={secret}", _memory_line()), flush=True)
    os.chdir(work)
    os.execv(sys.executable, [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=0.0.0.0",
                              "--ServerApp.port=8888", f"--ServerApp.root_dir={work}", FIRST_LESSON])


if __name__ == "__main__":
    main()
