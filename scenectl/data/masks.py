"""Hidden-region geometry, fills and letterboxing (the pixel work of build-shards).

Everything here works on numpy arrays in original-resolution pixel coordinates: masks are `(H, W)` bool,
images `(H, W, 3)` uint8. A pixel (x, y) covers [x, x+1) × [y, y+1); its centre is (x + 0.5, y + 0.5).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageMorph

from scenectl.errors import ScenectlError
from scenectl.options import RANGES

SHAPES = ("square", "circle", "box", "instance")
FILLS = ("mean", "black", "noise", "blur")

# The fixed "dataset mean" colour of --fill mean and of the letterbox padding: the ImageNet RGB mean
# (0.485, 0.456, 0.406) × 255, rounded. COCO's own mean is within 3 levels of it, and models normalise with it,
# so a mean-filled pixel becomes ~0 after normalisation.
MEAN_RGB = (124, 116, 104)
FILL_RGB = {"mean": MEAN_RGB, "black": (0, 0, 0)}

_DILATE = ImageMorph.MorphOp(op_name="dilation8")  # one 3×3 (8-neighbour) dilation step, C lookup table

# Coordinates (polygon points, box corners) may lie up to one image width/height beyond each edge (annotation tools
# overshoot a little; clipping is done by rasterising): pycocotools' polygon rasteriser allocates in proportion to
# the edge lengths, so this bound keeps memory proportional to the image, never to a value read from a file.
COORD_SLACK = 1.0
MAX_MARGIN = RANGES["margin"].hi  # beyond the image's longer side a margin changes nothing (the whole image is reached)
_PLAIN = frozenset((int, float))


# --- validation -----------------------------------------------------------------------------------------------
def shape_problem(kind: str, values, width: int, height: int) -> str | None:
    """Why `values` are not a usable `kind` in a `width × height` image, or None when they are.

    kind "box": `[x, y, w, h]` (w, h >= 0); "polygon": `[x1, y1, x2, y2, ...]` (at least 3 points); "points":
    any flat list of x, y coordinates; "margin": one integer in [0, MAX_MARGIN]. Numbers must be finite and every
    coordinate (box corners included) within COORD_SLACK image sizes of the image: x in [-W, 2W], y in [-H, 2H].
    The one check of geometry read from files (annotations) and given by users (predict's --box, --polygon).
    """
    if kind == "margin":  # the --margin option's own range
        return RANGES["margin"].problem(values)
    if isinstance(values, np.ndarray):
        numeric = values.ndim == 1 and values.dtype.kind in "iuf"
    else:  # JSON numbers are exactly int or float: test the type first (isinstance of an ABC is slow)
        numeric = isinstance(values, (list, tuple)) and all(
            type(x) in _PLAIN or (isinstance(x, numbers.Real) and not isinstance(x, bool)) for x in values)
    if not numeric:
        return "must be a flat list of numbers"
    try:
        v = np.asarray(values, dtype=np.float64)  # (N,)
    except OverflowError:  # an integer beyond float range
        return "holds a number beyond any image"
    if kind == "box" and v.size != 4:
        return f"must be 4 numbers x, y, w, h, got {v.size}"
    if kind == "polygon" and (v.size < 6 or v.size % 2):
        return f"needs at least 3 x, y points (an even count of numbers), got {v.size} numbers"
    if kind == "box":
        if v[2] < 0 or v[3] < 0:
            return "has a negative width or height"
        v = np.array([v[0], v[1], v[0] + v[2], v[1] + v[3]])  # its corners, as points
    if v.size % 2:
        v = np.append(v, 0.0)  # ("points" of odd length) the last x gets a harmless y
    if not v.size:
        return None
    xy = v.reshape(-1, 2)  # (N, 2) points
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)  # NaN propagates: caught by the range test below
    lo_x, hi_x = -COORD_SLACK * width, (1 + COORD_SLACK) * width
    lo_y, hi_y = -COORD_SLACK * height, (1 + COORD_SLACK) * height
    if lo_x <= x0 and x1 <= hi_x and lo_y <= y0 and y1 <= hi_y:
        return None
    if not np.isfinite(v).all():
        return "holds a non-finite number (NaN or infinity)"
    return (f"reaches beyond the coordinate range of a {width}x{height} image "
            f"(x in [{lo_x:g}, {hi_x:g}], y in [{lo_y:g}, {hi_y:g}])")


def check_shape(option: str, kind: str, values, width: int, height: int):
    """A user-given shape (`kind` as in shape_problem), checked: returned as given, or a ScenectlError naming
    `option` (e.g. `check_shape("--box", "box", [x, y, w, h], W, H)`)."""
    problem = shape_problem(kind, values, width, height)
    if problem is not None:
        raise ScenectlError(f"{option} {problem}")
    return values


# --- geometry -------------------------------------------------------------------------------------------------
def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box of the true pixels as (x0, y0, x1, y1), exclusive ends; None for an empty mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def dilate(mask: np.ndarray, margin: int, box: tuple | None = None) -> tuple[np.ndarray, tuple | None]:
    """Dilate by `margin` pixels with a square structuring element (Chebyshev distance ≤ margin).
    -> (grown (H, W) bool, its box). `box` is the mask's box if already known.

    Done with PIL's ImageMorph (`margin` 3×3 dilations, identical to ImageFilter.MaxFilter(2*margin+1) but ~5×
    faster) on the mask's box grown by `margin`, so the cost follows the instance, not the image.
    """
    box = bbox(mask) if box is None else box
    if margin <= 0 or box is None:
        return mask.copy(), box
    h, w = mask.shape
    margin = min(margin, max(h, w))  # a larger margin reaches no further: work stays bounded by the image
    x0, y0 = max(box[0] - margin, 0), max(box[1] - margin, 0)
    x1, y1 = min(box[2] + margin, w), min(box[3] + margin, h)
    # ImageMorph leaves the outermost pixel ring untouched, so pad the grown box by one zero pixel
    crop = Image.fromarray(np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8) * 255)  # L image, (h+2, w+2)
    for _ in range(margin):
        _, crop = _DILATE.apply(crop)
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = np.asarray(crop)[1:-1, 1:-1] > 0
    return out, (x0, y0, x1, y1)


def hidden_region(mask: np.ndarray, shape: str, margin: int, box: tuple | None = None) -> tuple[np.ndarray, tuple]:
    """The region hiding instance `mask` (see docs/shard-format.md, Geometry) -> ((H, W) bool, its box
    (x0, y0, x1, y1), exclusive ends). `box` is the mask's box if already known.

    The region contains the mask dilated by `margin` (square structuring element). Only `instance` needs the
    dilated pixels themselves; box, square and circle follow exactly from the mask's box and row extremes.
    """
    box = bbox(mask) if box is None else box
    margin = min(margin, max(mask.shape))  # a larger margin reaches no further (the region is clipped anyway)
    if shape == "instance":
        return dilate(mask, margin, box)
    if shape in ("box", "square"):
        return box_region(box, shape, margin, mask.shape)
    if shape != "circle":
        raise ValueError(f"unknown shape {shape!r}")
    h, w = mask.shape
    # the dilated mask's box = the mask's box grown by margin, clipped to the image
    x0, y0, x1, y1 = max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, w), min(box[3] + margin, h)
    region = np.zeros_like(mask)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # centre of the dilated box, continuous coordinates
    r2 = _farthest2(mask, box, margin, cx, cy)
    r = math.sqrt(r2)
    bx0, by0 = max(int(cx - r) - 1, 0), max(int(cy - r) - 1, 0)
    bx1, by1 = min(int(cx + r) + 2, w), min(int(cy + r) + 2, h)
    yy, xx = np.ogrid[by0:by1, bx0:bx1]
    region[by0:by1, bx0:bx1] = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r2
    x0, y0, x1, y1 = bbox(region[by0:by1, bx0:bx1])  # never empty: it holds the mask
    return region, (x0 + bx0, y0 + by0, x1 + bx0, y1 + by0)


def box_region(box: tuple, shape: str, margin: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """`box` or `square` region of a mask whose box is `box`, in an image of `size` (H, W): both follow from the
    box alone (the dilated mask's box is the mask's box grown by `margin`, clipped), so the mask is not needed."""
    h, w = size
    margin = min(margin, max(h, w))
    x0, y0, x1, y1 = max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, w), min(box[3] + margin, h)
    if shape == "square":
        side = max(x1 - x0, y1 - y0)
        sx0 = x0 - (side - (x1 - x0)) // 2  # centred; the odd pixel of slack goes after
        sy0 = y0 - (side - (y1 - y0)) // 2
        x0, y0, x1, y1 = max(sx0, 0), max(sy0, 0), min(sx0 + side, w), min(sy0 + side, h)
    elif shape != "box":
        raise ValueError(f"box_region makes box or square, not {shape!r}")
    region = np.zeros((h, w), bool)
    region[y0:y1, x0:x1] = True
    return region, (x0, y0, x1, y1)


def _farthest2(mask: np.ndarray, box: tuple, margin: int, cx: float, cy: float) -> float:
    """Squared distance from (cx, cy) to the farthest pixel centre of the mask dilated by `margin`.

    A mask pixel (x, y) dilates to the clipped square [x-m, x+m] × [y-m, y+m], whose farthest centre is at
    the farther x end and the farther y end; along one row only the leftmost and rightmost pixels matter.
    """
    h, w = mask.shape
    sub = mask[box[1]:box[3], box[0]:box[2]]
    rows = np.flatnonzero(sub.any(axis=1))
    lo = sub[rows].argmax(axis=1) + box[0]  # leftmost pixel of each row
    hi = sub.shape[1] - 1 - sub[rows, ::-1].argmax(axis=1) + box[0]  # rightmost
    ys = rows + box[1]
    dx = np.maximum(np.abs(np.maximum(lo - margin, 0) + 0.5 - cx), np.abs(np.minimum(hi + margin, w - 1) + 0.5 - cx))
    dy = np.maximum(np.abs(np.maximum(ys - margin, 0) + 0.5 - cy), np.abs(np.minimum(ys + margin, h - 1) + 0.5 - cy))
    return float(np.max(dx**2 + dy**2))


def reduce_any(region: np.ndarray, box: tuple, factor: int, shape: tuple[int, int], rect: bool = False
               ) -> tuple[np.ndarray, tuple]:
    """Shrink a region by an integer `factor` into an array of `shape` (ceil(H/f), ceil(W/f)): a small pixel is
    hidden when ANY of the f × f pixels it covers is hidden, so the shrunk region still covers the instance.
    `rect`: the region is exactly its box (then so is the result, computed from the box alone)."""
    if factor == 1:
        return region, box
    f = factor
    X0, Y0, X1, Y1 = box[0] // f, box[1] // f, -(-box[2] // f), -(-box[3] // f)
    out = np.zeros(shape, bool)
    if rect:
        out[Y0:Y1, X0:X1] = True
    else:
        crop = np.zeros(((Y1 - Y0) * f, (X1 - X0) * f), bool)  # padded to whole f × f blocks
        src = region[Y0 * f:Y1 * f, X0 * f:X1 * f]
        crop[:src.shape[0], :src.shape[1]] = src
        out[Y0:Y1, X0:X1] = crop.reshape(Y1 - Y0, f, X1 - X0, f).any(axis=(1, 3))
    return out, (X0, Y0, X1, Y1)


# --- fills ----------------------------------------------------------------------------------------------------
def fill(image: np.ndarray, region: np.ndarray, kind: str, rng: np.random.Generator | None = None,
         box: tuple | None = None) -> np.ndarray:
    """Return a copy of `image` (H, W, 3) whose `region` pixels are replaced; nothing of them survives.

    mean / black: a constant colour. noise: uniform random RGB per pixel (from `rng`). blur: the scene's colours
    diffused into the hole: the hidden pixels are first replaced by noise, then the surroundings are Gaussian-
    blurred (radius 10% of the region's longer side, at least 2 px) and the blurred values fill the hole, so
    the hole's content depends only on visible pixels and the noise.
    """
    out = image.copy()
    box = bbox(region) if box is None else box
    if box is None:
        return out
    x0, y0, x1, y1 = box
    sub, view = region[y0:y1, x0:x1], out[y0:y1, x0:x1]  # work inside the region's box only (a view of out)
    if kind in FILL_RGB:
        np.copyto(view, np.array(FILL_RGB[kind], np.uint8), where=sub[:, :, None])  # faster than view[sub] = ...
        return out
    if kind not in ("noise", "blur"):
        raise ValueError(f"unknown fill {kind!r}")
    if rng is None:
        raise ValueError(f"--fill {kind} needs a random generator")
    view[sub] = rng.integers(0, 256, size=(int(sub.sum()), 3), dtype=np.uint8)
    if kind == "noise":
        return out
    radius = max(2.0, 0.1 * max(x1 - x0, y1 - y0))
    pad = fill_reach(kind, box)
    h, w = region.shape
    cx0, cy0, cx1, cy1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
    blurred = np.asarray(Image.fromarray(out[cy0:cy1, cx0:cx1]).filter(ImageFilter.GaussianBlur(radius)))
    view[sub] = blurred[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0][sub]
    return out


def fill_reach(kind: str, box: tuple) -> int:
    """How far outside the region's box `fill` reads pixels: the blur's Gaussian reach (3 sigma; the blurred hole
    sees the same context as a whole-image blur), 0 for the other fills."""
    if kind != "blur":
        return 0
    radius = max(2.0, 0.1 * max(box[2] - box[0], box[3] - box[1]))
    return int(3 * radius) + 1


# --- letterboxing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    """Fit a `width × height` image into `size × size`: longer side → size, shorter side padded symmetrically.

    output pixel = original pixel × scale + offset (the shorter side is rounded to whole pixels, ≤ 0.5 px).
    """

    width: int
    height: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.width, self.height)

    @property
    def resized(self) -> tuple[int, int]:
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    @property
    def offset(self) -> tuple[int, int]:
        nw, nh = self.resized
        return (self.size - nw) // 2, (self.size - nh) // 2

    def transform(self) -> dict:
        """What a sample's metadata records: the nominal `scale`, the per-axis scales actually applied
        (`resized / original`), the `offset` of the resized image in the canvas, the `resized` size and the canvas
        `size` (docs/shard-format.md); `nearest_mask` reproduces mask.png from these alone."""
        (nw, nh), (ox, oy) = self.resized, self.offset
        return {"scale": self.scale, "scale_x": nw / self.width, "scale_y": nh / self.height, "offset": [ox, oy],
                "resized": [nw, nh], "size": self.size}

    def image(self, img: Image.Image) -> np.ndarray:
        """Resize (bicubic, antialiased) and pad with MEAN_RGB -> (size, size, 3) uint8."""
        canvas = _mean_canvas(self.size).copy()
        (nw, nh), (ox, oy) = self.resized, self.offset
        canvas[oy:oy + nh, ox:ox + nw] = np.asarray(img.resize((nw, nh), Image.BICUBIC))
        return canvas

    def mask(self, region: np.ndarray, box: tuple | None = None) -> np.ndarray:
        """Nearest-neighbour resize of a (H, W) bool region into the (size, size) uint8 canvas (255 = hidden)."""
        return nearest_mask(region, box, self.resized, self.offset, self.size)

    def source_window(self, box: tuple, shape: tuple[int, int], reach: int = 0) -> tuple[int, int, int, int]:
        """The pixels (x0, y0, x1, y1) of a (h, w) = `shape` source that `patch` reads for a region with box `box`,
        widened by `reach` on every side, clipped to the source."""
        (nw, nh), (h, w) = self.resized, shape
        _, _, sx0, sx1 = _window(box[0], box[2], w, nw)
        _, _, sy0, sy1 = _window(box[1], box[3], h, nh)
        return (max(min(sx0, box[0] - reach), 0), max(min(sy0, box[1] - reach), 0),
                min(max(sx1, box[2] + reach), w), min(max(sy1, box[3] + reach), h))

    def patch(self, base: np.ndarray, filled: np.ndarray, region: np.ndarray, box: tuple | None = None,
              origin: tuple[int, int] = (0, 0), shape: tuple[int, int] | None = None) -> np.ndarray:
        """`base` (the letterboxed unmasked scene) with every output pixel that `region` can reach recomputed
        from `filled` (the masked scene; `region` and `box` in its pixels) -> (size, size, 3) uint8.

        Equals `self.image(filled)` but resizes only a window: PIL's resize with `box` computes output pixels
        [u0, u1) from the same bicubic taps as a whole-image resize, and output pixels whose taps (2 source
        pixels × the downscale factor on each side) miss the region's box are the same in both images.
        `filled` may be only a part of the masked scene, at `origin` (x, y) in an image of `shape` (h, w), as long
        as it holds `source_window` (build-shards fills just that part).
        """
        box = bbox(region) if box is None else box
        out = base.copy()
        if box is None:
            return out
        (nw, nh), (ox, oy) = self.resized, self.offset
        h_in, w_in = filled.shape[:2] if shape is None else shape  # full resolution, or reduced by a draft decode
        u0, u1, sx0, sx1 = _window(box[0], box[2], w_in, nw)
        v0, v1, sy0, sy1 = _window(box[1], box[3], h_in, nh)
        sx, sy = w_in / nw, h_in / nh
        x, y = origin
        src = Image.fromarray(np.ascontiguousarray(filled[sy0 - y:sy1 - y, sx0 - x:sx1 - x]))
        crop_box = (u0 * sx - sx0, v0 * sy - sy0, u1 * sx - sx0, v1 * sy - sy0)
        out[oy + v0:oy + v1, ox + u0:ox + u1] = np.asarray(src.resize((u1 - u0, v1 - v0), Image.BICUBIC, box=crop_box))
        return out


def nearest_mask(region: np.ndarray, box: tuple | None, resized: tuple[int, int], offset: tuple[int, int],
                 size: int) -> np.ndarray:
    """A (H, W) bool region resized to `resized` = (nw, nh) by nearest neighbour and placed at `offset` in a
    (size, size) uint8 canvas, 255 = hidden -> (size, size) uint8. Output pixel (u, v) of the resized image takes
    the source pixel under its centre: column floor((u + 0.5) · W / nw), row floor((v + 0.5) · H / nh), computed
    in integers, so the metadata's `resized`, `offset` and `size` reproduce it exactly. Only `box` (the region's
    box, found if None) is gathered."""
    box = bbox(region) if box is None else box
    canvas = np.zeros((size, size), np.uint8)
    if box is None:
        return canvas
    (nw, nh), (ox, oy) = resized, offset
    h, w = region.shape
    cols = np.minimum((2 * np.arange(nw, dtype=np.int64) + 1) * w // (2 * nw), w - 1)  # (nw,) source column of u
    rows = np.minimum((2 * np.arange(nh, dtype=np.int64) + 1) * h // (2 * nh), h - 1)  # (nh,)
    u0, u1 = np.searchsorted(cols, box[0]), np.searchsorted(cols, box[2])  # output columns inside the box
    v0, v1 = np.searchsorted(rows, box[1]), np.searchsorted(rows, box[3])
    canvas[oy + v0:oy + v1, ox + u0:ox + u1] = region[np.ix_(rows[v0:v1], cols[u0:u1])] * np.uint8(255)
    return canvas


@functools.lru_cache(maxsize=8)
def _mean_canvas(size: int) -> np.ndarray:
    """A (size, size, 3) uint8 canvas of MEAN_RGB, made once per size (copying it beats filling a new one)."""
    canvas = np.full((size, size, 3), MEAN_RGB, np.uint8)
    canvas.flags.writeable = False
    return canvas


def _window(r0: int, r1: int, n_in: int, n_out: int) -> tuple[int, int, int, int]:
    """Output pixels [u0, u1) whose bicubic taps can touch source pixels [r0, r1), and the source pixels
    [s0, s1) those output pixels read (taps of output u span centre ± support, centre = (u + 0.5) × scale)."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)  # bicubic support, widened by the downscale factor (antialiasing)
    u0 = max(int(math.floor((r0 - support) / scale - 0.5)) - 1, 0)
    u1 = min(int(math.ceil((r1 + support) / scale - 0.5)) + 2, n_out)
    s0 = max(int(math.floor(u0 * scale - support)) - 2, 0)
    s1 = min(int(math.ceil(u1 * scale + support)) + 2, n_in)
    return u0, u1, s0, s1


def crop_box(box: list[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Whole-pixel crop (x0, y0, x1, y1) of a COCO `[x, y, w, h]` box, clipped, at least one pixel."""
    x, y, bw, bh = box
    x0, y0 = min(max(int(math.floor(x)), 0), width - 1), min(max(int(math.floor(y)), 0), height - 1)
    x1, y1 = max(min(int(math.ceil(x + bw)), width), x0 + 1), max(min(int(math.ceil(y + bh)), height), y0 + 1)
    return x0, y0, x1, y1


def box_mask(box: list[float], width: int, height: int) -> np.ndarray:
    """(height, width) bool: the whole pixels of COCO `[x, y, w, h]` box (crop_box: clipped, at least one pixel),
    the instance mask a box stands for (predict's --box, rescore's detections)."""
    x0, y0, x1, y1 = crop_box(box, width, height)
    m = np.zeros((height, width), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m
