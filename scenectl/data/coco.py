"""COCO inputs: annotation files (read with pycocotools), instance masks, and robust image decoding.

The parent process of `build-shards` loads an annotation file once (`load_coco`) and sends each worker only one
image's record and annotations; workers decode masks with `decode_mask` and pixels with `load_image`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from scenectl.data.masks import MEAN_RGB, shape_problem
from scenectl.errors import ScenectlError
from scenectl.io import open_regular, read_json

ANNOTATION_BYTES = 4 << 30  # COCO's instances_train2017.json is 448 MB; a bound, not a guess at the largest

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
        raise ScenectlError(f"unknown split {split!r}: {ann} not found (splits in {root}: "
                            f"{', '.join(known) or 'none'})")
    return ann, root / split


def load_coco(path: str | os.PathLike) -> COCO:
    """Read and check an instance annotation file; return a pycocotools COCO index over it.

    Raises one ScenectlError naming the file and its problems (`integrity_problems`) for a missing, malformed or
    inconsistent file, before anything is written, so that no worker meets an inconsistent record later.
    """
    path = Path(path)
    data = read_json(path, "annotation file", expect=None, limit=ANNOTATION_BYTES)  # its own message below
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise ScenectlError(f"annotation file {path} is not COCO instance format (needs lists 'images', "
                            "'annotations', 'categories')")
    problems = integrity_problems(data)
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise ScenectlError(f"annotation file {path} is malformed: {'; '.join(problems[:MAX_PROBLEMS])}{more}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


MAX_PROBLEMS = 5  # problems named in load_coco's message


def integrity_problems(data: dict) -> list[str]:
    """Every problem of a COCO instance file's records (lists 'images', 'annotations', 'categories'), as phrases:
    a record that is not an object, ids that are not integers (bools, floats and strings are not), duplicate
    image, category or annotation ids, duplicate category names, image sizes that are not positive integers, a
    `file_name` that is not a relative path inside the image folder, and annotations naming an undeclared image
    or category. Geometry is checked per annotation later (a bad one is skipped, not fatal)."""
    records = {k: [r for r in data[k] if isinstance(r, dict)] for k in ("images", "categories", "annotations")}
    problems = [f"'{k}' holds {len(data[k]) - len(rs)} entries that are not objects"
                for k, rs in records.items() if len(rs) != len(data[k])]
    img_ids = _ids(records["images"], "image", problems)
    cat_ids = _ids(records["categories"], "category", problems)
    _ids(records["annotations"], "annotation", problems)
    names = Counter(c["name"] for c in records["categories"] if isinstance(c.get("name"), str))
    problems += [f"category name {n!r} appears {k} times" for n, k in names.items() if k > 1]
    problems += [f"category {c.get('id')!r} has no name string" for c in records["categories"]
                 if not isinstance(c.get("name"), str)]
    for im in records["images"]:
        if not all(_is_int(im.get(k)) and im[k] > 0 for k in ("width", "height")):
            problems.append(f"image {im.get('id')!r} has no positive integer 'width' and 'height'")
        if not _safe_file_name(im.get("file_name")):
            problems.append(f"image {im.get('id')!r} has file_name {im.get('file_name')!r}, not a relative path "
                            f"inside the image folder")
    for a in records["annotations"]:
        for field, known, what in (("image_id", img_ids, "images"), ("category_id", cat_ids, "categories")):
            if not (_is_int(a.get(field)) and a[field] in known):
                problems.append(f"annotation {a.get('id')!r} has {field} {a.get(field)!r}, which is not in '{what}'")
    return problems


def _ids(records: list[dict], what: str, problems: list[str]) -> set[int]:
    """The integer ids of `records`; non-integer and duplicate ids are added to `problems`."""
    ids = [r.get("id") for r in records]
    problems += [f"{what} id {v!r} is not an integer" for v in ids if not _is_int(v)]
    counts = Counter(v for v in ids if _is_int(v))
    problems += [f"{what} id {v} appears {k} times" for v, k in counts.items() if k > 1]
    return set(counts)


def _safe_file_name(name) -> bool:
    """A non-empty relative POSIX path with no '..' or backslash: it stays inside the image folder."""
    if not isinstance(name, str) or "\\" in name or "\0" in name:
        return False
    return all(p not in ("", ".", "..") for p in name.split("/"))  # an empty part: '', a leading or doubled '/'


@dataclass(frozen=True)
class ClassTable:
    """Contiguous class indices: every category of the file in ascending COCO id order (index = position)."""

    coco_ids: tuple[int, ...]
    names: tuple[str, ...]
    # COCO's `supercategory` of each class (supercategory top-k); empty when some category of the file has none
    supercategories: tuple[str, ...] = ()

    @classmethod
    def from_coco(cls, coco: COCO) -> "ClassTable":
        cats = sorted(coco.dataset["categories"], key=lambda c: int(c["id"]))
        sup = tuple(c.get("supercategory") for c in cats)
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats),
                   sup if all(isinstance(x, str) and x for x in sup) else ())

    def index(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.coco_ids)}

    def to_json(self) -> list[dict]:
        rows = [{"index": i, "coco_id": c, "name": n} for i, (c, n) in enumerate(zip(self.coco_ids, self.names))]
        for row, sup in zip(rows, self.supercategories):
            row["supercategory"] = sup
        return rows


def supercategories(classes: list[dict]) -> list[str] | None:
    """Each class's supercategory from a class list (ClassTable.to_json's layout), or None where some class has
    none (a shard set built before they were recorded, an image folder): supercategory metrics are then absent."""
    sup = [c.get("supercategory") if isinstance(c, dict) else None for c in classes]
    return sup if sup and all(isinstance(x, str) and 0 < len(x) <= 200 for x in sup) else None


def classes_match(a: list[dict], b: list[dict]) -> bool:
    """Whether two class lists (ClassTable.to_json's layout: a manifest's, a checkpoint's) name the same COCO ids
    and names in the same order, i.e. give every class the same index."""
    key = lambda cs: [(int(c["coco_id"]), str(c["name"])) for c in cs]  # noqa: E731
    return key(a) == key(b)


# --- masks ----------------------------------------------------------------------------------------------------
def to_rle(segmentation, height: int, width: int) -> dict | None:
    """pycocotools' RLE of one annotation (the steps of COCO.annToRLE), or None when degenerate or hostile.

    Everything is checked before pycocotools sees it (its C code trusts its input: a NaN or huge coordinate
    crashes it or makes it allocate in proportion to the value, an RLE whose counts overrun the image writes out
    of bounds): every polygon coordinate must pass `masks.shape_problem` (finite, within one image size of the
    image); an RLE must have `size == [height, width]` and non-negative integer counts summing to height × width.
    Polygons with fewer than 3 points (or an odd coordinate count) are dropped: pycocotools would read a 4-number
    polygon as a box. Degenerate = no usable polygon, or a mask with zero pixels.
    """
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
        return None
    try:
        if isinstance(segmentation, list):
            if not all(isinstance(p, list) and shape_problem("points", p, width, height) is None for p in segmentation):
                return None
            polys = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
            if not polys:
                return None
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        elif isinstance(segmentation, dict):
            rle = _checked_rle(segmentation, height, width)
        else:
            return None
        if rle is None or mask_utils.area(rle) == 0:
            return None
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):
        return None
    return rle


def _checked_rle(segmentation: dict, height: int, width: int) -> dict | None:
    """A COCO RLE (`counts` a list: uncompressed; a string: compressed) as pycocotools' compressed RLE, or None
    unless its size is [height, width] and its run lengths are non-negative and sum to height × width."""
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size) and size == [height, width]):
        return None
    if isinstance(counts, list):  # uncompressed (crowd regions)
        if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
            return None
        return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("utf-8")  # a non-ASCII character is outside the alphabet: refused below
    runs = rle_string_counts(counts) if isinstance(counts, bytes) else None
    if runs is None or sum(runs) != height * width:
        return None
    return {"size": [height, width], "counts": counts}


def rle_string_counts(s: bytes) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string, decoded as pycocotools' rleFrString does (6 bits a
    character from '0', 5 of data and a continuation flag, the last carrying a sign; from the fourth run on each
    is a difference to the run two before), or None when a run is negative or the string is malformed."""
    counts: list[int] = []
    x = k = 0
    for byte in s:
        c = byte - 48
        if not 0 <= c < 64 or k >= 6:  # outside pycocotools' alphabet, or a run of more than 30 bits
            return None
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x -= 1 << (5 * k)  # sign extension
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            return None
        counts.append(x)
        x = k = 0
    return counts if k == 0 else None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def annotation_box(a: dict, rle: dict, width: int, height: int) -> list[float] | None:
    """The annotation's COCO `bbox` [x, y, w, h]; a missing or zero-size one (w or h 0) is replaced by its
    segmentation's box (`rle`, already checked); None when the bbox is malformed, non-finite or out of range."""
    box = a.get("bbox")
    missing = box is None or box == []
    if not missing and shape_problem("box", box, width, height) is not None:
        return None
    if missing or box[2] <= 0 or box[3] <= 0:
        box = mask_utils.toBbox(rle)  # whole pixels: an RLE's box is exact in float
    return [float(v) for v in box]


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
    the rotated size) is also accepted. Every other mode is converted to RGB by `to_rgb`. The one image decoder
    of build-shards, predict and build-ooc.

    `draft`: the letterbox size the pixels are for; a JPEG is then decoded at 1/2, 1/4 or 1/8 scale where that
    still leaves at least `draft` pixels on the longer side (libjpeg's DCT scaling: faster, and the output is
    resized down anyway).
    """
    try:  # open_regular: a FIFO or device among the images is a bad image, never a hang
        with open_regular(path, "image") as f, Image.open(f) as im:
            stored = im.size
            if draft and im.format == "JPEG":
                s = draft / max(stored)
                im.draft(None, (max(1, math.ceil(stored[0] * s)), max(1, math.ceil(stored[1] * s))))
            reduce = round(stored[0] / im.size[0])  # 1, or the scale the draft decoding chose (2, 4 or 8)
            im.load()
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            # exif_transpose and convert each copy the pixels even when there is nothing to do: call them only
            # when needed (the image object stays usable after the file is closed: it is loaded)
            rgb = to_rgb(ImageOps.exif_transpose(im) if orientation in ORIENTATION_TRANSPOSE else im)
    except (ScenectlError, UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"{path}: {e}") from None
    turn = ORIENTATION_TRANSPOSE.get(orientation)
    upright = stored[::-1] if orientation in (5, 6, 7, 8) else stored  # these turn by 90°: width and height swap
    if stored == (width, height):
        return Decoded(rgb, turn, reduce, upright)  # annotations in the stored frame: turn masks like the pixels
    if upright == (width, height):
        return Decoded(rgb, None, reduce, upright)  # annotations already in the upright frame
    raise BadImage(f"{path}: decoded size {stored} does not match the annotated {width}x{height}")


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # integer greyscale: 16-bit samples (I: clipped to 0..65535)
ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB (docs/shard-format.md, Image decoding); an RGB image is returned as is.

    16-bit greyscale (I;16*, and I as 16-bit PNGs open) is scaled by 255/65535, not clipped; F (float) is scaled
    from [0, 1] when its maximum is at most 1, else read as [0, 255] (NaN -> 0); images with transparency (LA,
    La, P or PA with a transparent index, RGBA, RGBa, or a `transparency` colour) are composited on the fill colour
    masks.MEAN_RGB; 1, L, P, CMYK, YCbCr, LAB, HSV and RGBX use Pillow's conversion.
    """
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode in SIXTEEN_BIT or im.mode == "F":
        v = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)  # (H, W)
        v = v * (255 / 65535) if im.mode in SIXTEEN_BIT else v * 255 if v.size and v.max() <= 1 else v
        return Image.fromarray(np.clip(np.rint(v), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ALPHA or "transparency" in im.info:
        rgba = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")  # Pillow has no La -> RGBA
        canvas = Image.new("RGBA", rgba.size, (*MEAN_RGB, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert("RGB")


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
