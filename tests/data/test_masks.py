"""Hidden-region geometry, fills and letterboxing (scenectl.data.masks), against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from scenectl.data import masks as M
from scenectl.errors import ScenectlError


def random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 4))):  # a few rectangles, possibly touching the border
        x, y = rng.integers(0, w), rng.integers(0, h)
        m[y:y + rng.integers(1, 25), x:x + rng.integers(1, 25)] = True
    return m


def ref_dilate(m: np.ndarray, k: int) -> np.ndarray:
    """The definition: PIL's MaxFilter over a (2k+1)² window."""
    if k == 0:
        return m
    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(2 * k + 1))) > 0


@pytest.mark.parametrize("seed", range(3))
def test_geometry_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(8, 90, 2))
        m, k = random_mask(rng, h, w), int(rng.integers(0, 5))
        grown = ref_dilate(m, k)
        ys, xs = np.nonzero(grown)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        regions = {s: M.hidden_region(m, s, k) for s in M.SHAPES}
        for s, (region, box) in regions.items():
            assert (region >= grown).all(), f"{s} misses a dilated-mask pixel"
            assert box == M.bbox(region)
        assert (regions["instance"][0] == grown).all()
        box = np.zeros_like(m)
        box[y0:y1, x0:x1] = True
        assert (regions["box"][0] == box).all()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        r2 = ((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2).max()  # farthest dilated pixel centre
        yy, xx = np.mgrid[0:h, 0:w]
        assert (regions["circle"][0] == ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r2)).all()
        sq, (sx0, sy0, sx1, sy1) = regions["square"]
        side = max(x1 - x0, y1 - y0)
        assert sq.sum() == (sx1 - sx0) * (sy1 - sy0)  # a solid rectangle ...
        assert sx1 - sx0 == min(side, w) or sx0 == 0 or sx1 == w  # ... that is the square, unless clipped
        assert sy1 - sy0 == min(side, h) or sy0 == 0 or sy1 == h


