"""The package's shape: imports go one way (no cycle, module-level or inside functions), no module
reaches into another's private names, and modules stay small enough to read."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "r1zero"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(path: Path, mods: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("r1zero")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("r1zero"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                # `from r1zero.x import y` imports module r1zero.x.y when there is one, else name y of r1zero.x.
                out.append((sub, None, node.lineno) if sub in mods else (node.module, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _, _ in imports_of(p, mods) if t in mods and t != m} for m, p in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        path.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_cycle_finder_finds_a_cycle():  # the positive control of the test below
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    g = graph()
    assert len(g) > 30 and sum(map(len, g.values())) > 60  # the graph is really read
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_no_private_name_is_imported_from_another_module():
    mods = modules()
    bad = [f"{module_name(p)}:{line} imports {name} from {target}"
           for p in mods.values() for target, name, line in imports_of(p, mods)
           if name is not None and name.startswith("_")]
    assert not bad, "\n".join(bad)


def test_modules_stay_small():
    sizes = {module_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in PKG.rglob("*.py")}
    assert sizes["r1zero.training.trainer"] <= 400
    too_long = {m: n for m, n in sizes.items() if n > 500}
    assert not too_long, too_long


def test_test_machinery_is_under_tests_not_in_the_package():
    assert not (PKG / "testing").exists()
    assert not {p.stem for p in PKG.rglob("*.py")} & {"fuzz", "faults", "adversarial_corpus", "fault_points"}
    assert (REPO / "tests" / "adversarial_corpus.py").is_file() and (REPO / "tests" / "fault_points.py").is_file()
    # The crash tests' pauses are callbacks they register (tests/fault_points.py): the package reads none of their settings.
    assert not [p for p in PKG.rglob("*.py") if "R1ZERO_PAUSE" in p.read_text(encoding="utf-8")]
