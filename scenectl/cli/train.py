"""`scenectl train`: options -> TrainConfig -> scenectl.train.train."""

from __future__ import annotations

import os
from typing import Optional

import typer

from scenectl.cli._app import command

_HELP = """Train a network to name the hidden object from its context.

Defaults chain from `scenectl build-shards` (which writes shards/train2017 and shards/val2017), so after building
both splits this is enough:

  scenectl train --arch ffc

Other examples:

  scenectl train --shards shards/train2017 --val-shards shards/val2017 --arch ffc_resnet18 --out runs/ffc

  scenectl train --shards 'https://host/coco/train2017/shard-{000000..000117}.tar' --arch resnet18

  torchrun --nproc_per_node 4 -m scenectl train --arch ffc --batch-size 128   (DDP, one process per GPU)

  scenectl train --out runs/ffc --arch ffc --resume   (continue after an interruption)

Writes OUT/config.json, OUT/metrics.jsonl, OUT/last.pt and OUT/best.pt. See docs/training.md.
"""


@command("train", help=_HELP)
def train(
    shards: str = typer.Option("shards/train2017", help="Training shard set: folder, brace pattern or URL."),
    val_shards: str = typer.Option("shards/val2017", help="Validation shard set (same forms as --shards)."),
    arch: str = typer.Option("resnet18", help="Model: resnet18/34/50, ffc_resnet18/34/50; aliases resnet, ffc."),
    out: str = typer.Option("runs/train", help="Run folder (config.json, metrics.jsonl, last.pt, best.pt)."),
    image_size: Optional[int] = typer.Option(None, help="Input size; default: the shards' size (build default 256)."),
    epochs: int = typer.Option(30, help="Epochs; the cosine schedule spans them all."),
    max_steps: int = typer.Option(0, help="Stop after this many steps in all (0: no limit; schedule unchanged)."),
    steps_per_epoch: Optional[int] = typer.Option(None, help="Steps per epoch; default: samples // (batch x ranks)."),
    batch_size: int = typer.Option(64, help="Batch size per process."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate; default 0.1 x global batch / 256 (sgd), 1e-3 (adamw)."),
    optimizer: str = typer.Option("sgd", help="sgd (Nesterov momentum 0.9) or adamw."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay; default 1e-4 (sgd), 0.05 (adamw)."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing of the training loss."),
    warmup_steps: Optional[int] = typer.Option(None, help="Linear warm-up steps; default 5% of all steps."),
    workers: int = typer.Option(min(4, os.cpu_count() or 1),
                                help="DataLoader worker processes per rank (0: load in the main process)."),
    seed: int = typer.Option(0, help="Seed for weights, data order and augmentation."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    amp: bool = typer.Option(True, help="Mixed precision on CUDA (bf16, or fp16 with loss scaling)."),
    mask_channel: bool = typer.Option(True, help="Give the model the hidden region as a 4th input channel."),
    pretrained: Optional[str] = typer.Option(None, help="'imagenet' or a torchvision state-dict file (ResNets)."),
    augment: bool = typer.Option(True, help="Random crop around the hidden region, flip, colour jitter."),
    min_scale: float = typer.Option(0.35, help="Smallest crop, as a fraction of the image area."),
    shuffle_buffer: int = typer.Option(1000, help="Samples held in each stream's shuffle buffer."),
    tensorboard: bool = typer.Option(False, help="Also log to OUT/tensorboard (needs scenectl[tensorboard])."),
    skip_corrupt: bool = typer.Option(False, help="Skip and count corrupt samples/shards instead of stopping."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last.pt."),
    overwrite: bool = typer.Option(False, help="Replace the run in --out."),
    log_every: int = typer.Option(50, help="Write a metrics.jsonl line every N steps."),
    checkpoint_every: int = typer.Option(500, help="Also save last.pt every N steps within an epoch (0: off)."),
) -> None:
    from scenectl.train import TrainConfig, train as run_training

    cfg = TrainConfig(
        shards=shards, val_shards=val_shards, out=out, arch=arch, image_size=image_size, epochs=epochs,
        max_steps=max_steps, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, optimizer=optimizer,
        weight_decay=weight_decay, label_smoothing=label_smoothing, warmup_steps=warmup_steps, workers=workers,
        seed=seed, device=device, amp=amp, mask_channel=mask_channel, pretrained=pretrained, augment=augment,
        min_scale=min_scale, shuffle_buffer=shuffle_buffer, tensorboard=tensorboard, skip_corrupt=skip_corrupt,
        resume=resume, overwrite=overwrite, log_every=log_every, checkpoint_every=checkpoint_every,
    )
    metrics = run_training(cfg)
    if metrics:
        typer.echo(f"done: val top-1 {metrics['val_top1']:.3f}, top-5 {metrics['val_top5']:.3f} -> {out}")
