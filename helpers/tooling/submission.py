"""A submitted lab notebook, made into the notebook the grader runs (``python -m helpers grade``).

The graded notebook is the course's own learner notebook (``labs/NN_*.ipynb``) with the
learner's answers put in (:func:`assemble`):

* an **answer cell** is a cell of the course's learner notebook holding the TODO stub
  (:func:`helpers.tooling.labgen.is_answer`); the submission's cell with the same id gives
  its source. An answer cell the submission no longer has is left out (the learner may have
  written the answer in a cell of their own), and the feedback says so;
* every **other cell of the course**, check cells and parameters included, comes from the
  course, whatever the submission made of it: editing a check cell, the parameters or a
  demo's assertion changes nothing;
* **cells the learner added** (ids the course does not have) are kept, after the course
  cell they followed in the submission: they may define what an answer uses;
* each **check cell** is rewritten to call :func:`helpers.tooling.examiner.grade` with the
  check kept before any learner code ran, and a nonce of its own (:func:`rewrite_check`); a
  first cell arms the examiner.

:func:`read` turns a file that is not a notebook into :class:`Rejected` ("broken"), and
:func:`assemble` a notebook of another lab into :class:`Rejected` ("foreign"). :func:`flags`
names what a teacher should look at (learner code that touches the checks, the progress file
or the grader, or rebinds a name the course's cells set; an answer identical to the course's
solution; the course's solution notebook handed in).
"""
from __future__ import annotations

import ast
import json
import re
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..core import progress
from .labgen import is_answer
from .lint import tags
from .paths import LABS

#: What the examiner's first cell runs (with the lab and the reruns filled in).
PRELUDE = ("# The course's grader (not part of the lab): it keeps the lab's checks as they are before your code runs.\n"
           "from helpers.tooling import examiner as __course_examiner__\n"
           "__course_examiner__.arm({lab}, reruns={reruns})")
EXAMINER = "__course_examiner__"
#: Learner code that reaches into what grades it: flagged for the teacher to read.
SUSPECT = re.compile(r"helpers\.checks\b|helpers\.tooling\b|helpers\.core\.progress\b|\bprogress\.(?:record|reset)\("
                     r"|from\s+helpers\.core\s+import[^\n]*\bprogress\b|COURSE_PROGRESS_FILE|__course_examiner__"
                     r"|\bfeedback\.|RECORD_PROGRESS|setattr\(\s*(?:checks|helpers|progress)\b")
_TASK = re.compile(r"^## Task (\d+): (.+)$", re.MULTILINE)


class Rejected(Exception):
    """A submission the grader cannot grade: ``kind`` is "broken" or "foreign", the message says why."""

    def __init__(self, kind: str, why: str):
        super().__init__(why)
        self.kind, self.why = kind, why


@dataclass
class Task:
    """One task of a lab: its number and title (the lab's own words), its check, its answer cells."""

    number: int
    title: str
    check: str
    check_id: str
    answers: list[str] = field(default_factory=list)


@dataclass
class Graded:
    """The notebook to run and what the grader knows about it."""

    lab: int
    nb: nbformat.NotebookNode
    tasks: list[Task]
    nonces: dict[str, str]                 # check cell id -> its nonce
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


def course_notebook(lab: int) -> Path:
    """The course's learner notebook of ``lab``."""
    return LABS / progress.LABS[lab].notebook


def solution_notebook(lab: int) -> Path | None:
    """The course's solution notebook of ``lab``, None where there is none (a class copy)."""
    path = LABS / "solutions" / progress.LABS[lab].notebook
    return path if path.is_file() else None


