"""Every duration and memory figure of the course, from one file: ``docs/durations.json``.

The file holds, for each notebook on the course path, the seconds it ran at time scale 1.0 and
its peak memory in a learners' pass (:mod:`helpers.tooling.learnerpass`; a lab is measured as its
solution), the machine, load and date of that pass, the notebook's own estimate of the minutes a
learner spends on it (reading, doing, the experiment), and the verdict lines its claim checks
printed. Every place that states one of these figures is written from the file:

- each notebook's first cell, ``**Duration:** about M min (about S s of running at TIME_SCALE 1.0``
  (lessons, lab sources and the labs generated from them);
- lesson 0's course map, ``about M min (S s to run)`` per row, and its total line;
- the tables of README.md and docs/teaching.md between ``<!-- durations:NAME -->`` and
  ``<!-- /durations:NAME -->``;
- the verdict lines docs/instructor-notes.md and docs/teaching.md quote (``“C10 holds: ...”``).

``python -m helpers durations update [--from build/learner-run]`` reads a pass and writes the file,
then every place; ``apply`` writes every place from the file (after an estimate was edited by
hand); ``check`` lists each place that disagrees with the file and exits 1 (tests/test_durations.py
runs the same check). :func:`within_tolerance` is the rule the test suite's own learners' pass
holds the file to.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from . import UsageError, standalone
from .links import notebooks as course_notebooks
from .links import title
from .paths import BUILD, ROOT

FILE = "docs/durations.json"
DEFAULT_PASS = BUILD / "learner-run"
UPDATE = "python -m helpers durations update --from build/learner-run"
PASS = "python -m helpers.tooling.learnerpass build/learner-run"

#: A fresh pass agrees with the file when each notebook's seconds are within this factor of the
#: recorded ones or within this many seconds, whichever is wider (the spread measured between
#: passes on a busy 2-core machine is stated in docs/teaching.md, "Where the figures come from").
SECONDS_FACTOR = 2.0
SECONDS_SLACK_S = 30.0
#: ... and its peak memory within this factor or this many MB, whichever is wider.
MEMORY_FACTOR = 1.5
MEMORY_SLACK_MB = 150.0

HEADER = re.compile(r"(\*\*Duration:\*\* about )(\d+)( min \(about )(\d+)( s of running at TIME_SCALE 1\.0)")
MAP_HEADING = "## The course map"
#: a row of the map: | N | [title](LINK) | ... | about M min (S s to run) | ... (groups 2, 4 and 6)
MAP_ROW = re.compile(r"^(\|\s*\d+\s*\|\s*\[[^\]]*\]\()([^)\s]+)(\)\s*\|.*\|\s*about )(\d+)( min \()(\d+)"
                     r"( s to run\)\s*\|)", re.MULTILINE)
MAP_TOTAL = re.compile(r"(In all about )([\d.]+)( hours, of which about )(\d+)( minutes are cells running)")
VERDICT = re.compile(r"^(C\d+) holds: .*\S", re.MULTILINE)
QUOTE = re.compile(r"“(C\d+ holds: [^”]*)”")
#: Markdown files with generated tables (``<!-- durations:NAME -->``) and quoted verdicts.
PAGES = {"readme": "README.md", "teaching": "docs/teaching.md"}
NOTES = ("docs/instructor-notes.md", "docs/teaching.md")


# ------------------------------------------------------------------ the file

def load(root: Path = ROOT) -> dict[str, Any]:
    """The committed file (``docs/durations.json`` under ``root``)."""
    path = root / FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"{FILE} does not exist yet: run a learners' pass ({PASS}), then {UPDATE}") from None


def save(data: dict[str, Any], root: Path = ROOT) -> Path:
    """Write the file (sorted by course order as given, two-space indent, a final newline)."""
    path = root / FILE
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def measured_as(key: str) -> str:
    """The notebook a pass executes for course notebook ``key``: a lab's solution, a lesson itself."""
    folder, _, name = key.partition("/")
    return f"labs/solutions/{name}" if folder == "labs" else key


