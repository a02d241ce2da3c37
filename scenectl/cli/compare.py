"""`scenectl compare`: models scored on the same samples, with 95% intervals and paired differences to a reference."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import CompareConfig


@command(
    "compare",
    CompareConfig,
    help=(
        "Score several arms on exactly the same samples: each metric (top-1/3/5/10 and every --topk, micro and "
        "class-balanced; plausibility@10; supercategory top-1/5) with its 95% interval over images, widened by the "
        "across-seed variance for an arm of several seeds (per-seed values and the seed SD printed), and each arm's "
        "difference to --reference worded after Holm over the table's differences: higher, lower, or "
        "\"inconclusive\" where the interval contains 0; the minimum detectable difference is stated. An ARM is "
        "NAME=PATH[,PATH...] (one input per training seed) or a bare PATH (one seed); inputs are eval folders "
        "(their predictions.h5), predictions.h5 files, or checkpoints run on --shards. Inputs that do not cover "
        "the same samples are refused, naming the samples that differ. Writes report.json, report.md, scores.png "
        "and differences.png into --out (see docs/evaluation.md).\n\n"
        "Examples:\n\n"
        "  scenectl compare runs/r18/eval runs/ffc18/eval --reference runs/r18/eval\n\n"
        "  scenectl compare r18=runs/r18-s0/eval,runs/r18-s1/eval ffc=runs/ffc-s0/eval,runs/ffc-s1/eval -r r18\n\n"
        "  scenectl compare runs/r18/best.pt runs/ffc18/best.pt --shards shards/val2017 --out runs/compare"
    ),
)
def compare_cmd(cfg: CompareConfig) -> None:
    from scenectl.compare import compare, summary_text

    typer.echo(summary_text(compare(cfg)))
