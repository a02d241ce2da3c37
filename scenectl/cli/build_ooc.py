"""`scenectl build-ooc`: an out-of-context test set (objects pasted where their class never occurs) + controls."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command


@command(
    "build-ooc",
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
def build_ooc_cmd(
    coco_root: Path = typer.Option(..., "--coco-root", help="COCO root (annotations/instances_SPLIT.json, SPLIT/)."),
    split: str = typer.Option("val2017", "--split", help="Split whose images are hosts and donors."),
    train_cooccurrence: Path = typer.Option(..., "--train-cooccurrence",
                                            help="The training shards' cooccurrence.h5 (or their folder)."),
    out: Path = typer.Option(Path("shards/ooc"), "--out", "-o", help="Output shard folder."),
    max_pairs: int = typer.Option(0, "--max-pairs", help="Stop after this many (OOC, control) pairs (0: all)."),
    shape: Optional[str] = typer.Option(None, "--shape", help="square, circle, box or instance [default: training's]."),
    fill: Optional[str] = typer.Option(None, "--fill", help="mean, black, noise or blur [default: training's]."),
    margin: Optional[int] = typer.Option(None, "--margin"),
    image_size: Optional[int] = typer.Option(None, "--image-size"),
    max_area: Optional[float] = typer.Option(None, "--max-area"),
    min_area: Optional[int] = typer.Option(None, "--min-area", help="Minimum pasted instance pixels."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an OOC set already in --out."),
) -> None:
    from scenectl.data.ooc import OOCConfig, build_ooc, summary

    cfg = OOCConfig(coco_root=str(coco_root), split=split, train_cooccurrence=str(train_cooccurrence), out=str(out),
                    max_pairs=max_pairs, shape=shape, fill=fill, margin=margin, image_size=image_size,
                    max_area=max_area, min_area=min_area, seed=seed, overwrite=overwrite)
    typer.echo(summary(build_ooc(cfg), cfg.out))
