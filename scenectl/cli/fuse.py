"""`scenectl fuse`: product of experts of an object classifier and the context model, with OOC analysis."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import FuseConfig


@command(
    "fuse",
    FuseConfig,
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
def fuse_cmd(cfg: FuseConfig) -> None:
    from scenectl.fuse import fuse, summary_text

    typer.echo(summary_text(fuse(cfg)))
