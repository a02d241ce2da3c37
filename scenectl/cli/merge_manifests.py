"""`scenectl merge-manifests`: join the part manifests of a build made with --part i/n."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import MergeConfig


@command("merge-manifests", MergeConfig, config_help=None)
def merge_manifests_cmd(cfg: MergeConfig) -> None:
    """Check that all n parts of a build are present and compatible, and write DIR/manifest.json.

    Example:

      for i in 0 1 2 3; do scenectl build-shards --split train2017 --part $i/4 & done; wait

      scenectl merge-manifests shards/train2017
    """
    from scenectl.data.shards import merge_manifests, summary

    typer.echo(summary(merge_manifests(cfg.directory), cfg.directory))
