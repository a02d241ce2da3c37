"""`scenectl build-shards`: COCO instances -> webdataset shards of scenes with one object hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._config import CONFIG_HELP
from scenectl.config import from_command_line
from scenectl.data.shards import BuildConfig, build_shards, summary
from scenectl.errors import ScenectlError

DEFAULT_SPLITS = ["train2017", "val2017"]


def split_configs(cls: type, options: dict[str, Any], typed: set[str],
                  config_file: Optional[Path]) -> list[BuildConfig]:
    """One BuildConfig per split to build: the options (--split a list, --out a template), or with --config FILE the
    file's options (its split, its out) overridden by those typed on the command line."""
    if options["annotations"] is not None:
        if options["split"]:
            raise ScenectlError("--split goes with --coco-root; --annotations names its own split")
        splits = [options["annotations"].stem]
    else:  # None: the config file's split
        splits = options["split"] or ([None] if config_file is not None else DEFAULT_SPLITS)
    template = str(options["out"]) if "out" in typed or config_file is None else None
    if len(splits) > 1 and "{split}" not in (template or ""):
        raise ScenectlError(f"--out {template or 'FOLDER'!r} must contain {{split}} when building several splits "
                            f"({', '.join(splits)})")
    cfgs = []
    for s in splits:
        opts = {**options, "split": s or cls.split}
        cfg = from_command_line(cls, opts, typed | ({"split"} if s else set()), config_file)
        if template is not None:
            cfg.out = Path(template.format(split=cfg.split))
        cfgs.append(cfg)
    return cfgs


@command("build-shards", BuildConfig, build=split_configs, config_help=CONFIG_HELP + " Default --out: the file's.")
def build_shards_cmd(cfgs: list[BuildConfig]) -> None:
    """Write one sample per eligible COCO instance: the whole scene with that instance hidden.

    Example (synthetic scenes are generated in data/scenes first if there is no COCO):

      scenectl build-shards --shape circle --max-area 0.3

      scenectl build-shards --coco-root ~/coco --split val2017 --out /data/shards/val --workers 8
    """
    for cfg in cfgs:  # every split's options and source checked before the first is built
        cfg.check()
    for cfg in cfgs:
        cfg.source(typer.echo)
    for cfg in cfgs:
        typer.echo(summary(build_shards(cfg, echo=typer.echo), cfg.out))
