"""`scenectl distill`: train an object classifier on object crops with the context model as teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command


@command(
    "distill",
    help=(
        "Distil the context model into an object classifier (Hinton, Vinyals, Dean 2015). The "
        "student sees object.jpg (the unmasked crop), the frozen teacher the masked scene (jpg + mask); loss = "
        "(1 - alpha) CE + alpha T² KL(softmax(t/T) || softmax(s/T)). The shards need object.jpg (build them with "
        "`scenectl build-shards --with-object`); teacher and shards must name the same classes. With --compare "
        "(default) the student is also trained without the teacher (alpha = 0) at the same budget and seed. "
        "Writes OUT/kd/ and OUT/ce/ run folders, OUT/report.json, report.md and curves.png. See docs/transfer.md.\n\n"
        "Example:\n\n"
        "  scenectl build-shards --with-object --split train2017 --out shards/train-obj\n\n"
        "  scenectl distill --teacher runs/train/best.pt --student resnet18 --shards shards/train-obj "
        "--val-shards shards/val-obj --temperature 4 --alpha 0.5 --epochs 5"
    ),
)
def distill_cmd(
    teacher: Path = typer.Option(Path("runs/train/best.pt"), "--teacher", help="Context checkpoint (scenectl train)."),
    student: str = typer.Option("resnet18", "--student", help="Student architecture (resnet18, ffc, ...)."),
    shards: str = typer.Option("shards/train2017", "--shards", help="Training shard set with object.jpg."),
    val_shards: str = typer.Option("shards/val2017", "--val-shards", help="Validation shard set with object.jpg."),
    out: Path = typer.Option(Path("runs/distill"), "--out", "-o", help="Output folder."),
    temperature: float = typer.Option(4.0, "--temperature", "-T", help="Softmax temperature T of the KD term."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the KD term (0: plain cross-entropy)."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Also train the student without the teacher."),
    epochs: int = typer.Option(10, "--epochs"),
    max_steps: int = typer.Option(0, "--max-steps", help="Stop each run after this many steps (0: no limit)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd."),
    weight_decay: float = typer.Option(0.05, "--weight-decay"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Student input size [default: the shards']."),
    workers: int = typer.Option(0, "--workers", help="DataLoader processes (0 = in process)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the runs in --out from their last.pt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the runs in --out."),
) -> None:
    from scenectl.distill import DistillConfig, distill as run_distill

    from scenectl.transfer import summary_text

    cfg = DistillConfig(teacher=str(teacher), student=student, shards=shards, val_shards=val_shards, out=str(out),
                        temperature=temperature, alpha=alpha, compare=compare, epochs=epochs, max_steps=max_steps,
                        batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                        image_size=image_size, workers=workers, device=device, seed=seed, resume=resume,
                        overwrite=overwrite)
    rep = run_distill(cfg)
    typer.echo("student on the validation object crops (kd = with the teacher, ce = without):")
    typer.echo(summary_text(rep))
    t = rep["teacher_val"]
    typer.echo(f"teacher on the validation scenes (context only): top-1 {100 * t['val_top1']:.1f}, "
               f"top-5 {100 * t['val_top5']:.1f}")