def header_numbers(text: str) -> tuple[int, int] | None:
    """(minutes, seconds) of a ``**Duration:**`` line in ``text``, or None."""
    match = HEADER.search(text)
    return (int(match[2]), int(match[4])) if match else None


def verdict_lines(nb: Any) -> list[str]:
    """Every ``Cn holds: ...`` line an executed notebook printed, in order."""
    lines: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            lines.extend(m.group(0).strip() for m in VERDICT.finditer(text))
    return lines


def read_summary(folder: Path) -> dict[str, Any]:
    """A learners' pass's summary.json; UsageError naming the command that makes one."""
    summary_path = folder / "summary.json"
    try:
        return dict(json.loads(summary_path.read_text()))
    except FileNotFoundError:
        raise UsageError(f"{summary_path} does not exist: run a learners' pass first ({PASS})") from None


def spread(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """How far passes of the same notebooks lie apart: per notebook the largest over the smallest
    seconds (and peak memory) of all passes, and the worst notebook of each, with each pass's load."""
    seconds: dict[str, list[float]] = {}
    memory: dict[str, list[float]] = {}
    for summary in summaries:
        for name, result in summary.get("notebooks", {}).items():
            if result.get("ok"):
                seconds.setdefault(name, []).append(float(result["seconds"]))
                memory.setdefault(name, []).append(float(result.get("peak_memory_mb", 0.0)))

    def worst(values: dict[str, list[float]], unit: str) -> dict[str, Any]:
        both = {n: v for n, v in values.items() if len(v) == len(summaries) and min(v) > 0}
        ratio = max(both, key=lambda n: max(both[n]) / min(both[n]))
        diff = max(both, key=lambda n: max(both[n]) - min(both[n]))
        return {"largest_ratio": round(max(both[ratio]) / min(both[ratio]), 2), "largest_ratio_in": ratio,
                f"largest_difference_{unit}": round(max(both[diff]) - min(both[diff]), 1),
                "largest_difference_in": diff}

    return {"passes": [{"date": (s.get("machine") or {}).get("date", "unknown"),
                        "load_average_1m": {"start": (s.get("machine") or {}).get("load_average_1m"),
                                            "end": s.get("load_average_1m_after")},
                        "seconds": s.get("seconds")} for s in summaries],
            "seconds": worst(seconds, "s"), "peak_memory": worst(memory, "mb")}


def from_pass(folder: Path, previous: dict[str, Any] | None = None, root: Path = ROOT,
              also: list[Path] | None = None) -> dict[str, Any]:
    """The file's content from the learners' pass in ``folder`` (its summary.json and executed
    notebooks). Estimates (minutes) come from ``previous``, else from each notebook's header. With
    ``also`` (more passes of the same notebooks), the file records the spread between all of them."""
    summary = read_summary(folder)
    ran = summary.get("notebooks", {})
    old = (previous or {}).get("notebooks", {})
    entries: dict[str, Any] = {}
    verdicts: dict[str, list[str]] = {}
    problems = []
    for path in course_notebooks(root):
        key = path.relative_to(root).as_posix()
        result = ran.get(measured_as(key))
        if result is None or not result.get("ok"):
            problems.append(f"{measured_as(key)}: " + ("not in the pass" if result is None
                                                       else f"failed ({result.get('error')})"))
            continue
        minutes = old.get(key, {}).get("minutes") or (header_numbers(_first_cell(path)) or (0, 0))[0]
        if not minutes:
            problems.append(f"{key}: no estimate (a `**Duration:** about N min ...` line in its first cell)")
            continue
        entries[key] = {"minutes": minutes, "seconds": round(float(result["seconds"]), 1),
                        "peak_memory_mb": round(float(result.get("peak_memory_mb", 0.0))),
                        "measured_as": measured_as(key)}
        executed = folder / measured_as(key)
        if executed.is_file():
            lines = verdict_lines(nbformat.read(executed, as_version=4))
            if lines:
                verdicts[key] = lines
    if problems:
        raise UsageError(f"the pass in {folder} cannot make {FILE}:\n  " + "\n  ".join(problems))
    where = summary.get("machine") or {}
    return {
        "about": (f"Every duration and memory figure of the course. Regenerate after a learners' pass: {PASS}, "
                  f"then {UPDATE}. Edit an estimate (minutes) by hand, then python -m helpers durations apply."),
        "pass": {"date": where.get("date", "unknown"), "time_scale": summary.get("time_scale", 1.0),
                 "workers": summary.get("workers", 2), "kafka": summary.get("kafka", ""),
                 "seconds": summary.get("seconds"),
                 "load_average_1m": {"start": where.get("load_average_1m"),
                                     "end": summary.get("load_average_1m_after")},
                 "machine": {k: where.get(k) for k in ("cpus", "cpu", "memory_gb", "platform", "python")}},
        "notebooks": entries,
        "verdicts": verdicts,
        **({"spread": spread([summary, *(read_summary(f) for f in also)])} if also else {}),
    }


# ------------------------------------------------------------------ what each place says

def about_seconds(seconds: float) -> int:
    """The run time as the prose states it: whole seconds under 10 s, else to the nearest 5 s."""
    if seconds < 10:
        return max(1, round(seconds))
    return int(5 * round(seconds / 5))


def totals(data: dict[str, Any]) -> tuple[float, int]:
    """(hours of the estimates, minutes of running) over every notebook, as lesson 0's map states them."""
    entries = data["notebooks"].values()
    hours = round(sum(e["minutes"] for e in entries) / 60, 1)
    running = max(1, round(sum(e["seconds"] for e in entries) / 60))
    return hours, running


def describe_pass(data: dict[str, Any]) -> str:
    """One sentence on where the figures come from: date, machine, load, notebooks side by side."""
    run, m = data["pass"], data["pass"]["machine"]
    load = run["load_average_1m"]
    loads = f"{load['start']} at the start, {load['end']} at the end" if load.get("end") is not None \
        else f"{load['start']}"
    return (f"the learners' pass of {str(run['date'])[:10]} at time scale {run['time_scale']:.1f}, "
            f"{run['workers']} notebooks side by side on {m['cpus']} CPUs ({m['cpu']}, {m['memory_gb']} GB RAM, "
            f"Python {m['python']}), load average {loads}")


def describe_spread(spread: dict[str, Any]) -> str:
    """One sentence on how far passes lay apart (the file's ``spread``)."""
    loads = [p["load_average_1m"] for p in spread["passes"]]
    low = min(x for load in loads for x in load.values() if x is not None)
    high = max(x for load in loads for x in load.values() if x is not None)
    s, m = spread["seconds"], spread["peak_memory"]
    return (f"Run to run, over {len(spread['passes'])} passes on this machine (load average {low:g} to {high:g}), "
            f"a notebook's seconds differed by at most {s['largest_ratio']:g}x (`{s['largest_ratio_in']}`) "
            f"or {s['largest_difference_s']:g} s (`{s['largest_difference_in']}`), its peak memory by at most "
            f"{m['largest_ratio']:g}x (`{m['largest_ratio_in']}`) or {m['largest_difference_mb']:g} MB "
            f"(`{m['largest_difference_in']}`).")


def table(data: dict[str, Any], name: str, root: Path = ROOT) -> str:
    """The generated block ``name`` ("readme" or "teaching"): a row per notebook and a total."""
    entries = data["notebooks"]
    peak = max(e["peak_memory_mb"] for e in entries.values())
    lines = [f"From {describe_pass(data)} (`{FILE}`). Peak memory: the notebook's own kernel and the "
             "broker (resident), and the pages only the processes it started hold (their unique set size; "
             "forked workers share the rest), sampled every 0.1 s.", ""]
    if name == "readme":
        lines += ["| notebook | seconds at 1.0 | peak memory | learner's time (estimate) |", "|---|---:|---:|---:|"]
        for key, e in entries.items():
            lines.append(f"| {title(root / key)} | {e['seconds']:.1f} s | {e['peak_memory_mb']} MB | "
                         f"{e['minutes']} min |")
        lines.append(f"| all {len(entries)} notebooks | {sum(e['seconds'] for e in entries.values()):.1f} s | "
                     f"{peak} MB at most | {sum(e['minutes'] for e in entries.values())} min |")
    elif name == "teaching":
        lines += ["| step | notebook | run at 1.0 | peak memory | a learner's time (the notebook's estimate) |",
                  "|---:|---|---:|---:|---:|"]
        for step, (key, e) in enumerate(entries.items(), start=1):
            lines.append(f"| {step} | {title(root / key)} | {e['seconds']:.0f} s | {e['peak_memory_mb']} MB | "
                         f"{e['minutes']} min |")
        hours, running = totals(data)
        lines.append(f"| | **all {len(entries)}** | **{running} min of running** | **{peak} MB at most** | "
                     f"**{sum(e['minutes'] for e in entries.values())} min ({hours:g} h)** |")
        if data.get("spread"):
            lines += ["", describe_spread(data["spread"])]
    else:
        raise ValueError(f"name must be one of {sorted(PAGES)}, got {name!r}")
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- durations:{name} (generated: edit {FILE}, then python -m helpers durations apply) -->", \
        f"<!-- /durations:{name} -->"


def block(text: str, name: str) -> re.Match[str] | None:
    """The generated block ``name`` of a page (group 1: its content), or None if the page has none."""
    begin, end = _markers(name)
    return re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, re.DOTALL)


