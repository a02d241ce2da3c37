"""The one reader of shard sets: every command that reads samples (train, eval, transfer, distill, fuse,
export-imagefolder) goes through it, so every command gets the same checks.

A shard set (docs/shard-format.md) is opened from a local folder or from a webdataset URL pattern:

    open_shard_set("shards/val2017")                                    # a folder written by build-shards
    open_shard_set("shards/val2017/shard-{000000..000003}.tar")         # a subset, brace notation
    open_shard_set("https://host/data/val2017/shard-{000000..000099}.tar")   # streamed over HTTP, with retries
    open_shard_set("pipe:aws s3 cp s3://bucket/val2017/shard-{000000..000099}.tar -")
    open_shard_set("https://host/data/val2017/")                        # a remote folder: shard list from its manifest
    open_shard_set(spec, net_options(retries=5, timeout=60))            # how remote reads retry (scenectl.data.remote)

`manifest.json` and `cooccurrence.h5` are always read from beside the shards (same folder or URL prefix). A manifest
that lists a shard twice, names a shard that is not a plain file name of its folder (no scheme, separator or `..`)
or gives a shard no samples is refused here; schemes are honoured only in the spec the user typed. Every byte of a
set — manifest, cooccurrence.h5 (checked against the manifest's `files` sha256 when it has one), shards — is read
through `scenectl.data.remote.open_stream`: remote reads survive transient network faults, resumed at the byte
reached, and fail for good in one line naming the URL.

Views: what a batch's `input` is made of (`scenectl.data.transforms` does the pixels).
- `scene`: the masked scene `jpg` + `mask.png` -> (C, S, S), C = 4 with the mask channel (train, eval).
- `object`: the unmasked crop, `object.jpg` of a `--with-object` set or `jpg` of a `--task object` set,
  letterboxed -> (3, S, S) (transfer, distill's student, fuse's object model). With `scene_size` each batch also
  carries `scene_input`: the same sample's masked scene as a context model sees it (distill's teacher, fuse),
  never augmented.

Two pipelines, both plain webdataset (`wds.DataPipeline` of shard list -> checked shard reads -> ...):
- `make_train_loader`: an endless, shuffled, augmented stream cut into epochs of exactly `steps` batches per rank,
  so no rank of a DDP job starves or waits. Each (rank, DataLoader worker) pair is one *stream* with its own RNG
  derived from (seed, epoch, rank, stream, sample number): the batch order depends only on the seed, the epoch, the
  world size and the number of workers, and `start_step` resumes an epoch exactly where a checkpoint left it. A
  batch is a sample of the whole split, not of one shard (`_stream_share`): the G streams form
  max(1, min(G, shards // SHARDS_OPEN)) groups, each reading its own shards (all, or at least SHARDS_OPEN) and
  splitting their *samples* (every m-th sample of each shard); a stream reads up to SHARDS_OPEN shards at once,
  interleaved, through a shuffle buffer of up to one pass of its share (docs/training.md, *Batch mixing*).
- `make_eval_loader`: every sample exactly once, in shard order, not augmented. The shards are split across
  (rank, worker) streams (each rank takes every world_size-th shard, or every world_size-th sample when there are
  fewer shards than ranks; its DataLoader workers split its shards, never more workers than shards), and under DDP
  the caller all-reduces its sums.

Integrity, the same for every view: each read of a shard must give exactly the manifest's count (a shard that ends
early, yields nothing, or holds more); a sample key may occur once per shard and in one shard only; each member and
sample must be what the format says (scenectl.data.format: a plain tar of regular, capped `KEY.SUFFIX` members;
`sample_problems`, the checks verify-shards applies too); a truncated or corrupt tar is an error. Each is a one-line
ScenectlError naming the shard (and sample, member), or with `skip_corrupt` is counted (SkipCounter: a bad shard read
once, a bad or duplicate sample once) and left out; a stream that meets FAILURES_IN_A_ROW failures with no usable
sample between them stops with an error (an endless training stream over unreadable data would otherwise never end).
Keys are checked across the whole set in an eval pass (in the process that receives the batches, so duplicates
split over DataLoader workers are caught; under DDP each rank checks its own share) and by `raw_samples`. A training
stream checks the shards it reads: a key in two of its shards is caught, a key duplicated in shards read by
another stream (another worker or rank) is not, and a shard the epoch never reaches is not read at all.

Batches are dicts: `input` (B, 3, H, W) uint8 RGB, `input_mask` (B, 1, H, W) uint8 (255 = hidden) when the view has
the mask channel, `label` (B,) int64, `key` list[str], `visible` list[list[int]], `meta` list[dict], `url` list[str]
(the shard each sample came from), `scene_input` (+ `scene_input_mask`) when asked for, and in training `jitter`
(B, 3), each sample's colour factors. `scenectl.data.transforms.batch_to_device` makes `input` / `scene_input` model
input, (B, C, H, W) float32 jittered and normalised with the mask as channel 4, on the device: every command calls
it where the batch meets the model.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import re
import signal
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.format import (Problem, SampleSpec, basename, join, label_problems, no_manifest, parent,
                                  read_manifest, sample_problems, shard_samples)
from scenectl.data.remote import (NetOptions, check_scheme, expand_locations, file_value_problem, is_local, local_path,
                                  net_options, on_stop_signal, open_stream)
from scenectl.data.transforms import Augment, decode_image, deferred_scene, letterbox_input, stack, to_input
from scenectl.errors import OutOfMemory, ScenectlError, out_of_memory

VIEWS = ("scene", "object")
REBUILD_HINT = "rebuild it with `scenectl build-shards --with-object` (or `--task object`)"
FAILURES_IN_A_ROW = 1000  # --skip-corrupt: a stream stops after this many failures with no usable sample between
SHARDS_OPEN = 16  # shards a training stream reads at once (interleaved); below 2x this every stream reads every shard


# --------------------------------------------------------------------------------------------------------------
# Opening a shard set


@dataclass
class ShardSet:
    """One shard set: its shard URLs (local paths or URLs webdataset can open) and its manifest."""

    urls: list[str]
    manifest: dict
    classes: list[dict]
    location: str  # the folder or URL prefix holding manifest.json and cooccurrence.h5 (ends without "/")
    net: NetOptions = field(default_factory=NetOptions)  # how its remote reads retry (scenectl.data.remote)

    def require_masked(self, option: str) -> None:
        """Refuse a set of `build-shards --task object` crops where masked scenes are needed (train, eval, a
        context model's view)."""
        task = self.manifest.get("task", "masked")
        if task not in ("masked", "ooc"):  # an OOC set (scenectl build-ooc) holds masked scenes too
            raise ScenectlError(f"{option} {self.location} holds --task {task} shards (unmasked object crops, no "
                                "hidden region); train and eval read masked scenes: use these with transfer, distill "
                                "or export-imagefolder")

    def object_member(self) -> str:
        """The member holding the unmasked object crop: object.jpg (--with-object) or jpg (--task object)."""
        if self.manifest.get("params", {}).get("with_object"):
            return "object.jpg"
        if self.manifest.get("task") == "object":
            return "jpg"
        raise ScenectlError(f"shard set {self.location} has no object crops (object.jpg); {REBUILD_HINT}")

    @property
    def num_samples(self) -> int:
        return sum(self.shard_sizes().values())

    def shard_sizes(self) -> dict[str, int]:
        """Samples the manifest records for each shard URL (every read of a shard must give exactly these)."""
        counts = {s["name"]: int(s["samples"]) for s in self.manifest.get("shards", [])}
        return {u: counts.get(basename(u), 0) for u in self.urls}

    def reads(self) -> _Reads:
        return _Reads(self.shard_sizes(), SampleSpec.of(self.manifest), self.net)

    @property
    def image_size(self) -> int:
        return int(self.manifest.get("params", {}).get("image_size", 256))

    def cooccurrence(self) -> Cooccurrence:
        """The source split's co-occurrence counts (cooccurrence.h5 beside the shards), checked against the
        manifest's `files` sha256 when it records one (sets built before that field are taken as they are)."""
        return Cooccurrence.of_set(self.location, self.manifest, self.net)


def open_shard_set(spec: str | os.PathLike, net: NetOptions | None = None, from_file: str | None = None) -> ShardSet:
    """Open a shard-set folder or a webdataset URL pattern; errors name the place at fault.

    `net`: how remote reads retry (default `net_options()`: the environment's settings, else the defaults).
    `from_file`: the file `spec` was read from (e.g. a checkpoint's config): then only a local path is opened, never a
    URL or a command (schemes are honoured only where the user typed them)."""
    spec = str(spec)
    check_scheme(spec)
    why = file_value_problem(spec, urls=False) if from_file is not None else None
    if why:
        raise ScenectlError(f"{from_file} names the shard set that {why}: a URL, pattern or pipe: command read "
                            "from a file is not opened (give it on the command line)")
    net = net or net_options()
    if is_local(spec) and Path(local_path(spec)).is_dir():
        return _open_local_folder(Path(local_path(spec)), net)
    if is_local(spec) and spec.endswith("manifest.json"):
        return _open_local_folder(Path(local_path(spec)).parent, net)
    if is_local(spec) and not re.search(r"\.tar\b", spec):
        raise ScenectlError(f"shard set not found: {spec} (no such folder; write it with `scenectl build-shards`)")
    if not re.search(r"\.tar\b", spec):  # a remote folder: https://host/dir/
        location = spec.rstrip("/")
        manifest = _load_manifest(location, net)
        urls = [join(location, s["name"]) for s in manifest["shards"]]
        return _checked(ShardSet(urls, manifest, manifest["classes"], location, net))
    return _open_pattern(spec, net)


def _open_pattern(spec: str, net: NetOptions) -> ShardSet:
    """A brace pattern of shards (local or remote) whose manifest lies beside them."""
    urls = expand_locations(spec)
    location = parent(spec)
    if is_local(location) and not Path(local_path(location)).is_dir():
        raise ScenectlError(f"shard folder not found: {location} (from --shards {spec})")
    manifest = _load_manifest(location, net)
    listed = {s["name"] for s in manifest["shards"]}
    for u in urls:
        if basename(u) not in listed:
            raise ScenectlError(f"shard {u} is not listed in {join(location, 'manifest.json')}")
        if is_local(u) and not Path(local_path(u)).is_file():
            raise ScenectlError(f"shard not found: {u}")
    return _checked(ShardSet(urls, manifest, manifest["classes"], location, net))


def _open_local_folder(folder: Path, net: NetOptions) -> ShardSet:
    manifest = _load_manifest(str(folder), net)
    urls = []
    for s in manifest["shards"]:
        path = folder / s["name"]
        if not path.is_file():
            raise ScenectlError(f"shard {path} is listed in {folder / 'manifest.json'} but missing")
        urls.append(str(path))
    return _checked(ShardSet(urls, manifest, manifest["classes"], str(folder), net))


def _load_manifest(location: str, net: NetOptions) -> dict:
    where, folder = join(location, "manifest.json"), Path(local_path(location))
    if is_local(location) and not (folder / "manifest.json").is_file():
        raise ScenectlError(f"shard set {folder} {no_manifest(folder)}")
    return read_manifest(where, net)


def _checked(s: ShardSet) -> ShardSet:
    if not s.urls or s.num_samples == 0:
        raise ScenectlError(f"shard set {s.location} holds no samples")
    if len(set(s.urls)) < len(s.urls):
        twice = next(u for i, u in enumerate(s.urls) if u in s.urls[:i])
        raise ScenectlError(f"shard {twice} is named twice (a shard set reads each shard once per pass)")
    return s


# --------------------------------------------------------------------------------------------------------------
# Decoding one sample (only the documented members; never pickle)

IMAGE_MEMBERS = {"jpg": ("image", "RGB"), "mask.png": ("mask", "L"), "object.jpg": ("object", "RGB")}
SCENE_MEMBERS = ("jpg", "mask.png")


def decode_sample(raw: dict, images: tuple[str, ...] | None = None, num_classes: int | None = None,
                  keep: tuple[str, ...] = ()) -> dict:
    """Decode a raw webdataset sample: the image members asked for as uint8 tensors, the label and the metadata.

    Returns {key, url, label, meta, visible} plus `image` (jpg, (3, H, W)), `mask` (mask.png, (1, H, W)) and `object`
    (object.jpg, (3, H, W)) for those in `images` (default: jpg, mask.png, and object.jpg when present), decoded
    from the bytes by torchvision.io, and the members in `keep` as they are, (n,) uint8 tensors under their own
    names. `cls` must be an ASCII integer equal to the json's `cls` (and below num_classes when given). Any missing
    or bad member raises ScenectlError naming the sample, shard and member; other members are ignored.
    """
    url, key = raw.get("__url__", "?"), raw.get("__key__", "?")
    if images is None:
        images = SCENE_MEMBERS + (("object.jpg",) if "object.jpg" in raw else ())

    def fail(member: str, why: str):
        raise ScenectlError(f"corrupt sample {key} in shard {url}: member '{member}' {why}")

    for m in (*images, *keep, "cls", "json"):
        if m not in raw:
            fail(m, "is missing" + (f"; {REBUILD_HINT}" if m == "object.jpg" else ""))
    out = {"key": key, "url": url}
    for member in keep:  # left encoded (View defer_jpeg): the bytes as a (n,) uint8 tensor
        out[member] = torch.frombuffer(bytearray(raw[member]), dtype=torch.uint8)
    for member in images:
        name, mode = IMAGE_MEMBERS[member]
        try:
            out[name] = decode_image(raw[member], mode)
        except Exception as e:  # torchvision raises RuntimeError (and others) for bad bytes
            if out_of_memory(e):
                raise OutOfMemory(f"decoding member '{member}' ({len(raw[member])} bytes) of sample {key} in shard "
                                  f"{url}") from None
            fail(member, f"is not a readable image ({type(e).__name__}: {e})")
    label, meta, problems = label_problems(key, raw, num_classes)  # the format's checks (scenectl.data.format)
    if problems:
        raise _sample_error(problems[0], url)
    out["label"], out["meta"], out["visible"] = label, meta, list(meta.get("visible_categories", []))
    if "image" in out and "mask" in out and out["image"].shape[1:] != out["mask"].shape[1:]:
        fail("mask.png", f"has size {_wh(out['mask'])}, the image {_wh(out['image'])}")
    return out


def _sample_error(problem: Problem, url: str) -> ScenectlError:
    """A problem of the format's checks as the reader's one-line error, naming the sample and its shard."""
    if problem.sample is None:
        return ScenectlError(f"shard {url}: {problem.message}")
    return ScenectlError(f"corrupt sample {problem.sample} in shard {url}: {problem.message}")


def _wh(x: torch.Tensor) -> tuple[int, int]:
    return int(x.shape[-1]), int(x.shape[-2])  # (width, height), as the messages have always said


# --------------------------------------------------------------------------------------------------------------
# Views: raw sample -> the tensors a model takes


@dataclass(frozen=True)
class View:
    """What the reader makes of each sample (see the module docstring); `make_view` checks it fits the set."""

    name: str  # "scene" or "object"
    image_size: int
    mask_channel: bool  # scene: the mask as a 4th input channel
    augment: Augment  # applied when the pipeline gives a sample an RNG (training)
    num_classes: int
    object_member: str | None = None  # object: the member holding the crop (object.jpg, or jpg of a --task object set)
    scene_size: int | None = None  # object: also `scene_input`, the masked scene at this size
    scene_mask: bool = True  # ... with the mask channel
    defer_jpeg: bool = False  # scene: jpg left encoded, decoded per batch on the model's device (batch_to_device)

    def __call__(self, raw: dict, rng: np.random.Generator | None) -> dict:
        """Decode `raw` and add `input` (C, S, S) uint8 (+ `scene_input`); augmented when `rng` is given, with the
        sample's colour jitter factors in `jitter` (3,) (applied per batch: transforms.batch_to_device)."""
        if self.name == "scene" and self.defer_jpeg:  # the mask decoded and the choices drawn here, the jpg later
            s = decode_sample(raw, ("mask.png",), self.num_classes, keep=("jpg",))
            s["input_geometry"], s["input_mask"], s["jitter"] = deferred_scene(
                s["mask"], self.image_size, self.mask_channel, rng, self.augment)
            s["input_jpg"] = s.pop("jpg")  # (n,) uint8: the JPEG's bytes
            return _drop_none(s)
        members = SCENE_MEMBERS if self.name == "scene" else \
            (self.object_member,) + (SCENE_MEMBERS if self.scene_size else ())  # + the context model's scene
        s = decode_sample(raw, members, self.num_classes)
        if self.name == "scene":
            image, mask = s["image"], s["mask"]
            if rng is not None:  # crop + resize straight to image_size, on uint8
                image, mask, s["jitter"] = self.augment(image, mask, rng, self.image_size)
            s["input"], s["input_mask"] = to_input(image, mask, self.image_size, self.mask_channel)  # (3|1, S, S)
        else:
            crop = s[IMAGE_MEMBERS[self.object_member][0]]
            s["input"], s["jitter"] = letterbox_input(crop, self.image_size, rng, self.augment)  # (3, S, S)
        if self.scene_size:  # the context model's view of the same sample: masked scene (+ mask), never augmented
            s["scene_input"], s["scene_input_mask"] = to_input(s["image"], s["mask"], self.scene_size, self.scene_mask)
        return _drop_none(s)


def _drop_none(s: dict) -> dict:
    """Without the optional parts a sample does not have (no mask channel, no jitter): collate stacks what is there."""
    for k in ("jitter", "input_mask", "scene_input_mask"):
        if s.get(k, 0) is None:
            del s[k]
    return s


def make_view(shards: ShardSet, view: str, image_size: int, mask_channel: bool = True, augment: Augment | None = None,
              scene_size: int | None = None, scene_mask: bool = True, defer_jpeg: bool = False) -> View:
    """The view `view` of `shards`, refusing (in the main process, before any worker starts) a set that lacks it.
    `defer_jpeg` (scene view): leave the JPEG for `batch_to_device` to decode on the model's device (a GPU's nvJPEG
    decodes a batch in one call); its bytes are then checked only there, where an unreadable one fails the batch."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r} (one of {', '.join(VIEWS)})")
    if view == "scene" and scene_size:
        raise ValueError("scene_size adds a context model's scene to the object view; the scene view has one")
    if defer_jpeg and view != "scene":
        raise ValueError("defer_jpeg is for the scene view")
    member = shards.object_member() if view == "object" else None
    if view == "scene" or scene_size:
        shards.require_masked("shard set")
    return View(view, image_size, mask_channel, augment or Augment(), len(shards.classes), member, scene_size,
                scene_mask, defer_jpeg)


# --------------------------------------------------------------------------------------------------------------
# Integrity: checked shard reads, unique keys, errors and --skip-corrupt


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


class Handler:
    """What becomes of a bad shard or sample: a one-line ScenectlError naming it, or with skip_corrupt counted (once)
    and left out. Also a webdataset handler (returning True = go on). With skip_corrupt, FAILURES_IN_A_ROW failures
    with no usable sample between them (`good()` marks one) end the stream with an error: the data cannot be read."""

    def __init__(self, skip_corrupt: bool, counter: SkipCounter):
        self.skip_corrupt, self.counter = skip_corrupt, counter
        self.in_row = 0

    def __call__(self, exn: Exception, where: str = "?") -> bool:
        if isinstance(exn, OutOfMemory) or out_of_memory(exn):  # never skipped as corrupt, never called corrupt
            raise exn if isinstance(exn, OutOfMemory) else OutOfMemory(f"reading shard {where}")
        # webdataset's stages append " @ stream" to the message and (stream, url) to the args of passing errors
        first = str(exn.args[0]).split(" @ ")[0] if exn.args else type(exn).__name__
        message = first if isinstance(exn, ScenectlError) else \
            f"cannot read shard {where} (truncated or corrupt?): {type(exn).__name__}: {first}"
        if not self.skip_corrupt:
            raise ScenectlError(message) from None
        self.counter.add()
        self.in_row += 1
        if self.in_row >= FAILURES_IN_A_ROW:
            raise ScenectlError(f"stopped: {self.in_row} failures in a row with --skip-corrupt and no usable sample "
                                f"between them (the limit is {FAILURES_IN_A_ROW}); the last: {message}") from None
        return True

    def good(self) -> None:
        """A usable sample: the failures before it were not in a row with those after."""
        self.in_row = 0


class KeyLedger:
    """The shard each sample key was read from: the same key from two shards is an error naming both."""

    def __init__(self):
        self.where: dict[str, str] = {}

    def fresh(self, key: str, url: str, handler: Handler) -> bool:
        """True for a key not seen in another shard; otherwise the handler raises (or counts it: False)."""
        first = self.where.setdefault(key, url)
        if first == url:
            return True
        handler(ScenectlError(f"sample key {key} is in two shards: {first} and {url} (a shard copied under "
                              "another name, or samples written twice?)"))
        return False


@dataclass(frozen=True)
class _Reads:
    """How a set's shards are read: each shard's manifest count, what its samples must be (scenectl.data.format),
    and how remote reads retry."""

    sizes: dict[str, int]
    spec: SampleSpec
    net: NetOptions


def _read_shards(src: Iterable[dict], reads: _Reads, handler: Handler,
                 ledger: KeyLedger | None = None) -> Iterator[dict]:
    """The raw samples of each shard in `src` ({"url": ...} items), read whole and checked (`_read_shard`)."""
    for item in src:
        yield from _read_shard(item["url"], reads, handler, ledger)


def _tar_samples(url: str, reads: _Reads, handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """The shard's samples as webdataset gives them ({__key__, __url__, member: bytes}), read by the format's
    member reader (scenectl.data.format.shard_samples: a plain tar, only the format's members, each within the
    manifest's size cap) over the one opener of shard bytes (`scenectl.data.remote.open_stream`: remote reads
    retried and resumed at the byte reached). A refused member ends the shard's read (it is not what the format
    says). The stream is closed when the shard ends or its reader is dropped."""
    try:
        stream = open_stream(url, reads.net)
    except Exception as e:  # a permanent remote fault (RemoteError) or a missing file
        handler(e)
        return
    try:
        for item in shard_samples(stream, reads.spec):
            if isinstance(item, Problem):
                handler(_sample_error(item, url))
                return
            yield {"__key__": item[0], "__url__": url, **item[1]}
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        handler(e)
    finally:
        stream.close()


def _read_shard(url: str, reads: _Reads, handler: Handler, ledger: KeyLedger | None) -> Iterator[dict]:
    """One read of one shard: its raw samples, each what the format says (`sample_problems`), each key once (and,
    with a ledger, in no other shard); at its end it must have given the manifest's count (Python's tarfile ends a
    stream quietly at a cut or damaged header, so a truncated shard would otherwise just look short, and a shard
    that yields nothing would go unnoticed)."""
    failed, want = [], reads.sizes[url]

    def noted(exn: Exception) -> bool:  # a read error names (and counts) this shard once; its count is not checked
        if failed and handler.skip_corrupt:
            return True  # the same failure, passed up through webdataset's stages
        failed.append(exn)
        return handler(exn, url)

    n, keys = 0, set()
    for raw in _tar_samples(url, reads, noted):
        n += 1
        key = raw["__key__"]
        if key in keys:
            handler(ScenectlError(f"sample key {key} occurs twice in shard {url}"))
            continue
        keys.add(key)
        problems = sample_problems(key, {k: v for k, v in raw.items() if not k.startswith("__")}, reads.spec)
        if problems:
            handler(_sample_error(problems[0], url))
            continue
        if ledger is None or ledger.fresh(key, url, handler):
            yield raw
    if n != want and not failed:
        handler(ScenectlError(f"shard {url} gave {n} samples where its manifest lists {want} "
                              "(truncated, corrupt or altered)"))


def raw_samples(shards: ShardSet, skip_corrupt: bool = False, counter: SkipCounter | None = None) -> Iterator[dict]:
    """Every raw sample of the set once, in shard order, in this process, with the reader's shard and key checks:
    for tools that copy members as stored (export-imagefolder). Decode with `decode_sample`."""
    handler = Handler(skip_corrupt, counter or SkipCounter())
    return _read_shards(({"url": u} for u in shards.urls), shards.reads(), handler, KeyLedger())


# --------------------------------------------------------------------------------------------------------------
# Pipelines


def collate(samples: list[dict]) -> dict:
    """Prepared samples -> a batch (the one batch format of every reader, the ImageFolder path included); its
    `input` is uint8 until transforms.batch_to_device makes it model input where it meets the model."""
    out = {
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),  # (B,)
        "key": [s["key"] for s in samples],
        "visible": [s["visible"] for s in samples],
        "meta": [s["meta"] for s in samples],
        "url": [s["url"] for s in samples],
    }
    for k in ("input", "input_mask", "scene_input", "scene_input_mask"):  # (B, 3|1, S, S), (B, 3|1, S', S')
        if k in samples[0]:
            out[k] = stack([s[k] for s in samples])
    if "input_jpg" in samples[0]:  # defer_jpeg: decoded by batch_to_device
        out["input_jpg"] = [s["input_jpg"] for s in samples]  # B x (n,) uint8
        out["input_geometry"] = torch.stack([s["input_geometry"] for s in samples])  # (B, 6)
    if "jitter" in samples[0]:
        out["jitter"] = torch.stack([s["jitter"] for s in samples])  # (B, 3) colour factors (training)
    return out


def _decoded(src: Iterator[dict], handler: Handler, prepare: Callable[[dict, int], dict],
             start: int = 0) -> Iterator[dict]:
    """Decode + prepare each raw sample; `start` numbers the samples (the augmentation RNG uses the number)."""
    for i, raw in enumerate(src, start=start):
        try:
            sample = prepare(raw, i)
        except Exception as e:
            if handler(e, raw.get("__url__", "?")):
                continue
            raise
        handler.good()
        yield sample


@dataclass(frozen=True, kw_only=True)
class Batches:
    """What both loaders share: batches of `batch_size` samples of `view` at `image_size`, this rank's part."""

    batch_size: int
    image_size: int
    # the view (make_view): `scene` / `object`, the mask channel, a context model's scene beside an object crop,
    # scenes' JPEGs decoded per batch on the model's device (a CUDA run)
    view: str = "scene"
    mask_channel: bool = True
    scene_size: int | None = None
    scene_mask: bool = True
    defer_jpeg: bool = False
    # this rank of world_size (DDP)
    rank: int = 0
    world_size: int = 1
    # the reading: DataLoader workers, corrupt samples skipped (and counted in `counter`) or an error
    workers: int = 0
    skip_corrupt: bool = False
    counter: SkipCounter | None = None


