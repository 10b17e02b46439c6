"""The library's layout: imports run one way, from a higher layer to a lower one, and no modules import
each other in a circle. Read from the import statements (with `ast`), so a lazy import inside a function and
one under `if TYPE_CHECKING:` count like any other."""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_resnet"

# The layers, lowest first: a module may import its own layer's modules and any lower layer's, never a higher
# one's. A layer is a subpackage or a module left flat beside them. The package's face (`__init__`, lazy) and
# `__main__` stand outside the order.
LAYERS = (
    ("config", "config_schema", "run_folder", "formats", "files", "audience", "runtime", "fingerprint", "machine",
     "notebook_setup"),
    ("models", "blocks", "data"),
    ("evaluation",),
    ("training",),
    ("studies",),
    ("reporting",),
    ("cli",),
)
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
OUTSIDE = {"__init__", "__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def unit_of(module: str) -> str:
    """The layer member a module belongs to: its subpackage, or itself when flat."""
    return module.split(".")[0]


def known_modules() -> set[str]:
    return {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports (dotted, below cifar_resnet), wherever the import sits."""
    own = module_name(path)
    package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "cifar_resnet":
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from .pkg import module` imports the module
                candidate = ".".join(target + [alias.name])
                found.add(candidate if candidate in known else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cifar_resnet" and len(parts) > 1:
                    found.add(".".join(parts[1:]))
    return {m for m in found if m in known and m != own}


def import_graph() -> dict[str, set[str]]:
    known = known_modules()
    return {module_name(p): imports_of(p, known) for p in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_layer():
    units = {unit_of(m) for m in known_modules()} - OUTSIDE
    assert units == set(LAYER_OF), f"add {sorted(units - set(LAYER_OF))} to LAYERS (or drop the stale entries)"


def test_no_module_imports_a_higher_layer():
    wrong = sorted(f"{module} imports {target}" for module, targets in import_graph().items()
                   if unit_of(module) not in OUTSIDE for target in targets
                   if LAYER_OF[unit_of(target)] > LAYER_OF[unit_of(module)])
    assert not wrong, "a lower layer imports a higher one:\n" + "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph`, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_between_modules():
    cycle = _cycle(import_graph())
    assert cycle is None, "modules import each other in a circle: " + " -> ".join(cycle)


def test_no_import_circle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if unit_of(module) not in OUTSIDE:
            graph.setdefault(unit_of(module), set()).update(unit_of(t) for t in targets if unit_of(t) != unit_of(module))
    cycle = _cycle(graph)
    assert cycle is None, "layers import each other in a circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("source, expected", [
    ("from . import b\n", {"b"}),                        # a sibling module, flat
    ("from .sub import b\n", {"sub.b"}),                 # a module of a subpackage
    ("def f():\n    from .sub.b import x\n", {"sub.b"}),  # a lazy import counts
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cifar_resnet.b import x\n", {"b"}),
])
def test_the_import_reader_sees_every_form(tmp_path, monkeypatch, source, expected):
    package = tmp_path / "cifar_resnet"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/b.py"):
        (package / name).write_text("")
    (package / "a.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert imports_of(package / "a.py", known_modules()) == expected


def test_a_circle_is_found():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_reads_in_one_sitting():
    long = sorted(f"{p.relative_to(PACKAGE)}: {n} lines" for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 400)
    assert not long, "modules over 400 lines (split by topic): " + ", ".join(long)
