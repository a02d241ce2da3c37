"""Image-classification views of the data, for `transfer` and `distill`.

Two kinds of target, one batch format (the shard reader's, scenectl.data.loader: `input` (B, 3, S, S), `label`
(B,), `key`, ...):

- a folder in torchvision's ImageFolder layout (`ROOT/<class name>/<image>`), read with
  torchvision.datasets.ImageFolder (classes = sub-folders, sorted by name), map-style;
- a shard set, read by the shard reader's `object` view (its checks, worker split and errors included): the crops
  in `object.jpg` (written with `build-shards --with-object`) or, for a `--task object` set, `jpg`. Optionally each
  batch also carries a context model's view of the same samples (`scene_input`: the masked scene + mask channel).

`scenectl export-imagefolder` (scenectl.data.export) turns a shard set's crops into such a tree, with CLASSES_FILE
beside the class folders.

Preprocessing is scenectl.data.transforms for both kinds: images are letterboxed to a square like the shards
(`letterbox_input`), training augmentation is `Augment` (random crop, flip, colour jitter) with an empty mask, and
inputs are normalised with the ImageNet statistics. An ImageFolder's per-sample randomness comes from (seed,
epoch, image index), so its batches do not depend on worker scheduling.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from scenectl.data.loader import (EvalBatches, Loader, ShardSet, TrainBatches, collate, ignore_stop_signals,
                                  make_eval_loader, make_train_loader, open_shard_set)
from scenectl.data.transforms import Augment, letterbox_input
from scenectl.errors import ScenectlError
from scenectl.io import open_regular, read_json

CLASSES_FILE = "classes.json"  # written by export_imagefolder beside the class folders: keeps COCO ids


# --------------------------------------------------------------------------------------------------------------
# Targets: an ImageFolder tree or a shard set


def is_shard_set(path: str | Path) -> bool:
    """A folder with manifest.json, or a webdataset .tar pattern, is a shard set; anything else an ImageFolder."""
    p = str(path)
    return (Path(p) / "manifest.json").is_file() or bool(re.search(r"\.tar\b", p)) or "://" in p


def open_image_folder(root: str | Path, option: str = "--train") -> ImageFolder:
    """torchvision's ImageFolder over `root`, refusing trees a classifier cannot learn from."""
    root = Path(root)
    if not root.is_dir():
        raise ScenectlError(f"{option} {root}: no such folder")
    try:
        ds = ImageFolder(str(root), loader=load_rgb)
    except FileNotFoundError as e:  # no class folder, or class folders without images
        raise ScenectlError(f"{option} {root}: not an ImageFolder tree ({str(e).splitlines()[0]}); expected "
                            f"{root}/<class name>/<image>{'|'.join(sorted(IMG_EXTENSIONS))[:40]}...") from None
    if len(ds.classes) < 2:
        raise ScenectlError(f"{option} {root}: only one class folder ({ds.classes[0]!r}); a classifier needs two "
                            "or more")
    return ds


def load_rgb(path: str) -> Image.Image:
    """torchvision's `pil_loader` opening through `open_regular`: a FIFO or device among the images is an error
    naming it, never a hang that also keeps the stop signals from ending the run."""
    with open_regular(path, "image") as f:
        return Image.open(f).convert("RGB")


def folder_classes(ds: ImageFolder) -> list[dict]:
    """[{index, coco_id, name}] in ImageFolder's order; COCO ids from an exported classes.json, else -1."""
    path = Path(ds.root) / CLASSES_FILE
    known = {c["name"]: int(c["coco_id"]) for c in read_json(path, "classes file", list)} if path.is_file() else {}
    return [{"index": i, "coco_id": known.get(n, -1), "name": n} for i, n in enumerate(ds.classes)]


