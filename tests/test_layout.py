"""The package's house rules, read from its source: imports only at module level, no private names imported across
modules, no import circles, and every file write through the one atomic helper."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dvehelpers"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def resolve(current: str, node: ast.ImportFrom, package: bool) -> str | None:
    """The absolute module an ``import from`` names, or None for a module outside the package."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == "dvehelpers" else None
    base = current.split(".") if package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def own_imports(path: Path) -> list[tuple[str, list[str], bool, int]]:
    """(module, imported names, at module level, line) for every import of the package's own modules."""
    tree = ast.parse(path.read_text())
    current, package = module_name(path), path.name == "__init__.py"
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(current, node, package)
            if target is not None:
                out.append((target, [a.name for a in node.names], id(node) in top, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "dvehelpers":
                    out.append((a.name, [], id(node) in top, node.lineno))
    return out


FILES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_imports_its_own_modules_at_module_level_only() -> None:
    """A function-level import hides a circle (or a slow import) from the reader; there is none."""
    late = [f"{p.relative_to(PACKAGE.parent)}:{line}" for p in FILES for *_, top, line in own_imports(p) if not top]
    assert late == []


def test_no_private_name_is_imported_across_modules() -> None:
    private = [
        f"{p.relative_to(PACKAGE.parent)}: {name} from {target}"
        for p in FILES
        for target, names, _, _ in own_imports(p)
        for name in names
        if name.startswith("_") and name != "__version__"
    ]
    assert private == []


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (an imported submodule counts as one; importing a module of a
    subpackage also runs that subpackage's __init__, which counts too; the root package's public __init__ is left
    out, as nothing inside imports it)."""
    graph: dict[str, set[str]] = {module_name(p): set() for p in FILES}
    for p in FILES:
        me = module_name(p)
        for target, names, _, _ in own_imports(p):
            hits = {f"{target}.{n}" for n in names if f"{target}.{n}" in graph} or {target}
            for hit in hits:
                parts = hit.split(".")
                for k in range(2, len(parts) + 1):  # the target and its subpackages' __init__
                    name = ".".join(parts[:k])
                    # (a module's own package is already being imported when the module is)
                    own = me.startswith(name + ".")
                    if name in graph and name != me and not own and (k == len(parts) or is_package(name)):
                        graph[me].add(name)
    return graph


def test_there_is_no_import_circle() -> None:
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)
    assert graph["dvehelpers.methods.fbi"] >= {"dvehelpers.engine"}  # the graph is really read
    assert "dvehelpers" not in set().union(*graph.values())


def test_the_evaluation_checks_no_method_by_name() -> None:
    """A method's needs reach the evaluation through its registry entry's hooks, never as a name check (naming
    the paper's table is fine; comparing with a method's name is not)."""
    for p in sorted((PACKAGE / "evaluate").glob("*.py")):
        tree = ast.parse(p.read_text())
        checks = [
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Compare)
            and any(isinstance(c, ast.Constant) and c.value in _METHOD_NAMES for c in [n.left, *n.comparators])
        ]
        assert checks == [], (p.name, checks)
        assert "methods" not in {t.split(".")[1] for t, *_ in own_imports(p) if "." in t}, p.name


_METHOD_NAMES = {"vebi", "fbi", "kl_dve", "fourier_dve", "gradcam", "guided_backprop"}


def test_every_file_write_goes_through_the_atomic_helper() -> None:
    """os.replace, .write_text, .write_bytes and torch.save appear only in dvehelpers/atomic.py."""
    offenders = []
    for p in FILES:
        if p.name == "atomic.py":
            continue
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            attr, owner = node.func.attr, node.func.value
            in_memory = attr == "save" and len(node.args) > 1 and getattr(node.args[1], "id", "") == "buf"
            if attr in ("write_text", "write_bytes") or (
                isinstance(owner, ast.Name)
                and (owner.id, attr) in {("os", "replace"), ("torch", "save")}
                and not in_memory
            ):
                offenders.append(f"{p.relative_to(PACKAGE.parent)}:{node.lineno} .{attr}")
    assert offenders == []
