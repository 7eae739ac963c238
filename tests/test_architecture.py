"""The shape of helpers/, computed from the source (ast), as docs/architecture.md draws it:
no import cycle; learner modules never import the lab grading (helpers.checks) or the
course tooling (helpers.tooling); no module over 600 lines; colours only in helpers/style.py."""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
MAX_LINES = 600
WINGS = ("helpers.checks", "helpers.tooling")


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


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """helpers module -> the helpers modules it imports."""
    graph = {}
    for module, path in SOURCES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set().union(*(_resolve(module, node) for node in _imports(tree)))
        graph[module] = {t for t in targets if t in SOURCES and t != module}
    return graph


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
    return [m for m, p in SOURCES.items() if p.parent == HELPERS and p.name not in ("__main__.py",)]


def test_the_graph_sees_the_imports_we_know_of():
    graph = import_graph()
    assert "helpers.checks.feedback" in graph["helpers.checks"]
    assert "helpers.progress" in graph["helpers.checks.feedback"]
    assert "helpers.tooling.cli" in graph["helpers.__main__"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


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


@pytest.mark.parametrize("module", sorted(m for m, p in SOURCES.items() if p != HELPERS / "style.py"))
def test_colours_come_only_from_helpers_style(module):
    found = colour_literals(SOURCES[module])
    assert not found, f"{SOURCES[module].name}: take colours from helpers.style, not {found}"
