"""COCO inputs (scenectl.data.coco) on coco_sample: the real excerpts in ../shared/data/coco-sample, or their
synthetic stand-in (tests/conftest.py); what a test expects is read from the annotation file."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from scenectl.data import coco as C
from scenectl.data.masks import MEAN_RGB, bbox
from scenectl.errors import ScenectlError
from kit import fast_first

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


# --- hostile geometry: refused before pycocotools sees it -----------------------------------------------------
H, W = 50, 60
GOOD = [10.0, 10.0, 40.0, 10.0, 40.0, 30.0, 10.0, 30.0]  # a 30 × 20 rectangle


def _rle(counts, size=(H, W)):
    return {"counts": counts, "size": list(size)}


HOSTILE = {
    "nan": [[*GOOD[:2], float("nan"), *GOOD[3:]]],
    "inf": [[*GOOD[:5], float("inf"), *GOOD[6:]]],
    "-inf": [[-float("inf"), *GOOD[1:]]],
    "huge": [[*GOOD[:2], 1e9, *GOOD[3:]]],
    "1e308": [[1e308, 1e308, -1e308, 1e308, 0, -1e308]],
    "far left": [[-61.0, *GOOD[1:]]],
    "far below": [[*GOOD[:7], 101.0]],
    "bad in a second polygon": [GOOD, [0, 0, 5, 5, float("nan"), 1]],
    "bad in a dropped short list": [GOOD, [float("nan"), 1]],
    "a string": [[*GOOD[:3], "7", *GOOD[4:]]],
    "nested": [[GOOD]],
    "rle short": _rle([0, H * W - 1]),
    "rle long": _rle([0, H * W, 5]),
    "rle negative": _rle([-5, 10, H * W - 5]),
    "rle float": _rle([0.5, H * W - 0.5]),
    "rle bool": _rle([True, H * W - 1]),
    "rle huge": _rle([2**40, H * W]),
    "rle size": _rle([0, H * W], size=(W, H)),
    "rle size 3": {"counts": [0, H * W], "size": [H, W, 1]},
    "rle size float": _rle([0, H * W], size=(float(H), W)),
    "rle no size": {"counts": [0, H * W]},
    # runs of a 60 × 60 mask under a 50 × 60 size: pycocotools would decode past the end of its buffer
    "rle string overrun": _rle(mask_utils.encode(np.ones((W, W), np.uint8, order="F"))["counts"].decode()),
    "rle string unfinished": _rle("0P"),
    "rle string alphabet": _rle("0 1"),
    "rle string non-ascii": _rle("0é"),
    "rle string long run": _rle("ooooooo1"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_segmentations_are_refused(name):
    """Non-finite, out-of-range, malformed or size-disagreeing geometry: None, never a crash."""
    assert C.to_rle(HOSTILE[name], H, W) is None and C.decode_mask(HOSTILE[name], H, W) is None


def test_valid_geometry_at_the_edges_of_the_range():
    edge = [-W, -H, 2 * W, -H, 2 * W, 2 * H]  # a triangle reaching exactly one image size beyond each edge
    m = C.decode_mask([edge], H, W)
    assert m is not None and m.shape == (H, W)
    full = C.to_rle(_rle([0, H * W]), H, W)
    assert full is not None and C.rle_box(full) == (0, 0, W, H)
    string = mask_utils.encode(np.asfortranarray(C.decode_mask([GOOD], H, W).astype(np.uint8)))
    assert (C.decode_mask(_rle(string["counts"].decode()), H, W) == C.decode_mask([GOOD], H, W)).all()


@pytest.mark.parametrize("seed", range(3))
def test_rle_string_counts_decode_pycocotools_strings(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)  # (H, W)
        counts = C.rle_string_counts(mask_utils.encode(np.asfortranarray(m))["counts"])
        assert sum(counts) == h * w
        flat = np.repeat(np.arange(len(counts)) % 2, counts)  # column-major runs of 0s and 1s
        assert (flat.reshape(w, h).T == m).all()


def test_annotation_box_checks_or_replaces_the_bbox():
    rle = C.to_rle([GOOD], H, W)
    seg = [10.0, 10.0, 30.0, 20.0]  # the segmentation's pixel box
    assert C.annotation_box({"bbox": [10, 10, 30, 20.5]}, rle, W, H) == [10, 10, 30, 20.5]
    for missing in ({}, {"bbox": None}, {"bbox": []}, {"bbox": [5, 5, 0, 0]}, {"bbox": [5, 5, 10, 0]}):
        assert C.annotation_box(missing, rle, W, H) == seg
    for bad in ([float("nan"), 0, 1, 1], [0, 0, float("inf"), 1], [0, 0, 1e12, 1], [0, 0, -3, 4], [1, 2, 3],
                [0, 0, "1", 1], "junk", [-100, 0, 1, 1]):
        assert C.annotation_box({"bbox": bad}, rle, W, H) is None, bad


def test_load_coco_rejects_bad_files(tmp_path, coco_sample):
    with pytest.raises(ScenectlError, match="not found"):
        C.load_coco(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ScenectlError, match="not valid JSON"):
        C.load_coco(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ScenectlError, match="COCO instance format"):
        C.load_coco(tmp_path / "list.json")


def _set(key, i, field, value):
    def edit(d):
        d[key][i][field] = value
    return edit


def _copy(key, i, j, field=None):
    """Entry i of d[key] gets entry j's `field` (or is appended again whole)."""
    def edit(d):
        if field is None:
            d[key].append(dict(d[key][j]))
        else:
            d[key][i][field] = d[key][j][field]
    return edit


