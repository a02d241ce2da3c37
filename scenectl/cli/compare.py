"""`scenectl compare`: models scored on the same samples, with 95% intervals and paired differences to a reference."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._net import BACKOFF, RETRIES, TIMEOUT
from scenectl.config import DEVICE_HELP, LOADER_WORKERS_HELP


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
def compare_cmd(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...",
                                       help="Eval folders, predictions.h5 files or checkpoints (two or more)."),
    reference: Optional[str] = typer.Option(None, "--reference", "-r",
                                            help="The input the others are compared with [default: the first]."),
    shards: Optional[List[str]] = typer.Option(
        None, "--shards", help="Shard set the checkpoint inputs are scored on (repeatable); eval folders carry "
                               "their own predictions."),
    out: Path = typer.Option(Path("runs/compare"), "--out", "-o", help="Output folder."),
    topk: Optional[List[int]] = typer.Option(
        None, "--topk", "-k", help="Extra k to report (repeatable); 1, 5 and 10 are always reported."),
    bootstrap: int = typer.Option(1000, "--bootstrap",
                                  help="Bootstrap resamples of the images for the intervals (0 = no intervals)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per forward pass (checkpoint inputs)."),
    workers: int = typer.Option(2, "--workers", help=LOADER_WORKERS_HELP),
    max_samples: Optional[int] = typer.Option(None, "--max-samples",
                                              help="Score checkpoint inputs on at most this many samples per set."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report already in --out."),
    retries: Optional[int] = RETRIES,
    timeout: Optional[float] = TIMEOUT,
    backoff: Optional[float] = BACKOFF,
) -> None:
    from scenectl.compare import CompareConfig, compare, summary_text

    cfg = CompareConfig(inputs=list(inputs), reference=reference, shards=list(shards or []), out=str(out),
                        topk=list(topk or []), bootstrap=bootstrap, seed=seed, device=device, batch_size=batch_size,
                        workers=workers, max_samples=max_samples, overwrite=overwrite, retries=retries,
                        timeout=timeout, backoff=backoff)
    typer.echo(summary_text(compare(cfg)))
