"""`scenectl merge-manifests`: join the part manifests of a build made with --part i/n."""

from __future__ import annotations

from pathlib import Path

import typer

from scenectl.cli._app import command


@command("merge-manifests")
def merge_manifests_cmd(
    directory: Path = typer.Argument(..., help="Shard folder holding manifest.part-{i}-of-{n}.json for every i."),
) -> None:
    """Check that all n parts of a build are present and compatible, and write DIR/manifest.json.

    Example:

      for i in 0 1 2 3; do scenectl build-shards --split train2017 --part $i/4 & done; wait

      scenectl merge-manifests shards/train2017
    """
    from scenectl.data.shards import merge_manifests, summary

    typer.echo(summary(merge_manifests(directory), directory))