# (edit of a real val2017 file, phrase of the one-line message): every class of inconsistency load_coco refuses
MALFORMED = [
    (_copy("annotations", 3, 2, "id"), r"annotation id \d+ appears 2 times"),
    (_copy("images", 3, 2, "id"), r"image id \d+ appears 2 times"),
    (_copy("categories", 3, 2, "id"), r"category id \d+ appears 2 times"),
    (_copy("categories", 3, 2, "name"), r"category name 'car' appears 2 times"),
    (_copy("annotations", None, 0), r"annotation id \d+ appears 2 times"),
    (_set("annotations", 1, "id", True), r"annotation id True is not an integer"),
    (_set("annotations", 1, "id", 1.5), r"annotation id 1.5 is not an integer"),
    (_set("annotations", 1, "id", 7.0), r"annotation id 7.0 is not an integer"),
    (_set("images", 0, "id", "139"), r"image id '139' is not an integer"),
    (_set("categories", 0, "id", None), r"category id None is not an integer"),
    (_set("categories", 0, "name", 5), r"category 1 has no name string"),
    (_set("annotations", 1, "image_id", 1e3), r"image_id 1000.0, which is not in 'images'"),
    (_set("annotations", 1, "category_id", "1"), r"category_id '1', which is not in 'categories'"),
    (_set("annotations", 1, "category_id", True), r"category_id True, which is not in 'categories'"),
    (_set("annotations", 1, "category_id", 999), r"category_id 999, which is not in 'categories'"),
    (_set("annotations", 1, "image_id", 4), r"image_id 4, which is not in 'images'"),
    (_set("images", 0, "width", 0), r"image \d+ has no positive integer 'width' and 'height'"),
    (_set("images", 0, "height", 426.0), r"image \d+ has no positive integer"),
    (_set("images", 0, "file_name", "/etc/passwd"), r"image \d+ has file_name '/etc/passwd', not a relative path"),
    (_set("images", 0, "file_name", "../train2017/x.jpg"), r"not a relative path inside the image folder"),
    (_set("images", 0, "file_name", None), r"file_name None, not a relative path"),
    (lambda d: d["images"].append("junk"), r"'images' holds 1 entries that are not objects"),
]


@pytest.mark.parametrize("edit, message", MALFORMED)
def test_load_coco_names_every_inconsistency(tmp_path, val, edit, message):
    """Malformed annotation files (table above): one ScenectlError naming the file and the fault."""
    data = json.loads(json.dumps(val.dataset))  # a fresh copy of the real file's records
    edit(data)
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(ScenectlError, match=message) as e:
        C.load_coco(tmp_path / "ann.json")
    assert str(tmp_path / "ann.json") in str(e.value) and "\n" not in str(e.value)


def test_load_coco_counts_every_problem_in_one_message(tmp_path, val):
    data = json.loads(json.dumps(val.dataset))
    for a in data["annotations"][:8]:
        a["id"] = 1
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(ScenectlError, match=r"annotation id 1 appears 8 times$"):
        C.load_coco(tmp_path / "ann.json")
    for a in data["annotations"][:8]:
        a["id"] = "x"
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with pytest.raises(ScenectlError, match=r"(annotation id 'x' is not an integer; ){4}.*\(and 3 more\)"):
        C.load_coco(tmp_path / "ann.json")


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
    assert t.to_json()[0] == {"index": 0, "coco_id": 1, "name": "person", "supercategory": "person"}


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


