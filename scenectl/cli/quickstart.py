"""`scenectl quickstart`: sample -> build-shards -> train -> eval in one command, offline, in minutes on a CPU."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.quickstart import QuickstartConfig, quickstart


@command(
    "quickstart",
    QuickstartConfig,
    help=(
        "Run the whole chain on the embedded synthetic scenes (no download): sample, build-shards (circle masks, "
        "64 px), train (resnet18, a few epochs), eval; ends with the results table beside the class-prior, "
        "co-occurrence and random baselines, and where the report and plots are. About 3-5 minutes on a "
        "2-core CPU. With --coco-root it runs the same chain on a real COCO layout, training with the small-data "
        "recipe (docs/training.md).\n\n"
        "Example:\n\n"
        "  scenectl quickstart\n\n"
        "  scenectl quickstart --coco-root /data/coco --out quickstart-coco"
    ),
)
def quickstart_cmd(cfg: QuickstartConfig) -> None:
    quickstart(cfg, echo=typer.echo)
