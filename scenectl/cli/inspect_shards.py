"""`scenectl inspect-shards`: counts, area histogram, params and a contact sheet of a shard set."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.cli._config import OPTIONS_FILE_HELP
from scenectl.config import InspectConfig


@command("inspect-shards", InspectConfig, config_help=OPTIONS_FILE_HELP)
def inspect_shards_cmd(cfg: InspectConfig) -> None:
    """Print samples per class, the hidden-area histogram and the build params; draw a contact sheet (samples
    across images, each with its hidden region outlined, class and hidden-area fraction; the area histogram below).

    Example:

      scenectl inspect-shards shards/val2017 --n 16 --out sheet.png
    """
    from scenectl.inspect_shards import inspect_shards

    cfg.check()
    result = inspect_shards(cfg.directory, n=cfg.n, out=cfg.out, net=cfg.net.options(), seed=cfg.seed)
    typer.echo(result["text"])
    typer.echo(f"contact sheet: {result['sheet']}")
