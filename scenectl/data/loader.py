"""Reading shard sets for training, evaluation and prediction.

A shard set (docs/shard-format.md) is opened from a local folder or from a webdataset URL pattern:

    open_shard_set("shards/val2017")                                    # a folder written by build-shards
    open_shard_set("shards/val2017/shard-{000000..000003}.tar")         # a subset, brace notation
    open_shard_set("https://host/data/val2017/shard-{000000..000099}.tar")   # streamed with curl (webdataset gopen)
    open_shard_set("pipe:aws s3 cp s3://bucket/val2017/shard-{000000..000099}.tar -")
    open_shard_set("https://host/data/val2017/")                        # a remote folder: shard list from its manifest

`manifest.json` and `cooccurrence.h5` are always read from beside the shards (same folder or URL prefix).

Two pipelines read it, both plain webdataset (`wds.DataPipeline` of shard list -> `tarfile_to_samples` -> ...):

- `make_train_loader`: an endless, shuffled, augmented stream cut into epochs of exactly `steps` batches per rank,
  so no rank of a DDP job starves or waits. Each (rank, DataLoader worker) pair is one *stream* with its own shards
  (when there are at least as many shards as streams; otherwise each stream resamples shards at random) and its own
  RNG derived from (seed, epoch, rank, stream): the batch order depends only on the seed, the epoch, the world size
  and the number of workers, and `start_step` resumes an epoch exactly where a checkpoint left it.
- `make_eval_loader`: every sample exactly once, in shard order, not augmented (plain resize). Under DDP pass
  rank/world_size: each rank reads every world_size-th shard (or every world_size-th sample when there are fewer
  shards than ranks), and the caller all-reduces its sums.

Batches are dicts: `input` (B, C, H, W) float32 normalised (C = 4 with the mask channel), `label` (B,) int64,
`key` list[str], `visible` list[list[int]], `meta` list[dict].
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import random
import re
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from scenectl.data.cooccurrence import Cooccurrence
from scenectl.errors import ScenectlError
from scenectl.models.pretrained import IMAGENET_MEAN, IMAGENET_STD

# ImageNet statistics: the torchvision ResNets (and their pretrained weights) expect them.
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD
REQUIRED = ("jpg", "mask.png", "cls", "json")


# --------------------------------------------------------------------------------------------------------------
# Opening a shard set


@dataclass
class ShardSet:
    """One shard set: its shard URLs (local paths or URLs webdataset can open) and its manifest."""

    urls: list[str]
    manifest: dict
    classes: list[dict]
    location: str  # the folder or URL prefix holding manifest.json and cooccurrence.h5 (ends without "/")

    def require_masked(self, option: str) -> None:
        """Refuse a set of `build-shards --task object` crops where masked scenes are needed (train, eval)."""
        task = self.manifest.get("task", "masked")
        if task != "masked":
            raise ScenectlError(f"{option} {self.location} holds --task {task} shards (unmasked object crops, no "
                                "hidden region); train and eval read masked scenes: use these with transfer, distill "
                                "or export-imagefolder")

    @property
    def num_samples(self) -> int:
        counts = {s["name"]: int(s["samples"]) for s in self.manifest.get("shards", [])}
        return sum(counts.get(_basename(u), 0) for u in self.urls)

    def shard_sizes(self) -> dict[str, int]:
        """Samples the manifest records for each shard URL (to notice shards that end early)."""
        counts = {s["name"]: int(s["samples"]) for s in self.manifest.get("shards", [])}
        return {u: counts.get(_basename(u), 0) for u in self.urls}

    @property
    def image_size(self) -> int:
        return int(self.manifest.get("params", {}).get("image_size", 256))

    def cooccurrence(self) -> Cooccurrence:
        """The source split's co-occurrence counts (cooccurrence.h5 beside the shards)."""
        where = _join(self.location, "cooccurrence.h5")
        if _is_local(self.location):
            return Cooccurrence.load(where)
        data = _read_remote(where, "co-occurrence file")
        with tempfile.TemporaryDirectory() as tmp:  # h5py wants a real file
            path = Path(tmp) / "cooccurrence.h5"
            path.write_bytes(data)
            return Cooccurrence.load(path)


