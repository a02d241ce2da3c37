"""`scenectl rescore`: options (scenectl.config.RescoreConfig) -> scenectl.rescore.rescore."""

from __future__ import annotations

import typer

from scenectl.cli._app import command
from scenectl.config import RescoreConfig

_HELP = """Rescore any detector's COCO results with the context model, measured by COCOeval.

Each detection's box is hidden as build-shards hides an object for this checkpoint; the context model's evidence
for the detected class rescales its score (score x (p_ctx / prior)^w). w is chosen on a calibration half of the
images and AP before/after is reported on the other half, with a bootstrap interval of the difference.

Example:

  scenectl rescore --detections dets.json --images coco/val2017 --annotations coco/annotations/instances_val2017.json --checkpoint runs/train/best.pt --out runs/rescore

  scenectl rescore ... --weight 1.0 --relabel 2   (fixed w, every image evaluated; 2 alternative classes per box)

Writes OUT/rescored.json (COCO results, loadable by COCO.loadRes), report.json, report.md, delta_ap.png and
changed.png. See docs/detectors.md.
"""


@command("rescore", RescoreConfig, help=_HELP)
def rescore(cfg: RescoreConfig) -> None:
    from scenectl.rescore import rescore as run, summary_text

    typer.echo(summary_text(run(cfg)))
