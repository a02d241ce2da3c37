"""Property tests (hypothesis) of the hidden-region geometry and the --max-area / --min-area filters, through the
builder's own per-image code (scenectl.data.shards.process_image) on random images, boxes and polygons.

For every eligible instance and every shape: the region covers every pixel of pycocotools' decoded mask, lies
inside the image, the recorded area_fraction equals region.sum() / (H * W), and the builder keeps exactly the
instances with min_area <= mask pixels and area_fraction <= max_area (skip counts match). mask.png hides every
instance pixel (nearest-neighbour letterbox) and nothing in the letterbox padding."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from scenectl.data import shards as S
from scenectl.data.masks import SHAPES, Letterbox, hidden_region

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SIZE = 32  # output side


def _truth(poly: list[float], h: int, w: int) -> np.ndarray:
    """pycocotools' decoded polygon mask (as COCO.annToMask) -> (H, W) bool."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w))).astype(bool)


@st.composite
def scenes(draw):
    w, h = draw(st.integers(12, 96)), draw(st.integers(12, 96))
    anns = []
    for i in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):  # an axis-aligned box (may stick out of the image)
            x0, y0 = draw(st.floats(-8, w - 1)), draw(st.floats(-8, h - 1))
            bw, bh = draw(st.floats(1, w)), draw(st.floats(1, h))
            poly = [x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]
        else:  # any polygon of 3..8 points, possibly self-intersecting or degenerate
            k = draw(st.integers(3, 8))
            poly = [v for _ in range(k) for v in (draw(st.floats(-5, w + 5)), draw(st.floats(-5, h + 5)))]
        xs, ys = poly[0::2], poly[1::2]
        anns.append({"id": i + 1, "image_id": 7, "category_id": draw(st.sampled_from([1, 2])), "iscrowd": 0,
                     "segmentation": [poly], "area": 0.0,
                     "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]})
    return w, h, anns


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scene=scenes(), shape=st.sampled_from(SHAPES), margin=st.integers(0, 4),
       max_area=st.floats(0.01, 1.0), min_area=st.integers(0, 60))
def test_regions_cover_stay_inside_and_filters_are_exact(scene, shape, margin, max_area, min_area):
    w, h, anns = scene
    params = {**S.BuildConfig(shape=shape, margin=margin, max_area=max_area, min_area=min_area,
                              image_size=SIZE).params("prop")}
    with tempfile.TemporaryDirectory() as d:
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(Path(d) / "im.png")
        record = {"id": 7, "file_name": "im.png", "width": w, "height": h}
        res = S.process_image(S.Job(d, "prop", params, (1, 2), ("a", "b")), 0, record, anns)
    kept = {json.loads(s["json"])["annotation_id"]: (s, frac) for s, _, frac in res.samples}
    expect = {"bad_annotation": 0, "too_small": 0, "too_large": 0}
    for a in anns:
        truth = _truth(a["segmentation"][0], h, w)  # (H, W)
        if not truth.any():
            expect["bad_annotation"] += 1
            assert a["id"] not in kept
            continue
        if truth.sum() < min_area:
            expect["too_small"] += 1
            assert a["id"] not in kept
            continue
        region, _ = hidden_region(truth, shape, margin)
        assert region.shape == (h, w)  # inside the image
        assert region[truth].all()  # covers every instance pixel
        frac = region.sum() / (h * w)
        if frac > max_area:
            expect["too_large"] += 1
            assert a["id"] not in kept
            continue
        assert a["id"] in kept, (a["id"], frac, max_area)
        sample, recorded = kept[a["id"]]
        meta = json.loads(sample["json"])
        assert recorded == meta["area_fraction"] == pytest.approx(frac, abs=1e-12) and meta["area_fraction"] <= max_area
        assert meta["instance_area"] == truth.sum()
        m = np.asarray(Image.open(io.BytesIO(sample["mask.png"])))  # (SIZE, SIZE), 255 = hidden
        lb = Letterbox(w, h, SIZE)
        assert (m[lb.mask(truth) > 0] == 255).all()  # every instance pixel hidden at output resolution
        (ox, oy), (rw, rh) = lb.offset, lb.resized
        inside = np.zeros_like(m, bool)
        inside[oy:oy + rh, ox:ox + rw] = True
        assert not m[~inside].any()  # nothing hidden in the letterbox padding
    assert {k: res.skipped.get(k, 0) for k in expect} == expect
    assert len(kept) == len(anns) - sum(expect.values())
