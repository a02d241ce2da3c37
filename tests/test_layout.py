"""The code's layout, checked with `ast` (issue 11's "done when"): no function in scenectl/ is longer than 60
lines, and scenectl/data/ imports nothing from the models or the training engine, so the flow reads one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scenectl"
MAX_FUNCTION_LINES = 60
DATA_MUST_NOT_IMPORT = ("scenectl.models", "scenectl.train", "scenectl.engine")


def _modules(folder: Path) -> list[tuple[Path, ast.Module]]:
    """(path from the folder holding the package, e.g. scenectl/data/coco.py; parsed module) of every .py file
    under folder, a part of a package named scenectl."""
    top = next(p for p in (folder, *folder.parents) if p.name == "scenectl")
    return [(p.relative_to(top.parent), ast.parse(p.read_text(), filename=str(p))) for p in sorted(folder.rglob("*.py"))]


def long_functions(folder: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """'file:line name: N lines' for every function or method (nested ones too) longer than `limit` lines, counted
    from its `def` line to its last line (decorators excluded, docstring and comments included)."""
    found = []
    for path, tree in _modules(folder):
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path}:{node.lineno} {node.name}: {length} lines")
    return found


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Absolute names an import statement in `package` brings in (`from x import y` gives x and x.y)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: level 1 is the importing module's package, each further level one up
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def forbidden_imports(folder: Path = PACKAGE / "data", forbidden: tuple[str, ...] = DATA_MUST_NOT_IMPORT) -> list[str]:
    """'file:line imports name' for every import under folder (at any depth, lazy ones too) of a forbidden module."""
    found = []
    for path, tree in _modules(folder):
        package = ".".join(path.parts[:-1])  # of scenectl/data/x.py and scenectl/data/__init__.py alike: scenectl.data
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [n for n in _imported(node, package) if any(n == f or n.startswith(f + ".") for f in forbidden)]
                found += [f"{path}:{node.lineno} imports {n}" for n in names  # (x, not also x.y of the same line)
                          if not any(n.startswith(m + ".") for m in names)]
    return found


def test_checks_find_what_they_look_for(tmp_path):
    """The two checks on a made-up package: each offender is reported with file:line, nothing else is."""
    pkg = tmp_path / "scenectl" / "data"
    pkg.mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    (pkg / "a.py").write_text(f"def ok():\n{body}\n\n\ndef long():\n{body}\n    x = 1\n\n\n"
                              "class C:\n    @property\n    def m(self):\n" + body.replace("    ", "        ") +
                              "\n        return 1\n        return 2\n")
    (pkg / "b.py").write_text("import os\nfrom scenectl.models.pretrained import X\nfrom ..train import fit\n"
                              "from . import coco\nfrom .. import engine\nfrom scenectl import models_extra\n\n"
                              "def f():\n    import scenectl.models\n")
    (pkg / "__init__.py").write_text("from ..models import resnet\n")
    # ok: 60 lines; long: `def` at line 63, 61 lines; m: a decorated method, `def` at line 128, 62 lines
    assert long_functions(pkg) == ["scenectl/data/a.py:63 long: 61 lines", "scenectl/data/a.py:128 m: 62 lines"]
    assert forbidden_imports(pkg) == [
        "scenectl/data/__init__.py:1 imports scenectl.models", "scenectl/data/b.py:2 imports scenectl.models.pretrained",
        "scenectl/data/b.py:3 imports scenectl.train", "scenectl/data/b.py:5 imports scenectl.engine",
        "scenectl/data/b.py:9 imports scenectl.models"]


def test_no_function_in_scenectl_is_longer_than_60_lines():
    offenders = long_functions()
    assert not offenders, f"{len(offenders)} functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_data_imports_nothing_from_models_or_the_engine():
    offenders = forbidden_imports()
    assert not offenders, "scenectl/data/ must not import the models or the engine:\n" + "\n".join(offenders)
