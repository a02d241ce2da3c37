"""COCO inputs: annotation files (read with pycocotools), instance masks, and robust image decoding.

The parent process of `build-shards` loads an annotation file once (`load_coco`) and sends each worker only one
image's record and annotations; workers decode masks with `decode_mask` and pixels with `load_image`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from scenectl.errors import ScenectlError
from scenectl.io import read_json

# EXIF orientation tag value -> the PIL transpose that makes the stored pixels upright (as ImageOps.exif_transpose).
EXIF_ORIENTATION = 0x0112
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# --- annotation files -----------------------------------------------------------------------------------------
def split_paths(coco_root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """COCO's layout: `ROOT/annotations/instances_{split}.json` and `ROOT/{split}/`."""
    root = Path(coco_root)
    if not root.is_dir():
        raise ScenectlError(f"--coco-root {root} is not a folder")
    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        known = sorted(p.name[len("instances_"):-len(".json")] for p in (root / "annotations").glob("instances_*.json"))
        raise ScenectlError(f"unknown split {split!r}: {ann} not found (splits in {root}: {', '.join(known) or 'none'})")
    return ann, root / split


def load_coco(path: str | os.PathLike) -> COCO:
    """Read and check an instance annotation file; return a pycocotools COCO index over it.

    Raises ScenectlError for a missing or malformed file, and for an annotation whose image or category is not
    declared (naming the annotation), so that no worker meets an inconsistent record later.
    """
    path = Path(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise ScenectlError(f"annotation file {path} is not COCO instance format (needs lists 'images', 'annotations', 'categories')")
    try:
        cat_ids = {int(c["id"]) for c in data["categories"]}
        img_ids = {int(im["id"]) for im in data["images"]}
        for im in data["images"]:
            im["file_name"], int(im["width"]), int(im["height"])  # noqa: B018 (presence check)
        for a in data["annotations"]:
            if a["category_id"] not in cat_ids:
                raise ScenectlError(
                    f"annotation {a.get('id')} in {path} has category_id {a['category_id']}, which is not in 'categories'"
                )
            if a["image_id"] not in img_ids:
                raise ScenectlError(f"annotation {a.get('id')} in {path} refers to image_id {a['image_id']}, which is not in 'images'")
            int(a["id"])
    except (KeyError, TypeError, ValueError) as e:
        raise ScenectlError(f"annotation file {path} is malformed: missing or bad field {e}") from None
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


@dataclass(frozen=True)
class ClassTable:
    """Contiguous class indices: every category of the file in ascending COCO id order (index = position)."""

    coco_ids: tuple[int, ...]
    names: tuple[str, ...]

    @classmethod
    def from_coco(cls, coco: COCO) -> "ClassTable":
        cats = sorted(coco.dataset["categories"], key=lambda c: int(c["id"]))
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats))

    def index(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.coco_ids)}

    def to_json(self) -> list[dict]:
        return [{"index": i, "coco_id": c, "name": n} for i, (c, n) in enumerate(zip(self.coco_ids, self.names))]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- masks ----------------------------------------------------------------------------------------------------
def to_rle(segmentation, height: int, width: int) -> dict | None:
    """pycocotools' RLE of one annotation (the steps of COCO.annToRLE), or None when degenerate.

    Polygons with fewer than 3 points (or an odd coordinate count) are dropped first: pycocotools would read a
    4-number polygon as a box. Degenerate = no usable polygon, a malformed RLE, an RLE of another size, or a mask
    with zero pixels.
    """
    try:
        if isinstance(segmentation, list):
            polys = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            if not polys:
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)  # uncompressed RLE (crowd regions)
        elif isinstance(segmentation, dict):
            rle = dict(segmentation)
            if isinstance(rle.get("counts"), str):
                rle["counts"] = rle["counts"].encode()
        else:
            return None
        if list(rle["size"]) != [height, width] or mask_utils.area(rle) == 0:
            return None
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    return rle


def rle_box(rle: dict) -> tuple[int, int, int, int]:
    """Tight pixel box (x0, y0, x1, y1), exclusive ends, of a non-empty RLE, without decoding it."""
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    return x, y, x + w, y + h


