"""The Typer application and what every command shares: option ranges, one-line errors, --debug.

- Every numeric option of every command takes its range from scenectl.config.RANGES (by its name: one meaning per
  option name) when `command` registers it: checked while the command line is parsed, shown in --help. A numeric
  option without a declared range is a programming error, refused when the command is registered.
- A usage error (an unknown option, a value of the wrong type or out of its range, a missing argument) is one
  `error: scenectl COMMAND: ...` line on stderr, exit status 2 (`_Group.main`).
- In a command, a ScenectlError is one `error: ...` line (exit 2), an OSError one line naming its path (exit 2: a
  full disk says "No space left on device: PATH"), and any other exception one line naming the command, the
  exception and where it was raised (exit 1). `scenectl --debug COMMAND ...` or SCENECTL_DEBUG=1 shows the
  traceback instead.
"""

from __future__ import annotations

import copy
import functools
import gc
import importlib
import inspect
import os
import sys
import traceback
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
import typer.core
from typer.models import ParameterInfo

from scenectl import __version__
from scenectl.config import RANGES, range_problem
from scenectl.errors import ScenectlError

# typer >= 0.20 carries its own copy of click (typer._click); older versions use click itself
_click = getattr(typer.core, "_click", None) or importlib.import_module("click")
DEBUG_ENV = "SCENECTL_DEBUG"
_debug = {"on": False}  # set by the root callback on every invocation (--debug)


class _Group(typer.core.TyperGroup):
    """The root group: a usage error is one `error:` line (click prints usage, a hint and the error on 3-4 lines)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except _click.exceptions.ClickException as e:
            if not standalone_mode:
                raise
            if isinstance(e, getattr(_click.exceptions, "NoArgsIsHelpError", ())):  # `scenectl` alone: the help
                e.show()
            else:
                typer.echo(f"error: {_where(e)}{one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # rv: the exit status of a typer.Exit, else a command's None


def _where(e: Any) -> str:
    ctx = getattr(e, "ctx", None)
    return f"scenectl {ctx.info_name}: " if ctx is not None and ctx.parent is not None else "scenectl: "


app = typer.Typer(
    name="scenectl",
    cls=_Group,
    help=(
        "Hide one object of a scene and learn to name it from the context alone.\n\n"
        "Typical chain (every default feeds the next command):\n\n"
        "  scenectl build-shards --shape circle --max-area 0.3\n\n"
        "  scenectl train --arch ffc\n\n"
        "  scenectl eval --topk 50"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(e: Exception, name: str) -> tuple[int, str]:
    """(exit status, the one `error:` line) for an exception that ended command `name`."""
    if isinstance(e, ScenectlError):
        return 2, f"error: {one_line(str(e))}"
    if isinstance(e, OSError):
        paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
        return 2, f"error: scenectl {name}: {one_line(e.strerror or e)}{': ' + paths if paths else ''}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if _in_package(f.filename)]
    where = f"{_source_tail(frames[-1].filename)}:{frames[-1].lineno}; " if frames else ""
    what = "out of memory" if isinstance(e, MemoryError) else f"{type(e).__name__}: {one_line(str(e), 300)}"
    return 1, f"error: scenectl {name}: {what} (unexpected; at {where}--debug or {DEBUG_ENV}=1 shows the traceback)"


PACKAGE = Path(__file__).resolve().parents[1]  # the installed scenectl/ folder


def _in_package(filename: str) -> bool:
    """A frame of scenectl's own code: under the package folder (not merely under some folder named scenectl, such
    as a clone holding the tests)."""
    return Path(filename).resolve().is_relative_to(PACKAGE)


def _source_tail(filename: str) -> str:
    """scenectl/..., the part of a source path inside the package."""
    return str(Path("scenectl") / Path(filename).resolve().relative_to(PACKAGE))


def command(name: str, **kwargs) -> Callable[[F], F]:
    """Register subcommand `name`: its numeric options checked against their ranges while parsing, and every error
    it raises printed as one line (see the module docstring)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                fn(*args, **kw)
                return
            except (typer.Exit, typer.Abort, _click.exceptions.ClickException):
                raise
            except Exception as e:
                if _debug["on"] or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
                    raise
                status, line = describe(e, name)
            # the failed command's frames are released first (what they still print, e.g. a progress bar's last
            # line, comes out now), so that the error is the last line
            gc.collect()
            typer.echo(line, err=True)
            raise typer.Exit(status)

        wrapper.__signature__ = _ranged(fn, name)
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def _ranged(fn: Callable, name: str) -> inspect.Signature:
    """`fn`'s signature, each numeric option given its declared range: checked by a callback, stated in --help."""
    hints, sig = typing.get_type_hints(fn), inspect.signature(fn)
    params = []
    for p in sig.parameters.values():
        hint, info = hints.get(p.name, p.annotation), p.default
        if isinstance(info, ParameterInfo) and _numeric(hint):
            if p.name not in RANGES:
                raise TypeError(f"scenectl {name}: numeric option {p.name!r} has no range in scenectl.config.RANGES")
            info = copy.copy(info)
            info.callback = _check_range
            info.help = f"{info.help or ''} Range: {RANGES[p.name].interval()}.".strip()
        params.append(p.replace(annotation=hint, default=info))
    return sig.replace(parameters=params)


def _numeric(hint: Any) -> bool:
    """int or float, also inside Optional[...] or List[...] (never bool)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    for a in typing.get_args(hint) if union else (hint,):
        a = typing.get_args(a)[0] if typing.get_origin(a) in (list, tuple) else a
        if a in (int, float):
            return True
    return False


def _check_range(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    problem = range_problem(param.name, value)
    if problem:
        raise _click.exceptions.UsageError(f"{max(param.opts, key=len)} {problem}", ctx)
    return value


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scenectl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", hidden=True,
                               help=f"Show the traceback of an unexpected error (also: {DEBUG_ENV}=1)."),
) -> None:
    """Hide one object of a scene and learn to name it from the context alone."""
    _debug["on"] = debug


def main() -> None:
    try:
        app()
    except ScenectlError as e:  # raised outside a command (e.g. while importing options)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
