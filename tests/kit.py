"""The test kit: the helpers many test modules share, in one place (importable from every test module, as
tests/ is on sys.path through tests/conftest.py).

    write_shards(folder, n=24, ...)          a small shard set in the documented format, labels learnable from context
    CLASSES                                  write_shards' default class table (4 classes, coco ids 1..4)
    checkpoint_record(classes, in_chans=4)   a random-weight resnet18 checkpoint as the dict scenectl saves
    checkpoint(path, classes, in_chans=4)    the same, written by scenectl.checkpoint.save_checkpoint -> path
    brief_training(train, val, out)          2 steps of `scenectl train` (resnet18, CPU) -> out/best.pt

The session-scoped trained checkpoint every test may share is the `trained_checkpoint` fixture of tests/conftest.py
(brief_training on `synthetic_shards`); call brief_training directly only where a test needs its own data.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from scenectl.checkpoint import save_checkpoint
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.format import FORMAT, ShardSink, SinkTarget, seal_set
from scenectl.models import create_model

CLASSES = [{"index": i, "coco_id": i + 1, "name": f"c{i}"} for i in range(4)]


def write_shards(folder: Path, n: int = 24, per_shard: int = 8, size: int = 32, seed: int = 0,
                 classes: list[dict] = CLASSES, with_object: bool = False, task: str = "masked",
                 labels: list[int] | None = None) -> Path:
    """A small shard set in the documented format (docs/shard-format.md), written as the builds write theirs:
    through the format's sink and `seal_set` (scenectl.data.format), so its tars, checksums, `files` map and
    `_info.json` are a build's.

    labels: the class of each sample in writing order (n = len(labels)); default: drawn at random.

    The class is written into the scene's context (the background colour), so a model can learn it. with_object:
    also `object.jpg` (the unmasked square under the hidden region, resized to size x size); task "object": `jpg`
    is that crop and there is no `mask.png` (as `build-shards --task object` writes).
    """
    folder.mkdir(parents=True, exist_ok=True)
    palette = np.random.default_rng(12345).integers(0, 256, (len(classes), 3))  # same context in every set
    rng = np.random.default_rng(seed)
    per_image = []
    n = n if labels is None else len(labels)
    sink = ShardSink(SinkTarget(folder, maxcount=per_shard), {"shards": []})
    for i in range(n):
        label = int(rng.integers(len(classes))) if labels is None else labels[i]
        img = np.clip(palette[label] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        x, y, s = (int(v) for v in rng.integers(2, size // 2, 3))
        mask[y:y + s, x:x + s] = 255
        crop = _jpeg(np.asarray(Image.fromarray(img[y:y + s, x:x + s]).resize((size, size))))
        img[mask > 0] = 128
        png = io.BytesIO()
        Image.fromarray(mask).save(png, "PNG")
        visible = sorted({int(v) for v in rng.integers(len(classes), size=2)})
        meta = {"image_id": i, "annotation_id": 1000 + i, "cls": label, "visible_categories": visible}
        sample = {"__key__": f"{i:012d}_{1000 + i:012d}", "jpg": _jpeg(img), "mask.png": png.getvalue(),
                  "cls": str(label).encode(), "json": json.dumps(meta).encode()}
        if with_object:
            sample["object.jpg"] = crop
        if task == "object":
            sample["jpg"] = crop
            del sample["mask.png"]
        sink.write(sample)
        per_image.append([label] + visible)
    sink.close()
    Cooccurrence.count(per_image, [c["coco_id"] for c in classes], [c["name"] for c in classes]).save(
        folder / "cooccurrence.h5")
    manifest = {"format": FORMAT, "task": task,
                "params": {"image_size": size, "task": task, "with_object": with_object, "split": "test"},
                "classes": classes, "shards": sink.journal["shards"], "totals": {"samples": n}}
    seal_set(folder, manifest)
    return folder


def _jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    return buf.getvalue()


def checkpoint_record(classes: list[dict], in_chans: int = 4, seed: int = 0, model: torch.nn.Module | None = None,
                      **fields) -> dict:
    """What scenectl saves for a resnet18 over `classes` (random weights drawn with `seed`, or `model`'s): a context
    model for 4 input channels (image + mask), an object model ("distill") for 3. `fields` replace or add entries
    (kind, image_size, config, cooccurrence, ...); save_checkpoint adds the format tag and version."""
    if model is None:
        torch.manual_seed(seed)
        model = create_model("resnet18", len(classes), in_chans=in_chans)
    return {"kind": "context" if in_chans == 4 else "distill", "arch": "resnet18", "in_chans": in_chans,
            "num_classes": len(classes), "model": model.state_dict(), "classes": classes, "image_size": 32,
            "mask_channel": in_chans == 4, "config": {}, "cooccurrence": None, "metrics": {}, "epoch": 1, "step": 1,
            **fields}


def checkpoint(path: Path, classes: list[dict], in_chans: int = 4, seed: int = 0, model: torch.nn.Module | None = None,
               **fields) -> Path:
    """checkpoint_record(...) written to `path` by scenectl's own save_checkpoint; returns `path`."""
    save_checkpoint(path, checkpoint_record(classes, in_chans, seed, model, **fields))
    return path


def brief_training(train_shards: Path, val_shards: Path, out: Path) -> Path:
    """2 steps of training (resnet18, batch 4, CPU, no workers) on `train_shards`; returns out/best.pt."""
    from scenectl.train import TrainConfig, train

    train(TrainConfig(shards=str(train_shards), val_shards=str(val_shards), out=str(out), epochs=1, steps_per_epoch=2,
                      batch_size=4, workers=0, device="cpu", log_every=0, checkpoint_every=0, shuffle_buffer=8))
    return Path(out) / "best.pt"


def fast_first(values, n: int = 1) -> list:
    """pytest params of `values`: the first `n` in the fast tier, the rest marked slow (the full suite runs all)."""
    import pytest

    return [pytest.param(v, marks=() if k < n else pytest.mark.slow) for k, v in enumerate(values)]