def open_shard_set(spec: str | os.PathLike) -> ShardSet:
    """Open a shard-set folder or a webdataset URL pattern; errors name the place at fault."""
    spec = str(spec)
    if _is_local(spec) and Path(_strip_file(spec)).is_dir():
        return _open_local_folder(Path(_strip_file(spec)))
    if _is_local(spec) and spec.endswith("manifest.json"):
        return _open_local_folder(Path(_strip_file(spec)).parent)
    if _is_local(spec) and not re.search(r"\.tar\b", spec):
        raise ScenectlError(f"shard set not found: {spec} (no such folder; write it with `scenectl build-shards`)")
    if not re.search(r"\.tar\b", spec):  # a remote folder: https://host/dir/
        location = spec.rstrip("/")
        manifest = _load_manifest(location)
        urls = [_join(location, s["name"]) for s in manifest["shards"]]
        return _checked(ShardSet(urls, manifest, manifest["classes"], location))
    urls = wds.shardlists.expand_urls(spec)
    location = _parent(spec)
    if _is_local(location) and not Path(_strip_file(location)).is_dir():
        raise ScenectlError(f"shard folder not found: {location} (from --shards {spec})")
    manifest = _load_manifest(location)
    listed = {s["name"] for s in manifest["shards"]}
    for u in urls:
        if _basename(u) not in listed:
            raise ScenectlError(f"shard {u} is not listed in {_join(location, 'manifest.json')}")
        if _is_local(u) and not Path(_strip_file(u)).is_file():
            raise ScenectlError(f"shard not found: {u}")
    return _checked(ShardSet(urls, manifest, manifest["classes"], location))


def _open_local_folder(folder: Path) -> ShardSet:
    manifest = _load_manifest(str(folder))
    urls = []
    for s in manifest["shards"]:
        path = folder / s["name"]
        if not path.is_file():
            raise ScenectlError(f"shard {path} is listed in {folder / 'manifest.json'} but missing")
        urls.append(str(path))
    return _checked(ShardSet(urls, manifest, manifest["classes"], str(folder)))


