"""Out-of-context (OOC) test set: objects pasted into scenes where their class never occurs, plus in-context controls.

    scenectl build-ooc --coco-root ../shared/data/coco-sample --split val2017 \
        --train-cooccurrence shards/train2017/cooccurrence.h5 --out shards/ooc

Reads top to bottom:
  1. the training side: cooccurrence.h5 (the counts that define "context") and the manifest beside it (classes,
     and the geometry params that make the OOC samples look like the training samples)
  2. for each donor instance (shuffled by seed) of a class c seen in training, two host images of the same split
     without c: an OUT-OF-CONTEXT host, where c co-occurs with NONE of the host's classes in the training counts
     (n_cv = 0 for every v), and an IN-CONTEXT host, where c is plausible (PMI > 0, metrics.plausible_matrix)
     with at least one host class. The pair shares the donor, so the object's look is controlled for.
  3. `paste`: the donor's silhouette (pycocotools mask) cut out and pasted into the host, scaled by the
     square root of the image-area ratio, at the donor's relative position
  4. `render`: the standard sample (docs/shard-format.md) with the pasted object hidden by masks.py's geometry,
     fill and letterbox (as build-shards), `object.jpg` = the unmasked crop, `json` + ooc/host/donor fields
  5. shards through the format's sink (as build-shards writes them: hashed, journalled, no PAX headers), the
     training side's cooccurrence.h5 copied beside them, then `seal_set`: the manifest's `files` checksums,
     `_info.json` and the manifest itself, written last

The output folder is an `ooc` folder (scenectl.folders.claim): --overwrite replaces only an earlier OOC set.
How a context model flags OOC objects is measured by `metrics.flag_report` (`scenectl fuse --ooc-shards`).
"""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scenectl import __version__
from scenectl.data.coco import (BadImage, ClassTable, classes_match, decode_mask, load_coco, load_image,
                                split_paths)
from scenectl.data.configs import OOCConfig
from scenectl.data.cooccurrence import Cooccurrence, plausible_matrix
from scenectl.data.format import (CONFIG, COOCCURRENCE, FORMAT, MANIFEST, ShardSink, SinkTarget, encode_jpeg,
                                  encode_png, encode_sample, read_manifest, seal_set)
from scenectl.data.masks import Letterbox, bbox, crop_box, fill, hidden_region
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.io import file_sha256, write_json_atomic
from scenectl.options import check_options
from scenectl.progress import progress

SHRINK, SHRINK_TRIES = 0.8, 6  # a hidden region above max_area: shrink the pasted object (× 0.8, at most 6 times)


# --------------------------------------------------------------------------------------------------------------
# geometry: pasting a silhouette


