"""`scenectl export-imagefolder`: a shard set's object crops as a torchvision ImageFolder tree."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._net import BACKOFF, RETRIES, TIMEOUT


@command(
    "export-imagefolder",
    help=(
        "Write OUT/<class name>/<key>.jpg from a shard set: object.jpg (sets built with --with-object) or jpg "
        "(sets built with --task object, where jpg is the unmasked crop). Bytes are copied, not re-encoded. "
        "Also writes classes.json (COCO ids of the exported classes), config.json and export.json (last). "
        "The result is a target for `scenectl transfer` or any ImageFolder reader.\n\n"
        "Example:\n\n"
        "  scenectl build-shards --task object --split train2017 --out shards/train-crops\n\n"
        "  scenectl export-imagefolder shards/train-crops crops/train"
    ),
)
def export_imagefolder_cmd(
    shards: str = typer.Argument(..., help="Shard set folder or webdataset URL pattern."),
    out: Path = typer.Argument(..., help="Output folder of the ImageFolder tree."),
    member: str = typer.Option("auto", "--member", help="auto, object (object.jpg) or jpg."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export in OUT."),
    retries: Optional[int] = RETRIES,
    timeout: Optional[float] = TIMEOUT,
    backoff: Optional[float] = BACKOFF,
) -> None:
    from scenectl.data.export import export_imagefolder
    from scenectl.data.imagefolder import ExportConfig
    from scenectl.data.remote import net_options

    s = export_imagefolder(ExportConfig(shards=shards, out=str(out), member=member, overwrite=overwrite,
                                        net=net_options(retries, timeout, backoff)))
    typer.echo(f"wrote {s['images']} images of {s['classes']} classes from {s['member']} into {out}")
