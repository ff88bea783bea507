"""The import graph, read from the source (ast, nothing is executed): no cycles between modules or between
packages (lazy imports inside functions count: they are dependencies too), and the device side (jetson/, calib/)
imports nothing from the host side but edgeprune.errors, edgeprune.fsio and the package's version."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgeprune", "jetson", "calib")
DEVICE = ("jetson", "calib")
# what the device side may take from the host package: its error family, atomic writes and `edgeprune.__version__`
DEVICE_MAY_IMPORT = {"edgeprune", "edgeprune.errors", "edgeprune.fsio"}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its __init__)."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source. `from a import b` is an edge to a.b when
    that is a module, else to a; relative imports are resolved against the module's package."""
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in mods else target)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def package_of(module: str) -> str:
    """jetson, calib, edgeprune.<subpackage>, or the module itself for edgeprune's top-level modules."""
    parts = module.split(".")
    if parts[0] in DEVICE or len(parts) < 2:
        return parts[0]
    return ".".join(parts[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {package_of(m): set() for m in graph}
    for m, targets in graph.items():
        out[package_of(m)].update(package_of(t) for t in targets if package_of(t) != package_of(m))
    return out


def explain(graph: dict[str, set[str]], comps: list[list[str]]) -> str:
    return "; ".join(" / ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in comps)


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_the_walk_sees_the_project(graph):
    assert len(graph) > 80 and "edgeprune.rundir" in graph["edgeprune.pipeline"]
    assert "jetson.preprocess" in graph["edgeprune.data.torchdata"]


def test_no_module_imports_itself_round_a_cycle(graph):
    comps = cycles(graph)
    assert not comps, "import cycles: " + explain(graph, comps)


def test_no_package_cycles(graph):
    pg = package_graph(graph)
    comps = cycles(pg)
    assert not comps, "package import cycles: " + explain(pg, comps)


def device_violations(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    bad = {m: sorted(t for t in targets if t.split(".")[0] not in DEVICE and t not in DEVICE_MAY_IMPORT)
           for m, targets in graph.items() if m.split(".")[0] in DEVICE}
    return {m: t for m, t in bad.items() if t}


def test_device_side_imports_only_errors_fsio_and_version_from_the_host(graph):
    bad = device_violations(graph)
    assert not bad, f"device modules importing host modules: {bad}"


def test_the_checks_catch_a_lazy_cycle_and_a_device_import(tmp_path):
    """The walker on a made-up tree: a function-level import closing a cycle, and jetson importing host code."""
    files = {
        "edgeprune/__init__.py": "", "edgeprune/errors.py": "",
        "edgeprune/a.py": "from .b import thing\n",
        "edgeprune/b.py": "def f():\n    from . import a\n",
        "edgeprune/sub/__init__.py": "", "edgeprune/sub/x.py": "from ..errors import E\n",
        "jetson/__init__.py": "", "jetson/y.py": "from edgeprune.errors import E\nfrom edgeprune.sub import x\n",
        "calib/__init__.py": "", "calib/z.py": "import jetson.y\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    g = import_graph(tmp_path)
    assert cycles(g) == [["edgeprune.a", "edgeprune.b"]]
    assert g["jetson.y"] == {"edgeprune.errors", "edgeprune.sub.x"} and g["calib.z"] == {"jetson.y"}
    assert device_violations(g) == {"jetson.y": ["edgeprune.sub.x"]}
    assert cycles(package_graph(g)) == [["edgeprune.a", "edgeprune.b"]]   # top-level modules are their own nodes
    (tmp_path / "jetson/w.py").write_text("def f():\n    import calib.z\n")
    assert ["calib", "jetson"] in cycles(package_graph(import_graph(tmp_path)))
    assert cycles(import_graph(tmp_path)) == [["edgeprune.a", "edgeprune.b"]]   # jetson.w -> calib.z -> jetson.y: no module cycle
