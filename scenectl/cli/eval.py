"""`scenectl eval`: top-k, class-balanced top-k, co-occurrence plausibility and baselines for a checkpoint."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import EvalConfig


@command(
    "eval",
    EvalConfig,
    help=(
        "Evaluate a checkpoint on one or more shard sets: top-1/3/5/10 and every --topk, each micro and "
        "class-balanced (over the classes with --min-class-samples targets); supercategory top-1/5; per-class "
        "accuracy; co-occurrence plausibility@10 beside its attainable maximum (training split's counts, from the "
        "checkpoint or --cooccurrence) for the model, the true labels and the baselines on the same samples: class "
        "prior, label-only "
        "co-occurrence naive Bayes, uniform random, and the mask-only shape-leakage control (a classifier of the "
        "hidden region's shape, size and position alone, fitted on the checkpoint's training shards). Every number "
        "has a 95% bootstrap interval over images (--bootstrap), and the model's paired difference to each "
        "baseline says whether it is told apart from noise. Writes report.json, report.md, predictions.h5, "
        "baselines.png, confusion.png, per_class.png and config.json into --out; with several --shards also "
        "comparison.png and one sub-report per set under sets/. Runs in one process (see docs/evaluation.md).\n\n"
        "Example (defaults chain from `scenectl train`):\n\n"
        "  scenectl eval --topk 50\n\n"
        "  scenectl eval --checkpoint runs/ffc/best.pt --shards shards/val-circle --shards shards/val-square "
        "--topk 1 --topk 50 --out runs/ffc/eval-shapes\n\n"
        "  scenectl eval --config runs/ffc/eval/config.json --out runs/ffc/eval-again   (rerun an eval from its "
        "config.json)"
    ),
)
def eval_cmd(cfg: EvalConfig) -> None:
    from scenectl.evaluate import evaluate as main, summary_text

    rep = main(cfg)
    typer.echo(summary_text(rep, rep["out"]))
