"""Image-classification views of the data, for `transfer` and `distill`.

Two kinds of target, one batch format (the shard loader's: `input` (B, 3, S, S), `label` (B,), `key` [B]):

- a folder in torchvision's ImageFolder layout (`ROOT/<class name>/<image>`), read with
  torchvision.datasets.ImageFolder (classes = sub-folders, sorted by name);
- the object crops of a shard set: `object.jpg` (written with `build-shards --with-object`) or, for a
  `--task object` set, `jpg` (which is then the unmasked crop). Optionally each sample also carries the context
  model's view of the same instance (`teacher_input`: the masked scene + mask channel), for distillation.

`export_imagefolder` turns a shard set's crops into an ImageFolder tree (`OUT/<class name>/<key>.jpg`).

Preprocessing is the shard loader's (scenectl.data.loader): images are letterboxed to a square like the shards
(masks.Letterbox), training augmentation is loader.Augment (random crop, flip, colour jitter) with an empty mask,
and `to_input` normalises with the ImageNet statistics. Per-sample randomness comes from (seed, epoch, sample), so
batches do not depend on worker scheduling.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from scenectl.data.loader import (Augment, Loader, ShardSet, decode_sample, ignore_stop_signals, open_shard_set,
                                  to_input)
from scenectl.data.masks import Letterbox
from scenectl.errors import ScenectlError
from scenectl.io import atomic_path, read_json, write_json_atomic

CLASSES_FILE = "classes.json"  # written by export_imagefolder beside the class folders: keeps COCO ids
REBUILD_HINT = "rebuild it with `scenectl build-shards --with-object` (or `--task object`)"


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
        ds = ImageFolder(str(root))
    except FileNotFoundError as e:  # no class folder, or class folders without images
        raise ScenectlError(f"{option} {root}: not an ImageFolder tree ({str(e).splitlines()[0]}); expected "
                            f"{root}/<class name>/<image>{'|'.join(sorted(IMG_EXTENSIONS))[:40]}...") from None
    if len(ds.classes) < 2:
        raise ScenectlError(f"{option} {root}: only one class folder ({ds.classes[0]!r}); a classifier needs two or more")
    return ds


def folder_classes(ds: ImageFolder) -> list[dict]:
    """[{index, coco_id, name}] in ImageFolder's order; COCO ids from an exported classes.json, else -1."""
    known = {}
    if (Path(ds.root) / CLASSES_FILE).is_file():
        known = {c["name"]: int(c["coco_id"]) for c in read_json(Path(ds.root) / CLASSES_FILE, "classes file")}
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


def object_member(shards: ShardSet) -> str:
    """Which member holds the unmasked object: object.jpg (--with-object) or jpg (--task object)."""
    params = shards.manifest.get("params", {})
    if params.get("with_object"):
        return "object"
    if shards.manifest.get("task") == "object":
        return "image"
    raise ScenectlError(f"shard set {shards.location} has no object crops (object.jpg); {REBUILD_HINT}")


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


def open_target(spec: str | Path, option: str = "--train") -> Target:
    if is_shard_set(spec):
        s = open_shard_set(spec)
        object_member(s)  # fail now, not in a worker
        return Target(str(spec), list(s.classes), shards=s)
    ds = open_image_folder(spec, option)
    return Target(str(spec), folder_classes(ds), folder=ds)


# --------------------------------------------------------------------------------------------------------------
# Per-sample preprocessing


def prepare_image(image: Image.Image, image_size: int, rng: np.random.Generator | None, augment: Augment) -> torch.Tensor:
    """PIL RGB -> (3, S, S) normalised: letterbox to a square (as the shards are), augment when rng is given."""
    if image.size != (image_size, image_size):
        box = Letterbox(image.width, image.height, image_size)
        image = Image.fromarray(box.image(image))
    if rng is not None:
        blank = Image.new("L", image.size, 0)  # no hidden region: the crop may fall anywhere
        image, _ = augment(image, blank, rng)
    return to_input(image, None, image_size, mask_channel=False)


def sample_rng(seed: int, epoch: int, ident: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, ident])


class FolderSamples(Dataset):
    """An ImageFolder as scenectl batches; `order` (a permutation) fixes the epoch's sample order."""

    def __init__(self, ds: ImageFolder, image_size: int, train: bool, seed: int, epoch: int, order: list[int]):
        self.ds, self.image_size, self.train, self.seed, self.epoch, self.order = ds, image_size, train, seed, epoch, order
        self.augment = Augment()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        idx = self.order[i]
        path, label = self.ds.samples[idx]
        try:
            image = self.ds.loader(path)  # PIL RGB
        except Exception as e:  # PIL raises many types for bad bytes
            raise ScenectlError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
        rng = sample_rng(self.seed, self.epoch, idx) if self.train else None
        x = prepare_image(image, self.image_size, rng, self.augment)
        return {"input": x, "label": label, "key": str(Path(path).relative_to(self.ds.root)), "visible": [], "meta": {}}