def align_classes(val: ImageFolder, classes: list[dict], option: str = "--val") -> int:
    """Re-index `val` to the training folder's classes by name, in place; drop images of classes training lacks.

    Two ImageFolder trees cut from different splits rarely hold the same classes (a rare class may be missing
    from one), and ImageFolder numbers classes by sorted folder name, so equal names can get unequal indices.
    Returns the number of images dropped; refuses a validation tree that shares no class with training.
    """
    index = {c["name"]: c["index"] for c in classes}
    keep = [(path, index[val.classes[y]]) for path, y in val.samples if val.classes[y] in index]
    if not keep:
        raise ScenectlError(f"{option} {val.root}: none of its classes is among the training classes")
    dropped = len(val.samples) - len(keep)
    val.samples = val.imgs = keep
    val.targets = [y for _, y in keep]
    val.classes = [c["name"] for c in classes]
    val.class_to_idx = dict(index)
    return dropped


@dataclass
class Target:
    """A classification target: a map-style ImageFolder or a streamed shard set, plus its class list."""

    spec: str
    classes: list[dict]
    folder: ImageFolder | None = None
    shards: ShardSet | None = None

    @property
    def num_samples(self) -> int:
        return len(self.folder) if self.folder is not None else self.shards.num_samples


def open_target(spec: str | Path, option: str = "--train", net=None) -> Target:
    """An ImageFolder tree or a shard set's object crops; `net`: how a remote set's reads retry (NetOptions)."""
    if is_shard_set(spec):
        s = open_shard_set(spec, net)
        s.object_member()  # fail now, not in a worker
        return Target(str(spec), list(s.classes), shards=s)
    ds = open_image_folder(spec, option)
    return Target(str(spec), folder_classes(ds), folder=ds)


# --------------------------------------------------------------------------------------------------------------
# Batches


class FolderSamples(Dataset):
    """An ImageFolder as scenectl batches; `order` (a permutation) fixes the epoch's sample order; `epoch`: training."""

    def __init__(self, ds: ImageFolder, image_size: int, order: list[int], epoch: Epoch | None):
        self.ds, self.image_size, self.order, self.epoch, self.augment = ds, image_size, order, epoch, Augment()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        idx = self.order[i]
        path, label = self.ds.samples[idx]
        try:
            image = self.ds.loader(path)  # PIL RGB
        except ScenectlError:  # not a regular file (load_rgb), said whole
            raise
        except Exception as e:  # PIL raises many types for bad bytes
            raise ScenectlError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
        rng = None if self.epoch is None else np.random.default_rng([self.epoch.seed, self.epoch.index, idx])
        x, jitter = letterbox_input(image, self.image_size, rng, self.augment)  # (3, S, S) uint8, as the object view
        out = {"input": x, "label": label, "key": str(Path(path).relative_to(self.ds.root)), "visible": [],
               "meta": {}, "url": path}
        return out if jitter is None else {**out, "jitter": jitter}


@dataclass(frozen=True)
class Epoch:
    """Which training batches to make: steps [start, steps) of epoch `index` in the order that `seed` gives."""

    seed: int
    index: int
    steps: int
    start: int = 0


def make_loader(target: Target, *, image_size: int, batch_size: int, workers: int = 0, epoch: Epoch | None = None,
                scene_size: int | None = None, scene_mask: bool = True) -> Loader:
    """Batches over `target`. With `epoch`: exactly `epoch.steps - epoch.start` shuffled, augmented training
    batches; without: every sample once, in order, not augmented. A shard set is read by the shard reader's object
    view (with `scene_size`, also `scene_input`: the masked scene for a context model)."""
    if target.shards is not None:
        kw = dict(view="object", image_size=image_size, batch_size=batch_size, workers=workers,
                  scene_size=scene_size, scene_mask=scene_mask)
        if epoch is None:
            return make_eval_loader(target.shards, EvalBatches(**kw))
        return make_train_loader(target.shards, TrainBatches(steps=epoch.steps, seed=epoch.seed, epoch=epoch.index,
                                                             start_step=epoch.start, **kw))
    if scene_size:
        raise ScenectlError(f"{target.spec}: an ImageFolder has no scenes for a context model; use a shard set")
    order = list(range(len(target.folder)))
    train = epoch is not None
    if train:
        random.Random(f"{epoch.seed}/{epoch.index}").shuffle(order)
        order = order[epoch.start * batch_size: epoch.steps * batch_size]
    ds = FolderSamples(target.folder, image_size, order, epoch)
    dl = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                    drop_last=train, worker_init_fn=ignore_stop_signals)
    return Loader(dl, epoch.steps - epoch.start if train else None)
