"""`scenectl build-shards`: COCO instances -> webdataset shards of scenes with one object hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._config import CONFIG_HELP, given
from scenectl.config import from_command_line
from scenectl.data.shards import COCO_ROOT_ENV, DEFAULT_COCO_ROOT, BuildConfig, build_shards, summary
from scenectl.errors import ScenectlError

DEFAULT_SPLITS = ["train2017", "val2017"]


@command("build-shards")
def build_shards_cmd(
    ctx: typer.Context,
    coco_root: Optional[Path] = typer.Option(
        None, "--coco-root", help=f"COCO-layout folder (annotations/instances_{{split}}.json, {{split}}/*.jpg). "
        f"Default: ${COCO_ROOT_ENV}, else {DEFAULT_COCO_ROOT} (where `scenectl sample` writes; generated first, "
        "with --seed, when missing)."),
    split: Optional[List[str]] = typer.Option(
        None, "--split", help="Split to build; repeat for several. Default: train2017 and val2017."),
    annotations: Optional[Path] = typer.Option(
        None, "--annotations", help="Any COCO-format instance file (instead of --coco-root/--split); needs --images."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder for --annotations."),
    out: str = typer.Option("shards/{split}", "--out", "-o", help="Output folder; {split} is replaced by the split name."),
    shape: str = typer.Option("square", "--shape", help="Hidden region: square | circle | box | instance."),
    fill: str = typer.Option("mean", "--fill", help="Hidden pixels: mean (RGB 124,116,104) | black | noise | blur."),
    max_area: float = typer.Option(0.3, "--max-area", help="Skip an instance whose hidden region exceeds this "
                                   "fraction of the image, in (0, 1]."),
    min_area: int = typer.Option(1024, "--min-area", help="Skip instances with fewer mask pixels "
                                 "(1024 = 32x32, COCO's small/medium boundary)."),
    margin: int = typer.Option(3, "--margin", help="Dilate the instance mask by this many pixels first."),
    image_size: int = typer.Option(256, "--image-size", help="Output side; the scene is letterboxed (longer side "
                                   "resized, shorter side padded with the mean colour)."),
    hide_same_class: bool = typer.Option(False, "--hide-same-class", help="Also hide every other instance of the "
                                         "target's class."),
    with_object: bool = typer.Option(False, "--with-object", help="Also store object.jpg, the unmasked instance crop."),
    task: str = typer.Option("masked", "--task", help="masked (scene with the object hidden) | object (unmasked "
                             "instance crops as jpg, for object classification)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image order (a seeded shuffle: every shard a random "
                             "sample of the split) and of the noise/blur fills; same inputs + seed -> same bytes."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Processes that decode images [default: one per "
                                          "core]; 0: the main process alone (so does 1). The shards are the same "
                                          "whatever the number.", show_default=False),
    maxcount: int = typer.Option(1000, "--maxcount", help="Samples per shard at most."),
    maxsize: float = typer.Option(1e9, "--maxsize", help="Bytes per shard at most (about)."),
    part: Optional[str] = typer.Option(None, "--part", help="i/n: build only part i (0-based) of n disjoint parts; "
                                       "then `scenectl merge-manifests DIR`."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted build of the same options."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing build in --out."),
    config_file: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP + " Default --out: the file's."),
) -> None:
    """Write one sample per eligible COCO instance: the whole scene with that instance hidden.

    Example (synthetic scenes are generated in data/scenes first if there is no COCO):

      scenectl build-shards --shape circle --max-area 0.3

      scenectl build-shards --coco-root ~/coco --split val2017 --out /data/shards/val --workers 8
    """
    options = {k: v for k, v in locals().items() if k not in ("ctx", "config_file")}
    cfgs = split_configs(options, given(ctx, options), config_file)
    for cfg in cfgs:  # every split's options and source checked before the first is built
        cfg.check()
    for cfg in cfgs:
        cfg.source(typer.echo)
    for cfg in cfgs:
        manifest = build_shards(cfg, echo=typer.echo)
        typer.echo(summary(manifest, cfg.out))


def split_configs(options: dict[str, Any], typed: set[str], config_file: Optional[Path]) -> list[BuildConfig]:
    """One BuildConfig per split to build: the options (--split a list, --out a template), or with --config FILE the
    file's options (its split, its out) overridden by those typed on the command line."""
    if options["annotations"] is not None:
        if options["split"]:
            raise ScenectlError("--split goes with --coco-root; --annotations names its own split")
        splits = [options["annotations"].stem]
    else:  # None: the config file's split
        splits = options["split"] or ([None] if config_file is not None else DEFAULT_SPLITS)
    template = options["out"] if "out" in typed or config_file is None else None
    if len(splits) > 1 and "{split}" not in (template or ""):
        raise ScenectlError(f"--out {template or 'FOLDER'!r} must contain {{split}} when building several splits "
                            f"({', '.join(splits)})")
    cfgs = []
    for s in splits:
        opts = {**options, "split": s or BuildConfig.split}
        cfg = from_command_line(BuildConfig, opts, typed | ({"split"} if s else set()), config_file)
        if template is not None:
            cfg.out = Path(template.format(split=cfg.split))
        cfgs.append(cfg)
    return cfgs
