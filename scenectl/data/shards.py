"""build-shards: COCO instances -> webdataset shards of scenes with one object hidden (docs/shard-format.md).

Flow: the parent loads the annotation file once (pycocotools), then streams one small task per image
(the image's record and its annotations, never the whole file) to a 'forkserver' pool. A worker decodes the
image once and returns every sample of that image, encoded. Results come back in the build's seeded image order
(`image_order`, kept by imap) and the parent writes them with webdataset's ShardWriter as `*.tar.partial`; each
finished shard is hashed, renamed to `*.tar` and journalled in `progress.json`, so `--resume` after a kill
continues exactly where the journal says. `manifest.json`, written last, marks the set complete.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import multiprocessing as mp
import os
import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from scenectl import __version__
from scenectl.data.coco import (
    BadImage, ClassTable, annotation_box, load_coco, load_image, rle_box, split_paths, to_rle,
    transpose_box,
)
from scenectl.data.format import (
    FORMAT, JPEG_QUALITY, TIMM_INFO, SetNames, ShardSink, SinkTarget, encode_jpeg, encode_png, encode_sample,
    read_manifest, seal_set, write_timm_info,
)
from scenectl.data.masks import (
    FILLS, MEAN_RGB, SHAPES, Letterbox, bbox, box_region, crop_box, fill, fill_reach, hidden_region, nearest_mask,
    reduce_any,
)
from scenectl.errors import ScenectlError
from scenectl.folders import MARKER, Folder, claim, owner
from scenectl.io import file_sha256, read_json, remove_stale_tmp, write_json_atomic
from scenectl.options import Config, option
from scenectl.progress import progress

TASKS = ("masked", "object")
SKIP_REASONS = ("crowd", "too_large", "too_small", "bad_image", "bad_annotation")
DEFAULT_COCO_ROOT = Path("data/scenes")  # where `scenectl sample` writes
COCO_ROOT_ENV = "SCENECTL_COCO_ROOT"
ORDER = "shuffled"  # images in the order of image_order(ids, seed), recorded as params.order / params.order_seed
HIST_BINS = 10  # area-fraction histogram over [0, max_area]


# --- configuration --------------------------------------------------------------------------------------------
@dataclass
class BuildConfig(Config):
    """One split's build. Source: `annotations` + `images`, else `coco_root` + `split` (COCO layout), where a
    missing `coco_root` means $SCENECTL_COCO_ROOT, else data/scenes (generated first if absent). The command line
    builds one per split (scenectl/cli/build_shards.py: --split is repeatable and --out a template)."""

    coco_root: Path | None = option(
        None, f"COCO-layout folder (annotations/instances_{{split}}.json, {{split}}/*.jpg). Default: ${COCO_ROOT_ENV}, "
        f"else {DEFAULT_COCO_ROOT} (where `scenectl sample` writes; generated first, with --seed, when missing).")
    split: str = option("val2017", "Split to build; repeat for several. Default: train2017 and val2017.",
                        type=list[str] | None, cli_default=None)
    annotations: Path | None = option(None, "Any COCO-format instance file (instead of --coco-root/--split); needs "
                                            "--images.")
    images: Path | None = option(None, "Image folder for --annotations.")
    out: Path = option(Path("shards/val2017"), "Output folder; {split} is replaced by the split name.", "--out", "-o",
                       type=str, cli_default="shards/{split}")
    shape: str = option("square", "Hidden region: square | circle | box | instance.", choices=SHAPES)
    fill: str = option("mean", "Hidden pixels: mean (RGB 124,116,104) | black | noise | blur.", choices=FILLS)
    max_area: float = option(0.3, "Skip an instance whose hidden region exceeds this fraction of the image, in (0, 1].")
    min_area: int = option(1024, "Skip instances with fewer mask pixels (1024 = 32x32, COCO's small/medium boundary).")
    margin: int = option(3, "Dilate the instance mask by this many pixels first.")
    image_size: int = option(256, "Output side; the scene is letterboxed (longer side resized, shorter side padded "
                                  "with the mean colour).")
    hide_same_class: bool = option(False, "Also hide every other instance of the target's class.",
                                   "--hide-same-class")
    with_object: bool = option(False, "Also store object.jpg, the unmasked instance crop.", "--with-object")
    task: str = option("masked", "masked (scene with the object hidden) | object (unmasked instance crops as jpg, for "
                                 "object classification).", choices=TASKS)
    seed: int = option(0, "Seed of the image order (a seeded shuffle: every shard a random sample of the split) and "
                          "of the noise/blur fills; same inputs + seed -> same bytes.")
    workers: int | None = option(None, "Processes that decode images [default: one per core]; 0: the main process "
                                       "alone (so does 1). The shards are the same whatever the number.",
                                 show_default=False)
    maxcount: int = option(1000, "Samples per shard at most.")
    maxsize: float = option(1e9, "Bytes per shard at most (about).")
    part: str | None = option(None, "i/n: build only part i (0-based) of n disjoint parts; then `scenectl "
                                    "merge-manifests DIR`.")
    resume: bool = option(False, "Continue an interrupted build of the same options.", "--resume")
    overwrite: bool = option(False, "Replace an existing build in --out.", "--overwrite")
    progress: bool = True  # progress on stderr (scenectl.progress: a bar on a terminal, log lines otherwise)

    def check_more(self) -> None:
        if (self.annotations is None) != (self.images is None):
            raise ScenectlError("--annotations and --images go together")
        parse_part(self.part)

    def source(self, echo: Callable[[str], None] = print) -> tuple[Path, Path, str]:
        """(annotation file, image folder, split name)."""
        if self.annotations is not None:
            return Path(self.annotations), Path(self.images), Path(self.annotations).stem
        root = Path(self.coco_root) if self.coco_root is not None else default_coco_root(self.seed, echo)
        ann, images = split_paths(root, self.split)
        return ann, images, self.split

    def params(self, split: str) -> dict:
        """What determines the samples (the manifest's `params`; a resume must match them)."""
        return {
            "task": self.task, "shape": self.shape, "fill": self.fill, "max_area": self.max_area,
            "min_area": self.min_area, "margin": self.margin, "image_size": self.image_size,
            "hide_same_class": self.hide_same_class, "with_object": self.with_object, "seed": self.seed,
            "maxcount": self.maxcount, "maxsize": int(self.maxsize), "split": split, "part": self.part,
            "mean_rgb": list(MEAN_RGB), "jpeg_quality": JPEG_QUALITY, "order": ORDER, "order_seed": self.seed,
        }


_PART = re.compile(r"(\d{1,6})/(\d{1,6})")  # --part i/n, on the command line and in a part's manifest


def parse_part(part: str | None) -> tuple[int, int] | None:
    if part is None:
        return None
    m = _PART.fullmatch(str(part))
    if not m or not int(m[1]) < int(m[2]):
        raise ScenectlError(f"--part must be i/n with 0 <= i < n (e.g. 0/4), got {part!r}")
    return int(m[1]), int(m[2])


def default_coco_root(seed: int = 0, echo: Callable[[str], None] = print) -> Path:
    """$SCENECTL_COCO_ROOT, else data/scenes, which is first generated (synthetic scenes) if it does not exist."""
    if os.environ.get(COCO_ROOT_ENV):
        return Path(os.environ[COCO_ROOT_ENV])
    root = DEFAULT_COCO_ROOT
    if not root.exists():
        from scenectl.data.synthetic import generate_scenes  # part of the package (numpy, PIL, pycocotools)

        echo(f"no --coco-root: generating synthetic scenes in {root} first (as `scenectl sample --seed {seed}`)")
        generate_scenes(out=root, seed=seed)
    return root


# --- the worker side: one image -> its samples ----------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """What every worker needs besides its images' records (small: sent once per worker)."""

    images: str
    split: str
    params: dict
    coco_ids: tuple[int, ...]
    names: tuple[str, ...]


@dataclass
class ImageResult:
    index: int  # position of the image in this build's image order
    samples: list = field(default_factory=list)  # [(sample dict of bytes, cls, area_fraction)]
    skipped: dict = field(default_factory=dict)
    instances: int = 0
    bad_image: bool = False


_JOB: Job | None = None


def _init_worker(job: Job) -> None:
    global _JOB
    _JOB = job


def _run_task(task: tuple[int, dict, list]) -> ImageResult:
    return process_image(_JOB, *task)


def process_image(job: Job, index: int, record: dict, anns: list[dict]) -> ImageResult:
    """Decode one image once and make the sample of each of its eligible instances."""
    p = job.params
    anns = sorted(anns, key=lambda a: a["id"])
    targets = [a for a in anns if not a.get("iscrowd", 0)]
    res = ImageResult(index, instances=len(anns), skipped=Counter(crowd=len(anns) - len(targets)))
    width, height = int(record["width"]), int(record["height"])
    skipped, inst = Counter(), _Instances(anns, height, width, p["shape"], p["margin"])
    kept = _eligible(job, anns, targets, inst, skipped)
    # only a masked scene is shrunk (draft decode); an object crop keeps every pixel of the instance; an image without
    # a sample is still decoded (a broken one counts as bad_image either way), but at 1/8 scale, the cheapest
    draft = p["image_size"] if p["task"] == "masked" and not p["with_object"] else None
    try:
        dec = load_image(Path(job.images) / record["file_name"], width, height, draft if kept else 1)
    except BadImage:
        res.bad_image, res.skipped["bad_image"] = True, len(targets)
        return res
    res.skipped.update(skipped)
    if not kept:
        return res
    lb = Letterbox(*dec.size, p["image_size"])  # defined on full-resolution upright pixels
    base = lb.image(dec.image) if p["task"] == "masked" else None  # unmasked letterboxed scene, patched per sample
    pixels = np.asarray(dec.image) if p["task"] == "masked" else None  # (h, w, 3), one copy for all samples
    view = SceneView(dec, lb, base, pixels)
    for t in kept:
        if dec.turn is not None:  # annotations in the stored frame, pixels upright: turn the region likewise
            region = np.asarray(Image.fromarray(t.region).transpose(dec.turn))
            t = replace(t, region=region, box=bbox(region))
        t = replace(t, ann={**t.ann, "bbox": inst.coco_boxes[t.ann["id"]]})  # checked; else the mask's box
        res.samples.append(_sample(job, record, view, t))
    return res


@dataclass(frozen=True)
class _Target:
    """One instance that makes a sample, as `_eligible` finds it from the annotations alone."""

    ann: dict
    region: np.ndarray  # (H, W) bool: the hidden pixels (annotation frame, until turned upright)
    box: tuple  # the region's box (x0, y0, x1, y1)
    rect: bool  # the region is exactly its box
    frac: float  # hidden pixels / image pixels
    area: int  # the instance's pixel count
    visible: list[int]  # classes of the other instances still showing


@dataclass(frozen=True)
class SceneView:
    """A decoded image as masking uses it: the decoded image (coco.load_image), its letterbox, the unmasked
    letterboxed scene (S, S, 3) uint8 and, when made once for all its samples, its pixels as an array (h, w, 3)
    (base and pixels None where no scene is masked: --task object)."""

    dec: Any
    lb: Letterbox
    base: np.ndarray | None
    pixels: np.ndarray | None = None


def _eligible(job: Job, anns: list[dict], targets: list[dict], inst: _Instances, skipped: Counter) -> list[_Target]:
    """The targets that make samples, from the annotations alone (no pixels); the others counted in `skipped` by
    reason."""
    p, cls_of, kept = job.params, {cid: i for i, cid in enumerate(job.coco_ids)}, []
    for a in targets:
        if a["id"] not in inst.rles:
            skipped["bad_annotation"] += 1
            continue
        area = inst.area(a)
        if area < p["min_area"]:
            skipped["too_small"] += 1
            continue
        hidden = inst.hidden(anns, a, p["hide_same_class"])
        region, box, rect = inst.region(hidden)  # (H, W) bool in the annotation frame, its box
        hidden_px = (box[2] - box[0]) * (box[3] - box[1]) if rect else int(region[box[1]:box[3], box[0]:box[2]].sum())
        frac = hidden_px / region.size
        if frac > p["max_area"]:
            skipped["too_large"] += 1
            continue
        hidden_ids = {b["id"] for b in hidden}
        visible = sorted({cls_of[b["category_id"]] for b in anns
                          if b["id"] not in hidden_ids and b["id"] in inst.rles and inst.shows(b, region, box, rect)})
        kept.append(_Target(a, region, box, rect, frac, area, visible))
    return kept


class _Instances:
    """One image's annotations as RLEs (degenerate or hostile ones left out: coco.to_rle, coco.annotation_box);
    masks and hidden regions decoded on demand and kept, so each is computed once per image however many samples
    use it."""

    def __init__(self, anns: list[dict], height: int, width: int, shape: str, margin: int):
        self.shape, self.margin, self.size = shape, margin, (height, width)
        self.rles, self.coco_boxes = {}, {}  # usable annotations only: checked segmentation and COCO bbox
        for a in anns:
            rle = to_rle(a.get("segmentation"), height, width)
            coco_box = None if rle is None else annotation_box(a, rle, width, height)
            if coco_box is not None:
                self.rles[a["id"]], self.coco_boxes[a["id"]] = rle, coco_box
        self.boxes = {k: rle_box(r) for k, r in self.rles.items()}
        self._masks: dict[int, np.ndarray] = {}
        self._regions: dict[int, tuple] = {}

    def area(self, a: dict) -> int:
        return int(mask_utils.area(self.rles[a["id"]]))  # pixel count of the decoded mask, from the RLE

    def mask(self, a: dict) -> np.ndarray:
        if a["id"] not in self._masks:
            self._masks[a["id"]] = mask_utils.decode(self.rles[a["id"]]).view(bool)  # (H, W), 0/1 uint8 seen as bool
        return self._masks[a["id"]]

    def hidden(self, anns: list[dict], target: dict, same_class: bool) -> list[dict]:
        """The annotations hidden with `target`: itself and, with `same_class`, every usable one of its class."""
        return [b for b in anns if b["id"] == target["id"] or (
            same_class and b["category_id"] == target["category_id"] and b["id"] in self.rles)]

    def region(self, anns: list[dict]) -> tuple[np.ndarray, tuple, bool]:
        """Union of the hidden regions of `anns` -> ((H, W) bool, box, whether it is exactly its box)."""
        for a in anns:
            if a["id"] not in self._regions:
                if self.shape in ("box", "square"):  # from the RLE's box alone: no decoding
                    r, b = box_region(self.boxes[a["id"]], self.shape, self.margin, self.size)
                else:
                    r, b = hidden_region(self.mask(a), self.shape, self.margin, self.boxes[a["id"]])
                self._regions[a["id"]] = (r, b, self.shape in ("box", "square"))
        if len(anns) == 1:
            return self._regions[anns[0]["id"]]
        parts = [self._regions[a["id"]] for a in anns]
        union = np.logical_or.reduce([r for r, _, _ in parts])
        boxes = np.array([b for _, b, _ in parts])
        box = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
        return union, box, False

    def shows(self, a: dict, region: np.ndarray, rbox: tuple, rect: bool) -> bool:
        """Whether any pixel of instance `a` lies outside `region` (whose box is `rbox`)."""
        x0, y0, x1, y1 = self.boxes[a["id"]]
        if x0 < rbox[0] or y0 < rbox[1] or x1 > rbox[2] or y1 > rbox[3]:
            return True  # sticks out of the region's box
        if rect:
            return False  # inside a rectangular region
        return bool((self.mask(a)[y0:y1, x0:x1] & ~region[y0:y1, x0:x1]).any())


def mask_from_metadata(annotations: list[dict], image_record: dict, meta: dict) -> np.ndarray:
    """Rebuild a sample's mask.png from the annotation file and the sample's `json` alone -> (S, S) uint8,
    255 = hidden, equal pixel for pixel to the mask.png that build-shards wrote.

    `annotations`: the image's annotations as in the annotation file (at least the target, and with
    `hide_same_class` every annotation of its class); `image_record`: its `images` entry (stored `width`,
    `height`); `meta`: the sample's metadata (`annotation_id`, `shape`, `margin`, `hide_same_class` and
    `transform`: `turn`, `resized`, `offset`, `size`). The region is made by the build's own per-image code at the
    annotation's full resolution, turned upright by `transform.turn`, and resampled by `masks.nearest_mask`.
    """
    height, width = int(image_record["height"]), int(image_record["width"])
    inst = _Instances(annotations, height, width, meta["shape"], int(meta["margin"]))
    target = next(a for a in annotations if a["id"] == meta["annotation_id"])
    hidden = inst.hidden(annotations, target, meta["hide_same_class"])
    region, box, _ = inst.region(hidden)  # (H, W) bool in the annotation frame
    t = meta["transform"]
    if t.get("turn"):
        region = np.asarray(Image.fromarray(region).transpose(Image.Transpose[t["turn"]]))
        box = None
    return nearest_mask(region, box, tuple(t["resized"]), tuple(t["offset"]), int(t["size"]))


def _sample(job: Job, record: dict, view: SceneView, t: _Target) -> tuple[dict, int, float]:
    """Encode the sample of target `t` (its region and box upright, full resolution) in the image of `record`,
    decoded as `view`."""
    p, dec, a = job.params, view.dec, t.ann
    c = job.coco_ids.index(a["category_id"])
    coco_box = transpose_box(a["bbox"], dec.turn, int(record["width"]), int(record["height"]))  # upright frame
    transform = {**view.lb.transform(), "turn": None if dec.turn is None else dec.turn.name}
    sample = encode_sample(record, a, c, p, category_name=job.names[c], bbox=coco_box, area_fraction=t.frac,
                           instance_area=t.area, visible_categories=t.visible, orig_size=list(dec.size),
                           transform=transform, split=job.split)
    if p["task"] == "object" or p["with_object"]:  # decoded at full resolution (no draft)
        crop = dec.image.crop(crop_box(coco_box, *dec.size))
        sample["object.jpg"] = encode_jpeg(Letterbox(crop.width, crop.height, p["image_size"]).image(crop))
    if p["task"] == "object":
        sample["jpg"] = sample.pop("object.jpg")
        return sample, c, t.frac
    sample["mask.png"] = encode_png(view.lb.mask(t.region, t.box))
    # per-sample randomness from (seed, image id, annotation id): independent of workers and order
    rng = np.random.default_rng([p["seed"], record["id"], a["id"]]) if p["fill"] in ("noise", "blur") else None
    sample["jpg"] = encode_jpeg(mask_scene(view, t.region, t.box, p["fill"], rng, t.rect))
    return sample, c, t.frac


def mask_scene(view: SceneView, region: np.ndarray, box: tuple, fill_kind: str, rng: np.random.Generator | None,
               rect: bool = False) -> np.ndarray:
    """The masked, letterboxed scene (S, S, 3) uint8: `region` (upright, full resolution, box `box`; `rect`: exactly
    its box) filled in the decoded pixels of `view`, patched into its unmasked letterboxed scene. Shared with
    `scenectl predict`, so a user's query is hidden exactly as the training samples were. Only the window of pixels
    the patch reads (and the fill sees) is copied and filled."""
    dec, lb = view.dec, view.lb
    arr = np.asarray(dec.image) if view.pixels is None else view.pixels  # (h, w, 3): full resolution or 1/dec.reduce
    small, sbox = reduce_any(region, box, dec.reduce, arr.shape[:2], rect)  # the region in those pixels, covering
    x0, y0, x1, y1 = lb.source_window(sbox, arr.shape[:2], fill_reach(fill_kind, sbox))
    part = fill(arr[y0:y1, x0:x1], small[y0:y1, x0:x1], fill_kind, rng,
                (sbox[0] - x0, sbox[1] - y0, sbox[2] - x0, sbox[3] - y0))  # a filled copy of the window
    return lb.patch(view.base, part, small, sbox, origin=(x0, y0), shape=arr.shape[:2])


# --- the parent side ------------------------------------------------------------------------------------------
def _mp_context():
    """forkserver: workers start from a small clean process (not a copy of the parent and its annotation index),
    so their memory does not multiply with --workers; spawn where forkserver does not exist.

    Preloading '__main__' makes the server (once) import a main *script* such as the `scenectl` console
    script, which every child would otherwise re-run on start-up (importing the whole CLI each time);
    `python -m ...` mains are never re-imported anyway."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "scenectl.data.shards"])
        return ctx
    return mp.get_context("spawn")


def _results(tasks: Iterable, job: Job, workers: int, chunksize: int = 4) -> Iterator[ImageResult]:
    """ImageResults in task order; with a pool, at most 4 × workers × chunksize tasks are in flight."""
    if workers <= 1:
        _init_worker(job)
        yield from map(_run_task, tasks)
        return
    slots, stop = threading.Semaphore(4 * workers * chunksize), threading.Event()

    def feed():  # runs in the pool's task-feeding thread; blocks while too many results are pending
        for t in tasks:
            while not slots.acquire(timeout=0.2):
                if stop.is_set():
                    return
            yield t

    pool = _mp_context().Pool(workers, initializer=_init_worker, initargs=(job,))
    try:
        for r in pool.imap(_run_task, feed(), chunksize=chunksize):
            slots.release()
            yield r
    finally:
        stop.set()
        pool.terminate()
        pool.join()


class _Sink(ShardSink):
    """The format's ShardSink journalling a build: the journal's `next` is the first sample not inside a finished
    shard (the sample whose write made ShardWriter close the previous shard, or the end); its counters are those of
    everything before `next`, its seconds those of every run so far."""

    def __init__(self, target: SinkTarget, journal: dict, started: float):
        self.started, self.seconds0 = started, journal.get("seconds", 0.0)
        self.counters = copy.deepcopy(journal["counters"])
        self.next: tuple[int, int] | None = None
        super().__init__(target, journal, self._fill)

    def write(self, sample: dict, position: tuple[int, int]) -> None:
        self.next = position
        super().write(sample)

    def close(self, end: int) -> None:
        self.next = (end, 0)
        super().close()

    def _fill(self, journal: dict) -> None:
        journal["next"] = {"image": self.next[0], "sample": self.next[1]}
        journal["counters"] = copy.deepcopy(self.counters)
        journal["seconds"] = self.seconds0 + time.time() - self.started


def _own_files(out: Path, names: SetNames) -> list[Path]:
    """This build's (or part's) files, and the merged manifest: what a part's --overwrite removes (the other parts'
    files stay), and what a build that found no sample removes again."""
    globs = [names.shard_glob, names.shard_glob + ".partial", names.manifest, names.progress, names.config,
             "manifest.json", TIMM_INFO]
    return sorted({p for g in globs for p in out.glob(g)})


@contextlib.contextmanager
def _output_folder(out: Path, cfg: BuildConfig, names: SetNames) -> Iterator[Folder]:
    """`out` claimed as a shard set (scenectl.folders: never a folder another command owns). A whole build takes
    --resume / --overwrite as the guard has them. The n parts of a build share one folder, each with its own writer
    lock: a part joins a set another part started, and its --resume / --overwrite concern its files (_start_journal)."""
    with contextlib.ExitStack() as stack:
        if names.part is None:
            yield stack.enter_context(claim(out, "shards", resume=cfg.resume, overwrite=cfg.overwrite))
            return
        out.mkdir(parents=True, exist_ok=True)  # parts started together: none of them created (or removes) it
        for retry in (False, True):
            joining = owner(out) == "shards"
            try:
                folder = stack.enter_context(claim(out, "shards", resume=cfg.resume or joining, lock=names.tag))
                break
            except ScenectlError:
                if retry or joining or owner(out) != "shards":
                    raise
                # another part claimed the new folder meanwhile: join it
        yield folder


def _start_journal(out: Path, names: SetNames, params: dict, source: dict, n_classes: int, cfg: BuildConfig) -> dict:
    """Return the journal to continue (fresh or resumed), or a finished manifest (resume of a complete build)."""
    fresh = {"format": "scenectl-progress/1", "params": params, "source": source, "shards": [],
             "next": {"image": 0, "sample": 0},
             "counters": {"images": 0, "bad_images": 0, "instances": 0, "samples": 0, "per_class": [0] * n_classes,
                          "skipped": dict.fromkeys(SKIP_REASONS, 0), "area_hist": [0] * HIST_BINS}, "seconds": 0.0}
    if names.part is not None:  # other parts' files are expected; only this part's (and a merged manifest) clash
        mine = [p for p in _own_files(out, names) if p.name != "manifest.json" or cfg.overwrite]
        if cfg.overwrite:
            for p in mine:
                p.unlink()
            return fresh
        if mine and not cfg.resume:
            raise ScenectlError(f"{out} already holds part {cfg.part} of a build ({mine[0].name}); pass --resume to "
                                "continue it or --overwrite to replace it")
    if not cfg.resume:
        return fresh
    return _resumed_journal(out, names, params, source) or fresh


def _resumed_journal(out: Path, names: SetNames, params: dict, source: dict) -> dict | None:
    """The journal (or finished manifest) to continue, checked to record this very build; None: nothing journalled.
    Shards not in the journal (a .partial, or one renamed just before a kill) are removed: they are rewritten."""
    journal = None
    for path in (out / names.manifest, out / names.progress):
        if path.exists():
            old = read_json(path, "build record")
            recorded = old.get("params") or {}
            changed = sorted(k for k in {**params, **recorded} if recorded.get(k) != params.get(k))
            if old.get("source", {}).get("annotations_sha256") != source["annotations_sha256"]:
                changed.append("annotations")
            if changed:
                raise ScenectlError(f"{path} records a build with other parameters or annotations "
                                    f"({', '.join(changed)}); --resume needs the same options (or pass --overwrite)")
            if path.name == names.manifest:
                return {**old, "resumed_complete": True}
            journal = old
            break
    remove_stale_tmp(out)  # temporary files of a killed writer (e.g. a half-written manifest)
    done = {s["name"] for s in journal["shards"]} if journal else set()
    for p in list(out.glob(names.shard_glob + ".partial")) + list(out.glob(names.shard_glob)):
        if p.name not in done:
            p.unlink()
    missing = [n for n in done if not (out / n).exists()]
    if missing:
        raise ScenectlError(f"{out / names.progress} lists {missing[0]}, which is gone; rebuild with --overwrite")
    return journal


def image_order(image_ids: Iterable[int], seed: int) -> list[int]:
    """This build's image order: the image ids sorted by sha256(f"{seed}:{image_id}") (ties, never met in
    practice, by id). A seeded pseudo-random permutation that depends only on the ids and the seed (not on the
    file's order, the workers or the numpy version), so every shard is a random sample of the split."""
    return sorted(image_ids, key=lambda i: (hashlib.sha256(f"{seed}:{i}".encode()).digest(), i))


def _part_images(image_ids: list[int], part: tuple[int, int] | None, seed: int) -> list[int]:
    """Images in `image_order`; part i of n takes every n-th image of it starting at i (parts stay balanced)."""
    order = image_order(image_ids, seed)
    return order if part is None else order[part[0]::part[1]]


@dataclass
class _Source:
    """The annotation file (loaded once, in the parent), its image folder and what the manifest records of them."""

    coco: Any
    classes: ClassTable
    annotations: Path
    images: Path
    split: str
    record: dict  # the manifest's `source`


def _open_source(cfg: BuildConfig, echo: Callable[[str], None]) -> _Source:
    ann_path, img_dir, split = cfg.source(echo)
    if not img_dir.is_dir():
        raise ScenectlError(f"image folder {img_dir} not found")
    coco = load_coco(ann_path)
    record = {"annotations": str(ann_path.resolve()), "annotations_sha256": file_sha256(ann_path),
              "images": str(img_dir.resolve())}
    return _Source(coco, ClassTable.from_coco(coco), ann_path, img_dir, split, record)


def build_shards(cfg: BuildConfig, echo: Callable[[str], None] = print) -> dict:
    """Build (or resume) one split's shard set in `cfg.out`; return its manifest (docs/shard-format.md)."""
    started = time.time()
    cfg.check()
    src = _open_source(cfg, echo)
    params, names, out = cfg.params(src.split), SetNames(parse_part(cfg.part)), Path(cfg.out)
    with _output_folder(out, cfg, names) as folder:
        journal = _start_journal(out, names, params, src.record, len(src.classes.coco_ids), cfg)
        if journal.pop("resumed_complete", False):
            return journal
        write_json_atomic(out / names.config, {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()})
        sink = _write_samples(cfg, src, params, out, names, journal, started)
        return _finish(cfg, src, params, out, names, sink, folder.fresh)


def _write_samples(cfg: BuildConfig, src: _Source, params: dict, out: Path, names: SetNames, journal: dict,
                   started: float) -> _Sink:
    """Stream this build's (or part's) images through the workers into shards, from where the journal says."""
    ids = _part_images(list(src.coco.imgs), names.part, cfg.seed)
    start, skip = journal["next"]["image"], journal["next"]["sample"]
    job = Job(str(src.images), src.split, params, src.classes.coco_ids, src.classes.names)
    tasks = ((k, src.coco.imgs[i], src.coco.imgToAnns.get(i, [])) for k, i in enumerate(ids) if k >= start)
    workers = len(os.sched_getaffinity(0)) if cfg.workers is None else cfg.workers
    sink = _Sink(SinkTarget(out, names, cfg.maxcount, cfg.maxsize), journal, started)
    bar = progress(total=len(ids), initial=start, desc=f"build-shards {src.split}", unit="img",
                   disable=not cfg.progress)
    try:
        for res in _results(tasks, job, workers):
            _take(sink, res, skip if res.index == start else 0, cfg.max_area)
            bar.update(1)
        sink.close(len(ids))
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    return sink


def _take(sink: _Sink, res: ImageResult, skip: int, max_area: float) -> None:
    """Write one image's samples (but the first `skip`, already inside a finished shard) and count the image."""
    c = sink.counters
    for j, (sample, cls, frac) in enumerate(res.samples[skip:], skip):
        sink.write(sample, (res.index, j))
        c["samples"] += 1
        c["per_class"][cls] += 1
        c["area_hist"][min(int(frac / max_area * HIST_BINS), HIST_BINS - 1)] += 1
    c["images"] += 1
    c["bad_images"] += int(res.bad_image)
    c["instances"] += res.instances
    for reason, n in res.skipped.items():
        c["skipped"][reason] += n


def _finish(cfg: BuildConfig, src: _Source, params: dict, out: Path, names: SetNames, sink: _Sink,
            fresh: bool) -> dict:
    """cooccurrence.h5, then the manifest (last: its presence means the set is complete); returns the manifest."""
    c = sink.counters
    if c["samples"] == 0 and names.part is None:
        for p in _own_files(out, names):
            p.unlink()
        if fresh:  # nothing was built: the folder is left as it was found, not claimed
            (out / MARKER).unlink(missing_ok=True)
        raise ScenectlError(f"no eligible instances in {src.annotations} (skipped: {_fmt_skipped(c['skipped'])}); "
                            f"nothing written to {out}")
    from scenectl.data.cooccurrence import Cooccurrence  # h5py: parent only

    index = src.classes.index()
    image_classes = ([index[a["category_id"]] for a in src.coco.imgToAnns.get(i, [])] for i in sorted(src.coco.imgs))
    Cooccurrence.count(image_classes, src.classes.coco_ids, src.classes.names).save(out / "cooccurrence.h5")
    manifest = {
        "format": FORMAT, "scenectl_version": __version__, "task": cfg.task, "params": params, "source": src.record,
        "classes": src.classes.to_json(), "shards": sink.journal["shards"],
        "totals": _totals(c, src.classes, len(sink.journal["shards"]), cfg.max_area),
        "skipped": c["skipped"], "seconds": round(sink.journal["seconds"], 3),  # across resumed runs
    }
    return seal_set(out, manifest, names)


def _totals(c: dict, classes: ClassTable, n_shards: int, max_area: float) -> dict:
    edges = [round(max_area * k / HIST_BINS, 6) for k in range(HIST_BINS + 1)]
    return {"images": c["images"], "bad_images": c["bad_images"], "instances": c["instances"], "samples": c["samples"],
            "shards": n_shards, "per_class": dict(zip(classes.names, c["per_class"])),
            "area_fraction_histogram": {"edges": edges, "counts": c["area_hist"]}}


def _fmt_skipped(skipped: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in skipped.items())


def summary(manifest: dict, out: Path) -> str:
    """The one-paragraph report printed at the end of a build."""
    t = manifest["totals"]
    shards = f"{t['shards']} shard" + ("" if t["shards"] == 1 else "s")
    return (f"{out}: {t['samples']} samples in {shards} from {t['images']} images ({t['instances']} instances) in "
            f"{manifest['seconds']:.1f} s; skipped: {_fmt_skipped(manifest['skipped'])}")


# --- merging parts --------------------------------------------------------------------------------------------
_PART_RE = re.compile(r"manifest\.part-(\d+)-of-(\d+)\.json")
_SUMMED = ("images", "bad_images", "instances", "samples", "shards")  # totals a merge adds up
_TOTAL_KEYS = (*_SUMMED, "per_class", "area_fraction_histogram")


def _read_part(path: Path, i: int, n: int) -> dict:
    """Part i of n, validated by the format's manifest check (plain shard and file names, counts), with the fields
    a merge sums: a part names nothing outside its folder and carries no junk into the merged manifest."""
    m = read_manifest(path, what="part manifest")
    t, src = m.get("totals"), m.get("source")
    part = _PART.fullmatch(str(m["params"].get("part")))
    missing = [k for k, ok in (("params.part", part is not None and (int(part[1]), int(part[2])) == (i, n)),
                               ("source.annotations_sha256", isinstance(src, dict) and isinstance(
                                   src.get("annotations_sha256"), str)),
                               ("totals", isinstance(t, dict) and set(_TOTAL_KEYS) <= set(t)),
                               ("skipped", set(m.get("skipped", {})) == set(SKIP_REASONS)),
                               ("seconds", "seconds" in m)) if not ok]
    if missing:
        raise ScenectlError(f"part manifest {path}: {missing[0]} is missing or not this part's (a part of "
                            f"`build-shards --part {i}/{n}` writes it)")
    return m


def merge_manifests(directory: str | os.PathLike) -> dict:
    """Join `manifest.part-{i}-of-{n}.json` (all n present, compatible) into `manifest.json` (atomic)."""
    d = Path(directory)
    found = {(int(m[1]), int(m[2])): p for p in d.glob("manifest.part-*-of-*.json")
             if (m := _PART_RE.fullmatch(p.name))}
    if not found:
        raise ScenectlError(f"no manifest.part-*-of-*.json in {d}")
    ns = {n for _, n in found}
    if len(ns) != 1:
        raise ScenectlError(f"{d} mixes part manifests of different builds (of {sorted(ns)} parts)")
    n = ns.pop()
    missing = [i for i in range(n) if (i, n) not in found]
    if missing:
        raise ScenectlError(f"{d}: part(s) {', '.join(f'{i}/{n}' for i in missing)} missing "
                            f"(no manifest.part-{missing[0]}-of-{n}.json)")
    parts = [_read_part(found[(i, n)], i, n) for i in range(n)]
    first = parts[0]
    shared = [{"params": {k: v for k, v in m["params"].items() if k != "part"}, "classes": m["classes"],
               "task": m.get("task"), "annotations": m["source"]["annotations_sha256"],
               "counted classes and histogram": (sorted(m["totals"]["per_class"]),
                                                 m["totals"]["area_fraction_histogram"]["edges"])} for m in parts]
    for i, m in enumerate(shared[1:], 1):
        what = next((k for k in m if m[k] != shared[0][k]), None)
        if what:
            raise ScenectlError(f"part {i}/{n} in {d} is incompatible with part 0/{n}: different {what}")
    shards = [s for m in parts for s in m["shards"]]
    repeated = next((name for name, n in Counter(s["name"] for s in shards).items() if n > 1), None)
    if repeated:
        raise ScenectlError(f"shard {repeated} is listed by two part manifests in {d}")
    for s in shards:
        if not (d / s["name"]).is_file():
            raise ScenectlError(f"shard {s['name']} listed by a part manifest is missing from {d}")
    if not any(s["samples"] for s in shards):
        raise ScenectlError(f"the {n} parts in {d} hold no samples")
    totals = {k: sum(m["totals"][k] for m in parts) for k in _SUMMED}
    totals["per_class"] = {k: sum(m["totals"]["per_class"][k] for m in parts) for k in first["totals"]["per_class"]}
    hist = first["totals"]["area_fraction_histogram"]
    totals["area_fraction_histogram"] = {"edges": hist["edges"], "counts": [
        sum(m["totals"]["area_fraction_histogram"]["counts"][k] for m in parts) for k in range(len(hist["counts"]))]}
    merged = {**first, "params": {**first["params"], "part": None}, "parts": n, "shards": shards, "totals": totals,
              "skipped": {k: sum(m["skipped"][k] for m in parts) for k in first["skipped"]},
              "seconds": round(sum(m["seconds"] for m in parts), 3),
              "files": {k: v for m in parts for k, v in m.get("files", {}).items()}}  # each part's config, cooc
    with claim(d, "shards", resume=True, option="DIRECTORY"):  # the parts' shard set, never another kind's folder
        merged["files"][TIMM_INFO] = write_timm_info(d, merged)
        write_json_atomic(d / "manifest.json", merged)
    return merged
