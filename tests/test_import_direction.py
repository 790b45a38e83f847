"""The layers import one way: the core (``activeseg``) <- the ML backend <- the orchestrator.

The core turns pixels into instances and talks to Label Studio's REST API; ``ml_backend`` only
speaks Label Studio's ML-backend protocol; the orchestrator drives the loop and starts the
backend in one place (``activeseg serve``). Read from the source with ``ast``, so an import
inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: (file, function) where the orchestrator may import the backend: the serve command
SERVE_ENTRY = {("orchestrator/commands/services.py", "_cmd_serve")}


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(top-level package imported, the function it is imported in or None) for one file."""
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, function or child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module.split(".")[0], function))
            visit(child, function)

    visit(ast.parse(path.read_text(), str(path)), None)
    return found


def violations(folder: str, forbidden: set[str], allowed: set[tuple[str, str]] = frozenset()) -> list[str]:
    out = []
    for path in sorted((REPO / folder).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for package, function in imports(path):
            if package in forbidden and (rel, function) not in allowed:
                out.append(f"{rel} ({function or 'module level'}) imports {package}")
    return out


@pytest.mark.parametrize(
    ("folder", "forbidden", "allowed"),
    [
        ("activeseg", {"ml_backend", "orchestrator"}, set()),
        ("ml_backend", {"orchestrator"}, set()),
        ("orchestrator", {"ml_backend"}, SERVE_ENTRY),
        ("benchmarks", {"ml_backend"}, set()),
        ("scripts", {"ml_backend"}, set()),
    ],
)
def test_imports_point_one_way(folder: str, forbidden: set[str], allowed: set[tuple[str, str]]) -> None:
    assert violations(folder, forbidden, allowed) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("import ml_backend.app\n\ndef serve():\n    from ml_backend.server import serve\n")
    assert imports(source) == [("ml_backend", None), ("ml_backend", "serve")]


def test_the_serve_entry_point_does_import_the_backend() -> None:
    """The allow-list names a place that exists: were it renamed, the check would be vacuous."""
    (path, function), *_ = SERVE_ENTRY
    assert ("ml_backend", function) in imports(REPO / path)
