"""`scenectl transfer`: fine-tune or linear-probe a context model's backbone on another classification task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command


@command(
    "transfer",
    help=(
        "Reuse a context checkpoint's backbone for another classification task: a folder in torchvision's "
        "ImageFolder layout (ROOT/<class>/<image>.jpg, e.g. from `scenectl export-imagefolder`) or a shard set's "
        "object crops. The head is replaced for the target's classes. --mode linear trains only the head (backbone "
        "weights and BatchNorm statistics frozen); --mode finetune trains all, the backbone at lr × "
        "--backbone-lr-scale. --compare-scratch also trains the same architecture from random weights at the same "
        "budget and seed and prints both side by side (top-1/top-5, micro and class-balanced). Writes "
        "OUT/<init>/ run folders (config.json, metrics.jsonl, last.pt, best.pt), OUT/report.json, report.md and "
        "curves.png. See docs/transfer.md.\n\n"
        "Example:\n\n"
        "  scenectl export-imagefolder shards/train-obj crops/train\n\n"
        "  scenectl transfer --checkpoint runs/train/best.pt --train crops/train --val crops/val "
        "--mode finetune --backbone-lr-scale 0.1 --compare-scratch --epochs 5 --out runs/transfer"
    ),
)
def transfer_cmd(
    checkpoint: Path = typer.Option(Path("runs/train/best.pt"), "--checkpoint", "-c",
                                    help="Context checkpoint (scenectl train)."),
    train: str = typer.Option(..., "--train", help="Target training data: ImageFolder tree or shard set."),
    val: str = typer.Option(..., "--val", help="Target validation data, same classes."),
    mode: str = typer.Option("finetune", "--mode", help="finetune (train all) or linear (head only)."),
    init: str = typer.Option("context", "--init", help="context (checkpoint's backbone) or scratch (random)."),
    compare_scratch: bool = typer.Option(False, "--compare-scratch", help="Run both inits and compare them."),
    backbone_lr_scale: float = typer.Option(1.0, "--backbone-lr-scale",
                                            help="finetune from context: backbone lr = lr × this (e.g. 0.1)."),
    out: Path = typer.Option(Path("runs/transfer"), "--out", "-o", help="Output folder."),
    epochs: int = typer.Option(10, "--epochs"),
    max_steps: int = typer.Option(0, "--max-steps", help="Stop each run after this many steps (0: no limit)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the head (and of the backbone times the scale)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd."),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size [default: the checkpoint's]."),
    workers: int = typer.Option(0, "--workers", help="DataLoader processes (0 = in process)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the runs in --out from their last.pt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the runs in --out."),
) -> None:
    from scenectl.transfer import TransferConfig, summary_text, transfer as run_transfer

    cfg = TransferConfig(checkpoint=str(checkpoint), train=train, val=val, mode=mode, init=init,
                         compare_scratch=compare_scratch, backbone_lr_scale=backbone_lr_scale, out=str(out),
                         epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, optimizer=optimizer,
                         weight_decay=weight_decay, image_size=image_size, workers=workers, device=device, seed=seed,
                         resume=resume, overwrite=overwrite)
    typer.echo(summary_text(run_transfer(cfg)))
