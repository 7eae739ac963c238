"""The shape of helpers/, computed from the source (ast), as docs/architecture.md draws it:
packages in an order (each imports only the packages its row of docs/architecture.md's table
allows: core at the bottom, nothing upward); no import cycle; learner packages never import the
lab grading (helpers.checks) or the course tooling (helpers.tooling); no import hidden in a
string outside the listed lazy loaders; no module over 600 lines; colours only in
helpers/core/style.py."""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from helpers.tooling.paths import DOCS, ROOT

HELPERS = ROOT / "helpers"
ARCHITECTURE = DOCS / "architecture.md"
MAX_LINES = 600
WINGS = ("helpers.checks", "helpers.tooling")
#: The learner's packages, bottom first (docs/architecture.md's table gives what each may import).
PACKAGES = ("core", "kafka", "services", "backlog", "shop", "patterns", "capstone")
#: The lazy loaders allowed to import by name, and where the names they may load are listed.
LAZY_LOADERS = {"helpers": "LAZY", "helpers.tooling.cli": "COMMANDS"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(HELPERS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES: dict[str, Path] = {_module_name(p): p for p in sorted(HELPERS.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those only for type checkers."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The helpers modules an import statement in ``module`` loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "helpers"}
    package = module if SOURCES[module].name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base_parts = package.split(".")
        base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if target.split(".")[0] != "helpers":
        return set()
    loaded = set()
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        loaded.add(submodule if submodule in SOURCES else target)
    return loaded


def lazy_names(module: str) -> set[str]:
    """The modules a listed lazy loader may load by name: the strings of the table
    :data:`LAZY_LOADERS` names (a dict's values, or each ``Command(name, module, ...)``)."""
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    table = LAZY_LOADERS[module]
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == table for t in targets) and node.value is not None:
            if isinstance(node.value, ast.Dict):
                return {v.value for v in node.value.values if isinstance(v, ast.Constant)}
            return {call.args[1].value for call in ast.walk(node.value)
                    if isinstance(call, ast.Call) and len(call.args) > 1 and isinstance(call.args[1], ast.Constant)}
    raise AssertionError(f"{module} has no table {table}")


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """helpers module -> the helpers modules it imports (a lazy loader's table counts as imports)."""
    graph = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set().union(*(_resolve(module, node) for node in _imports(tree)))
        if module in LAZY_LOADERS:
            targets |= lazy_names(module)
        graph[module] = {t for t in targets if t in SOURCES and t != module}
    return graph


def package_of(module: str) -> str:
    """The learner package a module belongs to ('core', ...), its wing ('checks', 'tooling'), or
    'entry' for the top level (helpers, helpers.__main__, helpers.doctor)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (HELPERS / parts[1]).is_dir()) else "entry"


def allowed_imports(text: str | None = None) -> dict[str, set[str]]:
    """Per learner package, the packages it may import: the "may import" column of the table of
    packages in docs/architecture.md (package names in backticks; "nothing" for none)."""
    text = ARCHITECTURE.read_text(encoding="utf-8") if text is None else text
    allowed = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`helpers\.(\w+)`", cells[0]):
            package = cells[0][len("`helpers."):-1]
            if package in PACKAGES:
                allowed[package] = set(re.findall(r"`(\w+)`", cells[-1]))
    return allowed


def upward_imports(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    """Every import from a learner package into a package its row does not allow (or into the
    entry modules, the lab grading or the tooling)."""
    found = []
    for module, targets in sorted(graph.items()):
        package = package_of(module)
        if package not in PACKAGES:
            continue
        for target in sorted(targets):
            other = package_of(target)
            if other != package and other not in allowed.get(package, set()):
                found.append(f"{module} imports {target} ({package} may import {sorted(allowed.get(package, ()))})")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _learner_modules() -> list[str]:
    return [m for m in SOURCES if package_of(m) in PACKAGES or m in ("helpers", "helpers.doctor")]


def test_the_graph_sees_the_imports_we_know_of():
    graph = import_graph()
    assert "helpers.checks.feedback" in graph["helpers.checks"]
    assert "helpers.core.progress" in graph["helpers.checks.feedback"]
    assert "helpers.tooling.cli" in graph["helpers.__main__"]
    assert "helpers.kafka.broker" in graph["helpers"]                  # through the LAZY table
    assert "helpers.tooling.start" in graph["helpers.tooling.cli"]     # through the COMMANDS table
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_top_level_holds_the_packages_and_the_entry_points_only():
    packages = sorted(p.name for p in HELPERS.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.name for p in HELPERS.glob("*.py"))
    assert packages == sorted([*PACKAGES, "checks", "tooling"]), packages
    assert modules == ["__init__.py", "__main__.py", "doctor.py"], modules


def test_every_package_has_a_row_saying_what_it_may_import():
    allowed = allowed_imports()
    assert set(allowed) == set(PACKAGES), f"docs/architecture.md's table lacks {set(PACKAGES) - set(allowed)}"
    assert allowed["core"] == set(), "core is the bottom: it imports no other package"
    for package, others in allowed.items():
        below = set(PACKAGES[:PACKAGES.index(package)])
        assert others <= below, f"{package} may import {sorted(others - below)}, which is not below it"


def test_packages_import_nothing_upward():
    found = upward_imports(import_graph(), allowed_imports())
    assert not found, "imports against the package order:\n" + "\n".join(found)


def test_a_planted_upward_import_fails():
    """The rule on a copy of the graph: core importing Kafka, and services importing the shop, are caught."""
    graph = {m: set(t) for m, t in import_graph().items()}
    graph["helpers.core.wait"].add("helpers.kafka.clients")
    graph["helpers.services.calls"].add("helpers.shop.workflow")
    found = upward_imports(graph, allowed_imports())
    assert any(f.startswith("helpers.core.wait imports helpers.kafka.clients") for f in found), found
    assert any(f.startswith("helpers.services.calls imports helpers.shop.workflow") for f in found), found
    assert allowed_imports("| `helpers.shop` | the shop | `core` |")["shop"] == {"core"}


def _look_alike(a: str, b: str) -> bool:
    """Two module names a newcomer could mix up: one (without a plural s) begins the other, or
    they share their first five letters (events / eventplots / eventservices, faults / faultplan)."""
    x, y = a.rstrip("s"), b.rstrip("s")
    return x.startswith(y) or y.startswith(x) or (len(x) >= 5 and len(y) >= 5 and x[:5] == y[:5])


@pytest.mark.parametrize("package", [*PACKAGES, "checks", "tooling"])
def test_no_look_alike_module_names_within_a_package(package):
    names = sorted(p.stem for p in (HELPERS / package).glob("*.py") if p.stem != "__init__")
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:] if _look_alike(a, b)]
    assert not pairs, f"helpers.{package}: look-alike module names {pairs}"
    assert _look_alike("events", "eventplots") and _look_alike("faults", "faultplan")


LOADS_BY_NAME = ("import_module", "__import__")


def _imports_by_name(path: Path) -> list[str]:
    """Calls that import a module named at run time (importlib.import_module, __import__), except
    of a literal name outside helpers (tqdm.auto, say)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in LOADS_BY_NAME:
                arg = node.args[0] if node.args else None
                literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                if not literal or arg.value.startswith((".", "helpers")):
                    found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_no_import_hidden_in_a_string_outside_the_lazy_loaders():
    found = {m: _imports_by_name(p) for m, p in SOURCES.items() if m not in LAZY_LOADERS}
    found = {m: f for m, f in found.items() if f}
    assert not found, f"imports by name outside the listed lazy loaders {sorted(LAZY_LOADERS)}: {found}"


def test_no_import_cycle_among_helpers_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("module", _learner_modules())
def test_a_learner_module_never_imports_the_checks_or_the_tooling(module):
    wings = sorted(t for t in import_graph()[module] if t.startswith(WINGS))
    assert not wings, f"{module} imports {wings}: learner modules stay independent of lab grading and tooling"


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_no_module_over_600_lines(module):
    lines = len(SOURCES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{SOURCES[module].relative_to(HELPERS.parent)} has {lines} lines (> {MAX_LINES})"


# --------------------------------------------------------------------------- colours

HEX = re.compile(r"(?<![\w&])#[0-9a-fA-F]{6}(?:[0-9a-fA-F]{2})?\b")
RGB = re.compile(r"\brgba?\(\s*\d")
CSS_NAMES = frozenset("""
    aliceblue antiquewhite aqua aquamarine azure beige bisque black blanchedalmond blue blueviolet brown
    burlywood cadetblue chartreuse chocolate coral cornflowerblue cornsilk crimson cyan darkblue darkcyan
    darkgoldenrod darkgray darkgreen darkgrey darkkhaki darkmagenta darkolivegreen darkorange darkorchid darkred
    darksalmon darkseagreen darkslateblue darkslategray darkslategrey darkturquoise darkviolet deeppink
    deepskyblue dimgray dimgrey dodgerblue firebrick floralwhite forestgreen fuchsia gainsboro ghostwhite gold
    goldenrod gray green greenyellow grey honeydew hotpink indianred indigo ivory khaki lavender lavenderblush
    lawngreen lemonchiffon lightblue lightcoral lightcyan lightgoldenrodyellow lightgray lightgreen lightgrey
    lightpink lightsalmon lightseagreen lightskyblue lightslategray lightslategrey lightsteelblue lightyellow
    lime limegreen linen magenta maroon mediumaquamarine mediumblue mediumorchid mediumpurple mediumseagreen
    mediumslateblue mediumspringgreen mediumturquoise mediumvioletred midnightblue mintcream mistyrose moccasin
    navajowhite navy oldlace olive olivedrab orange orangered orchid palegoldenrod palegreen paleturquoise
    palevioletred papayawhip peachpuff peru pink plum powderblue purple rebeccapurple red rosybrown royalblue
    saddlebrown salmon sandybrown seagreen seashell sienna silver skyblue slateblue slategray slategrey snow
    springgreen steelblue tan teal thistle tomato turquoise violet wheat white whitesmoke yellow yellowgreen
""".split())
CSS_IN_TEXT = re.compile(r"(?:^|[;\"'\s])(?:background-)?color\s*:\s*([a-zA-Z]+)")


def _is_colour_key(name: str) -> bool:
    return name.lower().endswith("color") or name.lower().endswith("colour")


def _named_colours(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of CSS colour names given to a *color argument or key, or in inline CSS."""
    found = []
    for node in ast.walk(tree):
        pairs: list[tuple[str, ast.AST]] = []
        if isinstance(node, ast.keyword) and node.arg:
            pairs.append((node.arg, node.value))
        elif isinstance(node, ast.Dict):
            pairs += [(k.value, v) for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        for key, value in pairs:
            if _is_colour_key(key) and isinstance(value, ast.Constant) and isinstance(value.value, str) \
                    and value.value.strip().lower() in CSS_NAMES:
                found.append((value.lineno, f"{key}={value.value!r}"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in CSS_IN_TEXT.finditer(node.value):
                if match.group(1).lower() in CSS_NAMES:
                    found.append((node.lineno, match.group(0).strip()))
    return found


def colour_literals(path: Path) -> list[str]:
    """Every colour written out in ``path``: '#rrggbb', 'rgb(...)', or a CSS colour name."""
    text = path.read_text(encoding="utf-8")
    found = [f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for pattern in (HEX, RGB) for m in pattern.finditer(text)]
    found += [f"line {line}: {what}" for line, what in _named_colours(ast.parse(text))]
    return found


def test_the_colour_scan_finds_each_kind_of_literal(tmp_path):
    sample = tmp_path / "figure.py"
    sample.write_text('fig.add_hline(y=1, line_color="gray")\nstyle = {"color": "#d62728"}\n'
                      'marker = dict(color="rgb(10, 20, 30)")\nhtml = "<b style=\'color:red\'>x</b>"\n'
                      'ok = dict(color=palette["ok"], title="red alert")  # not a colour: a title\n')
    found = colour_literals(sample)
    assert len(found) == 4 and any("gray" in f for f in found) and any("#d62728" in f for f in found), found


@pytest.mark.parametrize("module", sorted(m for m, p in SOURCES.items() if p != HELPERS / "core" / "style.py"))
def test_colours_come_only_from_helpers_style(module):
    found = colour_literals(SOURCES[module])
    assert not found, f"{SOURCES[module].name}: take colours from helpers.core.style, not {found}"