def _load_manifest(location: str) -> dict:
    where = _join(location, "manifest.json")
    if _is_local(location):
        folder = Path(_strip_file(location))
        if not (folder / "manifest.json").is_file():
            partial = [p.name for p in folder.glob("*") if p.name == "progress.json" or p.suffix == ".partial"
                       or p.name.startswith("manifest.part-")]
            if partial:
                raise ScenectlError(
                    f"shard set {folder} is incomplete (no manifest.json, found {sorted(partial)[0]}): finish it with "
                    "`scenectl build-shards --resume` (or `scenectl merge-manifests` for a build in parts)")
            raise ScenectlError(f"no manifest.json in {folder}: not a shard set written by scenectl build-shards")
        data = (folder / "manifest.json").read_bytes()
    else:
        data = _read_remote(where, "manifest")
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScenectlError(f"manifest {where} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("scenectl-shards/"):
        raise ScenectlError(f"{where} is not a scenectl shard manifest (no 'scenectl-shards/...' format tag)")
    for k in ("classes", "shards"):
        if not isinstance(manifest.get(k), list):
            raise ScenectlError(f"manifest {where} has no '{k}' list")
    return manifest


def _checked(s: ShardSet) -> ShardSet:
    if not s.urls or s.num_samples == 0:
        raise ScenectlError(f"shard set {s.location} holds no samples")
    return s


def _read_remote(url: str, what: str) -> bytes:
    try:
        with wds.gopen(url) as f:
            data = f.read()
    except Exception as e:  # curl / pipe failures surface as various exception types
        raise ScenectlError(f"cannot read {what} {url}: {e}") from None
    if not data:
        raise ScenectlError(f"cannot read {what} {url} (missing or empty)")
    return data


def _is_local(spec: str) -> bool:
    scheme = urlparse(spec).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _strip_file(spec: str) -> str:
    return urlparse(spec).path if spec.startswith("file:") else spec


def _basename(url: str) -> str:
    m = re.search(r"([^/\s]+\.tar)\b", url)
    return m.group(1) if m else url.rsplit("/", 1)[-1]


def _parent(pattern: str) -> str:
    """The folder / URL prefix of a shard pattern (for pipe: commands: the command with the prefix in place)."""
    m = list(re.finditer(r"[^/\s]*\.tar\b", pattern))[-1]
    return pattern[: m.start()].rstrip("/") + "\0" + pattern[m.end():] if pattern.startswith("pipe:") \
        else pattern[: m.start()].rstrip("/")


def _join(location: str, name: str) -> str:
    if "\0" in location:  # a pipe: command with a hole where the file name goes
        prefix, suffix = location.split("\0", 1)
        return f"{prefix}/{name}{suffix}"
    return f"{location}/{name}" if location else name


# --------------------------------------------------------------------------------------------------------------
# Decoding one sample (only the documented members; never pickle)


def decode_sample(raw: dict) -> dict:
    """Decode a raw webdataset sample into PIL images, an int label and metadata.

    Returns {key, url, image (PIL RGB), mask (PIL L), label, meta, visible, object (PIL RGB, only when present)}.
    Any missing or undecodable member raises ScenectlError naming the shard and the member; unknown members are
    ignored.
    """
    url, key = raw.get("__url__", "?"), raw.get("__key__", "?")

    def fail(member: str, why: str):
        raise ScenectlError(f"corrupt sample {key} in shard {url}: member '{member}' {why}")

    for m in REQUIRED:
        if m not in raw:
            fail(m, "is missing")
    out = {"key": key, "url": url}
    for member, name, mode in (("jpg", "image", "RGB"), ("mask.png", "mask", "L"), ("object.jpg", "object", "RGB")):
        if member not in raw:
            continue
        try:
            with Image.open(io.BytesIO(raw[member])) as im:
                out[name] = im.convert(mode)
        except Exception as e:  # PIL raises many types for bad bytes
            fail(member, f"is not a readable image ({type(e).__name__}: {e})")
    try:
        out["label"] = int(raw["cls"].decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        fail("cls", "is not an ASCII integer")
    try:
        out["meta"] = json.loads(raw["json"])
        out["visible"] = [int(v) for v in out["meta"].get("visible_categories", [])]
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as e:
        fail("json", f"is not valid metadata JSON ({e})")
    if out["image"].size != out["mask"].size:
        fail("mask.png", f"has size {out['mask'].size}, the image {out['image'].size}")
    return out


# --------------------------------------------------------------------------------------------------------------
# Images to model input, and training augmentation


def to_input(image: Image.Image, mask: Image.Image | None, image_size: int, mask_channel: bool = True) -> torch.Tensor:
    """(PIL RGB image, PIL L mask) -> model input (C, image_size, image_size): normalised RGB (+ mask channel).

    The mask channel is 1.0 where the object is hidden and 0.0 elsewhere (not normalised). This is the whole eval
    preprocessing: a plain resize (the shards are already square, letterboxed).
    """
    size = [image_size, image_size]
    x = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)  # (3, H, W) in [0, 1]
    if x.shape[-2:] != torch.Size(size):
        x = TF.resize(x, size, antialias=True)
    x = TF.normalize(x, MEAN, STD)
    if not mask_channel:
        return x
    if mask is None:
        raise ScenectlError("the model takes a mask channel but no mask was given")
    m = TF.to_image(mask)  # (1, H, W) uint8
    if m.shape[-2:] != torch.Size(size):
        m = TF.resize(m, size, interpolation=TF.InterpolationMode.NEAREST)
    return torch.cat([x, (m > 127).to(torch.float32)], 0)  # (4, S, S)


@dataclass
class Augment:
    """Training augmentation, applied identically to the image and the mask (colour jitter: image only).

    A random crop of `min_scale`..1 of the image area and aspect ratio 3/4..4/3 that always contains the whole
    hidden region's bounding box (the crop is grown when the box is larger), resized to the output size; a
    horizontal flip with probability `flip`; brightness / contrast / saturation each scaled by a factor drawn from
    [1 - jitter, 1 + jitter].
    """

    min_scale: float = 0.35
    flip: float = 0.5
    jitter: float = 0.2
    enabled: bool = True

    def __call__(self, image: Image.Image, mask: Image.Image, rng: np.random.Generator):
        if not self.enabled:
            return image, mask
        W, H = image.size
        box = _mask_bbox(mask)  # (x0, y0, x1, y1) exclusive, or None
        area = W * H * rng.uniform(self.min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(W, max(1, round(math.sqrt(area * ratio))))
        h = min(H, max(1, round(math.sqrt(area / ratio))))
        if box is not None:  # grow the crop to hold the hidden region, then place it around the region
            w, h = max(w, box[2] - box[0]), max(h, box[3] - box[1])
            x = int(rng.integers(max(0, box[2] - w), min(box[0], W - w) + 1))
            y = int(rng.integers(max(0, box[3] - h), min(box[1], H - h) + 1))
        else:
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        image = image.crop((x, y, x + w, y + h)).resize((W, H), Image.BILINEAR)
        mask = mask.crop((x, y, x + w, y + h)).resize((W, H), Image.NEAREST)
        if rng.random() < self.flip:
            image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
        if self.jitter > 0:
            b, c, s = rng.uniform(1 - self.jitter, 1 + self.jitter, size=3)
            image = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, b), c), s)
        return image, mask


