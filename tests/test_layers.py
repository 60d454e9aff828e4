"""The package's shape: layers that import only downward (import-linter's contracts in pyproject.toml), terminal
input and output only in the application layer, short functions, and imports at the top of their module."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "hellogpt"
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, ast.Module]:
    """Every module of the package, by its path relative to src/ (hellogpt/app/console.py, ...)."""
    found = {str(p.relative_to(PACKAGE.parent)): ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
             for p in sorted(PACKAGE.rglob("*.py"))}
    assert len(found) > 40 and "hellogpt/cli.py" in found  # the walk found the package
    return found


def functions(tree: ast.AST):
    """Every function and method in a module, nested ones included."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def talks_to_a_person(path: str) -> bool:
    return path.startswith("hellogpt/app/") or path == "hellogpt/cli.py"


def lint_imports_command() -> list[str]:
    """import-linter's command: on PATH, beside this Python, or through its entry point in this Python."""
    for candidate in (shutil.which("lint-imports"), Path(sys.executable).with_name("lint-imports")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    return [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def lint_imports(project: Path) -> subprocess.CompletedProcess:
    """lint-imports with the contracts of project/pyproject.toml, on the package in project/src."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*lint_imports_command(), "--config", str(project / "pyproject.toml"), "--no-cache"],
                          cwd=project, capture_output=True, text=True, timeout=120, env=env)


def test_the_layers_keep_their_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout, result.stdout


def test_a_broken_contract_fails(tmp_path):
    """The check above can fail: the same contracts on a copy of the package where core imports rich."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PACKAGE, tmp_path / "src" / "hellogpt", ignore=shutil.ignore_patterns("__pycache__", "*.gz"))
    errors = tmp_path / "src" / "hellogpt" / "core" / "errors.py"
    errors.write_text("import rich.console  # noqa: F401\n" + errors.read_text())
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr
    assert "hellogpt.core.errors -> rich" in result.stdout


def test_only_the_application_layer_talks_to_a_person():
    """print( and input( and rich belong to app/ and cli.py: the layers below report through return values,
    exceptions and callbacks."""
    offenders = []
    for path, tree in modules().items():
        if talks_to_a_person(path):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "input"):
                offenders.append(f"{path}:{node.lineno} calls {node.func.id}(")
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "rich"]
    assert offenders == []


def test_functions_are_short():
    offenders = [f"{path}:{f.lineno} {f.name}() is {f.end_lineno - f.lineno + 1} lines"
                 for path, tree in modules().items() for f in functions(tree)
                 if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert offenders == [], f"functions longer than {MAX_FUNCTION_LINES} lines"


def lazy_for_start_up(path: str, line: int) -> bool:
    """An application module may import what only some of its paths need when that path runs, to keep the
    way to the first prompt quick; the import line says so ("# start-up: ...")."""
    return path.startswith("hellogpt/app/") and "# start-up" in \
        (PACKAGE.parent / path).read_text(encoding="utf-8").splitlines()[line - 1]


def test_hellogpt_is_imported_at_the_top_of_a_module():
    """A function-local import of the package's own modules was a way round an import cycle; the layers have
    none. cli.py loads a command's module when that command runs (importlib), and the application may import
    what one path needs when it runs, saying so, to start quickly (lazy_for_start_up)."""
    offenders = []
    for path, tree in modules().items():
        if path == "hellogpt/cli.py":
            continue
        for f in functions(tree):
            for node in ast.walk(f):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and lazy_for_start_up(path, node.lineno):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or "."] if isinstance(node, ast.ImportFrom) and node.level == 0 else \
                    ["." * node.level + (node.module or "")] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path}:{node.lineno} {f.name}() imports {n}" for n in names
                              if n.split(".")[0] in ("hellogpt", "") or n.startswith(".")]
    assert offenders == []


@pytest.mark.parametrize("check", [test_only_the_application_layer_talks_to_a_person, test_functions_are_short,
                                   test_hellogpt_is_imported_at_the_top_of_a_module])
def test_the_checks_find_what_they_look_for(check, monkeypatch):
    """Each AST check fails on a module made to break its rule (so a pass means something)."""
    bad = ast.parse("import rich\ndef f():\n    from hellogpt.core import errors\n    print(input())\n"
                    + "    x = 1\n" * MAX_FUNCTION_LINES)
    monkeypatch.setitem(globals(), "modules", lambda: {"hellogpt/core/bad.py": bad})
    with pytest.raises(AssertionError):
        check()