def test_dilate_is_pil_maxfilter():
    rng = np.random.default_rng(7)
    for k in range(6):
        m = random_mask(rng, 50, 60)
        assert (M.dilate(m, k)[0] == ref_dilate(m, k)).all()


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_reduce_any_still_covers(factor):
    rng = np.random.default_rng(factor)
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(10, 70, 2))
        region = random_mask(rng, h, w)
        shape = (-(-h // factor), -(-w // factor))
        small, box = M.reduce_any(region, M.bbox(region), factor, shape)
        up = np.kron(small, np.ones((factor, factor), bool))[:h, :w]
        assert (up >= region).all()
        assert (small == M.reduce_any(region, M.bbox(region), factor, shape)[0]).all()
        assert M.bbox(small) == box


@pytest.mark.parametrize("kind", M.FILLS)
def test_fill_replaces_exactly_the_region(kind):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    region = np.zeros((60, 80), bool)
    region[10:30, 20:50] = True
    out = M.fill(img, region, kind, np.random.default_rng(1))
    assert (out[~region] == img[~region]).all()
    if kind in M.FILL_RGB:
        assert (out[region] == M.FILL_RGB[kind]).all()
    # nothing of the hidden pixels survives: changing them does not change the output
    other = img.copy()
    other[region] = 255 - other[region]
    assert (M.fill(other, region, kind, np.random.default_rng(1)) == out).all()
    if kind in ("noise", "blur"):
        assert not (M.fill(img, region, kind, np.random.default_rng(2)) == out).all()  # the seed matters
        assert out[region].std() > (5 if kind == "blur" else 50)


def test_letterbox_transform_and_patch():
    rng = np.random.default_rng(3)
    for w, h, size in [(640, 426, 64), (300, 500, 256), (50, 40, 256), (333, 333, 100)]:
        lb = M.Letterbox(w, h, size)
        nw, nh = lb.resized
        ox, oy = lb.offset
        assert max(nw, nh) == size and ox + nw <= size and oy + nh <= size
        assert abs(w * lb.scale + 2 * ox - size) < 2 and abs(h * lb.scale + 2 * oy - size) < 2  # centred
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        base = lb.image(Image.fromarray(img))
        assert (base[:oy] == M.MEAN_RGB).all() and (base[:, :ox] == M.MEAN_RGB).all()  # mean-colour padding
        region = np.zeros((h, w), bool)
        region[h // 3:h // 2, w // 4:w // 2] = True
        filled = M.fill(img, region, "black")
        # the windowed resize equals resizing the whole filled scene (up to float rounding)
        full = lb.image(Image.fromarray(filled))
        assert np.abs(lb.patch(base, filled, region).astype(int) - full).max() <= 1
        mask = lb.mask(region)
        assert set(np.unique(mask)) <= {0, 255}
        cy, cx = int((h * 5 / 12) * lb.scale) + oy, int((w * 3 / 8) * lb.scale) + ox  # centre of the region
        assert mask[cy, cx] == 255 and mask[0, 0] == 0


def test_crop_box_is_clipped_and_non_empty():
    assert M.crop_box([10.2, 5.7, 20.1, 3.0], 100, 50) == (10, 5, 31, 9)
    assert M.crop_box([99.5, 49.5, 0.0, 0.0], 100, 50) == (99, 49, 100, 50)


# --- validation of geometry -----------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
SHAPE_CASES = [  # (kind, values, problem phrase or None) in a 100 × 50 image
    ("box", [10, 5, 20, 10], None),
    ("box", [-100, -50, 300, 150], None),  # corners exactly one image size out
    ("box", [0, 0, 0, 0], None),  # zero-size: usable (annotations then take the segmentation's box)
    ("box", [NAN, 5, 20, 10], "non-finite"),
    ("box", [10, 5, INF, 10], "non-finite"),
    ("box", [10, 5, 1e12, 10], "beyond the coordinate range"),
    ("box", [10, 5, -1, 10], "negative width"),
    ("box", [10, 5, 20], "4 numbers"),
    ("box", [10, 5, 20, True], "flat list of numbers"),
    ("box", "10,5,20,10", "flat list of numbers"),
    ("polygon", [0, 0, 10, 0, 10, 10], None),
    ("polygon", np.array([0, 0, 10, 0, 10, 10]), None),
    ("polygon", [0, 0, 10, 0], "at least 3"),
    ("polygon", [0, 0, 10, 0, 10, 10, 4], "at least 3"),
    ("polygon", [0, 0, 10, 0, 10, -51], "beyond the coordinate range"),
    ("polygon", [0, 0, 201, 0, 10, 10], "beyond the coordinate range"),
    ("polygon", [0, 0, 10, 0, 10, 10 ** 400], "beyond any image"),
    ("polygon", [0, 0, 10, 0, 10, -INF], "non-finite"),
    ("polygon", [[0, 0], [10, 0], [10, 10]], "flat list of numbers"),
    ("polygon", [0, 0, 10, 0, 10, "10"], "flat list of numbers"),
    ("points", [5, NAN], "non-finite"),
    ("points", [5], None),
    ("margin", 0, None),
    ("margin", M.MAX_MARGIN, None),
    ("margin", M.MAX_MARGIN + 1, "integer from"),
    ("margin", -1, "integer from"),
    ("margin", 3.0, "integer from"),
    ("margin", True, "integer from"),
    ("margin", NAN, "integer from"),
]


@pytest.mark.parametrize("kind, values, problem", SHAPE_CASES)
def test_shape_problem_names_what_is_wrong(kind, values, problem):
    found = M.shape_problem(kind, values, 100, 50)
    assert found is None if problem is None else problem in found
    if problem is None:
        assert M.check_shape("--x", kind, values, 100, 50) is values
    else:
        with pytest.raises(ScenectlError, match=f"^--x .*{problem}"):
            M.check_shape("--x", kind, values, 100, 50)


@pytest.mark.parametrize("shape", M.SHAPES)
def test_a_huge_margin_is_the_image_sized_one(shape):
    """Any margin beyond the longer side gives the same region (and costs no more)."""
    m = random_mask(np.random.default_rng(5), 30, 40)
    region, box = M.hidden_region(m, shape, 40)
    for margin in (41, 10 ** 9):
        other, other_box = M.hidden_region(m, shape, margin)
        assert (other == region).all() and other_box == box
    assert region.all()


def test_transform_records_the_mapping_applied():
    """The metadata's transform reproduces the letterbox mask from the recorded numbers alone."""
    rng = np.random.default_rng(4)
    for w, h, size in [(640, 427, 64), (427, 640, 256), (333, 333, 100), (50, 41, 256), (1, 9, 8)]:
        lb = M.Letterbox(w, h, size)
        t = lb.transform()
        assert t["resized"] == list(lb.resized) and t["offset"] == list(lb.offset) and t["size"] == size
        assert t["scale_x"] == t["resized"][0] / w and t["scale_y"] == t["resized"][1] / h
        assert t["scale"] == size / max(w, h)
        region = random_mask(rng, h, w) if min(w, h) > 1 else np.ones((h, w), bool)
        again = M.nearest_mask(region, None, tuple(t["resized"]), tuple(t["offset"]), t["size"])
        assert (again == lb.mask(region)).all()
        # the definition: output pixel (u, v) of the resized image shows the source pixel under its centre
        (nw, nh), (ox, oy) = lb.resized, lb.offset
        us, vs = np.meshgrid(np.arange(nw), np.arange(nh))
        src = region[np.minimum(((vs + 0.5) / t["scale_y"]).astype(int), h - 1),
                     np.minimum(((us + 0.5) / t["scale_x"]).astype(int), w - 1)]
        assert ((again[oy:oy + nh, ox:ox + nw] > 0) == src).mean() > 0.999  # (float rounding at exact edges)