# --- every Pillow mode ----------------------------------------------------------------------------------------
MW, MH = 7, 5  # image size of the mode tests
RNG = np.random.default_rng(12)


def _composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`rgb` (H, W, 3) over the fill colour MEAN_RGB with `alpha` (H, W) in 0..255 -> (H, W, 3) float."""
    a = alpha[..., None].astype(float) / 255
    return rgb * a + np.array(MEAN_RGB, float) * (1 - a)


def _grey(v: np.ndarray) -> np.ndarray:
    return np.repeat(v[..., None].astype(float), 3, axis=2)


def _saved(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _associated(data: bytes) -> bytes:
    """A TIFF with ExtraSamples = 1 (associated, i.e. premultiplied, alpha) instead of Pillow's 2."""
    tag = struct.pack("<HHIH", 338, 3, 1, 2)  # ExtraSamples, SHORT, count 1, value 2
    assert data.count(tag) == 1
    return data.replace(tag, tag[:-2] + struct.pack("<H", 1))


def _png16_rgb(v: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of (H, W, 3) uint16 `v`, written by hand (Pillow cannot write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in v)
    header = struct.pack(">IIBBBBB", v.shape[1], v.shape[0], 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _mode_cases() -> dict:
    """name -> (file bytes, mode Pillow opens it as, expected (H, W, 3) RGB, tolerance in levels)."""
    rgb = RNG.integers(0, 256, (MH, MW, 3), dtype=np.uint8)
    grey = RNG.integers(0, 256, (MH, MW), dtype=np.uint8)
    alpha = RNG.choice(np.array([0, 1, 77, 128, 254, 255], np.uint8), (MH, MW))
    w16 = RNG.integers(0, 65536, (MH, MW), dtype=np.uint16)
    w16[0, :3] = (0, 32768, 65535)  # black, mid-grey (not white), white
    cmyk = RNG.integers(0, 256, (MH, MW, 4), dtype=np.uint8)
    ycc = RNG.integers(16, 240, (MH, MW, 3), dtype=np.uint8)
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    i32 = RNG.integers(-1000, 70000, (MH, MW)).astype(np.int32)
    f01, f255 = RNG.random((MH, MW)).astype(np.float32), (RNG.random((MH, MW)) * 255).astype(np.float32)
    bits = RNG.random((MH, MW)) < 0.5
    pal = Image.fromarray(rgb).quantize(8)
    idx, lut = np.asarray(pal), np.array(pal.getpalette()[:24], float).reshape(8, 3)
    pa = Image.merge("PA", (pal, Image.fromarray(alpha)))
    premul = np.rint(rgb * (alpha[..., None] / 255.0)).astype(np.uint8)  # what associated alpha stores
    w48 = RNG.integers(0, 65536, (MH, MW, 3), dtype=np.uint16)
    return {
        "1": (_saved(Image.fromarray(bits), "PNG"), "1", _grey(bits * 255), 0),
        "L": (_saved(Image.fromarray(grey), "PNG"), "L", _grey(grey), 0),
        "L jpeg": (_saved(Image.fromarray(grey), "JPEG", quality=100), "L", _grey(grey), 3),
        "P": (_saved(pal, "PNG"), "P", lut[idx], 0),
        "P gif": (_saved(pal, "GIF"), "P", lut[idx], 0),
        "P transparent": (_saved(pal, "PNG", transparency=0), "P",
                          np.where((idx == 0)[..., None], MEAN_RGB, lut[idx]), 0),
        "PA": (_saved(pa, "TIFF"), "PA", _composite(lut[idx], alpha), 1),
        "LA": (_saved(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG"), "LA", _composite(_grey(grey), alpha), 1),
        "La": (_associated(_saved(Image.fromarray(np.dstack([np.rint(grey * (alpha / 255.0)).astype(np.uint8), alpha]),
                                                  "LA"), "TIFF")), "La", _composite(_grey(grey), alpha), 2),
        "RGBA": (_saved(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), "RGBA", _composite(rgb, alpha), 1),
        "RGBa tiff": (_associated(_saved(Image.fromarray(np.dstack([premul, alpha])), "TIFF")), "RGBA",
                      _composite(rgb, alpha), 2),
        "CMYK": (_saved(Image.fromarray(cmyk, "CMYK"), "TIFF"), "CMYK",
                 (255 - cmyk[..., :3].astype(float)) * (255 - cmyk[..., 3:].astype(float)) / 255, 1),
        "YCbCr": (_saved(Image.fromarray(ycc, "YCbCr"), "TIFF"), "YCbCr", np.clip(np.stack(
            [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], -1),
            0, 255), 2),
        # a round trip through Pillow's 8-bit Lab: lossy (a few levels on average, more at saturated colours)
        "LAB": (_saved(Image.fromarray(rgb).convert("LAB"), "TIFF"), "LAB", rgb, 32),
        "I;16 png": (_saved(Image.fromarray(w16), "PNG"), "I;16", _grey(w16 / 257), 0.5),
        "I;16B": (_saved(Image.frombytes("I;16B", (MW, MH), w16.astype(">u2").tobytes()), "TIFF"), "I;16B",
                  _grey(w16 / 257), 0.5),
        "I": (_saved(Image.fromarray(i32), "TIFF"), "I", _grey(np.clip(i32 / 257, 0, 255)), 0.5),
        "F [0, 1]": (_saved(Image.fromarray(f01), "TIFF"), "F", _grey(f01 * 255.0), 0.5),
        "F [0, 255]": (_saved(Image.fromarray(f255), "TIFF"), "F", _grey(f255), 0.5),
        "RGB 16-bit png": (_png16_rgb(w48), "RGB", w48 / 257, 1),
        "RGB": (_saved(Image.fromarray(rgb), "PNG"), "RGB", rgb, 0),
    }


MODE_CASES = _mode_cases()


@pytest.mark.parametrize("name", MODE_CASES)
def test_every_pillow_mode_decodes_to_the_expected_rgb(tmp_path, name):
    """Each mode written as a file Pillow saves (or, for a 16-bit RGB PNG, by hand), opened in that mode and
    decoded by load_image: the RGB it should show (16 bits scaled, alpha composited on MEAN_RGB)."""
    data, mode, expected, tolerance = MODE_CASES[name]
    (tmp_path / "im").write_bytes(data)
    with Image.open(tmp_path / "im") as im:
        assert im.mode == mode  # the file really holds that mode
    dec = C.load_image(tmp_path / "im", MW, MH)
    got = np.asarray(dec.image, float)  # (H, W, 3)
    assert dec.image.mode == "RGB" and got.shape == (MH, MW, 3)
    assert np.abs(got - expected).max() <= tolerance and np.abs(got - expected).mean() <= 1.5


@pytest.mark.parametrize("mode", ["RGBa", "RGBX", "HSV", "La", "I;16L", "I;16N"])
def test_to_rgb_of_in_memory_modes(mode):
    """Modes no file opens in here (or only via a patched TIFF): to_rgb converts them the same way."""
    rgb = RNG.integers(0, 256, (MH, MW, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (MH, MW), dtype=np.uint8)
    if mode in ("RGBa", "La"):
        src = Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert("RGBa") if mode == "RGBa" else \
            Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").convert("La")
        base = rgb if mode == "RGBa" else _grey(rgb[..., 0])
        expected, tolerance = _composite(base, alpha), 2
    elif mode in ("I;16L", "I;16N"):
        v = RNG.integers(0, 65536, (MH, MW), dtype=np.uint16)
        src = Image.frombytes(mode, (MW, MH), v.astype("<u2" if mode == "I;16L" else "=u2").tobytes())
        expected, tolerance = _grey(v / 257), 0.5
    else:
        src, expected, tolerance = Image.fromarray(rgb).convert(mode), rgb, 8  # HSV: 8-bit hue, lossy
    got = C.to_rgb(src)
    assert got.mode == "RGB" and np.abs(np.asarray(got, float) - expected).max() <= tolerance


def test_rgb_jpeg_is_not_copied():
    im = Image.new("RGB", (4, 3))
    assert C.to_rgb(im) is im  # the hot path: a plain RGB image goes through untouched


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


@pytest.mark.parametrize("kind", fast_first(["fifo", "device", "folder"]))
def test_an_image_that_is_not_a_regular_file_is_bad_never_a_hang(tmp_path, kind):
    """A FIFO among the images hung build-shards (and predict, transfer) in open(), where even SIGTERM could not end
    it (issue 23); now every image is opened through io.open_regular: a FIFO, device or folder is a bad image."""
    path = tmp_path / "000000000001.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("load_image hung on a non-regular file"))
    signal.alarm(20)
    try:
        with pytest.raises(C.BadImage, match="not a regular file"):
            C.load_image(path, 8, 8)
    finally:
        signal.alarm(0)
