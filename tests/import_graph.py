"""The package's own import graph, read from the source with ``ast`` (nothing is imported).

- ``import_graph(src)``: {module: {(imported module, lazy)}} for every module of
  ``src/neurosymbolic_llm`` ("pipeline.training", "stages.fine_tune", "cli", ...); an import of a
  name from a package resolves to the submodule when one has that name, else to the package.
  ``lazy`` is True for an import inside a function body.
- ``figures(graph, parts)``: modules, import edges and layers (the longest import chain, counted in
  modules) of the subgraph whose modules lie in ``parts`` (top-level folders; None: the package).

- ``config_receivers(stage_file)``: {module: {calls}} of the package modules a stage module hands
  its configuration to (calls with ``cfg`` or ``X.cfg`` among their arguments).

Run as a script to print the figures of a checkout: ``python tests/import_graph.py [SRC]``
(and, with a stage module's path after SRC, where that module's ``cfg`` goes).
"""
import ast
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "neurosymbolic_llm"


def _module_names(pkg_root):
    names = {}
    for path in sorted(pkg_root.rglob("*.py")):
        parts = path.relative_to(pkg_root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(name, modules):
    """The longest known module that ``name`` (dotted, package-relative) starts with."""
    parts = name.split(".") if name else []
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def _imports(module, path, modules):
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    here = module.split(".") if module else []
    found = set()

    def visit(node, lazy):
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        found.add((_resolve(alias.name[len(PACKAGE) + 1:], modules), inner))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here if is_package else here[:-1]
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + (child.module.split(".") if child.module else []))
                elif child.module == PACKAGE or (child.module or "").startswith(PACKAGE + "."):
                    target = child.module[len(PACKAGE) + 1:]
                else:
                    continue
                for alias in child.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    found.add((sub if sub in modules else _resolve(target, modules), inner))
            visit(child, inner)

    visit(tree, False)
    found.discard((module, False))
    found.discard((module, True))
    return found


def import_graph(src):
    pkg_root = Path(src) / PACKAGE
    modules = _module_names(pkg_root)
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _top(module):
    return module.split(".")[0] if module else ""


def figures(graph, parts=None):
    """{"modules", "edges", "lazy_edges", "layers"} of the modules under the folders ``parts``."""
    inside = {m for m in graph if parts is None or _top(m) in parts}
    edges = {(m, t) for m in inside for t, _ in graph[m] if t in inside}
    lazy = {(m, t) for m in inside for t, is_lazy in graph[m] if t in inside and is_lazy}
    lazy -= {(m, t) for m in inside for t, is_lazy in graph[m] if t in inside and not is_lazy}
    out = {m: {t for s, t in edges if s == m} for m in inside}

    @lru_cache(maxsize=None)
    def depth(m, seen=frozenset()):
        return 1 + max((depth(t, seen | {m}) for t in out[m] if t not in seen), default=0)

    return {"modules": len(inside), "edges": len(edges), "lazy_edges": len(lazy),
            "layers": max((depth(m) for m in inside), default=0)}


def config_receivers(stage_file):
    path = Path(stage_file)
    tree = ast.parse(path.read_text())
    src = next(p for p in path.parents if (p / PACKAGE).is_dir())
    names = {}  # a name imported from the package -> the module it comes from (a submodule if it is one)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            for a in node.names:
                is_module = (src / Path(*node.module.split(".")) / f"{a.name}.py").is_file()
                names[a.asname or a.name] = f"{node.module}.{a.name}" if is_module else node.module

    def is_cfg(arg):
        return (isinstance(arg, ast.Name) and arg.id == "cfg") or (isinstance(arg, ast.Attribute) and arg.attr == "cfg")

    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(is_cfg(a) for a in [*node.args, *(k.value for k in node.keywords)]):
            f = node.func
            head = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else getattr(f, "id", None)
            if head in names:
                out.setdefault(names[head][len(PACKAGE) + 1:], set()).add(ast.unparse(f))
    return out


def main(src, stage_file=None):
    graph = import_graph(src)
    for label, parts in (("package", None), ("pipeline/", {"pipeline"}), ("stages/", {"stages"}),
                         ("pipeline/ + stages/", {"pipeline", "stages"})):
        f = figures(graph, parts)
        print(f"{label:20s} modules {f['modules']:3d}  import edges {f['edges']:3d} "
              f"(of which only inside functions {f['lazy_edges']:2d})  layers {f['layers']:2d}")
    if stage_file:
        receivers = config_receivers(stage_file)
        for module, calls in sorted(receivers.items()):
            print(f"  cfg -> {module:28s} {', '.join(sorted(calls))}")
        print(f"modules handed the configuration by {Path(stage_file).name}: {len(receivers)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src", *sys.argv[2:3])
