"""`scenectl export-imagefolder`: a shard set's object crops as a torchvision ImageFolder tree."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.data.configs import ExportConfig


@command(
    "export-imagefolder",
    ExportConfig,
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
def export_imagefolder_cmd(cfg: ExportConfig) -> None:
    from scenectl.data.export import export_imagefolder

    s = export_imagefolder(cfg)
    typer.echo(f"wrote {s['images']} images of {s['classes']} classes from {s['member']} into {cfg.out}")