def decode_object(raw: dict, member: str) -> dict:
    """Decode the object view of a raw shard sample: `member` (object.jpg or jpg) as PIL RGB, label, metadata.

    Only the documented members are read (never unpickled); a `--task object` set has no mask.png, so
    loader.decode_sample (which requires it) is used only where the masked scene is wanted too.
    """
    url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
    if member not in raw:
        raise ScenectlError(f"sample {key} in {url} has no {member}; {REBUILD_HINT}")
    try:
        with Image.open(io.BytesIO(raw[member])) as im:
            image = im.convert("RGB")
        label = int(raw["cls"].decode("ascii").strip())
        meta = json.loads(raw["json"])
        visible = [int(v) for v in meta.get("visible_categories", [])]
    except KeyError as e:
        raise ScenectlError(f"corrupt sample {key} in shard {url}: member {e} is missing") from None
    except Exception as e:  # PIL / JSON / int parsing raise many types for bad bytes
        raise ScenectlError(f"corrupt sample {key} in shard {url}: {type(e).__name__}: {e}") from None
    return {"key": key, "url": url, "object": image, "label": label, "meta": meta, "visible": visible}


@dataclass
class ShardObjects(IterableDataset):
    """The object crops of a shard set as batches, optionally with the teacher's view of each sample.

    train: an endless stream (shard order reshuffled each pass, a shuffle buffer) cut to exactly `steps` batches,
    as loader.make_train_loader does: DataLoader worker w plays stream (w + start_step) % n and keeps every n-th
    sample, so the batch sequence depends on (seed, epoch, workers) only and `start_step` resumes mid-epoch.
    eval: every sample once, in shard order.
    """

    shards: ShardSet
    image_size: int
    batch_size: int
    train: bool
    seed: int = 0
    epoch: int = 0
    steps: int = 0  # train: batches in this epoch
    start_step: int = 0
    teacher_size: int | None = None  # also emit `teacher_input` (masked scene) at this size
    teacher_mask: bool = True  # the teacher takes the mask as a 4th channel
    shuffle_buffer: int = 1000

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, nw = (info.id, info.num_workers) if info else (0, 1)
        bs = self.batch_size
        if not self.train:
            return iter(wds.DataPipeline(
                wds.SimpleShardList(self.shards.urls), wds.tarfile_to_samples(), wds.slice(worker, None, nw),
                wds.map(self._prepare), wds.batched(bs, collation_fn=collate, partial=True)))
        stream = (worker + self.start_step) % nw
        skip = len(range(stream, self.start_step, nw))  # batches of this stream already consumed
        todo = len(range(stream, self.steps, nw)) - skip
        if todo <= 0:
            return iter(())
        return iter(wds.DataPipeline(
            self._shard_cycle, wds.tarfile_to_samples(),
            # the same buffer RNG in every worker: all see one order, then each keeps its slice
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                        rng=random.Random(f"{self.seed}/{self.epoch}/buffer")),
            wds.slice(stream, None, nw), wds.slice(skip * bs, None),  # skipped before decoding: cheap
            wds.map(self._prepare), wds.batched(bs, collation_fn=collate, partial=False), wds.slice(todo)))

    def _shard_cycle(self) -> Iterator[dict]:
        for p in itertools.count():
            urls = list(self.shards.urls)
            random.Random(f"{self.seed}/{self.epoch}/{p}").shuffle(urls)
            yield from ({"url": u} for u in urls)

    def _prepare(self, raw: dict) -> dict:
        member = {"object": "object.jpg", "image": "jpg"}[object_member(self.shards)]
        s = decode_object(raw, member)
        rng = sample_rng(self.seed, self.epoch, zlib.crc32(s["key"].encode())) if self.train else None
        out = {"input": prepare_image(s["object"], self.image_size, rng, Augment()), "label": s["label"],
               "key": s["key"], "visible": s["visible"], "meta": s["meta"]}
        if self.teacher_size:  # the context model's eval view: masked scene (+ mask), never augmented
            scene = decode_sample(raw)
            out["teacher_input"] = to_input(scene["image"], scene["mask"], self.teacher_size, self.teacher_mask)
        return out


