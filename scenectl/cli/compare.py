"""`scenectl compare`: models scored on the same samples, with 95% intervals and paired differences to a reference."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.cli._config import config_options
from scenectl.config import CompareConfig


@command(
    "compare",
    help=(
        "Score several models on exactly the same samples: each metric (top-1/5/10 and every --topk, micro and "
        "class-balanced; plausibility@10) with its 95% bootstrap interval over images, and each model's paired "
        "difference to --reference with its interval (the same image resamples for every model); a difference "
        "whose interval contains 0 is reported as \"inconclusive\". INPUTS are eval folders (their "
        "predictions.h5), predictions.h5 files, or checkpoints run on --shards. Inputs that do not cover the same "
        "samples are refused, naming the samples that differ. Writes report.json, report.md, scores.png and "
        "differences.png into --out (see docs/evaluation.md).\n\n"
        "Examples:\n\n"
        "  scenectl compare runs/r18/eval runs/ffc18/eval --reference runs/r18/eval\n\n"
        "  scenectl compare runs/r18/best.pt runs/ffc18/best.pt --shards shards/val2017 --out runs/compare"
    ),
)
@config_options(CompareConfig)
def compare_cmd(cfg: CompareConfig) -> None:
    from scenectl.compare import compare, summary_text

    typer.echo(summary_text(compare(cfg)))
