"""The options of build-ooc and export-imagefolder (scenectl.options), apart from their modules so that the command
line reads them without importing what those commands need to run (torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scenectl.data.masks import FILLS, SHAPES
from scenectl.data.remote import Net
from scenectl.options import Config, Options, group, option


@dataclass
class OOCConfig(Config):
    """`scenectl build-ooc`; unset geometry (None) is the training shards' value (manifest params), checked when
    read."""

    coco_root: str = option("data/coco", "COCO root (annotations/instances_SPLIT.json, SPLIT/).", type=Path,
                            required=True)
    split: str = option("val2017", "Split whose images are hosts and donors.")
    train_cooccurrence: str = option("shards/train2017/cooccurrence.h5", "The training shards' cooccurrence.h5 (or "
                                     "their folder).", type=Path, required=True)
    out: str = option("shards/ooc", "Output shard folder.", "--out", "-o", type=Path)
    max_pairs: int = option(0, "Stop after this many (OOC, control) pairs (0: all).")
    shape: str | None = option(None, "square, circle, box or instance [default: training's].", choices=SHAPES)
    fill: str | None = option(None, "mean, black, noise or blur [default: training's].", choices=FILLS)
    margin: int | None = option(None, "Dilation of the pasted mask in pixels [default: training's].")
    image_size: int | None = option(None, "Output side in pixels (letterboxed) [default: training's].")
    max_area: float | None = option(None, "Largest hidden fraction of the host image (a larger paste is shrunk) "
                                          "[default: training's].")
    min_area: int | None = option(None, "Minimum pasted instance pixels.")
    seed: int = option(0, "Seed of the donor and host draws and of the noise/blur fills; same inputs + seed -> same "
                          "set.")
    maxcount: int = 1000  # samples per shard
    overwrite: bool = option(False, "Replace an OOC set already in --out.", "--overwrite")


@dataclass(init=False)
class ExportConfig(Options):
    """`scenectl export-imagefolder`."""

    shards: str = option("shards/val2017", "Shard set folder or webdataset URL pattern.", argument=True, required=True)
    out: str = option("imagefolder/val2017", "Output folder of the ImageFolder tree.", type=Path, argument=True,
                      required=True)
    member: str = option("auto", "auto, object (object.jpg) or jpg.", choices=("auto", "object", "jpg"))
    overwrite: bool = option(False, "Replace an earlier export in OUT.", "--overwrite")
    net: Net = group(Net)