def collate(samples: list[dict]) -> dict:
    out = {
        "input": torch.stack([s["input"] for s in samples]),  # (B, 3, S, S)
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),  # (B,)
        "key": [s["key"] for s in samples],
        "visible": [s["visible"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }
    if "teacher_input" in samples[0]:
        out["teacher_input"] = torch.stack([s["teacher_input"] for s in samples])  # (B, C_t, S_t, S_t)
    return out


def make_loader(target: Target, *, image_size: int, batch_size: int, train: bool, seed: int = 0, epoch: int = 0,
                steps: int = 0, start_step: int = 0, workers: int = 0, teacher_size: int | None = None,
                teacher_mask: bool = True) -> Loader:
    """Batches over `target`. train: exactly `steps - start_step` shuffled, augmented batches of epoch `epoch`;
    eval: every sample once, in order, not augmented."""
    if target.folder is not None:
        if teacher_size:
            raise ScenectlError(f"{target.spec}: an ImageFolder has no scenes for a teacher; use a shard set")
        order = list(range(len(target.folder)))
        if train:
            random.Random(f"{seed}/{epoch}").shuffle(order)
            order = order[start_step * batch_size: steps * batch_size]
        ds = FolderSamples(target.folder, image_size, train, seed, epoch, order)
        dl = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        drop_last=train, worker_init_fn=ignore_stop_signals)
        return Loader(dl, steps - start_step if train else None)
    ds = ShardObjects(target.shards, image_size, batch_size, train, seed, epoch, steps, start_step, teacher_size,
                      teacher_mask)
    nw = workers if train else min(workers, len(target.shards.urls))
    return Loader(DataLoader(ds, batch_size=None, num_workers=nw, worker_init_fn=ignore_stop_signals),
                  steps - start_step if train else None)


# --------------------------------------------------------------------------------------------------------------
# `scenectl export-imagefolder`


@dataclass
class ExportConfig:
    shards: str = "shards/val2017"
    out: str = "imagefolder/val2017"
    member: str = "auto"  # auto (object.jpg, else jpg of a --task object set), object, jpg
    overwrite: bool = False


def safe_dirname(name: str) -> str:
    """A class name as a folder name: path separators and leading dots replaced (COCO names are already safe)."""
    name = re.sub(r"[/\\\0]", "_", name).strip()
    return re.sub(r"^\.+", "_", name) or "_"


def export_imagefolder(cfg: ExportConfig) -> dict:
    """Write OUT/<class name>/<key>.jpg from a shard set; classes.json + config.json + export.json beside them.

    The JPEG bytes are copied as stored (no re-encoding). Returns the export summary (also export.json, written
    LAST: its presence = export complete).
    """
    shards = open_shard_set(cfg.shards)
    if cfg.member not in ("auto", "object", "jpg"):
        raise ScenectlError(f"--member must be auto, object or jpg, got {cfg.member!r}")
    member = {"auto": None, "object": "object.jpg", "jpg": "jpg"}[cfg.member]
    if member is None:
        member = "object.jpg" if object_member(shards) == "object" else "jpg"
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ScenectlError(f"--out {out} is not empty; pass --overwrite or choose another folder")
        if not (out / "export.json").is_file():
            raise ScenectlError(f"--out {out} is not empty and was not written by export-imagefolder; refusing to overwrite it")
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", asdict(cfg))
    names = [str(c["name"]) for c in shards.classes]
    dirs = [safe_dirname(n) for n in names]
    if len(set(dirs)) != len(dirs):
        raise ScenectlError(f"{cfg.shards}: two class names map to the same folder name")
    counts = [0] * len(names)
    pipeline = wds.DataPipeline(wds.SimpleShardList(shards.urls), wds.tarfile_to_samples())
    for raw in tqdm(pipeline, desc="export", unit="img", total=shards.num_samples):
        key = raw.get("__key__", "?")
        if Path(key).name != key or key.startswith("."):  # a tar member named '../x.jpg' or '/abs/x.jpg'
            raise ScenectlError(f"sample key {key!r} in {raw.get('__url__')} is not a plain file name; not writing it")
        label = decode_object(raw, member)["label"]  # checks that the image decodes and the label parses
        if not 0 <= label < len(names):
            raise ScenectlError(f"sample {key}: class {label} is outside the manifest's {len(names)} classes")
        folder = out / dirs[label]
        folder.mkdir(exist_ok=True)
        with atomic_path(folder / f"{key}.jpg") as tmp:
            tmp.write_bytes(raw[member])
        counts[label] += 1
    present = [{"index": i, "coco_id": int(c["coco_id"]), "name": dirs[i]} for i, c in enumerate(shards.classes) if counts[i]]
    write_json_atomic(out / CLASSES_FILE, present)
    summary = {"shards": cfg.shards, "member": member, "images": sum(counts), "classes": len(present),
               "per_class": {dirs[i]: counts[i] for i in range(len(names)) if counts[i]}}
    write_json_atomic(out / "export.json", summary)
    return summary
