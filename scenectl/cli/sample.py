"""`scenectl sample`: write the synthetic scenes (COCO layout) that the rest of the pipeline reads by default."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from scenectl.cli._app import command
from scenectl.data.synthetic import SampleConfig


@command(
    "sample",
    SampleConfig,
    help=(
        "Write a small synthetic dataset in COCO 2017's layout (annotations/instances_{train,val}2017.json, "
        "train2017/, val2017/) whose scenes have context structure: five scene types (kitchen, street, beach, "
        "forest, office), each with its own background and co-occurring classes, 16 classes in all. "
        "Lets build-shards, train and eval run offline. See docs/synthetic.md.\n\n"
        "Example:\n\n"
        "  scenectl sample --out data/scenes --train-images 300 --seed 0\n\n"
        "  scenectl build-shards --shape circle --max-area 0.3"
    ),
)
def sample(cfg: SampleConfig) -> None:
    from scenectl.data.synthetic import generate_scenes

    summary = generate_scenes(Path(cfg.out), **{k: v for k, v in asdict(cfg).items() if k != "out"})
    for split, counts in summary["splits"].items():
        typer.echo(f"{split}: {counts['images']} images, {counts['annotations']} annotations")
    typer.echo(f"{len(summary['classes'])} classes in {len(summary['scene_types'])} scene types "
               f"({', '.join(summary['scene_types'])}), written to {summary['out']}")
    typer.echo(f"next: scenectl build-shards --coco-root {cfg.out} --shape circle --max-area 0.3")
