"""`scenectl quickstart`: the whole chain in one command, on data that needs no download.

    sample (synthetic scenes) -> build-shards (train2017, val2017) -> train -> eval

Every step is the library function its own subcommand calls (no subprocesses), with sizes picked so the chain ends in
a few minutes on a 2-core CPU: 64 px inputs, resnet18, a few epochs. `--coco-root DIR` skips the sampling and runs the
same chain on a real COCO layout (annotations/instances_{train,val}2017.json, train2017/, val2017/), training with the
small-data recipe (RECIPES["coco"]; docs/training.md).

    quickstart/
      scenes/                       # the synthetic COCO-layout dataset (absent with --coco-root)
      shards/train2017, shards/val2017
      run/                          # config.json, metrics.jsonl, last.pt, best.pt
      run/eval/                     # of last.pt: report.json, report.md, predictions.h5, confusion.png, per_class.png
      config.json                   # this QuickstartConfig

OUT is a `quickstart` folder (scenectl.folders.claim); each step claims its own sub-folder as its command would,
so --overwrite replaces an earlier quickstart step by step and never a folder another command wrote.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from scenectl.config import DEVICE_HELP
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.io import write_json_atomic
from scenectl.options import Config, option


# What train is given, by the kind of data (options of TrainConfig). "coco" is the small-data recipe for a real
# COCO layout of a few thousand samples on a CPU, chosen on coco-sample train2017 -> val2017 only (docs/training.md,
# the numbers in docs/results.md); "synthetic" is sized for the generated scenes. image_size, epochs and
# aux_visible are also QuickstartConfig fields: a value given there wins.
RECIPES: dict[str, dict] = {
    "synthetic": {"image_size": 64, "epochs": 5, "aux_visible": 0.0},
    "coco": {"image_size": 64, "epochs": 8, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
             "label_smoothing": 0.1, "mask_channel": True, "augment": True, "min_scale": 0.35, "flip": 0.5,
             "jitter": 0.2, "aux_visible": 0.0},
}


def _recipes(key: str, fmt: str = "", synthetic: str = "synthetic ") -> str:
    """Default: the recipe's value of `key` (for --help)."""
    return (f"Default: the recipe's ({synthetic}{RECIPES['synthetic'][key]:{fmt}}, --coco-root "
            f"{RECIPES['coco'][key]:{fmt}}).")


@dataclass
class QuickstartConfig(Config):
    """`scenectl quickstart`."""

    out: str | None = option(None, "Folder for every step's output; unset: quickstart, or quickstart-coco with "
                                   "--coco-root (so the README's two lines never collide).", "--out", "-o",
                             type=Path | None)
    coco_root: str | None = option(None, "Real COCO root instead of synthetic scenes.", type=Path | None)
    epochs: int | None = option(None, "Training epochs. " + _recipes("epochs"))  # None: the recipe's
    image_size: int | None = option(None, "Shard and model input size (px). " + _recipes("image_size", synthetic=""))
    aux_visible: float | None = option(None, "train --aux-visible: weight of the visible-classes head. "
                                       + _recipes("aux_visible", "g"))
    arch: str = option("resnet18", "Model (resnet18, ffc, ...).")
    device: str = option("auto", DEVICE_HELP)
    workers: int = option(2, "Processes building shards and loading batches (0: the main process alone).")
    seed: int = option(0, "Same seed, same data, weights and report.")
    overwrite: bool = option(False, "Replace an earlier quickstart in --out.", "--overwrite")
    train_images: int = option(400, "Synthetic scenes in train2017.", hidden=True)
    val_images: int = option(100, "Synthetic scenes in val2017.", hidden=True)
    batch_size: int = option(32, "Batch size of train and eval.", hidden=True)
    shape: str = "circle"
    max_area: float = 0.3

    def check_more(self) -> None:
        """What the chain needs (the COCO folder, the model name, the device), before anything is written."""
        from scenectl.devices import parse_device
        from scenectl.models.registry import resolve_name

        if self.coco_root is not None and not Path(self.coco_root).is_dir():
            raise ScenectlError(f"--coco-root {self.coco_root} is not a folder")
        resolve_name(self.arch)
        parse_device(self.device)

    def recipe(self) -> dict:
        """The train options of this data's recipe (RECIPES), with this config's image_size, epochs and aux_visible
        where set."""
        mine = {k: getattr(self, k) for k in ("image_size", "epochs", "aux_visible") if getattr(self, k) is not None}
        return {**RECIPES["synthetic" if self.coco_root is None else "coco"], **mine}

    def resolved(self) -> "QuickstartConfig":
        """This config with image_size, epochs and aux_visible filled in from the recipe (what config.json records)."""
        r = self.recipe()
        out = self.out or ("quickstart" if self.coco_root is None else "quickstart-coco")
        return replace(self, image_size=r["image_size"], epochs=r["epochs"], aux_visible=r["aux_visible"], out=out)


