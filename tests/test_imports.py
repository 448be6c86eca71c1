"""The package's modules import one another without a cycle, counting imports inside
functions too: a lazy import hides a cycle from Python but not from whoever reads the code."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mixtrain_dali"


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its file: `from . import x`,
    `from .x import y`, `from mixtrain_dali.x import y`, `import mixtrain_dali.x`."""
    name = package.name
    modules = {p.stem for p in package.glob("*.py")}
    graph = {}
    for path in sorted(package.glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                if node.level == 0 and parts[0] == name:
                    parts = parts[1:]
                elif node.level != 1:
                    continue  # another package, or above this one
                deps |= {parts[0]} if parts and parts[0] else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith(name + ".")}
        graph[path.stem] = (deps & modules) - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state = {}  # module -> "open" while on the path, "done" after

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_package_modules_import_each_other_without_a_cycle():
    graph = import_graph(PACKAGE)
    assert {"config", "augment", "loader"} <= set(graph)  # the right folder was read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_names_a_cycle_and_passes_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_counts_function_level_relative_and_absolute_imports(tmp_path):
    pkg = tmp_path / "mixtrain_dali"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def augment():\n    from .augment import Augment\n")
    (pkg / "augment.py").write_text("from mixtrain_dali.config import check\nimport numpy\n")
    (pkg / "loader.py").write_text("from . import config\nimport mixtrain_dali.plan\n")
    (pkg / "plan.py").write_text("from .. import elsewhere\nfrom os import path\n")
    graph = import_graph(pkg)
    assert graph == {"__init__": set(), "config": {"augment"}, "augment": {"config"},
                     "loader": {"config", "plan"}, "plan": set()}
    assert find_cycle(graph) == ["augment", "config", "augment"]
