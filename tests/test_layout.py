"""The package's shape: imports go one way (down the pipeline's stages, no cycle, module-level or
inside functions), nothing in the package imports test code, no module reaches into another's private
names, and modules stay small enough to read."""
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


# The pipeline's stages, lowest first: a module imports its own stage or lower ones only. A stage is
# a list of module prefixes (a package and everything in it); "r1zero" alone is the package's root.
STAGES: list[tuple[str, ...]] = [
    ("r1zero.errors", "r1zero.config", "r1zero.user_code", "r1zero.trl_defaults"),
    ("r1zero.observe.metrics",),  # the metric names everything logs under
    ("r1zero.data",),
    ("r1zero.sandbox",),  # a reward function by name, in a killable worker: user rewards and math's check
    ("r1zero.tasks",),
    ("r1zero.host_memory", "r1zero.attention", "r1zero.models", "r1zero.model_setup", "r1zero.rollout"),
    ("r1zero.rewards",),
    ("r1zero.algorithms",),
    ("r1zero.observe",),  # what the loop uses to log, evaluate and report
    ("r1zero.training",),
    ("r1zero.cli", "r1zero.trl", "r1zero.__main__", "r1zero"),
]
TEST_CODE = ("r1zero.testing", "tests")  # and every module in tests/ (names_of_test_code)


def stage_of(module: str, stages: list[tuple[str, ...]]) -> int | None:
    """The stage of the longest prefix that ``module`` falls under (None: under none)."""
    best = None
    for i, prefixes in enumerate(stages):
        for p in prefixes:
            if (module == p or (module.startswith(p + ".") and p != "r1zero")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def upward_imports(g: dict[str, set[str]], stages: list[tuple[str, ...]]) -> list[str]:
    """'module -> imported' for every import of a higher stage than the importer's."""
    return [f"{m} -> {t}" for m in sorted(g) for t in sorted(g[m])
            if stage_of(m, stages) is not None and stage_of(t, stages) is not None
            and stage_of(t, stages) > stage_of(m, stages)]


def is_test_code(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def names_of_test_code() -> set[str]:
    return set(TEST_CODE) | {p.stem for p in (REPO / "tests").glob("*.py")}


def imports_of_test_code(source: str, names: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import of test code in ``source``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if is_test_code(a.name, names)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if is_test_code(node.module, names):
                out.append((node.module, node.lineno))
            else:  # `from r1zero import testing`
                out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names
                        if is_test_code(f"{node.module}.{a.name}", names)]
    return out


def test_the_stage_check_finds_an_upward_import():  # the positive control of the test below
    g = {"r1zero.config.fields": {"r1zero.algorithms.grpo", "r1zero.errors"},
         "r1zero.algorithms.grpo": {"r1zero.config.fields", "r1zero.algorithms.base"},
         "r1zero.algorithms.base": set(), "r1zero.errors": set(),
         "r1zero.observe.metrics": {"r1zero.observe.tracking"}, "r1zero.observe.tracking": {"r1zero.observe.metrics"},
         "r1zero": {"r1zero.trl"}, "r1zero.trl": {"r1zero.training.trainer"}, "r1zero.training.trainer": {"r1zero"}}
    assert upward_imports(g, STAGES) == ["r1zero.config.fields -> r1zero.algorithms.grpo",
                                         "r1zero.observe.metrics -> r1zero.observe.tracking",
                                         "r1zero.training.trainer -> r1zero"]


def test_imports_only_go_down_the_pipeline():
    mods = modules()
    names = names_of_test_code()
    staged = [m for m in mods if not is_test_code(m, names)]
    assert not [m for m in staged if stage_of(m, STAGES) is None], "modules in no stage: add them to STAGES"
    up = [f"{module_name(p)}:{line} imports {target}" for p in mods.values() for target, _, line in imports_of(p, mods)
          if target in mods and not is_test_code(target, names) and not is_test_code(module_name(p), names)
          and upward_imports({module_name(p): {target}}, STAGES)]
    assert not up, "an import from a lower stage to a higher one:\n" + "\n".join(up)


def test_the_test_code_check_finds_an_import_of_test_code():  # the positive control of the test below
    names = names_of_test_code() | {"toy_rewards"}
    source = ("from r1zero.testing import faults\nimport tests.data\nfrom r1zero import testing\n"
              "def f():\n    import toy_rewards\n    from r1zero.tasks import base\n")
    assert imports_of_test_code(source, names) == [("r1zero.testing", 1), ("tests.data", 2), ("r1zero.testing", 3),
                                                ("toy_rewards", 5)]


def test_nothing_in_the_package_imports_test_code():
    names = names_of_test_code()
    assert "conftest" in names and "tests" in names
    bad = [f"{module_name(p)}:{line} imports {m}" for p in PKG.rglob("*.py")
           if not is_test_code(module_name(p), names)
           for m, line in imports_of_test_code(p.read_text(encoding="utf-8"), names)]
    assert not bad, "test code imported by the package:\n" + "\n".join(bad)


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
