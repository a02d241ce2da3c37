"""`scenectl predict`: hide a region of one image as build-shards would and print the model's top classes."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.cli._config import OPTIONS_FILE_HELP
from scenectl.config import PredictConfig


@command(
    "predict",
    PredictConfig,
    config_help=OPTIONS_FILE_HELP,
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
def predict_cmd(cfg: PredictConfig) -> None:
    from scenectl.predict import predict

    res = predict(cfg)
    p = res["params"]
    typer.echo(f"checkpoint: {res['checkpoint']}")
    typer.echo(f"hidden: {p['shape']}, fill {p['fill']}, margin {p['margin']} px, {100 * res['hidden_fraction']:.1f}% "
               f"of the image; letterboxed to {p['image_size']} px (parameters: {res['params_source']})")
    for note in res["notes"]:
        typer.echo(f"note: {note}")
    width = max(len(t["class"]) for t in res["top"])
    for i, t in enumerate(res["top"], 1):
        typer.echo(f"{i:>3}. {t['class']:<{width}}  {100 * t['probability']:6.2f}%")
    if res["out"]:
        typer.echo(f"wrote {res['out']}")
