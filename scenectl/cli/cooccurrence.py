"""`scenectl cooccurrence`: the classes that keep each class company, as text and as a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._net import BACKOFF, RETRIES, TIMEOUT


@command(
    "cooccurrence",
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
def cooccurrence(
    source: str = typer.Argument(..., help="Shard set folder / URL, checkpoint (.pt) or cooccurrence.h5."),
    top: int = typer.Option(5, "--top", help="Companions listed per class."),
    by: str = typer.Option("conditional", "--by", help="conditional or pmi."),
    min_count: int = typer.Option(1, "--min-count", help="Ignore pairs seen together in fewer images."),
    out: Optional[Path] = typer.Option(Path("cooccurrence.png"), "--out", "-o", help="Heatmap PNG to write."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Print only; write no heatmap."),
    retries: Optional[int] = RETRIES,
    timeout: Optional[float] = TIMEOUT,
    backoff: Optional[float] = BACKOFF,
) -> None:
    from scenectl.companions import CooccurrenceConfig, cooccurrence_main
    from scenectl.data.remote import net_options

    cfg = CooccurrenceConfig(source, top, by, min_count, None if no_plot or out is None else str(out),
                             net_options(retries, timeout, backoff))
    _, text = cooccurrence_main(cfg)
    typer.echo(text)
