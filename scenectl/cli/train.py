"""`scenectl train`: options (scenectl.config.TrainConfig) -> scenectl.train.train."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import TrainConfig

_HELP = """Train a network to name the hidden object from its context.

Defaults chain from `scenectl build-shards` (which writes shards/train2017 and shards/val2017), so after building
both splits this is enough:

  scenectl train --arch ffc

Other examples:

  scenectl train --shards shards/train2017 --val-shards shards/val2017 --arch ffc_resnet18 --out runs/ffc

  scenectl train --shards 'https://host/coco/train2017/shard-{000000..000117}.tar' --arch resnet18

  torchrun --nproc_per_node 4 -m scenectl train --arch ffc --batch-size 128   (DDP, one process per GPU)

  scenectl train --out runs/ffc --arch ffc --resume   (continue after an interruption, with the same options)

  scenectl train --config runs/ffc/config.json --out runs/ffc-again   (rerun a run from its config.json)

Writes OUT/config.json, OUT/metrics.jsonl, OUT/last.pt, OUT/best.pt and OUT/curves.png. See docs/training.md.
"""


@command("train", TrainConfig, help=_HELP)
def train(cfg: TrainConfig) -> None:
    from scenectl.train import train as run_training

    metrics = run_training(cfg)
    if metrics:
        typer.echo(f"done: val top-1 {metrics['val_top1']:.3f}, top-5 {metrics['val_top5']:.3f} -> {cfg.out}")
