"""`scenectl fuse`: product of experts of an object classifier and the context model, with OOC analysis."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._net import BACKOFF, RETRIES, TIMEOUT
from scenectl.config import DEVICE_HELP, LOADER_WORKERS_HELP


@command(
    "fuse",
    help=(
        "Combine an object classifier (on object.jpg) with the context model (on the masked scene): "
        "log p ∝ log p_obj + w · log p_ctx, w chosen on --shards from a grid (--weight, repeatable; default "
        "0, 0.1, ..., 2). Reports object-only, context-only and fused accuracy and where fusion changes the "
        "answer (fixed / broken), on --shards and, separately, on an out-of-context set from `scenectl build-ooc` "
        "(its out-of-context and in-context halves, and how well the context model's surprise flags OOC objects: "
        "ROC AUC). Writes report.json, report.md, weights.png. See docs/transfer.md.\n\n"
        "Example:\n\n"
        "  scenectl fuse --context runs/train/best.pt --object runs/distill/ce/best.pt "
        "--shards shards/val-obj --ooc-shards shards/ooc --out runs/fuse"
    ),
)
def fuse_cmd(
    context: Path = typer.Option(Path("runs/train/best.pt"), "--context", help="Context checkpoint (scenectl train)."),
    object_: Path = typer.Option(..., "--object", help="Object classifier checkpoint (distill / transfer), same classes."),
    shards: str = typer.Option("shards/val2017", "--shards", help="Validation shard set with object.jpg (w is chosen here)."),
    ooc_shards: Optional[str] = typer.Option(None, "--ooc-shards", help="Out-of-context set (scenectl build-ooc)."),
    out: Path = typer.Option(Path("runs/fuse"), "--out", "-o", help="Output folder."),
    weights: Optional[List[float]] = typer.Option(None, "--weight", "-w", help="A value of w in the grid (repeatable) "
                                                  "[default: 0, 0.1, ..., 2]."),
    batch_size: int = typer.Option(64, "--batch-size", help="Samples per forward pass."),
    workers: int = typer.Option(0, "--workers", help=LOADER_WORKERS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report already in --out."),
    retries: Optional[int] = RETRIES,
    timeout: Optional[float] = TIMEOUT,
    backoff: Optional[float] = BACKOFF,
) -> None:
    from scenectl.data.remote import net_options
    from scenectl.fuse import DEFAULT_WEIGHTS, FuseConfig, fuse, summary_text

    cfg = FuseConfig(context=str(context), object=str(object_), shards=shards, ooc_shards=ooc_shards, out=str(out),
                     weights=list(weights or DEFAULT_WEIGHTS), batch_size=batch_size, workers=workers, device=device,
                     overwrite=overwrite, net=net_options(retries, timeout, backoff))
    typer.echo(summary_text(fuse(cfg)))