def _mask_bbox(mask: Image.Image) -> tuple[int, int, int, int] | None:
    m = np.asarray(mask) > 127  # (H, W)
    if not m.any():
        return None
    ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


# --------------------------------------------------------------------------------------------------------------
# Pipelines


class SkipCounter:
    """Corrupt samples / shards skipped, counted across DataLoader worker processes (shared memory)."""

    def __init__(self):
        self._v = mp.get_context("spawn").Value("q", 0)

    def add(self, n: int = 1) -> None:
        with self._v.get_lock():
            self._v.value += n

    @property
    def value(self) -> int:
        return int(self._v.value)


def _error_handler(skip_corrupt: bool, counter: SkipCounter) -> Callable[[Exception], bool]:
    """A webdataset handler: count-and-continue, or a one-line ScenectlError naming the shard."""

    def handler(exn: Exception) -> bool:
        if skip_corrupt:
            counter.add()
            return True
        if isinstance(exn, ScenectlError):
            raise exn
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and re.search(r"\.tar\b", a)), "?")
        first = str(exn.args[0]).split(" @ ")[0] if exn.args else type(exn).__name__
        raise ScenectlError(f"cannot read shard {url} (truncated or corrupt?): {type(exn).__name__}: {first}")

    return handler


def _complete_shards(src: Iterator[dict], sizes: dict[str, int], handler) -> Iterator[dict]:
    """Pass samples through; when a shard ends, check it gave the manifest's count.

    Python's tarfile ends a stream quietly at a cut or damaged header, so a truncated shard would otherwise just
    look short. (A shard read twice in a row counts double, hence the modulo.)
    """
    url, n = None, 0

    def check():
        want = sizes.get(url, 0)
        if url is not None and want and n % want:
            handler(ScenectlError(f"shard {url} gave {n} samples where its manifest lists {want} "
                                 f"(truncated, corrupt or altered)"))

    for sample in src:
        if sample.get("__url__") != url:
            check()
            url, n = sample.get("__url__"), 0
        n += 1
        yield sample
    check()


def _collate(samples: list[dict]) -> dict:
    return {
        "input": torch.stack([s["input"] for s in samples]),  # (B, C, H, W)
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),  # (B,)
        "key": [s["key"] for s in samples],
        "visible": [s["visible"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }


def _decoded(src: Iterator[dict], handler, prepare: Callable[[dict, int], dict], start: int = 0) -> Iterator[dict]:
    """Decode + prepare each raw sample; `start` numbers the samples (the augmentation RNG uses the number)."""
    for i, raw in enumerate(src, start=start):
        try:
            yield prepare(decode_sample(raw), i)
        except Exception as e:
            if handler(e):
                continue
            raise


@dataclass
class _TrainStream(IterableDataset):
    """One epoch of training batches for one rank; DataLoader workers split it into interleaved streams."""

    urls: list[str]
    sizes: dict[str, int]
    steps: int
    batch_size: int
    image_size: int
    mask_channel: bool
    augment: Augment
    seed: int
    epoch: int
    rank: int
    world_size: int
    start_step: int
    shuffle_buffer: int
    skip_corrupt: bool
    counter: SkipCounter

    def __iter__(self):
        info = get_worker_info()
        worker, nw = (info.id, info.num_workers) if info else (0, 1)
        # DataLoader hands out batch i from worker i % nw; after a resume at start_step it starts with worker 0,
        # so worker w plays stream (w + start_step) % nw and global batch order is unchanged.
        stream = (worker + self.start_step) % nw
        skip = len(range(stream, self.start_step, nw))  # batches of this stream already consumed
        todo = len(range(stream, self.steps, nw)) - skip
        if todo <= 0:
            return iter(())
        g, G = self.rank * nw + stream, self.world_size * nw
        ids = [self.seed, self.epoch, g, G]
        handler = _error_handler(self.skip_corrupt, self.counter)
        bs = self.batch_size

        def prepare(s: dict, i: int) -> dict:
            rng = np.random.default_rng(ids + [i])  # per-sample randomness: (seed, epoch, stream, sample number)
            image, mask = self.augment(s["image"], s["mask"], rng)
            s["input"] = to_input(image, mask, self.image_size, self.mask_channel)
            return s

        return iter(wds.DataPipeline(
            lambda: _shard_cycle(self.urls, ids, g, G),
            wds.tarfile_to_samples(handler=handler),
            lambda src: _complete_shards(src, self.sizes, handler),
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(str(ids))),
            wds.slice(skip * bs, None),
            lambda src: _decoded(src, handler, prepare, start=skip * bs),
            wds.batched(bs, collation_fn=_collate, partial=False),
            wds.slice(todo),
        ))


