"""`scenectl sample`: synthetic scenes with context structure, written in COCO 2017's own layout.

Users without COCO still get the whole pipeline (build-shards -> train -> eval) offline. Every image belongs to one
of five scene types; the scene type fixes the background (gradient, horizon, texture) and the distribution of object
classes, and some classes appear in several scene types. A hidden object's own shape and colour are gone once it is
filled, so what remains to name it is exactly the context: the background, the other objects and where the hole is.
No class dominates the marginal, so the class prior alone predicts poorly (docs/synthetic.md gives the numbers).

Layout written under `out/` (what build-shards reads with `--coco-root out`):

    annotations/instances_train2017.json   # written last, atomically: present = dataset complete
    annotations/instances_val2017.json
    train2017/000000000001.jpg ...
    val2017/000000900001.jpg ...
    config.json                            # the SampleConfig used
    .scenectl.json                         # marker (scenectl.folders.claim): --overwrite may clear this folder

Deterministic: image i of a split is drawn from `numpy.random.default_rng([seed, split_number, i])` and saved as a
JPEG with fixed quality and subsampling, so the same seed gives byte-identical files. With `crowd_every=k`, every
k-th image also holds one crowd (a row of small objects of one class, one `iscrowd` annotation in uncompressed RLE,
as COCO writes them); its randomness comes from its own stream, so every other file is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.io import write_json_atomic
from scenectl.options import Config, option
from scenectl.progress import progress

DESCRIPTION = "scenectl synthetic scenes"  # info.description prefix; identifies our annotation files
JPEG_QUALITY = 92
SPLITS = (("train2017", 0, 1), ("val2017", 1, 900_001))  # (name, rng stream, first image id)
IMAGE_SIZES = ((320, 240), (288, 224), (240, 320))  # (width, height); ~76k pixels each
IMAGE_SIZE_P = (0.6, 0.2, 0.2)
MAX_CIRCLE_FRACTION = 0.25  # an object's circumscribed circle (+3 px margin) stays under this share of the image
CROWD_SIZE = (3, 6)  # members of a crowd (inclusive)
# a crowd member's area as a share of its class's usual area; the next smaller one if the row won't fit
CROWD_SCALES = (0.3, 0.2, 0.12)


@dataclass
class SampleConfig(Config):
    """`scenectl sample`."""

    out: str = option("data/scenes", "Dataset root to write (build-shards' default --coco-root).", "--out", "-o",
                      type=Path)
    n_train: int = option(300, "Images in train2017.", "--train-images")
    n_val: int = option(100, "Images in val2017.", "--val-images")
    seed: int = option(0, "Same seed, byte-identical dataset.")
    overwrite: bool = option(False, "Replace the synthetic scenes an earlier run wrote in --out.", "--overwrite")
    crowd_every: int = 0  # 0: no crowds; k: images 0, k, 2k, ... of each split also hold one crowd annotation

    def check_more(self) -> None:
        if not isinstance(self.crowd_every, int) or self.crowd_every < 0:
            raise ScenectlError(f"crowd_every must be 0 (no crowds) or positive, got {self.crowd_every}")


# ----------------------------------------------------------------------------------------------------------------
# Shapes: unit polygons in [-1, 1]^2 (y down), scaled to (w/2, h/2), rotated a little and placed.


def _ngon(n: int, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(math.cos(start + 2 * math.pi * k / n), math.sin(start + 2 * math.pi * k / n)) for k in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    return [(x * r, y * r) for (x, y), r in zip(_ngon(2 * points), [1, inner] * points)]


def _capsule() -> list[tuple[float, float]]:
    # A tall rounded body: half circles of radius 1 (in x) at both ends; in the unit box they become flat arcs.
    top = [(math.cos(a), -0.6 + 0.4 * math.sin(a)) for a in np.linspace(math.pi, 2 * math.pi, 9)]
    bottom = [(math.cos(a), 0.6 + 0.4 * math.sin(a)) for a in np.linspace(0, math.pi, 9)]
    return top + bottom


SHAPES: dict[str, list[tuple[float, float]]] = {
    "circle": _ngon(32),
    "octagon": _ngon(8, -math.pi / 8),
    "hexagon": _ngon(6, 0.0),
    "star": _star(),
    "capsule": _capsule(),
    "rect": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": [(0, -1), (1, 1), (-1, 1)],
    "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
    "trapezoid": [(-1, -1), (1, -1), (0.6, 1), (-0.6, 1)],
    "halfdisc": [(math.cos(a), -1 + 2 * math.sin(a)) for a in np.linspace(0, math.pi, 17)],
    "chevron": [(-1, -1), (0, -0.1), (1, -1), (1, -0.1), (0, 1), (-1, -0.1)],
    "bottle": [(-0.35, -1), (0.35, -1), (0.35, -0.5), (1, -0.1), (1, 1), (-1, 1), (-1, -0.1), (-0.35, -0.5)],
    "car": [(-1, 1), (-1, 0), (-0.6, 0), (-0.35, -1), (0.45, -1), (0.7, 0), (1, 0), (1, 1)],
    "dog": [(-1, -0.3), (0.45, -0.3), (0.55, -1), (1, -1), (1, 0.1), (0.8, 0.1), (0.8, 1), (0.5, 1), (0.5, 0.35),
            (-0.6, 0.35), (-0.6, 1), (-0.9, 1)],
}


def _unit_area(poly: list[tuple[float, float]]) -> float:
    x, y = np.asarray(poly, dtype=np.float64).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# ----------------------------------------------------------------------------------------------------------------
# Classes and scene types. COCO ids are COCO's own for these names, so they skip numbers like COCO does and the
# contiguous-index mapping downstream is exercised.


@dataclass(frozen=True)
class ObjectClass:
    coco_id: int
    name: str
    supercategory: str
    shape: str
    color: tuple[int, int, int]
    aspect: tuple[float, float]  # h / w range
    area: tuple[float, float]  # target polygon area range in pixels (log-uniform)
    zone: str  # "sky" (above the horizon), "ground" (centre below it) or "any"


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass(1, "person", "person", "capsule", (40, 70, 170), (2.0, 2.8), (1500, 4500), "ground"),
    ObjectClass(2, "bicycle", "vehicle", "hexagon", (30, 170, 90), (0.8, 1.0), (1400, 4000), "ground"),
    ObjectClass(3, "car", "vehicle", "car", (200, 30, 30), (0.45, 0.6), (2500, 6000), "ground"),
    ObjectClass(10, "traffic light", "outdoor", "rect", (235, 200, 20), (2.2, 3.0), (1200, 2800), "any"),
    ObjectClass(16, "bird", "animal", "chevron", (25, 25, 25), (0.4, 0.6), (700, 1800), "sky"),
    ObjectClass(18, "dog", "animal", "dog", (195, 145, 95), (0.6, 0.8), (1400, 4000), "ground"),
    ObjectClass(23, "bear", "animal", "octagon", (95, 55, 25), (0.8, 1.0), (3000, 6500), "ground"),
    ObjectClass(28, "umbrella", "accessory", "triangle", (235, 90, 165), (0.6, 0.8), (1500, 4500), "ground"),
    ObjectClass(38, "kite", "sports", "diamond", (190, 40, 210), (1.0, 1.4), (1200, 3000), "sky"),
    ObjectClass(42, "surfboard", "sports", "circle", (40, 205, 225), (0.25, 0.35), (1400, 3500), "ground"),
    ObjectClass(44, "bottle", "kitchen", "bottle", (125, 85, 20), (2.0, 2.6), (1200, 3000), "any"),
    ObjectClass(47, "cup", "kitchen", "trapezoid", (245, 245, 245), (1.0, 1.3), (1200, 3000), "ground"),
    ObjectClass(51, "bowl", "kitchen", "halfdisc", (240, 140, 40), (0.45, 0.6), (1500, 4000), "ground"),
    ObjectClass(64, "potted plant", "furniture", "star", (60, 140, 30), (1.0, 1.2), (1500, 4500), "ground"),
    ObjectClass(73, "laptop", "electronic", "rect", (165, 165, 180), (0.6, 0.75), (2000, 5000), "ground"),
    ObjectClass(85, "clock", "indoor", "circle", (250, 250, 215), (1.0, 1.0), (1200, 3500), "sky"),
)
CLASS_BY_NAME = {c.name: c for c in CLASSES}


@dataclass(frozen=True)
class SceneType:
    name: str
    top: tuple[tuple[int, int, int], tuple[int, int, int]]  # gradient above the horizon (top, horizon)
    ground: tuple[tuple[int, int, int], tuple[int, int, int]]  # gradient below it (horizon, bottom)
    horizon: float  # horizon height as a fraction of the image height (jittered +-0.05)
    weights: dict  # class name -> relative weight; objects are drawn i.i.d. from these


SCENES: tuple[SceneType, ...] = (
    SceneType("kitchen", ((235, 220, 190), (215, 195, 160)), ((180, 170, 160), (120, 110, 100)), 0.55,
              {"cup": 3, "bowl": 3, "bottle": 2, "clock": 1.5, "person": 1.5, "potted plant": 1}),
    SceneType("street", ((130, 180, 235), (200, 220, 240)), ((95, 95, 100), (60, 60, 65)), 0.45,
              {"car": 3, "person": 2.5, "traffic light": 2, "bicycle": 2, "dog": 1.5, "umbrella": 1}),
    SceneType("beach", ((90, 160, 240), (190, 225, 250)), ((235, 215, 150), (215, 185, 120)), 0.4,
              {"umbrella": 2.5, "surfboard": 2.5, "kite": 2, "person": 2, "bird": 1.5, "bottle": 1.5, "dog": 1}),
    SceneType("forest", ((25, 80, 35), (60, 120, 50)), ((85, 70, 40), (50, 40, 25)), 0.6,
              {"bear": 3, "bird": 3, "dog": 2, "bicycle": 2, "person": 1}),
    SceneType("office", ((205, 205, 200), (185, 185, 180)), ((90, 100, 125), (60, 70, 90)), 0.6,
              {"laptop": 3, "cup": 2.5, "clock": 2, "potted plant": 2, "person": 1.5, "bottle": 1}),
)


# ----------------------------------------------------------------------------------------------------------------
# Drawing one scene


def _jitter(rng: np.random.Generator, color, amount: int) -> np.ndarray:
    return np.clip(np.asarray(color, dtype=np.float64) + rng.integers(-amount, amount + 1, 3), 0, 255)


def _gradient(c0: np.ndarray, c1: np.ndarray, rows: int, width: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, max(rows, 1))[:, None, None]  # (rows, 1, 1)
    return np.broadcast_to(c0 * (1 - t) + c1 * t, (rows, width, 3))[: max(rows, 0)]


def _background(rng: np.random.Generator, scene: SceneType, w: int, h: int) -> tuple[np.ndarray, int]:
    """(H, W, 3) float background and the horizon row. Texture is scene-specific so the scene is recognisable."""
    hy = int(round(h * (scene.horizon + rng.uniform(-0.05, 0.05))))
    img = np.empty((h, w, 3))
    img[:hy] = _gradient(_jitter(rng, scene.top[0], 12), _jitter(rng, scene.top[1], 12), hy, w)
    img[hy:] = _gradient(_jitter(rng, scene.ground[0], 12), _jitter(rng, scene.ground[1], 12), h - hy, w)
    ys, xs = np.mgrid[0:h, 0:w]
    if scene.name == "kitchen":  # checkerboard floor tiles
        tile = int(rng.integers(18, 30))
        img[hy:][((xs[hy:] // tile + (ys[hy:] - hy) // tile) % 2) == 1] *= 0.85
    elif scene.name == "street":  # dashed lane marking across the road
        ly, period = hy + (h - hy) // 2, int(rng.integers(30, 50))
        img[ly - 2: ly + 2][(xs[ly - 2: ly + 2] + int(rng.integers(period))) % period < period // 2] = 235
    elif scene.name == "beach":  # a band of sea with waves between sky and sand
        sea = int(0.12 * h)
        wave = 0.9 + 0.1 * np.sin(xs[hy: hy + sea] / rng.uniform(4, 8) + ys[hy: hy + sea])
        img[hy: hy + sea] = _jitter(rng, (30, 90, 170), 15) * wave[..., None]
    elif scene.name == "forest":  # tree trunks through the canopy
        for _ in range(int(rng.integers(4, 8))):
            x0, tw = int(rng.integers(0, w)), int(rng.integers(5, 14))
            img[:hy, x0: x0 + tw] = _jitter(rng, (70, 45, 20), 10)
    elif scene.name == "office":  # a window on the wall
        wx, ww = int(rng.integers(0, w // 2)), int(rng.integers(w // 5, w // 3))
        wy, wh = int(rng.integers(4, max(5, hy // 4))), max(8, hy // 2)
        img[wy: wy + wh, wx: wx + ww] = 90
        img[wy + 3: wy + wh - 3, wx + 3: wx + ww - 3] = _jitter(rng, (170, 210, 240), 10)
    return img, hy


def _polygon(rng: np.random.Generator, cls: ObjectClass, scale: float) -> np.ndarray:
    """(K, 2) float vertices of one instance centred at the origin, before placement."""
    unit = np.asarray(SHAPES[cls.shape], dtype=np.float64)
    area = math.exp(rng.uniform(math.log(cls.area[0]), math.log(cls.area[1]))) * scale
    aspect = rng.uniform(*cls.aspect)
    w = math.sqrt(4 * area / (_unit_area(SHAPES[cls.shape]) * aspect))  # area = unit_area * (w/2) * (h/2)
    pts = unit * np.array([w / 2, aspect * w / 2])
    a = math.radians(rng.uniform(-12, 12))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T


def _place(rng, pts, zone, hy, w, h, boxes) -> np.ndarray | None:
    """Integer vertices placed without touching earlier boxes (rejection sampling), or None if nothing fits."""
    lo, hi = pts.min(0), pts.max(0)
    bw, bh = hi - lo
    if math.pi * ((math.hypot(bw, bh) / 2 + 3) ** 2) > MAX_CIRCLE_FRACTION * w * h:
        return None
    ylo, yhi = 2 - lo[1], h - 3 - hi[1]  # range of the centre's y so the box stays inside
    if zone == "sky":
        yhi = min(yhi, hy - 3 - hi[1])
    elif zone == "ground":
        ylo = max(ylo, hy)
    xlo, xhi = 2 - lo[0], w - 3 - hi[0]
    if xlo > xhi or ylo > yhi:
        return None
    for _ in range(40):
        c = np.array([rng.uniform(xlo, xhi), rng.uniform(ylo, yhi)])
        p = np.round(pts + c)
        box = (*p.min(0), *p.max(0))
        if all(box[0] > b[2] + 4 or box[2] < b[0] - 4 or box[1] > b[3] + 4 or box[3] < b[1] - 4 for b in boxes):
            return p
    return None


def _crowd(rng: np.random.Generator, scene: SceneType, hy, w, h, boxes) -> tuple[ObjectClass, list[np.ndarray]] | None:
    """A crowd: 3-6 small objects of one class side by side (each overlapping the last by a fifth of its width),
    placed as one group clear of every other object; its class and member polygons, or None if no row fits."""
    names, weights = zip(*scene.weights.items())
    cls = CLASS_BY_NAME[names[rng.choice(len(names), p=np.asarray(weights) / sum(weights))]]
    k = int(rng.integers(CROWD_SIZE[0], CROWD_SIZE[1] + 1))
    for scale in CROWD_SCALES:
        members, right = [], 0.0
        for _ in range(k):
            pts = _polygon(rng, cls, scale)
            width = np.ptp(pts[:, 0])
            pts = pts + [right - pts[:, 0].min() - (0.2 * width if members else 0.0), rng.uniform(-0.1, 0.1) * width]
            right = pts[:, 0].max()
            members.append(pts)
        placed = _place(rng, np.concatenate(members), cls.zone, hy, w, h, boxes)
        if placed is not None:
            return cls, np.split(placed, np.cumsum([len(m) for m in members])[:-1])
    return None


def draw_scene(rng: np.random.Generator, crowd_rng: np.random.Generator | None = None
               ) -> tuple[Image.Image, str, list[tuple[ObjectClass, np.ndarray]], tuple | None]:
    """One scene: the RGB image, its scene type, the (class, (K, 2) integer polygon) of every object drawn, and
    the crowd drawn from `crowd_rng` ((class, [member polygons]), or None). `rng` draws exactly as without a crowd,
    so a crowd changes only its own pixels."""
    w, h = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_P)]
    scene = SCENES[rng.integers(len(SCENES))]
    names, weights = zip(*scene.weights.items())
    weights = np.asarray(weights, dtype=np.float64) / sum(weights)
    bg, hy = _background(rng, scene, w, h)
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objects, boxes = [], []
    for _ in range(int(rng.integers(2, 7))):
        cls = CLASS_BY_NAME[names[rng.choice(len(names), p=weights)]]
        for scale in (1.0, 0.7, 0.5):  # shrink when the scene is crowded rather than drop the object
            p = _place(rng, _polygon(rng, cls, scale), cls.zone, hy, w, h, boxes)
            if p is not None:
                break
        if p is None:
            continue
        fill = tuple(int(v) for v in _jitter(rng, cls.color, 15))
        outline = tuple(int(v * 0.6) for v in fill)
        draw.polygon([tuple(v) for v in p.tolist()], fill=fill, outline=outline, width=2)
        boxes.append((*p.min(0), *p.max(0)))
        objects.append((cls, p))
    crowd = _crowd(crowd_rng, scene, hy, w, h, boxes) if crowd_rng is not None else None
    for p in crowd[1] if crowd else ():
        fill = tuple(int(v) for v in _jitter(crowd_rng, crowd[0].color, 15))
        draw.polygon([tuple(v) for v in p.tolist()], fill=fill, outline=tuple(int(v * 0.6) for v in fill), width=2)
    # Sensor-like noise over everything, so neither background nor objects are flat colour.
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 5, (h, w, 1)) + rng.normal(0, 2, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), scene.name, objects, crowd


# ----------------------------------------------------------------------------------------------------------------
# Writing the dataset


def _annotation(ann_id: int, image_id: int, cls: ObjectClass, polygons: list[np.ndarray], w: int, h: int,
                crowd: bool = False) -> dict:
    """The annotation of one object (one polygon), or with `crowd` one iscrowd annotation over the union of the
    members, as uncompressed RLE (COCO's form for crowds): run lengths of the (H, W) mask read column by column,
    starting with a run of zeros."""
    segmentation = [[float(v) for v in p.reshape(-1)] for p in polygons]  # [[x1, y1, x2, y2, ...], ...]
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    if crowd:
        flat = mask_utils.decode(rle).reshape(-1, order="F")  # (H * W,) column-major, as COCO counts
        edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        segmentation = {"counts": ([0] if flat[0] else []) + np.diff(edges).tolist(), "size": [h, w]}
    x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
    return {"id": ann_id, "image_id": image_id, "category_id": cls.coco_id, "segmentation": segmentation,
            "area": float(mask_utils.area(rle)), "bbox": [x, y, bw, bh], "iscrowd": int(crowd)}


def _write_split(out: Path, split: str, stream: int, first_id: int, n: int, seed: int, crowd_every: int) -> dict:
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in progress(range(n), desc=f"sample {split}", unit="img"):
        rng = np.random.default_rng([seed, stream, i])  # per-image stream: independent of n and of order
        crowd_rng = np.random.default_rng([seed, stream, i, 1]) if crowd_every and i % crowd_every == 0 else None
        img, scene, objects, crowd = draw_scene(rng, crowd_rng)
        image_id, (w, h) = first_id + i, img.size
        img.save(out / split / f"{image_id:012d}.jpg", format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": w, "height": h,
                       "license": 1, "scene_type": scene})
        # Annotation ids are image_id * 100 + k: unique across splits and stable whatever n is.
        annotations += [_annotation(image_id * 100 + k, image_id, c, [p], w, h) for k, (c, p) in enumerate(objects)]
        if crowd:
            annotations.append(_annotation(image_id * 100 + len(objects), image_id, *crowd, w, h, crowd=True))
    return {"images": images, "annotations": annotations}


def generate_scenes(out: Path, n_train: int = 300, n_val: int = 100, seed: int = 0, overwrite: bool = False,
                    crowd_every: int = 0) -> dict:
    """Write synthetic scenes in COCO 2017's layout under `out`; return {splits: {name: {images, annotations}}, ...}."""
    out = Path(out)
    cfg = SampleConfig(str(out), n_train, n_val, seed, overwrite, crowd_every)
    cfg.check()
    with claim(out, "scenes", overwrite=overwrite, config=asdict(cfg)):  # the one output-folder guard
        write_json_atomic(out / "config.json", asdict(cfg))
        bodies = {split: _write_split(out, split, stream, first_id, int(n), seed, int(crowd_every))
                  for (split, stream, first_id), n in zip(SPLITS, (n_train, n_val))}
        _write_annotations(out, seed, bodies)
    splits = {split: {part: len(records) for part, records in body.items()} for split, body in bodies.items()}
    return {"out": str(out), "seed": seed, "splits": splits, "classes": [c.name for c in CLASSES],
            "scene_types": [s.name for s in SCENES]}


def _write_annotations(out: Path, seed: int, bodies: dict) -> None:
    """Last and atomic: their presence means the dataset is complete."""
    categories = [{"id": c.coco_id, "name": c.name, "supercategory": c.supercategory} for c in CLASSES]
    header = {
        "info": {"description": f"{DESCRIPTION} (seed {seed})", "version": "1.0", "year": 2017,
                 "contributor": "scenectl sample", "url": "", "date_created": "2017/09/01",
                 "scene_types": [s.name for s in SCENES]},
        "licenses": [{"id": 1, "name": "CC0 1.0 (generated by scenectl)",
                      "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
    }
    (out / "annotations").mkdir(exist_ok=True)
    for split, body in bodies.items():
        write_json_atomic(out / "annotations" / f"instances_{split}.json", {**header, **body, "categories": categories})