@dataclass(frozen=True, kw_only=True)
class TrainBatches(Batches):
    """What `make_train_loader` yields: exactly `steps - start_step` batches, shuffled and augmented (`augment`),
    of epoch `epoch` (docs/training.md, "Data pipeline")."""

    steps: int
    augment: Augment | None = None
    # the order: seed, epoch, the step it resumes at, the shuffle buffer
    seed: int = 0
    epoch: int = 0
    start_step: int = 0
    shuffle_buffer: int = 1000


@dataclass
class _TrainStream(IterableDataset):
    """One epoch of training batches for one rank; DataLoader workers split it into interleaved streams."""

    urls: list[str]
    reads: _Reads
    view: View
    batches: TrainBatches
    counter: SkipCounter

    def __iter__(self):
        info = get_worker_info()
        worker, nw = (info.id, info.num_workers) if info else (0, 1)
        # DataLoader hands out batch i from worker i % nw; after a resume at start_step it starts with worker 0,
        # so worker w plays stream (w + start_step) % nw and global batch order is unchanged.
        b = self.batches
        stream = (worker + b.start_step) % nw
        skip = len(range(stream, b.start_step, nw))  # batches of this stream already consumed
        todo = len(range(stream, b.steps, nw)) - skip
        if todo <= 0:
            return iter(())
        g, G = b.rank * nw + stream, b.world_size * nw
        ids = [b.seed, b.epoch, g, G]
        handler = Handler(b.skip_corrupt, self.counter)
        share = _stream_share(self.urls, self.reads.sizes, ids)
        buffer = max(1, min(b.shuffle_buffer, share.per_pass))  # never more than one pass of the stream
        bs = b.batch_size

        def prepare(raw: dict, i: int) -> dict:  # per-sample randomness: (seed, epoch, stream, sample number)
            return self.view(raw, np.random.default_rng(ids + [i]))

        return iter(wds.DataPipeline(
            lambda: _passes(share, ids, buffer, KeyLedger(), handler, self.reads),  # keys across its shards
            wds.slice(skip * bs, None),
            lambda src: _decoded(src, handler, prepare, start=skip * bs),
            wds.batched(bs, collation_fn=collate, partial=False),
            wds.slice(todo),
        ))


