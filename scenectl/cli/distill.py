"""`scenectl distill`: train an object classifier on object crops with the context model as teacher."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import DistillConfig


@command(
    "distill",
    DistillConfig,
    help=(
        "Distil the context model into an object classifier (Hinton, Vinyals, Dean 2015). The "
        "student sees object.jpg (the unmasked crop), the frozen teacher the masked scene (jpg + mask); loss = "
        "(1 - alpha) CE + alpha T² KL(softmax(t/T) || softmax(s/T)). The shards need object.jpg (build them with "
        "`scenectl build-shards --with-object`); teacher and shards must name the same classes. With --compare "
        "(default) the student is also trained without the teacher (alpha = 0) at the same budget and seed. "
        "Writes OUT/kd/ and OUT/ce/ run folders, OUT/report.json, report.md and curves.png; --resume continues "
        "them with the same options. See docs/transfer.md.\n\n"
        "Example:\n\n"
        "  scenectl build-shards --with-object --split train2017 --out shards/train-obj\n\n"
        "  scenectl distill --teacher runs/train/best.pt --student resnet18 --shards shards/train-obj "
        "--val-shards shards/val-obj --temperature 4 --alpha 0.5 --epochs 5"
    ),
)
def distill_cmd(cfg: DistillConfig) -> None:
    from scenectl.distill import distill as run_distill
    from scenectl.report import runs_summary as summary_text

    rep = run_distill(cfg)
    typer.echo("student on the validation object crops (kd = with the teacher, ce = without):")
    typer.echo(summary_text(rep))
    t = rep["teacher_val"]
    typer.echo(f"teacher on the validation scenes (context only): top-1 {100 * t['val_top1']:.1f}, "
               f"top-5 {100 * t['val_top5']:.1f}")
