"""No function in r1zero/ is longer than 60 lines, so each reads on one screen; a longer one is split
where a part has a name of its own.

The rule: a function's length is ``end_lineno - lineno + 1`` of its ``def`` node, i.e. from the
``def`` line to its last line, docstring, comments and blank lines inside it included, decorators
excluded. Methods and nested functions are measured the same way (a nested function also counts
inside the function that holds it). The one exception is ``Trainer.train``, the loop itself."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "r1zero"
LIMIT = 60
ALLOWED = {"r1zero.training.trainer:Trainer.train"}


def long_functions(source: str, module: str, limit: int = LIMIT) -> dict[str, int]:
    """``{"module:Qualified.name": length}`` for every function or method in ``source`` over ``limit`` lines."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                if length > limit:
                    out[f"{module}:{prefix}{child.name}"] = length
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def synthetic(body_lines: int, decorated: bool = False) -> str:
    """A method ``C.f`` of ``1 + body_lines`` lines (def line + body), inside an if, optionally decorated."""
    head = "if True:\n    class C:\n" + ("        @staticmethod\n        @staticmethod\n" if decorated else "")
    return head + "        def f():\n" + "".join(f"            x{i} = {i}\n" for i in range(body_lines))


def test_the_length_check_catches_61_lines_and_passes_60():  # the positive control of the test below
    assert long_functions(synthetic(60), "m") == {"m:C.f": 61}
    assert long_functions(synthetic(59), "m") == {}
    assert long_functions(synthetic(59, decorated=True), "m") == {}  # decorators do not count
    nested = "def outer():\n    def inner():\n" + "".join(f"        y{i} = {i}\n" for i in range(60))
    assert long_functions(nested, "m") == {"m:outer": 62, "m:outer.inner": 61}


def test_no_function_is_over_60_lines():
    files = list(PKG.rglob("*.py"))
    assert len(files) > 30  # the package is really read
    found: dict[str, int] = {}
    for path in files:
        found.update(long_functions(path.read_text(encoding="utf-8"), module_name(path)))
    too_long = {name: n for name, n in found.items() if name not in ALLOWED}
    assert not too_long, "functions over 60 lines (split where a part has a name of its own):\n" + "\n".join(
        f"{name}: {n}" for name, n in sorted(too_long.items()))
