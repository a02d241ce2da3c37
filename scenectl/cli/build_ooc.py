"""`scenectl build-ooc`: an out-of-context test set (objects pasted where their class never occurs) + controls."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.data.configs import OOCConfig


@command(
    "build-ooc",
    OOCConfig,
    help=(
        "Paste object silhouettes (pycocotools masks) from one image into other images of the same split: once "
        "into a host whose classes NEVER co-occur with the object's class in the training counts "
        "(out-of-context), once into a host where the class is plausible (in-context control, same donor). "
        "Writes a standard shard set (masked scene jpg, mask.png, cls, object.jpg, json with \"ooc\": true/false, "
        "host and donor ids); the manifest's classes and cooccurrence.h5 come from the training side. Geometry "
        "(--shape, --fill, --margin, --image-size, --max-area, --min-area) defaults to the training shards'. "
        "Deterministic by --seed. See docs/transfer.md.\n\n"
        "Example:\n\n"
        "  scenectl build-ooc --coco-root data/coco --split val2017 "
        "--train-cooccurrence shards/train2017/cooccurrence.h5 --out shards/ooc"
    ),
)
def build_ooc_cmd(cfg: OOCConfig) -> None:
    from scenectl.data.ooc import build_ooc, summary

    typer.echo(summary(build_ooc(cfg), cfg.out))
