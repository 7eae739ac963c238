"""What a consumer process did: its report file, and the tally against what was produced.

Every consumer process (:mod:`helpers.backlog.pollloop`) appends one JSON line per
processed event (``kind: "processed"``: event id, partition, offset, pid, time) and per
commit (``kind: "committed"``: offsets, events), flushed per line, so what it did is
known exactly even after a SIGKILL. :class:`ReportReader` reads such a file as it
grows; :func:`count_report` compares it with the ids the producer got acknowledged:
processed, duplicates, missing (:class:`Tally`).
"""
from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ReportReader:
    """Reads a JSONL report incrementally; a half-written last line waits for the next read."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def read(self) -> list[dict[str, Any]]:
        """Every complete line so far (a copy), reading only what was appended since the last call."""
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self._offset)
                    data = fh.read()
            except FileNotFoundError:
                return list(self._records)
            self._offset += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            self._records.extend(json.loads(line) for line in lines if line.strip())
            return list(self._records)


def processed_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the 'processed' lines of a report (commit lines dropped)."""
    return [r for r in records if r.get("kind") == "processed"]


@dataclass(frozen=True)
class Tally:
    """What a report says against what the producer got acknowledged."""

    produced: int
    processed: int  # processed lines, repeats included
    unique: int  # distinct produced events processed at least once
    duplicates: int  # processed lines beyond the first for an event
    missing: int  # produced events never processed
    unexpected: int  # processed events the producer list does not know
    missing_ids: tuple[str, ...] = ()
    duplicate_ids: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (f"produced {self.produced}, processed {self.processed} "
                f"({self.unique} unique), duplicates {self.duplicates}, missing {self.missing}")


def count_report(produced_ids: Iterable[str], records: Iterable[dict[str, Any]]) -> Tally:
    """Count a report against the produced event ids: unique, duplicates and missing."""
    wanted = set(produced_ids)
    seen = Counter(r["event_id"] for r in processed_records(records))
    unique = wanted & set(seen)
    return Tally(
        produced=len(wanted),
        processed=sum(seen.values()),
        unique=len(unique),
        duplicates=sum(n - 1 for n in seen.values()),
        missing=len(wanted - unique),
        unexpected=len(set(seen) - wanted),
        missing_ids=tuple(sorted(wanted - unique)),
        duplicate_ids=tuple(sorted(i for i, n in seen.items() if n > 1)),
    )


@dataclass(frozen=True)
class Exposure:
    """Events a crash repeats (processed, not committed) or loses (committed, not processed)."""

    repeated: int
    lost: int
    committed: dict[int, int]

    def __str__(self) -> str:
        return f"{self.repeated} processed but not committed, {self.lost} committed but not processed"


def exposure(records: Iterable[dict[str, Any]], committed: dict[int, int | None]) -> Exposure:
    """What a crash costs, from a report and the group's committed offsets per partition.

    ``repeated``: processed but not committed (a restart processes them again);
    ``lost``: committed but never processed (a restart skips them).
    """
    done = {(r["partition"], r["offset"]) for r in processed_records(records)}
    repeated = sum(1 for p, o in done if o >= (committed.get(p) or 0))
    lost = sum(1 for p, c in committed.items() for o in range(c or 0) if (p, o) not in done)
    return Exposure(repeated=repeated, lost=lost, committed={p: c or 0 for p, c in committed.items()})


def batch_risk(records: list[dict[str, Any]], commit: str, pid: int | None) -> int:
    """Events of process ``pid``'s current batch a crash would cost now: processed but not
    committed (commit 'after'), or committed but not processed ('before')."""
    since, last_commit = 0, None
    for r in reversed(records):
        if r.get("pid") != pid:
            continue
        if r["kind"] == "committed":
            last_commit = r
            break
        since += 1
    if commit == "after":
        return since
    return (last_commit["events"] - since) if last_commit else 0