def paste(host: np.ndarray, donor: np.ndarray, donor_mask: np.ndarray, scale: float,
          centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Paste the `donor_mask` pixels of `donor` (h, w, 3) into a copy of `host` (H, W, 3).

    The silhouette's box is resized by `scale` (bilinear pixels, nearest-neighbour mask; at least 1 px), then
    placed with its centre at `centre` (x, y) in host pixels, shifted (not clipped) to lie wholly inside the
    host; it must fit (scale chosen by the caller). Returns (composite (H, W, 3) uint8, pasted mask (H, W) bool).
    """
    x0, y0, x1, y1 = bbox(donor_mask)
    H, W = host.shape[:2]
    w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    if w > W or h > H:
        raise ValueError(f"pasted object {w}x{h} does not fit the {W}x{H} host")
    crop = Image.fromarray(np.ascontiguousarray(donor[y0:y1, x0:x1])).resize((w, h), Image.BILINEAR)
    m = Image.fromarray(donor_mask[y0:y1, x0:x1].astype(np.uint8) * 255).resize((w, h), Image.NEAREST)
    m = np.asarray(m) > 127  # (h, w)
    px = min(max(int(round(centre[0] - w / 2)), 0), W - w)
    py = min(max(int(round(centre[1] - h / 2)), 0), H - h)
    out, mask = host.copy(), np.zeros((H, W), bool)
    out[py:py + h, px:px + w][m] = np.asarray(crop)[m]
    mask[py:py + h, px:px + w] = m
    return out, mask


def paste_scale(host_size: tuple[int, int], donor_size: tuple[int, int], box: tuple[int, int, int, int]) -> float:
    """sqrt(host area / donor area): the object keeps its share of the image; capped so that its box fits."""
    (W, H), (w, h) = host_size, donor_size
    bw, bh = box[2] - box[0], box[3] - box[1]
    return min(math.sqrt(W * H / (w * h)), W / bw, H / bh)


# --------------------------------------------------------------------------------------------------------------
# the training side and the candidate hosts


def train_side(spec: str | Path) -> tuple[Path, dict, Cooccurrence]:
    """(cooccurrence.h5 path, the manifest beside it, the counts). `spec` is the .h5 file or its shard folder."""
    p = Path(spec)
    h5 = p / "cooccurrence.h5" if p.is_dir() else p
    if not h5.is_file():
        raise ScenectlError(f"--train-cooccurrence {spec}: no such file")
    where = h5.parent / MANIFEST
    if not where.is_file():
        raise ScenectlError(f"no {MANIFEST} beside {h5}: the training side is a shard set's folder")
    manifest = read_manifest(where)
    cooc = Cooccurrence.of_set(str(h5.parent), manifest, name=h5.name)
    if len(cooc.names) != len(manifest["classes"]):
        raise ScenectlError(f"{h5}: {len(cooc.names)} classes, its manifest {len(manifest['classes'])}")
    return h5, manifest, cooc


def host_classes(coco, images: list[int], index: dict[int, int], num_classes: int) -> np.ndarray:
    """(n_images, C) bool: classes present in each image (crowd included, as the co-occurrence counts)."""
    present = np.zeros((len(images), num_classes), bool)
    for i, img in enumerate(images):
        for a in coco.imgToAnns.get(img, []):
            present[i, index[a["category_id"]]] = True
    return present


def candidate_hosts(c: int, donor_row: int, present: np.ndarray, cooc: Cooccurrence,
                    plausible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of (out-of-context, in-context) hosts for class c: images without c and with >= 1 class;
    OOC: n_cv = 0 for every host class v; in-context: plausible[c, v] for some host class v."""
    never = np.asarray(cooc.cooccurrence)[c] == 0  # (C,)
    base = ~present[:, c] & present.any(1)
    base[donor_row] = False
    ooc = base & ~(present & ~never[None, :]).any(1)  # every present class never co-occurs with c
    ic = base & (present & plausible[c][None, :]).any(1)
    return np.flatnonzero(ooc), np.flatnonzero(ic)


# --------------------------------------------------------------------------------------------------------------
# rendering one sample (masks.py: the geometry, fill and letterbox of build-shards)


@dataclass
class Scene:
    """One decoded image in the upright frame: pixels, its record, its instance masks (id -> (H, W) bool)."""

    record: dict
    pixels: np.ndarray  # (H, W, 3) uint8
    anns: list[dict]
    masks: dict


def open_image(coco, folder: Path, image_id: int) -> Scene:
    rec = coco.imgs[image_id]
    decoded = load_image(folder / rec["file_name"], int(rec["width"]), int(rec["height"]))  # full resolution
    anns = coco.imgToAnns.get(image_id, [])
    masks = {}
    for a in anns:
        m = decode_mask(a.get("segmentation"), int(rec["height"]), int(rec["width"]))
        if m is not None and decoded.turn is not None:  # masks are in the stored frame; pixels are upright
            m = np.asarray(Image.fromarray(m).transpose(decoded.turn))
        masks[a["id"]] = m
    return Scene(rec, np.asarray(decoded.image), anns, masks)


def render(host: Scene, donor: Scene, ann: dict, p: dict, index: dict[int, int], names: list[str], ooc: bool,
           split: str) -> tuple[dict | None, str | None]:
    """The sample of `ann` (a donor instance) pasted into `host`, or (None, skip reason)."""
    dmask = donor.masks.get(ann["id"])
    if dmask is None:
        return None, "bad_annotation"
    H, W = host.pixels.shape[:2]
    dbox = bbox(dmask)
    scale = paste_scale((W, H), (donor.pixels.shape[1], donor.pixels.shape[0]), dbox)
    cx = (dbox[0] + dbox[2]) / 2 / donor.pixels.shape[1] * W  # the donor's relative position
    cy = (dbox[1] + dbox[3]) / 2 / donor.pixels.shape[0] * H
    for _ in range(SHRINK_TRIES + 1):
        composite, mask = paste(host.pixels, donor.pixels, dmask, scale, (cx, cy))
        area = int(mask.sum())
        if area < p["min_area"]:
            return None, "too_small"
        region, _ = hidden_region(mask, p["shape"], p["margin"])  # (H, W) bool
        frac = float(region.sum()) / region.size
        if frac <= p["max_area"]:
            break
        scale *= SHRINK
    else:
        return None, "too_large"
    c = index[ann["category_id"]]
    # host instances still showing outside the hidden region stay visible context (crowd included)
    visible = sorted({index[a["category_id"]] for a in host.anns
                      if host.masks.get(a["id"]) is not None and (host.masks[a["id"]] & ~region).any()})
    x0, y0, x1, y1 = bbox(mask)
    box = [x0, y0, x1 - x0, y1 - y0]
    lb = Letterbox(W, H, p["image_size"])
    rng = np.random.default_rng([p["seed"], host.record["id"], ann["id"]]) if p["fill"] in ("noise", "blur") else None
    filled = fill(composite, region, p["fill"], rng)
    obj = Image.fromarray(composite).crop(crop_box(box, W, H))
    sample = encode_sample(  # p["hide_same_class"] is False: only the pasted object is hidden
        host.record, ann, c, p, category_name=names[c], bbox=box, area_fraction=frac, instance_area=area,
        visible_categories=visible, orig_size=[W, H], transform=lb.transform(), split=split,
        ooc=ooc, host_image_id=host.record["id"], donor_image_id=donor.record["id"], donor_annotation_id=ann["id"],
        donor_file_name=donor.record["file_name"], paste_scale=scale)
    return {**sample, "jpg": encode_jpeg(lb.image(Image.fromarray(filled))), "mask.png": encode_png(lb.mask(region)),
            "object.jpg": encode_jpeg(Letterbox(obj.width, obj.height, p["image_size"]).image(obj))}, None


# --------------------------------------------------------------------------------------------------------------
# the build


def resolve_params(cfg: OOCConfig, manifest: dict) -> dict:
    """Geometry params: the options given, else the training shards' (so OOC samples look like training ones; every
    build-shards manifest records them). A training value is data: checked as the option it stands for."""
    train = manifest.get("params", {})
    p = {k: getattr(cfg, k) if getattr(cfg, k) is not None else train.get(k)
         for k in ("shape", "fill", "margin", "image_size", "max_area", "min_area")}
    unset = [k for k, v in p.items() if v is None]
    if unset:
        raise ScenectlError(f"the training shards' manifest records no params.{unset[0]}: give "
                            f"--{unset[0].replace('_', '-')}")
    try:
        check_options(replace(cfg, **p))
    except ScenectlError as e:
        raise ScenectlError(f"{e} (the option given, else the training shards' params)") from None
    return {**p, "seed": cfg.seed, "with_object": True, "task": "ooc", "hide_same_class": False}


@dataclass
class Split:
    """One split as build-ooc uses it: the COCO index, which classes each image holds, the training counts."""

    coco: Any
    annotations: Path
    folder: Path
    name: str
    classes: list[dict]  # the training side's class list (the manifest's)
    index: dict[int, int]  # COCO category id -> class index
    names: list[str]
    images: list[int]  # image ids, sorted
    present: np.ndarray  # (n_images, C) bool
    cooc: Cooccurrence
    plausible: np.ndarray  # (C, C) bool
    params: dict
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        self.row = {img: i for i, img in enumerate(self.images)}

    def scene(self, image_id: int) -> Scene:
        """The decoded image, from a small cache (hosts recur)."""
        if image_id not in self.cache:
            if len(self.cache) > 64:
                self.cache.pop(next(iter(self.cache)))
            self.cache[image_id] = open_image(self.coco, self.folder, image_id)
        return self.cache[image_id]


def open_split(cfg: OOCConfig, train_manifest: dict, cooc: Cooccurrence) -> Split:
    """The split whose images are hosts and donors, checked against the training side's classes."""
    ann_path, img_dir = split_paths(cfg.coco_root, cfg.split)
    coco = load_coco(ann_path)
    table = ClassTable.from_coco(coco)
    classes = train_manifest["classes"]
    if not classes_match(table.to_json(), classes):
        raise ScenectlError(f"{ann_path}: its categories differ from the training shards' classes "
                            f"({len(table.coco_ids)} vs {len(classes)})")
    params = resolve_params(cfg, train_manifest)
    index, images = table.index(), sorted(coco.imgs)
    return Split(coco, Path(ann_path), Path(img_dir), cfg.split, classes, index, list(table.names), images,
                 host_classes(coco, images, index, len(table.names)), cooc, plausible_matrix(cooc), params)


def shuffled_donors(s: Split, seed: int) -> tuple[list[dict], np.random.Generator]:
    """Donor instances (not crowd, large enough, of a class seen in training) in a seeded random order, and the
    generator that goes on to choose their hosts."""
    seen = np.asarray(s.cooc.image_counts) > 0
    donors = sorted((a for a in s.coco.dataset["annotations"] if not a.get("iscrowd", 0)
                     and a.get("area", 0) >= s.params["min_area"] and seen[s.index[a["category_id"]]]),
                    key=lambda a: a["id"])
    rng = np.random.default_rng(seed)
    return [donors[i] for i in rng.permutation(len(donors))], rng


def make_pair(s: Split, ann: dict, rng: np.random.Generator) -> tuple[list[dict] | None, str | None]:
    """The (out-of-context, in-context) samples of one donor instance, or (None, why it is skipped)."""
    ooc_rows, ic_rows = candidate_hosts(s.index[ann["category_id"]], s.row[ann["image_id"]], s.present, s.cooc,
                                        s.plausible)
    if not len(ooc_rows) or not len(ic_rows):
        return None, "no_host"
    hosts = {True: s.images[int(rng.choice(ooc_rows))], False: s.images[int(rng.choice(ic_rows))]}
    try:
        donor = s.scene(ann["image_id"])
        made = [render(s.scene(h), donor, ann, s.params, s.index, s.names, ooc, s.name) for ooc, h in hosts.items()]
    except BadImage:
        return None, "bad_image"
    reasons = [why for sample, why in made if sample is None]
    return (None, reasons[0]) if reasons else ([sample for sample, _ in made], None)


def write_pairs(s: Split, target: SinkTarget, donors: list[dict], rng: np.random.Generator,
                max_pairs: int) -> tuple[list[dict], dict]:
    """Write the pairs into shards through the format's sink (journalled in progress.json as build-shards'
    shards are); returns (the shards' manifest entries, counts)."""
    counts = {"pairs": 0, "per_class": [0] * len(s.names), "skipped": Counter()}
    sink = ShardSink(target, {"format": "scenectl-progress/1", "shards": []})
    try:
        for ann in progress(donors, desc=f"build-ooc {s.name}", unit="donors"):
            if max_pairs and counts["pairs"] >= max_pairs:
                break
            made, why = make_pair(s, ann, rng)
            if made is None:
                counts["skipped"][why] += 1
                continue
            for sample in made:
                sink.write(sample)
            counts["per_class"][s.index[ann["category_id"]]] += 2
            counts["pairs"] += 1
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return sink.journal["shards"], counts


def ooc_manifest(cfg: OOCConfig, s: Split, h5: Path, entries: list[dict], counts: dict, seconds: float) -> dict:
    pairs = counts["pairs"]
    return {
        "format": FORMAT, "scenectl_version": __version__, "task": "ooc",
        "params": {**s.params, "split": cfg.split, "maxcount": cfg.maxcount, "max_pairs": cfg.max_pairs},
        "source": {"annotations": str(s.annotations.resolve()), "annotations_sha256": file_sha256(s.annotations),
                   "images": str(s.folder.resolve()), "train_cooccurrence": str(Path(h5).resolve()),
                   "train_manifest": str((Path(h5).parent / "manifest.json").resolve())},
        "classes": s.classes, "shards": entries,
        "totals": {"images": len(s.images), "pairs": pairs, "samples": 2 * pairs, "ooc": pairs, "in_context": pairs,
                   "shards": len(entries), "per_class": dict(zip(s.names, counts["per_class"]))},
        "skipped": {k: counts["skipped"].get(k, 0) for k in ("no_host", "too_small", "too_large", "bad_image",
                                                             "bad_annotation")},
        "seconds": round(seconds, 2),
    }


def build_ooc(cfg: OOCConfig) -> dict:
    """Build the OOC set and its in-context controls in cfg.out (an `ooc` folder, scenectl.folders); returns the
    manifest (written last)."""
    t0 = time.time()
    cfg.check()
    h5, train_manifest, cooc = train_side(cfg.train_cooccurrence)
    s = open_split(cfg, train_manifest, cooc)
    with claim(cfg.out, "ooc", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        out = folder.path
        write_json_atomic(out / CONFIG, asdict(cfg))
        donors, rng = shuffled_donors(s, cfg.seed)
        entries, counts = write_pairs(s, SinkTarget(out, maxcount=cfg.maxcount), donors, rng, cfg.max_pairs)
        if not counts["pairs"]:
            raise ScenectlError(f"no out-of-context pair could be built from {s.annotations} (skipped: "
                                f"{dict(counts['skipped'])}); try a lower --min-area or a larger split")
        shutil.copyfile(h5, out / COOCCURRENCE)
        return seal_set(out, ooc_manifest(cfg, s, h5, entries, counts, time.time() - t0))


def summary(manifest: dict, out: str | Path) -> str:
    t, s = manifest["totals"], manifest["skipped"]
    return (f"{t['pairs']} pairs ({t['ooc']} out-of-context + {t['in_context']} in-context samples) in "
            f"{t['shards']} shard(s) at {out}; skipped donors: " + ", ".join(f"{k} {v}" for k, v in s.items()))
