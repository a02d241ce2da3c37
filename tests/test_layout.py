"""The code's layout, checked with `ast` (issue 21's "done when"; docs/architecture.md states the rules):

- scenectl/data/ imports nothing above it: only itself and the bottom modules (errors, io, h5, folders, progress, options and
  the package's __version__), counting imports inside functions;
- no command module imports another command module (quickstart, the chain of sample -> build-shards -> train ->
  eval, aside): what two commands share lives in a module named for its job (inference, report, ...);
- no function takes more than 8 parameters: a small record type (a dataclass) carries what belongs together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scenectl"

# What scenectl/data/ may import of the package: itself and the modules below it.
DATA_MAY_IMPORT = ("scenectl.data", "scenectl.errors", "scenectl.io", "scenectl.h5", "scenectl.folders", "scenectl.progress",
                   "scenectl.options", "scenectl.__version__")
DATA_PENDING: tuple[str, ...] = ()

# The modules that do the work of one CLI command each (scenectl/cli/ holds only their thin Typer functions).
COMMANDS = ("scenectl.train", "scenectl.evaluate", "scenectl.compare", "scenectl.transfer", "scenectl.distill",
            "scenectl.fuse", "scenectl.predict", "scenectl.companions", "scenectl.quickstart", "scenectl.inspect_shards",
            "scenectl.data.shards", "scenectl.data.ooc", "scenectl.data.verify", "scenectl.data.synthetic",
            "scenectl.data.export", "scenectl.rescore")
CHAINS = {"scenectl.quickstart": COMMANDS,  # sample -> build-shards -> train -> eval in one command
          "scenectl.data.shards": ("scenectl.data.synthetic",)}  # build-shards without COCO runs `sample` first
# Command-to-command imports still being removed (empty: none).
COMMANDS_PENDING: tuple[str, ...] = ()

MAX_PARAMETERS = 8
# Functions over the cap still being reworked (empty: none).
PARAMETERS_PENDING: tuple[str, ...] = ()


def _modules(folder: Path) -> list[tuple[Path, ast.Module]]:
    """(path from the folder holding the package, e.g. scenectl/data/coco.py; parsed module) of every .py file
    under folder, a part of a package named scenectl."""
    top = next(p for p in (folder, *folder.parents) if p.name == "scenectl")
    return [(p.relative_to(top.parent), ast.parse(p.read_text(), filename=str(p))) for p in sorted(folder.rglob("*.py"))]


def _module_name(path: Path) -> str:
    """scenectl/data/coco.py -> scenectl.data.coco; scenectl/data/__init__.py -> scenectl.data."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Absolute names an import statement in `package` brings in (`from x import y` gives x and x.y)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: level 1 is the importing module's package, each further level one up
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _within(name: str, modules) -> str | None:
    """The module of `modules` that `name` is or lies inside, else None."""
    return next((m for m in modules if name == m or name.startswith(m + ".")), None)