@dataclass
class _Share:
    """What one training stream reads in an epoch: the samples of `shards` whose global number i (counted through
    the shards in this order, `offsets[url]` before each) has i % m == k. The m streams of a group read the same
    shards and split their samples; different groups read different shards."""

    shards: list[str]
    sizes: dict[str, int]
    offsets: dict[str, int]
    k: int
    m: int

    def kept(self, url: str) -> int:
        """Samples of shard `url` this stream keeps (by the manifest's count)."""
        return len(range((self.k - self.offsets[url]) % self.m, self.sizes[url], self.m))

    @property
    def per_pass(self) -> int:
        return sum(self.kept(u) for u in self.shards)


def _stream_share(urls: list[str], sizes: dict[str, int], ids: list[int]) -> _Share:
    """Stream g of G's share of epoch ids[1]. The G streams form max(1, min(G, shards // SHARDS_OPEN)) groups, so
    each group reads at least SHARDS_OPEN shards (or all of them) and a batch mixes that many shards: a set with few
    shards (up to 2 x SHARDS_OPEN) is read whole by every stream, each keeping every G-th sample, which makes every
    batch a sample of the whole split whatever order the shards hold; a large set is dealt out in shard groups (its
    shards are random samples of the split when build-shards wrote them, docs/shard-format.md), so no stream reads
    more than about SHARDS_OPEN x G / shards times its own share of bytes."""
    g, G = ids[2], ids[3]
    order = list(urls)
    random.Random(str(ids[:2])).shuffle(order)  # same permutation on every rank/worker of this epoch
    groups = max(1, min(G, len(order) // SHARDS_OPEN))
    own = order[g % groups::groups]
    offsets = dict(zip(own, np.cumsum([0] + [sizes[u] for u in own[:-1]]).tolist()))
    share = _Share(own, sizes, offsets, g // groups, len(range(g % groups, G, groups)))
    if share.per_pass == 0:  # fewer samples than streams: this stream reads them all rather than nothing
        share.k, share.m = 0, 1
    return share


def _passes(share: _Share, ids: list[int], buffer: int, ledger: KeyLedger, handler: Handler,
            reads: _Reads) -> Iterator[dict]:
    """This stream's raw samples, endlessly, pass after pass: each pass reads every sample of its share once
    (`_mixed`) through its own shuffle buffer, so with a buffer of the whole pass an epoch of one pass draws no
    sample twice."""
    for p in range(10**12):
        order = share.shards.copy()
        random.Random(str(ids + [p])).shuffle(order)  # shards open in a new order on every pass
        mix = _mixed(share, order, random.Random(str(ids + [p, "mix"])), ledger, handler, reads)
        yield from wds.shuffle(buffer, initial=buffer, rng=random.Random(str(ids + [p])))(mix)


def _mixed(share: _Share, order: list[str], rng: random.Random, ledger: KeyLedger, handler: Handler,
           reads: _Reads) -> Iterator[dict]:
    """One pass over the share: up to SHARDS_OPEN shards of `order` read at once, each next sample taken from an
    open shard with probability proportional to the samples it has left (so the open shards advance together and
    end together); a finished shard is replaced by the next of `order`."""
    todo, open_ = iter(order), []  # open_: [samples iterator, samples left]

    def kept(url: str) -> Iterator[dict]:
        first = (share.k - share.offsets[url]) % share.m
        read = _read_shard(url, reads, handler, ledger)
        return (raw for j, raw in enumerate(read) if j % share.m == first)

    while True:
        while len(open_) < SHARDS_OPEN and (url := next(todo, None)) is not None:
            open_.append([kept(url), share.kept(url)])
        if not open_:
            return
        i = rng.choices(range(len(open_)), weights=[max(left, 1) for _, left in open_])[0]
        raw = next(open_[i][0], None)
        if raw is None:  # the shard ended (_read_shard checks its count)
            del open_[i]
            continue
        open_[i][1] -= 1
        yield raw


def _eval_pipeline(shards: ShardSet, view: View, b: EvalBatches, handler: Handler) -> tuple[wds.DataPipeline, int]:
    """This rank's share of the set, every sample once, in shard order; also how many shards it reads."""
    by_shard = len(shards.urls) >= b.world_size
    urls = shards.urls[b.rank::b.world_size] if by_shard else shards.urls
    stages = [
        wds.SimpleShardList(urls),
        wds.split_by_worker,  # DataLoader workers split the rank's shards (never more workers than shards)
        lambda src: _read_shards(src, shards.reads(), handler),  # keys across shards: Loader
    ]
    if not by_shard:  # fewer shards than ranks: every rank reads all shards and keeps every world_size-th sample
        stages.append(wds.slice(b.rank, None, b.world_size))
    stages += [lambda src: _decoded(src, handler, lambda raw, i: view(raw, None)),
               wds.batched(b.batch_size, collation_fn=collate)]
    return wds.DataPipeline(*stages), len(urls)


@dataclass
class Loader:
    """A DataLoader over a webdataset pipeline, plus what the caller needs to know about it.

    With `unique_keys` (eval) the batches are checked where they arrive, in this process: a key from two shards
    is an error even when different DataLoader workers read them (or, with skip_corrupt, counted and dropped).
    """

    loader: DataLoader
    steps: int | None  # batches it yields (train: exact; eval: None = until the data ends)
    counter: SkipCounter = field(default_factory=SkipCounter)
    unique_keys: bool = False
    skip_corrupt: bool = False

    def __iter__(self):
        ledger, handler = KeyLedger(), Handler(self.skip_corrupt, self.counter)
        try:
            for batch in self.loader:
                if self.unique_keys:
                    batch = _fresh_only(batch, ledger, handler)
                if batch is not None:
                    handler.good()
                    yield batch
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


def _fresh_only(batch: dict, ledger: KeyLedger, handler: Handler) -> dict | None:
    """The batch without samples whose key an earlier shard gave (the handler raises unless skipping); None if empty."""
    keep = [i for i, (k, u) in enumerate(zip(batch["key"], batch["url"])) if ledger.fresh(k, u, handler)]
    if len(keep) == len(batch["key"]):
        return batch
    if not keep:
        return None
    return {name: v[keep] if isinstance(v, torch.Tensor) else [v[i] for i in keep] for name, v in batch.items()}


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker_init_fn: SIGINT / SIGTERM go to the whole process group (Ctrl-C, a cluster's time limit).
    A worker does not die of them, so the main process can finish its step, save last.pt and shut the workers down
    itself; but a remote read or retry wait the worker is blocked in ends at once (remote.on_stop_signal), so the
    main process is never left waiting --timeout seconds for its next batch."""
    signal.signal(signal.SIGINT, on_stop_signal)
    signal.signal(signal.SIGTERM, on_stop_signal)


def as_is(batch: dict) -> dict:
    """The DataLoader's collate_fn: batches are already collated (`collate`), and torch's default conversion would
    walk every sample's metadata again in the main process (a measured third of the evaluation reader's time)."""
    return batch


def make_train_loader(shards: ShardSet, batches: TrainBatches) -> Loader:
    """The training batches `batches` describes: exactly `steps - start_step` shuffled, augmented batches of its
    view, this rank's part of its epoch."""
    b, counter = batches, batches.counter or SkipCounter()
    v = make_view(shards, b.view, b.image_size, b.mask_channel, b.augment, b.scene_size, b.scene_mask, b.defer_jpeg)
    ds = _TrainStream(shards.urls, shards.reads(), v, b, counter)
    dl = DataLoader(ds, batch_size=None, num_workers=b.workers, persistent_workers=False,
                    pin_memory=torch.cuda.is_available(), prefetch_factor=4 if b.workers else None,
                    worker_init_fn=ignore_stop_signals, collate_fn=as_is)
    return Loader(dl, b.steps - b.start_step, counter)


@dataclass(frozen=True, kw_only=True)
class EvalBatches(Batches):
    """What `make_eval_loader` yields: every sample of `view` once (this rank's share under DDP), not augmented, in
    shard order."""


def make_eval_loader(shards: ShardSet, b: EvalBatches) -> Loader:
    """The batches `b` describes over `shards`."""
    counter = b.counter or SkipCounter()
    v = make_view(shards, b.view, b.image_size, b.mask_channel, None, b.scene_size, b.scene_mask, b.defer_jpeg)
    pipeline, n_urls = _eval_pipeline(shards, v, b, Handler(b.skip_corrupt, counter))
    dl = DataLoader(pipeline, batch_size=None, num_workers=min(b.workers, max(1, n_urls)),
                    pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_stop_signals, collate_fn=as_is)
    return Loader(dl, None, counter, unique_keys=True, skip_corrupt=b.skip_corrupt)
