"""`scenectl quickstart`: sample -> build-shards -> train -> eval in one command, offline, in minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command
from scenectl.config import DEVICE_HELP
from scenectl.quickstart import RECIPES, QuickstartConfig, quickstart


@command(
    "quickstart",
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
def quickstart_cmd(
    out: Path = typer.Option(Path("quickstart"), "--out", "-o", help="Folder for every step's output."),
    coco_root: Optional[Path] = typer.Option(None, "--coco-root", help="Real COCO root instead of synthetic scenes."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs. Default: the recipe's (synthetic "
                                         f"{RECIPES['synthetic']['epochs']}, --coco-root {RECIPES['coco']['epochs']})."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Shard and model input size (px). Default: "
                                             f"the recipe's ({RECIPES['synthetic']['image_size']}, --coco-root "
                                             f"{RECIPES['coco']['image_size']})."),
    aux_visible: Optional[float] = typer.Option(None, "--aux-visible", help="train --aux-visible: weight of the "
                                                "visible-classes head. Default: the recipe's (synthetic "
                                                f"{RECIPES['synthetic']['aux_visible']:g}, --coco-root "
                                                f"{RECIPES['coco']['aux_visible']:g})."),
    arch: str = typer.Option(QuickstartConfig.arch, "--arch", help="Model (resnet18, ffc, ...)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    workers: int = typer.Option(QuickstartConfig.workers, "--workers", help="Processes building shards and loading "
                                "batches (0: the main process alone)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same data, weights and report."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier quickstart in --out."),
    train_images: int = typer.Option(QuickstartConfig.train_images, "--train-images", hidden=True),
    val_images: int = typer.Option(QuickstartConfig.val_images, "--val-images", hidden=True),
    batch_size: int = typer.Option(QuickstartConfig.batch_size, "--batch-size", hidden=True),
) -> None:
    cfg = QuickstartConfig(out=str(out), coco_root=str(coco_root) if coco_root else None, train_images=train_images,
                           val_images=val_images, image_size=image_size, arch=arch, epochs=epochs, aux_visible=aux_visible,
                           batch_size=batch_size, workers=workers, device=device, seed=seed, overwrite=overwrite)
    quickstart(cfg, echo=typer.echo)
