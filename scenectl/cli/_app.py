"""The Typer application object and the error handling every command shares."""

from __future__ import annotations

import errno
import functools
import sys
from typing import Callable, TypeVar

import typer

from scenectl import __version__
from scenectl.errors import ScenectlError

app = typer.Typer(
    name="scenectl",
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

# Filesystem failures the user fixes (a full disk, a read-only or wrong output path): one line, not a traceback.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


def _describe(e: OSError) -> str:
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or e}{where}"


def command(name: str, **kwargs) -> Callable[[F], F]:
    """Register a subcommand whose ScenectlErrors become one line on stderr and exit status 2."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                return fn(*args, **kw)
            except ScenectlError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from None
            except OSError as e:
                if e.errno not in _USER_ERRNOS:
                    raise
                typer.echo(f"error: {_describe(e)}", err=True)
                raise typer.Exit(2) from None

        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scenectl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Hide one object of a scene and learn to name it from the context alone."""


def main() -> None:
    try:
        app()
    except ScenectlError as e:  # raised outside a command (e.g. while importing options)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
