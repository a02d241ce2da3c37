"""The Typer application and what every command shares: one-line errors, --debug (its options: scenectl/cli/_config.py).

- A usage error (an unknown option, a value of the wrong type or out of its range, a missing argument) is one
  `error: scenectl COMMAND: ...` line on stderr, exit status 2 (`_Group.main`).
- In a command, a ScenectlError is one `error: scenectl COMMAND: ...` line (exit 2), an OSError one line naming
  its path (exit 2: a full disk says "No space left on device: PATH"), and any other exception one line naming the
  command, the exception and where it was raised (exit 1). `scenectl --debug COMMAND ...` or SCENECTL_DEBUG=1 shows
  the traceback instead.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import typer
import typer.core

from scenectl import __version__
from scenectl.cli._config import _click, config_options
from scenectl.errors import OutOfMemory, ScenectlError, out_of_memory
from scenectl.options import option

DEBUG_ENV = "SCENECTL_DEBUG"
_debug = {"on": False}  # set by the root callback on every invocation (--debug)


class _Formatter(_click.HelpFormatter):
    """click's help formatter, except that an indented paragraph (a command line of an example) is never rewrapped:
    click would break it at the terminal's width, even inside an option's name (`--train-` / `cooccurrence`), and a
    copied example would not run."""

    def write_text(self, text: str) -> None:
        paragraphs = text.split("\n\n")
        super().write_text("\n\n".join(f"\b\n{p}" if p[:1].isspace() else p for p in paragraphs))


class _Context(_click.Context):
    formatter_class = _Formatter


class _Command(typer.core.TyperCommand):
    context_class = _Context


class _Group(typer.core.TyperGroup):
    """The root group: a usage error is one `error:` line (click prints usage, a hint and the error on 3-4 lines)."""

    context_class = _Context

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        run = functools.partial(super().main, args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        if not standalone_mode:  # the caller handles what click raises
            return run()
        try:
            rv = run()
        except _click.exceptions.ClickException as e:
            if isinstance(e, getattr(_click.exceptions, "NoArgsIsHelpError", ())):  # `scenectl` alone: the help
                e.show()
            else:
                typer.echo(f"error: {_where(e)}{one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
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


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(e: Exception, name: str) -> tuple[int, str]:
    """(exit status, the one `error:` line) for an exception that ended command `name`."""
    where = _last_frame(e)
    if isinstance(e, ScenectlError):  # every error line names its command, as usage errors do
        text = one_line(str(e))
        return 2, f"error: {text}" if text.startswith("scenectl ") else f"error: scenectl {name}: {text}"
    if out_of_memory(e):  # a resource limit, not a bug: the frame it happened in helps to size the job
        return 2, f"error: scenectl {name}: {OutOfMemory()}" + (f" (at {where})" if where else "")
    if isinstance(e, OSError):
        paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
        return 2, f"error: scenectl {name}: {one_line(e.strerror or e)}{': ' + paths if paths else ''}"
    what = f"{type(e).__name__}: {one_line(str(e), 300)}"
    return 1, (f"error: scenectl {name}: {what} (unexpected; at {where + '; ' if where else ''}--debug or "
               f"{DEBUG_ENV}=1 shows the traceback)")


PACKAGE = Path(__file__).resolve().parents[1]  # the installed scenectl/ folder


def _last_frame(e: BaseException) -> str:
    """scenectl/FILE:LINE of the innermost frame of scenectl's own code in `e`'s traceback, or "". Its own code: under
    the package folder (not merely under some folder named scenectl, such as a clone holding the tests)."""
    frames = [(Path(f.filename).resolve(), f.lineno) for f in traceback.extract_tb(e.__traceback__)]
    ours = [(path, line) for path, line in frames if path.is_relative_to(PACKAGE)]
    return f"{Path('scenectl') / ours[-1][0].relative_to(PACKAGE)}:{ours[-1][1]}" if ours else ""


def command(name: str, config: type, help: str | None = None, **options: Any) -> Callable[[Callable], Callable]:
    """Register subcommand `name`: `fn(cfg)`, cfg a `config` made from the command line (scenectl/cli/_config.py:
    config_options(config, **options)), every error it raises printed as one line (see the module docstring)."""

    def decorate(fn: Callable) -> Callable:
        fn = config_options(config, **options)(fn)

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

        app.command(name, cls=_Command, help=help)(wrapper)
        return fn

    return decorate


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scenectl {__version__}")
        raise typer.Exit()


@dataclass
class RootOptions:
    version: bool = option(False, "Print the version.", "--version", callback=_version, is_eager=True)
    debug: bool = option(False, f"Show the traceback of an unexpected error (also: {DEBUG_ENV}=1).", "--debug",
                         hidden=True)


@app.callback()
@config_options(RootOptions, config_help=None)
def _root(cfg: RootOptions) -> None:
    """Hide one object of a scene and learn to name it from the context alone."""
    _debug["on"] = cfg.debug


def main() -> None:
    try:
        app()
    except ScenectlError as e:  # raised outside a command (e.g. while importing options)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