def _shard_cycle(urls: list[str], ids: list[int], g: int, G: int) -> Iterator[dict]:
    """Endless shard order of stream g of G: its own shards (reshuffled every pass), or resampled when too few."""
    own = list(urls)
    random.Random(str(ids[:2])).shuffle(own)  # same permutation on every rank/worker of this epoch
    own = own[g::G] if len(own) >= G else own
    for p in range(10**12):
        order = own.copy()
        if len(urls) >= G:
            random.Random(str(ids + [p])).shuffle(order)
        else:  # fewer shards than streams: each stream draws shards at random, with replacement (webdataset's way)
            rng = random.Random(str(ids + [p]))
            order = [rng.choice(own) for _ in own]
        yield from ({"url": u} for u in order)


@dataclass
class Loader:
    """A DataLoader over a webdataset pipeline, plus what the caller needs to know about it."""

    loader: DataLoader
    steps: int | None  # batches it yields (train: exact; eval: None = until the data ends)
    counter: SkipCounter = field(default_factory=SkipCounter)

    def __iter__(self):
        try:
            yield from self.loader
        except ScenectlError as e:  # raised in a worker: the message carries its traceback; keep the last line
            msg = str(e)
            if "Traceback" in msg:
                msg = msg.strip().splitlines()[-1].split("ScenectlError: ", 1)[-1]
                # drop the worker error's traceback: its frames hold the DataLoader iterator, whose worker processes
                # would then outlive the error for as long as anything keeps the exception
                e.__traceback__ = None
                raise ScenectlError(msg) from None
            raise

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an evaluation loader has no fixed length")
        return self.steps

    @property
    def skipped(self) -> int:
        """Corrupt samples or shards skipped so far (with skip_corrupt=True)."""
        return self.counter.value


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: SIGINT / SIGTERM go to the whole process group (Ctrl-C, a cluster's time limit);
    the workers ignore them so the main process can finish its step, save last.pt and shut them down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_train_loader(shards: ShardSet, *, steps: int, batch_size: int, image_size: int, mask_channel: bool = True,
                      augment: Augment | None = None, seed: int = 0, epoch: int = 0, rank: int = 0,
                      world_size: int = 1, start_step: int = 0, workers: int = 0, shuffle_buffer: int = 1000,
                      skip_corrupt: bool = False, counter: SkipCounter | None = None) -> Loader:
    """Exactly `steps - start_step` shuffled, augmented batches: this rank's part of epoch `epoch`."""
    counter = counter or SkipCounter()
    ds = _TrainStream(shards.urls, shards.shard_sizes(), steps=steps, batch_size=batch_size, image_size=image_size,
                      mask_channel=mask_channel, augment=augment or Augment(), seed=seed, epoch=epoch, rank=rank,
                      world_size=world_size, start_step=start_step, shuffle_buffer=shuffle_buffer,
                      skip_corrupt=skip_corrupt, counter=counter)
    dl = DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=False,
                    pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None,
                    worker_init_fn=ignore_stop_signals)
    return Loader(dl, steps - start_step, counter)


def make_eval_loader(shards: ShardSet, image_size: int, batch_size: int, workers: int = 0,
                     mask_channel: bool = True, skip_corrupt: bool = False, rank: int = 0, world_size: int = 1,
                     counter: SkipCounter | None = None) -> Loader:
    """Every sample once (this rank's share under DDP), plain resize to image_size, in shard order."""
    counter = counter or SkipCounter()
    handler = _error_handler(skip_corrupt, counter)
    by_shard = len(shards.urls) >= world_size
    urls = shards.urls[rank::world_size] if by_shard else shards.urls

    def prepare(s: dict, i: int) -> dict:
        s["input"] = to_input(s["image"], s["mask"], image_size, mask_channel)
        return s

    stages = [
        wds.SimpleShardList(urls) if urls else [],
        wds.split_by_worker,
        wds.tarfile_to_samples(handler=handler),
        lambda src: _complete_shards(src, shards.shard_sizes(), handler),
    ]
    if not by_shard:  # fewer shards than ranks: every rank reads all shards and keeps every world_size-th sample
        stages.append(wds.slice(rank, None, world_size))
    stages += [lambda src: _decoded(src, handler, prepare), wds.batched(batch_size, collation_fn=_collate)]
    dl = DataLoader(wds.DataPipeline(*stages), batch_size=None, num_workers=min(workers, max(1, len(urls))),
                    pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_stop_signals)
    return Loader(dl, None, counter)
