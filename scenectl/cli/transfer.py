"""`scenectl transfer`: fine-tune or linear-probe a context model's backbone on another classification task."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import TransferConfig


@command(
    "transfer",
    TransferConfig,
    help=(
        "Reuse a context checkpoint's backbone for another classification task: a folder in torchvision's "
        "ImageFolder layout (ROOT/<class>/<image>.jpg, e.g. from `scenectl export-imagefolder`) or a shard set's "
        "object crops. The head is replaced for the target's classes. --mode linear trains only the head (backbone "
        "weights and BatchNorm statistics frozen); --mode finetune trains all, the backbone at lr × "
        "--backbone-lr-scale. --compare-scratch also trains the same architecture from random weights at the same "
        "budget and seed and prints both side by side (top-1/top-5, micro and class-balanced). Writes "
        "OUT/<init>/ run folders (config.json, metrics.jsonl, last.pt, best.pt, curves.png), OUT/report.json, "
        "report.md and curves.png. --resume continues the runs with the same options. See docs/transfer.md.\n\n"
        "Example:\n\n"
        "  scenectl export-imagefolder shards/train-obj crops/train\n\n"
        "  scenectl transfer --checkpoint runs/train/best.pt --train crops/train --val crops/val "
        "--mode finetune --backbone-lr-scale 0.1 --compare-scratch --epochs 5 --out runs/transfer"
    ),
)
def transfer_cmd(cfg: TransferConfig) -> None:
    from scenectl.report import runs_summary as summary_text
    from scenectl.transfer import transfer as run_transfer

    typer.echo(summary_text(run_transfer(cfg)))
