"""`scenectl predict`: hide a region of one image as build-shards would and print the model's top classes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from scenectl.cli._app import command
from scenectl.config import DEVICE_HELP


@command(
    "predict",
    help=(
        "Hide a region of IMAGE exactly as build-shards hides an object (same margin, shape, fill and letterbox "
        "as the checkpoint's training shards when their manifest can be found, else build-shards' defaults) and "
        "print the model's top classes with probabilities. The region is a --box x,y,w,h, or for --shape "
        "instance a --polygon x1,y1,x2,y2,... or a --mask-file (non-zero = object), in pixels of the upright "
        "image. A region partly outside the image is clipped (with a note); one wholly outside is refused.\n\n"
        "Example:\n\n"
        "  scenectl predict --checkpoint runs/train/best.pt kitchen.jpg --box 120,80,60,90 --shape circle "
        "--out pred.png"
    ),
)
def predict_cmd(
    image: Path = typer.Argument(..., help="The image (JPEG, PNG, ...)."),
    checkpoint: Path = typer.Option(Path("runs/train/best.pt"), "--checkpoint", "-c", help="Checkpoint to ask."),
    box: Optional[str] = typer.Option(None, "--box", help="Object box x,y,w,h in pixels."),
    polygon: Optional[str] = typer.Option(None, "--polygon", help="Object outline x1,y1,x2,y2,... (instance shape)."),
    mask_file: Optional[Path] = typer.Option(None, "--mask-file", help="Object mask PNG, image-sized, non-zero = object."),
    shape: Optional[str] = typer.Option(None, "--shape", help="square, circle, box or instance [default: as trained]."),
    fill: Optional[str] = typer.Option(None, "--fill", help="mean, black, noise or blur [default: as trained]."),
    margin: Optional[int] = typer.Option(None, "--margin", help="Dilation in pixels [default: as trained]."),
    top: int = typer.Option(10, "--top", help="Classes to list."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG: the masked input beside a bar chart."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise / blur fills."),
) -> None:
    from scenectl.predict import PredictConfig, predict

    cfg = PredictConfig(str(checkpoint), str(image), box, polygon, str(mask_file) if mask_file else None, shape, fill,
                        margin, top, str(out) if out else None, device, seed)
    res = predict(cfg)
    p = res["params"]
    typer.echo(f"hidden: {p['shape']}, fill {p['fill']}, margin {p['margin']} px, {100 * res['hidden_fraction']:.1f}% "
               f"of the image; letterboxed to {p['image_size']} px (parameters: {res['params_source']})")
    for note in res["notes"]:
        typer.echo(f"note: {note}")
    width = max(len(t["class"]) for t in res["top"])
    for i, t in enumerate(res["top"], 1):
        typer.echo(f"{i:>3}. {t['class']:<{width}}  {100 * t['probability']:6.2f}%")
    if res["out"]:
        typer.echo(f"wrote {res['out']}")