def quickstart(cfg: QuickstartConfig, echo: Callable[[str], None] = print) -> dict:
    """Run the chain; returns the eval report (its files are in OUT/run/eval)."""
    cfg.check()
    cfg = cfg.resolved()
    t0 = time.perf_counter()
    with claim(cfg.out, "quickstart", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        out = folder.path
        write_json_atomic(out / "config.json", asdict(cfg))
        root = _scenes(cfg, out, echo)
        shards = _shards(cfg, root, out, echo)
        rep = _train_and_eval(cfg, shards, out / "run", echo)
    echo(f"quickstart done in {time.perf_counter() - t0:.0f} s; read {rep['out']}/report.md and its plots "
         f"(confusion.png, per_class.png)")
    return rep


def _scenes(cfg: QuickstartConfig, out: Path, echo: Callable[[str], None]) -> Path:
    """[1/4] the COCO-layout root: synthetic scenes in OUT/scenes, or --coco-root as given."""
    from scenectl.data.synthetic import generate_scenes

    root = Path(cfg.coco_root) if cfg.coco_root else out / "scenes"
    if cfg.coco_root is None:
        echo(f"[1/4] sample: {cfg.train_images} + {cfg.val_images} synthetic scenes -> {root}")
        generate_scenes(root, n_train=cfg.train_images, n_val=cfg.val_images, seed=cfg.seed, overwrite=cfg.overwrite)
    else:
        echo(f"[1/4] sample: skipped, using COCO at {root}")
    return root


def _shards(cfg: QuickstartConfig, root: Path, out: Path, echo: Callable[[str], None]) -> dict[str, Path]:
    """[2/4] OUT/shards/{train2017,val2017}."""
    from scenectl.data.shards import BuildConfig, build_shards

    shards = {}
    for split in ("train2017", "val2017"):
        shards[split] = out / "shards" / split
        echo(f"[2/4] build-shards: {split}, {cfg.shape} masks, max area {cfg.max_area}, {cfg.image_size} px "
             f"-> {shards[split]}")
        build_shards(BuildConfig(out=shards[split], coco_root=root, split=split, shape=cfg.shape,
                                 max_area=cfg.max_area, image_size=cfg.image_size, seed=cfg.seed,
                                 workers=cfg.workers, overwrite=cfg.overwrite), echo=echo)
    return shards


def _train_and_eval(cfg: QuickstartConfig, shards: dict[str, Path], run: Path, echo: Callable[[str], None]) -> dict:
    """[3/4] OUT/run, [4/4] OUT/run/eval (of the final weights, last.pt); returns the eval report."""
    from scenectl.config import EvalConfig, TrainConfig
    from scenectl.evaluate import evaluate, summary_text
    from scenectl.train import train

    recipe = cfg.recipe()
    echo(f"[3/4] train: {cfg.arch}, batch {cfg.batch_size}, " + ", ".join(f"{k} {v}" for k, v in recipe.items())
         + f" -> {run}")
    train(TrainConfig(shards=str(shards["train2017"]), val_shards=str(shards["val2017"]), out=str(run),
                      arch=cfg.arch, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed, device=cfg.device,
                      overwrite=cfg.overwrite, log_every=10**9, checkpoint_every=10**9, **recipe))
    # the final weights, not best.pt: best.pt is picked by top-1 on this same val2017, which flatters the score and
    # favours epochs that name the commonest class ("person" on COCO) at the expense of the class-balanced metrics
    echo(f"[4/4] eval: {run / 'last.pt'} on {shards['val2017']}")
    rep = evaluate(EvalConfig(checkpoint=str(run / "last.pt"), shards=[str(shards["val2017"])], out=str(run / "eval"),
                              device=cfg.device, batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
                              overwrite=cfg.overwrite))
    echo(summary_text(rep, rep["out"]))
    return rep
