"""COCO inputs (scenectl.data.coco) on coco_sample: the real excerpts in ../shared/data/coco-sample, or their
synthetic stand-in (tests/conftest.py); what a test expects is read from the annotation file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from scenectl.data import coco as C
from scenectl.data.masks import bbox
from scenectl.errors import ScenectlError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy-2 notice


@pytest.fixture(scope="module")
def val(coco_sample):
    return C.load_coco(coco_sample / "annotations" / "instances_val2017.json")


@pytest.fixture(scope="module")
def first_image(coco_sample, val):
    """The val2017 JPEG of the smallest image id (real COCO: 000000000139.jpg, 640 × 426)."""
    return coco_sample / "val2017" / val.imgs[min(val.imgs)]["file_name"]


def test_masks_equal_pycocotools_anntomask(val):
    """Every annotation (polygons and crowd RLE) decodes exactly as COCO.annToMask does."""
    assert {type(a["segmentation"]) for a in val.dataset["annotations"]} == {list, dict}  # both kinds are tried
    for ann in val.dataset["annotations"]:
        rec = val.imgs[ann["image_id"]]
        m = C.decode_mask(ann["segmentation"], rec["height"], rec["width"])
        ref = val.annToMask(ann).astype(bool)
        assert m is not None and (m == ref).all(), ann["id"]
        assert C.rle_box(C.to_rle(ann["segmentation"], rec["height"], rec["width"])) == bbox(ref)


@pytest.mark.parametrize("segm", [[], [[10, 10, 20, 20]], [[1, 2, 3, 4, 5]], [[0, 0, 10, 10, 20, 20]], "junk",
                                  {"counts": [0, 25], "size": [5, 5]}, {"counts": [3000], "size": [50, 60]}])
def test_degenerate_segmentations_are_none(segm):
    # fewer than 3 points, odd coordinates, collinear (zero area), wrong RLE size, empty mask
    assert C.decode_mask(segm, 50, 60) is None


def test_load_coco_rejects_bad_files(tmp_path, coco_sample):
    with pytest.raises(ScenectlError, match="not found"):
        C.load_coco(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ScenectlError, match="not valid JSON"):
        C.load_coco(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ScenectlError, match="COCO instance format"):
        C.load_coco(tmp_path / "list.json")
    data = json.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    data["annotations"][5]["category_id"] = 999
    (tmp_path / "cat.json").write_text(json.dumps(data))
    with pytest.raises(ScenectlError, match=rf"annotation {data['annotations'][5]['id']} .*category_id 999"):
        C.load_coco(tmp_path / "cat.json")
    del data["images"][0]["width"]
    data["annotations"][5]["category_id"] = 1
    (tmp_path / "field.json").write_text(json.dumps(data))
    with pytest.raises(ScenectlError, match="malformed"):
        C.load_coco(tmp_path / "field.json")


def test_split_paths(coco_sample, tmp_path):
    ann, images = C.split_paths(coco_sample, "val2017")
    assert ann.name == "instances_val2017.json" and images == coco_sample / "val2017"
    with pytest.raises(ScenectlError, match="unknown split 'test2017'.*train2017, val2017"):
        C.split_paths(coco_sample, "test2017")
    with pytest.raises(ScenectlError, match="not a folder"):
        C.split_paths(tmp_path / "nowhere", "val2017")


def test_class_table_is_sorted_by_coco_id(val):
    t = C.ClassTable.from_coco(val)
    cats = sorted(val.dataset["categories"], key=lambda c: c["id"])
    assert list(t.coco_ids) == [c["id"] for c in cats] and list(t.names) == [c["name"] for c in cats]
    assert t.to_json()[0] == {"index": 0, "coco_id": 1, "name": "person"}


def test_load_image_variants(first_image, tmp_path):
    src = Image.open(first_image)
    w, h = src.size
    ref = C.load_image(first_image, w, h)
    assert ref.image.mode == "RGB" and ref.turn is None and ref.reduce == 1 and ref.size == (w, h)
    src.convert("L").save(tmp_path / "grey.jpg")
    src.convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name in ("grey.jpg", "cmyk.jpg"):
        d = C.load_image(tmp_path / name, w, h)
        assert d.image.mode == "RGB" and d.image.size == (w, h)
    assert np.abs(np.asarray(C.load_image(tmp_path / "cmyk.jpg", w, h).image, float) - np.asarray(ref.image)).mean() < 8
    # EXIF orientation 6: stored pixels as annotated, shown rotated 90° clockwise
    exif = Image.Exif()
    exif[C.EXIF_ORIENTATION] = 6
    src.save(tmp_path / "rot.jpg", exif=exif)
    d = C.load_image(tmp_path / "rot.jpg", w, h)
    assert d.turn == Image.Transpose.ROTATE_270 and d.image.size == (h, w) and d.size == (h, w)
    # the same file described in its upright frame (width/height swapped) needs no turn
    assert C.load_image(tmp_path / "rot.jpg", h, w).turn is None
    # draft decoding for a letterbox of half the longer side: half resolution
    d = C.load_image(first_image, w, h, draft=max(w, h) // 2)
    assert d.reduce == 2 and d.image.size == (w // 2, h // 2) and d.size == (w, h)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(first_image.read_bytes()[:5000])
    for name, size in [("empty.jpg", (w, h)), ("cut.jpg", (w, h)), ("missing.jpg", (w, h)), (first_image.name, (w + 1, h))]:
        folder = first_image.parent if name == first_image.name else tmp_path
        with pytest.raises(C.BadImage):
            C.load_image(folder / name, *size)


@pytest.mark.parametrize("turn", list(C.ORIENTATION_TRANSPOSE.values()))
def test_transpose_box_follows_the_pixels(turn):
    m = np.zeros((40, 70), bool)
    m[5:12, 30:61] = True
    turned = np.asarray(Image.fromarray(m).transpose(turn))
    x0, y0, x1, y1 = bbox(turned)
    assert C.transpose_box([30, 5, 31, 7], turn, 70, 40) == [x0, y0, x1 - x0, y1 - y0]
    assert C.transpose_box([30, 5, 31, 7], None, 70, 40) == [30, 5, 31, 7]


def test_coco_index_is_pycocotools(val, coco_sample):
    data = json.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    assert isinstance(val, COCO) and len(val.imgs) == len(data["images"]) and len(val.anns) == len(data["annotations"])
    assert len(val.cats) == len(data["categories"]) and set(val.imgToAnns) <= set(val.imgs)


def test_shared_data_layout(shared_data):
    """../shared/data (or its synthetic stand-in): coco128 is the first 128 train2017 images of coco-sample (by id),
    with all their annotations, in COCO's layout."""
    sample = json.loads((shared_data / "coco-sample" / "annotations" / "instances_train2017.json").read_text())
    c128 = json.loads((shared_data / "coco128" / "annotations" / "instances_train2017.json").read_text())
    ids = sorted(im["id"] for im in sample["images"])[:128]
    assert sorted(im["id"] for im in c128["images"]) == ids and len(ids) == 128
    assert sorted(a["id"] for a in c128["annotations"]) == sorted(a["id"] for a in sample["annotations"]
                                                                   if a["image_id"] in set(ids))
    for im in c128["images"]:
        assert (shared_data / "coco128" / "train2017" / im["file_name"]).is_file()