def read(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``; :class:`Rejected` ("broken") saying why it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text)
    except UnicodeDecodeError:
        raise Rejected("broken", "not a notebook: the file is not text") from None
    except ValueError as exc:
        raise Rejected("broken", f"not a notebook: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or raw.get("nbformat") != 4:
        raise Rejected("broken", "not a notebook: no nbformat 4 cells in it")
    try:
        with warnings.catch_warnings():  # a duplicate cell id is repaired (the copy becomes the learner's cell)
            warnings.simplefilter("ignore")
            return nbformat.reads(text, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any malformed cell
        raise Rejected("broken", f"not a notebook: {type(exc).__name__}: {exc}") from None


def _check_name(source: str, lab: int) -> str | None:
    """The check a check cell calls: ``checks.check_lab2_envelope(...)`` -> ``envelope``."""
    prefix = f"check_lab{lab}_"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith(prefix):
            return node.attr[len(prefix):]
    return None


def tasks(course: nbformat.NotebookNode, lab: int) -> list[Task]:
    """The lab's tasks in order: title from its ``## Task N: title`` heading, its check cell, and
    the answer cells between the previous check and this one."""
    found: list[Task] = []
    titles: list[tuple[int, str]] = []
    answers: list[str] = []
    for cell in course.cells:
        if cell.cell_type == "markdown":
            titles += [(int(n), t.strip()) for n, t in _TASK.findall(cell.source)]
        elif is_answer(cell):
            answers.append(cell.id)
        elif "check" in tags(cell):
            name = _check_name(cell.source, lab)
            if name is None:
                raise ValueError(f"the check cell {cell.id} of lab {lab} calls no check_lab{lab}_*")
            number, title = titles[-1] if titles else (len(found) + 1, name.replace("_", " "))
            found.append(Task(number, title, name, cell.id, answers))
            answers = []
    expected = list(progress.LABS[lab].checks)
    if [t.check for t in found] != expected:
        raise ValueError(f"lab {lab}'s check cells call {[t.check for t in found]}, expected {expected}")
    return found


def rewrite_check(source: str, lab: int, nonce: str) -> str:
    """A check cell whose calls ``checks.check_labN_x(args)`` become
    ``__course_examiner__.grade("x", nonce, lambda: __course_examiner__.check("x")(args, stop=False, quiet=True))``."""
    prefix = f"check_lab{lab}_"

    class Rewrite(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            self.generic_visit(node)
            func = node.func
            if not (isinstance(func, ast.Attribute) and func.attr.startswith(prefix)):
                return node
            name = func.attr[len(prefix):]
            kept = ast.parse(f"{EXAMINER}.check({name!r})", mode="eval").body
            keywords = [k for k in node.keywords if k.arg not in ("stop", "quiet")]
            keywords += [ast.keyword("stop", ast.Constant(False)), ast.keyword("quiet", ast.Constant(True))]
            call = ast.Call(kept, node.args, keywords)
            lam = ast.Lambda(ast.arguments([], [], None, [], [], None, []), call)
            return ast.Call(ast.parse(f"{EXAMINER}.grade", mode="eval").body,
                            [ast.Constant(name), ast.Constant(nonce), lam], [])

    tree = ast.fix_missing_locations(Rewrite().visit(ast.parse(source)))
    return ast.unparse(tree)


def _bound(source: str) -> tuple[set[str], set[str]]:
    """(names, attributes) a cell binds at its top level: assignments and definitions (imports
    bind a module to its own name, which changes nothing), and ``name.attribute = ...``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    names: set[str] = set()
    attributes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node in tree.body:
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                    attributes.add(f"{target.value.id}.{target.attr}")
                elif node in tree.body:
                    names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names, attributes


def _check_inputs(course: nbformat.NotebookNode) -> set[str]:
    """The names the check cells take from the notebook (``checks``, ``kafka``, ``chain`` ...)."""
    names: set[str] = set()
    for cell in course.cells:
        if "check" in tags(cell):
            names |= {n.id for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Name)}
    return names


def _normal(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())


def flags(learner_cells: list[nbformat.NotebookNode], course: nbformat.NotebookNode,
          solution: nbformat.NotebookNode | None) -> list[str]:
    """What a teacher should look at in the learner's own cells (answers and added cells): code
    that refers to the grading (checks, progress, the examiner), that rebinds a name a check takes
    from the notebook or sets an attribute of one, and an answer that is the course's solution."""
    found: list[str] = []
    answers = set().union(*(_bound(c.source)[0] for c in course.cells if is_answer(c)))
    inputs = _check_inputs(course) - answers
    solved = {c.id: _normal(c.source) for c in (solution.cells if solution else []) if c.cell_type == "code"}
    for cell in learner_cells:
        if cell.cell_type != "code":
            continue
        where = f"cell {cell.get('id') or '?'}"
        for match in sorted({m.group(0).strip() for m in SUSPECT.finditer(cell.source)}):
            found.append(f"{where} refers to `{match}` (the grading, not the lab)")
        names, attributes = _bound(cell.source)
        touched = sorted(names & inputs) + sorted(a for a in attributes if a.split(".")[0] in inputs)
        if touched:
            found.append(f"{where} sets {', '.join(f'`{n}`' for n in touched)}, which a check takes from the course")
        if cell.get("id") in solved and _normal(cell.source) == solved[cell["id"]]:
            found.append(f"{where} is the course's solution, character for character")
    return found


def assemble(submission: nbformat.NotebookNode, lab: int, reruns: int = 1) -> Graded:
    """The notebook to grade: the course's learner notebook, the submission's answers and added
    cells, the check cells rewritten; :class:`Rejected` ("foreign") if it is not lab ``lab``."""
    course = nbformat.read(course_notebook(lab), as_version=4)
    solution_path = solution_notebook(lab)
    solution = nbformat.read(solution_path, as_version=4) if solution_path else None
    course_ids = [c.id for c in course.cells]
    meta = submission.metadata.get("course", {}) if isinstance(submission.metadata.get("course"), dict) else {}
    made_from = str(meta.get("generated_from", ""))
    ids = [c.get("id") for c in submission.cells]
    shared = len(set(ids) & set(course_ids))
    if (made_from and not made_from.endswith(progress.LABS[lab].notebook)) or shared < len(course_ids) // 3:
        what = f"it was made from {made_from}" if made_from else f"it shares {shared} of {len(course_ids)} cells"
        raise Rejected("foreign", f"not lab {lab} ({progress.LABS[lab].notebook}): {what}")
    the_tasks = tasks(course, lab)
    task_of = {answer: t for t in the_tasks for answer in t.answers}
    mine = {c.get("id"): c for c in submission.cells}
    added: dict[str | None, list[nbformat.NotebookNode]] = {}
    anchor: str | None = None
    for cell in submission.cells:
        if cell.get("id") in course_ids:
            anchor = cell.get("id")
        else:
            added.setdefault(anchor, []).append(cell)
    graded = nbformat.v4.new_notebook(metadata=course.metadata)
    graded.cells.append(nbformat.v4.new_code_cell(PRELUDE.format(lab=lab, reruns=reruns),
                                                  metadata={"tags": ["grader"]}))
    notes: list[str] = []
    if meta.get("variant") == "solution":
        notes.append("this is the course's solution notebook, not a learner's")
    learner_cells: list[nbformat.NotebookNode] = []
    nonces: dict[str, str] = {}
    for cell in added.get(None, []):
        graded.cells.append(_learner_copy(cell))
        learner_cells.append(cell)
    for cell in course.cells:
        if is_answer(cell):
            if mine.get(cell.id, {}).get("cell_type") == "code":
                answer = _learner_copy(mine[cell.id])
                answer.metadata = {"tags": ["answer"]}
                graded.cells.append(answer)
                learner_cells.append(answer)
            else:
                task = task_of.get(cell.id)
                notes.append(f"the answer cell of task {task.number if task else '?'} ({cell.id}) is not in the "
                             "notebook as a code cell: only your own cells were run for it")
        elif "check" in tags(cell):
            nonces[cell.id] = secrets.token_hex(8)
            graded.cells.append(nbformat.v4.new_code_cell(rewrite_check(cell.source, lab, nonces[cell.id]),
                                                          metadata={"tags": ["check"]}, id=cell.id))
        else:
            graded.cells.append(_course_copy(cell))
        for extra in added.get(cell.id, []):
            graded.cells.append(_learner_copy(extra))
            learner_cells.append(extra)
    return Graded(lab, graded, the_tasks, nonces, notes, flags(learner_cells, course, solution))


def _course_copy(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    copy = nbformat.from_dict(json.loads(json.dumps(cell)))
    if copy.cell_type == "code":
        copy.outputs, copy.execution_count = [], None
    return copy


def _learner_copy(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The learner's cell without its outputs (the grader runs it afresh)."""
    source = cell.get("source", "")
    source = "".join(source) if isinstance(source, list) else str(source)
    kind = cell.get("cell_type") if cell.get("cell_type") in ("code", "markdown", "raw") else "raw"
    if kind == "code":
        return nbformat.v4.new_code_cell(source, metadata={"tags": ["learner"]}, id=cell.get("id") or None)
    if kind == "markdown":
        return nbformat.v4.new_markdown_cell(source, id=cell.get("id") or None)
    return nbformat.v4.new_raw_cell(source, id=cell.get("id") or None)
