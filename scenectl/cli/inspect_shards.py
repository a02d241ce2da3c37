"""`scenectl inspect-shards`: counts, area histogram, params and a contact sheet of a shard set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._net import BACKOFF, RETRIES, TIMEOUT


@command("inspect-shards")
def inspect_shards_cmd(
    directory: str = typer.Argument(..., help="Shard set: a folder (with manifest.json), a brace pattern or a URL "
                                    "(https://host/dir/, pipe:COMMAND)."),
    n: int = typer.Option(16, "--n", help="Samples on the contact sheet: from different images, drawn at random "
                          "from the set (from whole shards holding some 20,000 samples of a larger one)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random draw of the contact sheet's samples."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Contact sheet PNG, outside any folder a scenectl "
                                       "command owns. Default: DIR-contact-sheet.png beside DIR."),
    retries: Optional[int] = RETRIES,
    timeout: Optional[float] = TIMEOUT,
    backoff: Optional[float] = BACKOFF,
) -> None:
    """Print samples per class, the hidden-area histogram and the build params; draw a contact sheet (samples
    across images, each with its hidden region outlined, class and hidden-area fraction; the area histogram below).

    Example:

      scenectl inspect-shards shards/val2017 --n 16 --out sheet.png
    """
    from scenectl.inspect_shards import inspect_shards
    from scenectl.data.remote import net_options

    result = inspect_shards(directory, n=n, out=out, net=net_options(retries, timeout, backoff), seed=seed)
    typer.echo(result["text"])
    typer.echo(f"contact sheet: {result['sheet']}")