def decode_mask(segmentation, height: int, width: int) -> np.ndarray | None:
    """pycocotools' decoded mask of one annotation (as COCO.annToMask) -> (H, W) bool, or None when degenerate."""
    rle = to_rle(segmentation, height, width)
    return None if rle is None else mask_utils.decode(rle).astype(bool)


# --- images ---------------------------------------------------------------------------------------------------
class BadImage(Exception):
    """An image that cannot be used (missing, empty, corrupt, or sized unlike its annotation)."""


@dataclass
class Decoded:
    """An image decoded upright as RGB, and how annotation-frame (stored, full-resolution) arrays map onto it."""

    image: Image.Image  # upright RGB, possibly reduced by `reduce`
    turn: Image.Transpose | None  # transpose taking annotation-frame arrays upright (None: frames agree)
    reduce: int  # 1, 2, 4 or 8: JPEG draft decoding shrank the pixels by this factor (ceil division)
    size: tuple[int, int]  # upright full-resolution (width, height)


def load_image(path: str | os.PathLike, width: int, height: int, draft: int | None = None) -> Decoded:
    """Decode one image; COCO's `width`/`height` must match it (else BadImage).

    COCO's `width`/`height` (and so its polygons) describe the pixels as stored in the file, before EXIF
    orientation. We output upright images (ImageOps.exif_transpose), so masks computed in the stored frame are
    turned the same way (`turn`). An annotation file that already describes the upright frame (its size equals
    the rotated size) is also accepted. Greyscale, CMYK, palette and 16-bit images are converted to RGB.

    `draft`: the letterbox size the pixels are for; a JPEG is then decoded at 1/2, 1/4 or 1/8 scale where that
    still leaves at least `draft` pixels on the longer side (libjpeg's DCT scaling: faster, and the output is
    resized down anyway).
    """
    try:
        with Image.open(path) as im:
            stored = im.size
            reduce = 1
            if draft and im.format == "JPEG":
                s = draft / max(stored)
                if im.draft(None, (max(1, math.ceil(stored[0] * s)), max(1, math.ceil(stored[1] * s)))):
                    reduce = round(stored[0] / im.size[0]) if im.size[0] != stored[0] else 1
            im.load()
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            # exif_transpose and convert each copy the pixels even when there is nothing to do: call them only
            # when needed (the image object stays usable after the file is closed: it is loaded)
            rgb = ImageOps.exif_transpose(im) if orientation in ORIENTATION_TRANSPOSE else im
            rgb = rgb.convert("RGB") if rgb.mode != "RGB" else rgb
    except (FileNotFoundError, UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"{path}: {e}") from None
    turn = ORIENTATION_TRANSPOSE.get(orientation)
    swapped = turn in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                       Image.Transpose.ROTATE_270)
    upright = stored[::-1] if swapped else stored
    if stored == (width, height):
        return Decoded(rgb, turn, reduce, upright)  # annotations in the stored frame: turn masks like the pixels
    if upright == (width, height):
        return Decoded(rgb, None, reduce, upright)  # annotations already in the upright frame
    raise BadImage(f"{path}: decoded size {stored} does not match the annotated {width}x{height}")


def transpose_box(box: list[float], method: Image.Transpose | None, width: int, height: int) -> list[float]:
    """Map an `[x, y, w, h]` box of a `width × height` stored image through a PIL transpose."""
    if method is None:
        return list(box)
    x0, y0, bw, bh = box
    x1, y1 = x0 + bw, y0 + bh
    W, H = width, height
    T = Image.Transpose
    corners = {
        T.FLIP_LEFT_RIGHT: lambda x, y: (W - x, y),
        T.FLIP_TOP_BOTTOM: lambda x, y: (x, H - y),
        T.ROTATE_180: lambda x, y: (W - x, H - y),
        T.ROTATE_90: lambda x, y: (y, W - x),  # counter-clockwise
        T.ROTATE_270: lambda x, y: (H - y, x),  # clockwise
        T.TRANSPOSE: lambda x, y: (y, x),
        T.TRANSVERSE: lambda x, y: (H - y, W - x),
    }[method]
    (ax, ay), (bx, by) = corners(x0, y0), corners(x1, y1)
    return [min(ax, bx), min(ay, by), abs(bx - ax), abs(by - ay)]