def _first_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return str(nb.cells[0].source) if nb.cells else ""


def notebook_files(key: str, root: Path = ROOT) -> list[Path]:
    """Every committed file of course notebook ``key`` (a lab: its source, learner and solution)."""
    folder, _, name = key.partition("/")
    paths = [root / key] + ([root / "labs" / "sources" / name, root / "labs" / "solutions" / name]
                            if folder == "labs" else [])
    return [p for p in paths if p.is_file()]


def verdict_index(data: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """The file's verdict lines by (claim, the words before its first number): how a quote is found."""
    index: dict[tuple[str, str], list[str]] = {}
    for lines in data.get("verdicts", {}).values():
        for line in lines:
            index.setdefault(verdict_key(line), []).append(line)
    return index


def verdict_key(line: str) -> tuple[str, str]:
    """("C10", "synchronous") for "C10 holds: synchronous 5.2 orders/s, ..."."""
    claim, _, rest = line.partition(" holds: ")
    return claim, re.split(r"[\d~+-]", rest, maxsplit=1)[0].strip()


# ------------------------------------------------------------------ check and apply

@dataclass
class Edit:
    """A place that disagrees with the file: where, what it says, what the file says."""

    path: Path
    where: str
    found: str
    expected: str
    fixable: bool = True  # apply can rewrite it; otherwise a person must (a missing line or row)

    def __str__(self) -> str:
        return f"{self.where}: says {self.found}, {FILE} says {self.expected}"


def _notebook_edits(data: dict[str, Any], root: Path) -> list[tuple[Edit, Any]]:
    """Headers and lesson 0's map that disagree, with the notebook rewritten to agree."""
    out: list[tuple[Edit, Any]] = []
    entries = data["notebooks"]
    read: dict[Path, Any] = {}  # one copy per file, so a header and the map edit the same notebook

    def notebook(path: Path) -> Any:
        if path not in read:
            read[path] = nbformat.read(path, as_version=4)
        return read[path]

    for key, e in entries.items():
        want = (e["minutes"], about_seconds(e["seconds"]))
        for path in notebook_files(key, root):
            nb = notebook(path)
            first = nb.cells[0].source if nb.cells else ""
            found = header_numbers(first)
            if found != want:
                nb.cells[0].source = HEADER.sub(lambda m, w=want: f"{m[1]}{w[0]}{m[3]}{w[1]}{m[5]}", first, count=1)
                where = f"{path.relative_to(root).as_posix()}, first cell"
                shown = "no `**Duration:** about M min (about S s of running at TIME_SCALE 1.0` line" \
                    if found is None else f"{found[0]} min, {found[1]} s"
                out.append((Edit(path, where, shown, f"{want[0]} min, {want[1]} s", found is not None), nb))
    welcome = root / "lessons" / "00_welcome.ipynb"
    if not welcome.is_file():
        return out
    nb = notebook(welcome)
    cell = next((c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(MAP_HEADING)), None)
    if cell is None:
        out.append((Edit(welcome, "lessons/00_welcome.ipynb", "no course map", f"a cell starting {MAP_HEADING!r}",
                         False), nb))
        return out
    seen: set[str] = set()
    problems: list[Edit] = []

    def row(m: re.Match[str]) -> str:
        key = (Path("lessons") / m[2]).as_posix()
        key = re.sub(r"^lessons/\.\./", "", key)
        seen.add(key)
        if key not in entries:
            problems.append(Edit(welcome, f"lessons/00_welcome.ipynb, course map row {m[2]}", "a row",
                                 f"no such notebook (add it to {FILE})", False))
            return m[0]
        want = (entries[key]["minutes"], about_seconds(entries[key]["seconds"]))
        if (int(m[4]), int(m[6])) != want:
            problems.append(Edit(welcome, f"lessons/00_welcome.ipynb, course map row {key}",
                                 f"{m[4]} min, {m[6]} s", f"{want[0]} min, {want[1]} s"))
        return f"{m[1]}{m[2]}{m[3]}{want[0]}{m[5]}{want[1]}{m[7]}"

    source = MAP_ROW.sub(row, cell.source)
    hours, running = totals(data)
    total = MAP_TOTAL.search(source)
    if total is None:
        problems.append(Edit(welcome, "lessons/00_welcome.ipynb, course map total", "no line 'In all about ...'",
                             f"{hours:g} hours, {running} minutes", False))
    elif (float(total[2]), int(total[4])) != (hours, running):
        problems.append(Edit(welcome, "lessons/00_welcome.ipynb, course map total",
                             f"{total[2]} hours, {total[4]} minutes", f"{hours:g} hours, {running} minutes"))
        source = MAP_TOTAL.sub(lambda m: f"{m[1]}{hours:g}{m[3]}{running}{m[5]}", source, count=1)
    for key in entries:
        if key not in seen:
            problems.append(Edit(welcome, "lessons/00_welcome.ipynb, course map", f"no row for {key}",
                                 "a row (lessons link as NN_x.ipynb, labs as ../labs/NN_x.ipynb)", False))
    if problems:
        cell.source = source
        out += [(p, nb) for p in problems]
    return out


def _page_edits(data: dict[str, Any], root: Path) -> list[tuple[Edit, str]]:
    """Generated tables and quoted verdicts that disagree, with the page rewritten to agree."""
    out: list[tuple[Edit, str]] = []
    texts: dict[Path, str] = {}
    for name, rel in PAGES.items():
        path = root / rel
        if not path.is_file():
            continue
        text = texts.get(path, path.read_text())
        found, want = block(text, name), table(data, name, root) + "\n"
        if found is None:
            out.append((Edit(path, f"{rel}", f"no block {_markers(name)[0]!r}", "the table", False), text))
        elif found[1] != want:
            text = text[:found.start(1)] + want + text[found.end(1):]
            out.append((Edit(path, f"{rel}, the table of durations:{name}", "other figures", "the table"), text))
        texts[path] = text
    index = verdict_index(data)
    for rel in NOTES:
        path = root / rel
        if not path.is_file():
            continue
        text = texts.get(path, path.read_text())
        problems: list[Edit] = []

        def quote(m: re.Match[str], rel: str = rel, path: Path = path, problems: list[Edit] = problems) -> str:
            line = m[1]
            if any(line in lines for lines in data.get("verdicts", {}).values()):
                return m[0]
            matches = index.get(verdict_key(line), [])
            if len(matches) == 1:
                problems.append(Edit(path, f"{rel}, a quoted verdict", f"“{line}”", f"“{matches[0]}”"))
                return f"“{matches[0]}”"
            problems.append(Edit(path, f"{rel}, a quoted verdict", f"“{line}”",
                                 "no such verdict" if not matches else f"{len(matches)} verdicts that start alike",
                                 False))
            return m[0]

        text = QUOTE.sub(quote, text)
        texts[path] = text
        out += [(p, text) for p in problems]
    return out


def check(root: Path = ROOT) -> list[str]:
    """Every place under ``root`` that disagrees with its ``docs/durations.json`` (empty: all agree)."""
    data = load(root)
    problems = [str(e) for e, _ in _notebook_edits(data, root)] + [str(e) for e, _ in _page_edits(data, root)]
    listed = set(data["notebooks"])
    for path in course_notebooks(root):
        key = path.relative_to(root).as_posix()
        if key not in listed:
            problems.append(f"{key}: not in {FILE} (run a learners' pass, then {UPDATE})")
    return problems


def apply(root: Path = ROOT) -> list[str]:
    """Rewrite every place under ``root`` from the file; what was rewritten, and what could not be."""
    data = load(root)
    notebooks, pages = _notebook_edits(data, root), _page_edits(data, root)
    by_hand = [str(e) for e, _ in [*notebooks, *pages] if not e.fixable]
    if by_hand:
        raise UsageError("fix these by hand, then run apply again (nothing was written):\n  " + "\n  ".join(by_hand))
    for path, nb in {e.path: nb for e, nb in notebooks}.items():
        path.write_text(nbformat.writes(nb) + "\n")
    for path, text in {e.path: text for e, text in pages}.items():
        path.write_text(text)
    return [str(e) for e, _ in [*notebooks, *pages]]


def update(folder: Path, root: Path = ROOT, also: list[Path] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Write the file from the pass in ``folder`` (keeping the estimates; with ``also``, the spread
    between the passes), then every place."""
    try:
        previous: dict[str, Any] | None = load(root)
    except UsageError:
        previous = None
    data = from_pass(folder, previous, root, also)
    save(data, root)
    return data, apply(root)


def within_tolerance(recorded: float, fresh: float, factor: float, slack: float) -> bool:
    """True if ``fresh`` is within ``factor`` times ``recorded`` or ``slack`` of it, whichever is wider."""
    if not (math.isfinite(recorded) and math.isfinite(fresh)) or recorded < 0 or fresh < 0:
        raise ValueError(f"recorded and fresh must be finite and not negative, got {recorded!r} and {fresh!r}")
    low = min(recorded / factor, recorded - slack)
    high = max(recorded * factor, recorded + slack)
    return low <= fresh <= high


def summary_table(data: dict[str, Any]) -> str:
    """What ``update`` and ``check`` print: a line per notebook."""
    rows = [f"{'notebook':<45} {'run at 1.0':>10} {'peak':>8} {'estimate':>9}"]
    for key, e in data["notebooks"].items():
        rows.append(f"{key:<45} {e['seconds']:>8.1f} s {e['peak_memory_mb']:>5} MB {e['minutes']:>5} min")
    hours, running = totals(data)
    rows.append(f"{'all':<45} {running:>6} min {'':>8} {hours:>7g} h")
    return "\n".join(rows)


# ------------------------------------------------------------------ the command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``update``, ``apply`` or ``check``; ``--from`` the pass's folder."""
    parser.add_argument("action", choices=["update", "apply", "check"],
                        help=f"update: write {FILE} from a learners' pass, then every place; apply: write every "
                             f"place from {FILE}; check: list the places that disagree (exit 1)")
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_PASS,
                        help="the learners' pass to read (default build/learner-run)")
    parser.add_argument("--also", type=Path, nargs="*", default=[], metavar="DIR",
                        help="update: more passes of the same notebooks, to record the spread between passes")


def run(args: argparse.Namespace) -> int:
    """0 done or in agreement, 1 a place disagrees (check)."""
    if args.action == "update":
        data, done = update(args.source.resolve(), also=[p.resolve() for p in args.also])
        print(summary_table(data))
        print(f"wrote {FILE} from {describe_pass(data)}")
    elif args.action == "apply":
        done = apply()
    else:
        problems = check()
        for line in problems:
            print(line)
        if problems:
            print(f"{len(problems)} place(s) disagree with {FILE}: python -m helpers durations apply "
                  f"(or, for new figures, {UPDATE})")
            return 1
        print(f"every duration and memory figure agrees with {FILE}")
        return 0
    for line in done:
        print(f"rewrote {line}")
    print(f"{len(done)} place(s) rewritten")
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone("python -m helpers durations", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
