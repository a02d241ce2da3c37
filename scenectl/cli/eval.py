"""`scenectl eval`: top-k, class-balanced top-k, co-occurrence plausibility and baselines for a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from scenectl.cli._app import command


@command(
    "eval",
    help=(
        "Evaluate a checkpoint on one or more shard sets: top-1/5/10 and every --topk, each micro and "
        "class-balanced; per-class accuracy; co-occurrence plausibility@10 (training split's counts, from the "
        "checkpoint) for the model, the true labels and the baselines on the same samples: class prior, label-only "
        "co-occurrence naive Bayes, uniform random, and the mask-only shape-leakage control (a classifier of the "
        "hidden region's shape, size and position alone, fitted on the checkpoint's training shards). Every number "
        "has a 95% bootstrap interval over images (--bootstrap), and the model's paired difference to each "
        "baseline says whether it is told apart from noise. Writes report.json, report.md, predictions.h5, "
        "baselines.png, confusion.png, per_class.png and config.json into --out; with several --shards also "
        "comparison.png and one sub-report per set under sets/. Runs in one process (see docs/evaluation.md).\n\n"
        "Example (defaults chain from `scenectl train`):\n\n"
        "  scenectl eval --topk 50\n\n"
        "  scenectl eval --checkpoint runs/ffc/best.pt --shards shards/val-circle --shards shards/val-square "
        "--topk 1 --topk 50 --out runs/ffc/eval-shapes"
    ),
)
def eval_cmd(
    checkpoint: Path = typer.Option(Path("runs/train/best.pt"), "--checkpoint", "-c",
                                    help="Checkpoint written by scenectl train (or transfer/distill)."),
    shards: Optional[List[str]] = typer.Option(
        None, "--shards", help="Shard set folder or webdataset URL pattern; repeat to compare sets "
                               "[default: shards/val2017]."),
    topk: Optional[List[int]] = typer.Option(
        None, "--topk", "-k", help="Extra k to report (repeatable); 1, 5 and 10 are always reported; "
                                   "k above the class count is clamped."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: <checkpoint's folder>/eval]."),
    device: str = typer.Option("auto", "--device",
                               help="auto (a GPU when present, else cpu), cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per forward pass."),
    workers: int = typer.Option(2, "--workers", help="DataLoader processes decoding shards (0 = in process)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random baseline, the bootstrap resamples and the "
                                               "mask-only baseline's held-out split."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples of the images for the 95% "
                                                            "intervals (0 = no intervals)."),
    mask_only_train: Optional[str] = typer.Option(
        None, "--mask-only-train", help="Shard set the mask-only baseline is fitted on [default: the checkpoint's "
                                        "training shards, from its config]."),
    no_mask_only: bool = typer.Option(False, "--no-mask-only",
                                      help="Skip the mask-only baseline (the report says so)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report already in --out."),
    no_logits: bool = typer.Option(False, "--no-logits", help="Store only the top-k in predictions.h5, not (N, C) logits."),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="Evaluate at most this many samples per set."),
) -> None:
    from scenectl.evaluate import EvalConfig, main, summary_text

    cfg = EvalConfig(checkpoint=str(checkpoint), shards=list(shards or ["shards/val2017"]), topk=list(topk or []),
                     out=str(out) if out else None, device=device, batch_size=batch_size, workers=workers,
                     seed=seed, overwrite=overwrite, save_logits=not no_logits, max_samples=max_samples,
                     bootstrap=bootstrap, mask_only=not no_mask_only, mask_only_train=mask_only_train)
    rep = main(cfg)
    typer.echo(summary_text(rep, rep["out"]))
