"""`scenectl cooccurrence`: the classes that keep each class company, as text and as a heatmap."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.cli._config import OPTIONS_FILE_HELP
from scenectl.config import CooccurrenceConfig


@command(
    "cooccurrence",
    CooccurrenceConfig,
    config_help=OPTIONS_FILE_HELP,
    help=(
        "Show each class's top companions in the images of a split, ranked by conditional probability "
        "P(companion in image | class in image) (default) or by PMI (--by pmi: how much more often than chance; "
        "rare pairs score high, so combine with --min-count), and draw the class-by-class heatmap. SOURCE is a "
        "shard set (its cooccurrence.h5), a checkpoint (the training split's counts it carries) or a "
        "cooccurrence.h5 file.\n\n"
        "Example:\n\n"
        "  scenectl cooccurrence shards/train2017 --top 5 --out cooc.png\n\n"
        "  scenectl cooccurrence runs/train/best.pt --by pmi --min-count 5"
    ),
)
def cooccurrence(cfg: CooccurrenceConfig) -> None:
    from scenectl.companions import cooccurrence_main

    _, text = cooccurrence_main(cfg)
    typer.echo(text)