def imports(folder: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """(file, line, module) of every scenectl module imported under folder, at any depth (lazy ones too); `from x
    import y` counts as x.y where y is a module, else as x."""
    found = []
    for path, tree in _modules(folder):
        package = ".".join(path.parts[:-1])  # of scenectl/data/x.py and scenectl/data/__init__.py alike: scenectl.data
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [n for n in _imported(node, package) if n == "scenectl" or n.startswith("scenectl.")]
                deepest = [n for n in names if not any(m.startswith(n + ".") for m in names)]  # x.y, not also x
                found += [(str(path), node.lineno, n) for n in deepest]
    return found


def data_upward_imports(folder: Path = PACKAGE / "data") -> list[str]:
    """'file:line imports scenectl.x' for every import under data/ of a module above data/ (named by its top-level
    module: scenectl.config for `from scenectl.config import check_ranges`)."""
    found = [f"{f}:{line} imports {'.'.join(n.split('.')[:2])}" for f, line, n in imports(folder)
             if not _within(n, DATA_MAY_IMPORT) and n != "scenectl"]
    return list(dict.fromkeys(found))  # one line importing two names of a module: one offence


def command_imports(folder: Path = PACKAGE, commands=COMMANDS, chains=CHAINS) -> list[str]:
    """'file:line imports module' for every import of one command module by another (chains aside)."""
    found = []
    for f, line, n in imports(folder):
        me, other = _module_name(Path(f)), _within(n, commands)
        if me in commands and other and other != me and other not in chains.get(me, ()):
            found.append(f"{f}:{line} imports {other}")
    return list(dict.fromkeys(found))


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The parameters a caller can pass: positional-only, ordinary and keyword-only ones, plus one each for *args and
    **kwargs; a method's first parameter named self or cls is not counted (the caller does not pass it)."""
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def many_parameters(folder: Path = PACKAGE, limit: int = MAX_PARAMETERS) -> list[str]:
    """'file:line name: N parameters' for every function or method (nested ones too) over `limit`."""
    return [f"{path}:{node.lineno} {node.name}: {parameter_count(node)} parameters"
            for path, tree in _modules(folder) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameter_count(node) > limit]


def _entry(offender: str) -> str:
    """An offender as an allow-list names it: 'file:line imports x' -> 'file imports x', 'file:line f: N parameters'
    -> 'file f'."""
    where, _, what = offender.partition(" ")
    return f"{where.split(':')[0]} {what.split(':')[0]}"


def _pending(offenders: list[str], allowed: tuple[str, ...]) -> list[str]:
    """The offenders not on an allow-list."""
    return [o for o in offenders if _entry(o) not in allowed]


def test_checks_find_what_they_look_for(tmp_path):
    """The three checks on a made-up package: each offender is reported with file:line, nothing else is."""
    pkg = tmp_path / "scenectl"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "__init__.py").write_text("from ..models import resnet\n")
    (pkg / "data" / "a.py").write_text("import os\nfrom scenectl import __version__\nfrom scenectl.errors import E\n"
                                       "from . import coco\nfrom .. import metrics\nfrom scenectl.config import X\n\n"
                                       "def f():\n    import scenectl.plots\n    from scenectl.data.coco import C\n")
    assert data_upward_imports(pkg / "data") == [
        "scenectl/data/__init__.py:1 imports scenectl.models", "scenectl/data/a.py:5 imports scenectl.metrics",
        "scenectl/data/a.py:6 imports scenectl.config", "scenectl/data/a.py:9 imports scenectl.plots"]
    (pkg / "cmd_a.py").write_text("from scenectl import report\n\ndef run():\n    from scenectl.cmd_b import helper\n")
    (pkg / "cmd_b.py").write_text("from scenectl.cmd_b import x\nimport scenectl.inference\n")
    (pkg / "chain.py").write_text("from scenectl import cmd_a, cmd_b\n")
    commands = ("scenectl.cmd_a", "scenectl.cmd_b", "scenectl.chain")
    assert command_imports(pkg, commands, {}) == [
        "scenectl/chain.py:1 imports scenectl.cmd_a", "scenectl/chain.py:1 imports scenectl.cmd_b",
        "scenectl/cmd_a.py:4 imports scenectl.cmd_b"]
    assert command_imports(pkg, commands, {"scenectl.chain": commands}) == ["scenectl/cmd_a.py:4 imports scenectl.cmd_b"]
    (pkg / "p.py").write_text("def ok(a, b, c, d, e, f, g, h):\n    pass\n\n\ndef over(a, b, c, d, e, f, g, *, h, i):\n"
                              "    pass\n\n\nclass K:\n    def m(self, a, b, c, d, e, f, g, h):\n        pass\n\n"
                              "    @classmethod\n    def c(cls, a, b, c, d, e, f, g, *args, **kwargs):\n        pass\n")
    assert many_parameters(pkg) == ["scenectl/p.py:5 over: 9 parameters", "scenectl/p.py:14 c: 9 parameters"]


def test_data_imports_nothing_above_it():
    offenders = _pending(data_upward_imports(), DATA_PENDING)
    assert not offenders, "scenectl/data/ must import only itself and the bottom modules:\n" + "\n".join(offenders)


def test_no_command_module_imports_another():
    offenders = _pending(command_imports(), COMMANDS_PENDING)
    assert not offenders, ("a helper two commands share belongs in a module named for its job "
                           "(docs/architecture.md):\n" + "\n".join(offenders))


def test_every_cli_command_calls_a_listed_command_module():
    """So that the rule above covers new commands: each scenectl/cli module imports the module doing its work."""
    cli = {}
    for f, _, n in imports(PACKAGE / "cli"):
        cli.setdefault(f, set()).add(_within(n, COMMANDS))
    missing = [f for f, mods in cli.items() if not Path(f).name.startswith("_") and not mods - {None}]
    assert not missing, "add the module each of these commands runs to COMMANDS:\n" + "\n".join(missing)


def test_no_function_takes_more_than_8_parameters():
    offenders = _pending(many_parameters(), PARAMETERS_PENDING)
    assert not offenders, f"functions over {MAX_PARAMETERS} parameters:\n" + "\n".join(offenders)


@pytest.mark.slow
@pytest.mark.parametrize("allowed", [DATA_PENDING, COMMANDS_PENDING, PARAMETERS_PENDING])
def test_allow_lists_hold_only_live_offenders(allowed):
    """An entry whose offence is gone must leave its list (so the lists only ever shrink to empty)."""
    live = {_entry(o) for o in data_upward_imports() + command_imports() + many_parameters()}
    assert not set(allowed) - live, f"no longer offending, remove from the allow-list: {sorted(set(allowed) - live)}"
