"""`scenectl inspect-shards`: counts, area histogram, params and a contact sheet of a shard set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command


@command("inspect-shards")
def inspect_shards_cmd(
    directory: Path = typer.Argument(..., help="Shard folder (with manifest.json)."),
    n: int = typer.Option(16, "--n", help="Samples on the contact sheet."),
    out: Optional[Path] = typer.Option(None, "--out", help="Contact sheet PNG, outside any folder a scenectl "
                                       "command owns. Default: DIR-contact-sheet.png beside DIR."),
) -> None:
    """Print samples per class, the hidden-area histogram and the build params; draw a contact sheet.

    Example:

      scenectl inspect-shards shards/val2017 --n 16 --out sheet.png
    """
    from scenectl.data.inspect import inspect_shards

    result = inspect_shards(directory, n=n, out=out)
    typer.echo(result["text"])
    typer.echo(f"contact sheet: {result['sheet']}")
