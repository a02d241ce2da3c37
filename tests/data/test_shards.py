"""build-shards as a library (scenectl.data.shards) on coco_sample (real COCO excerpts, or their synthetic stand-in):
geometry vs pycocotools, fills, thresholds, determinism, resume after interruption (including a real SIGKILL),
parts, guards and bad input. Expected counts and images are read from the annotation file."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from scenectl.data.loader import open_shard_set, raw_samples
import webdataset as wds
from PIL import Image, ImageFilter
from pycocotools.coco import COCO

from scenectl.data import shards as S
from scenectl.data.coco import EXIF_ORIENTATION, load_coco, rle_box
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.masks import MEAN_RGB, SHAPES, Letterbox
from scenectl.errors import ScenectlError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy-2 notice


# --- helpers --------------------------------------------------------------------------------------------------
def subset(coco_sample: Path, dst: Path, n: int | None = 8, ids: list[int] | None = None, edit=None) -> tuple[Path, Path]:
    """An annotation file of some val2017 images (the first n by id, or `ids`), next to the real JPEGs."""
    data = json.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])
    images = [im for im in images if im["id"] in ids] if ids else images[:n]
    keep = {im["id"] for im in images}
    data["images"], data["annotations"] = images, [a for a in data["annotations"] if a["image_id"] in keep]
    if edit:
        edit(data)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "ann.json").write_text(json.dumps(data))
    return dst / "ann.json", coco_sample / "val2017"


def config(source: tuple[Path, Path], out: Path, **kw) -> S.BuildConfig:
    kw = {"image_size": 64, "workers": 1, "progress": False, **kw}
    return S.BuildConfig(out=out, annotations=source[0], images=source[1], **kw)


def build(source, out, **kw) -> dict:
    return S.build_shards(config(source, out, **kw), echo=lambda s: None)


def members(out: Path) -> dict[str, bytes]:
    """Every tar member of a shard set, by name (read with tarfile)."""
    found = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                found[m.name] = t.extractfile(m).read()
    return found


def samples(out: Path) -> list[dict]:
    """Samples as webdataset groups them, known members decoded."""
    urls = [str(out / s["name"]) for s in json.loads((out / "manifest.json").read_text())["shards"]]
    result = []
    for raw in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        s = {"key": raw["__key__"], "json": json.loads(raw["json"]), "cls": int(raw["cls"]),
             "jpg": np.asarray(Image.open(io.BytesIO(raw["jpg"])))}
        if "mask.png" in raw:
            s["mask"] = np.asarray(Image.open(io.BytesIO(raw["mask.png"])))
        if "object.jpg" in raw:
            s["object"] = np.asarray(Image.open(io.BytesIO(raw["object.jpg"])))
        result.append(s)
    return result


def shard_hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


@pytest.fixture(scope="module")
def val(coco_sample) -> COCO:
    return load_coco(coco_sample / "annotations" / "instances_val2017.json")


@pytest.fixture(scope="module")
def small(coco_sample, tmp_path_factory) -> tuple[Path, Path]:
    return subset(coco_sample, tmp_path_factory.mktemp("small"), n=12)


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory) -> Path:
    """12 images, default options but 64 px and maxcount 5 (several shards)."""
    out = tmp_path_factory.mktemp("ref") / "set"
    build(small, out, maxcount=5)
    return out


# --- geometry against pycocotools -----------------------------------------------------------------------------
def test_every_shape_hides_every_instance_pixel(val):
    """Regions made by the build's own per-image code contain annToMask dilated by the margin (3 px)."""
    for image_id in sorted(val.imgs)[:12]:
        rec, anns = val.imgs[image_id], val.imgToAnns[image_id]
        per_shape = {shape: S._Instances(anns, rec["height"], rec["width"], shape, 3) for shape in SHAPES}
        for a in anns:
            truth = val.annToMask(a).astype(bool)
            ys, xs = np.nonzero(truth)
            y0, y1, x0, x1 = max(ys.min() - 4, 0), ys.max() + 5, max(xs.min() - 4, 0), xs.max() + 5
            crop = Image.fromarray(truth[y0:y1, x0:x1].astype(np.uint8) * 255)  # dilation reaches only 3 px out
            grown = np.asarray(crop.filter(ImageFilter.MaxFilter(7))) > 0
            for shape, inst in per_shape.items():
                assert inst.area(a) == truth.sum()
                region, _, _ = inst.region([a])
                assert (region[y0:y1, x0:x1] >= grown).all(), (image_id, a["id"], shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_respect_max_area_and_read_back(small, tmp_path, val, shape):
    m = build(small, tmp_path / shape, shape=shape, max_area=0.15)
    assert m["params"]["shape"] == shape and m["params"]["max_area"] == 0.15
    got = samples(tmp_path / shape)
    assert len(got) == m["totals"]["samples"] > 0
    assert m["totals"]["samples"] + sum(m["skipped"].values()) == m["totals"]["instances"]
    for s in got:
        meta = s["json"]
        rec = val.imgs[meta["image_id"]]
        assert meta["instance_area"] / (rec["width"] * rec["height"]) <= meta["area_fraction"] <= 0.15
        assert s["key"] == f"{meta['image_id']:012d}_{meta['annotation_id']:012d}" and s["cls"] == meta["cls"]
        assert s["jpg"].shape == (64, 64, 3) and s["mask"].shape == (64, 64)
        # every instance pixel maps into the hidden part of mask.png (nearest neighbour)
        truth = val.annToMask(val.anns[meta["annotation_id"]]).astype(bool)
        expected = Letterbox(rec["width"], rec["height"], 64).mask(truth)
        assert (s["mask"][expected > 0] == 255).all()
    if shape == "square":
        assert m["skipped"]["too_large"] > 0


# --- metadata that reproduces the pixels ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def with_rotated(coco_sample, val, tmp_path_factory) -> tuple[Path, Path]:
    """Three val2017 images (one with several instances of one class) next to the JPEGs, plus one stored with EXIF
    orientation 6."""
    multi = _same_class_image(val)[0]
    ids = [multi, *[i for i in sorted(val.imgs) if i != multi][:2]]
    folder = tmp_path_factory.mktemp("rotated-images")
    for i in ids:
        (folder / val.imgs[i]["file_name"]).symlink_to(coco_sample / "val2017" / val.imgs[i]["file_name"])
    rotated = val.imgs[ids[1]]["file_name"]
    (folder / rotated).unlink()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored as annotated, shown turned 90° clockwise
    Image.open(coco_sample / "val2017" / rotated).save(folder / rotated, exif=exif, quality=95)
    return subset(coco_sample, tmp_path_factory.mktemp("rotated-src"), ids=ids)[0], folder


@pytest.mark.parametrize("size", [64, 256])
def test_mask_png_rebuilds_from_annotations_and_metadata(with_rotated, tmp_path, size):
    """mask_from_metadata(annotation file records, sample json) == the mask.png written, pixel for pixel, for
    every shape (and instance with --hide-same-class), on real images (one EXIF-rotated) at two sizes."""
    data = json.loads(with_rotated[0].read_text())
    records = {im["id"]: im for im in data["images"]}
    anns = {i: [a for a in data["annotations"] if a["image_id"] == i] for i in records}
    for shape, hide in [*((s, False) for s in SHAPES), ("instance", True)]:
        out = tmp_path / f"{shape}-{hide}"
        build(with_rotated, out, shape=shape, hide_same_class=hide, image_size=size, max_area=0.6, min_area=200)
        got = samples(out)
        assert len(got) > 10 and any(s["json"]["transform"]["turn"] == "ROTATE_270" for s in got)
        for s in got:
            meta = s["json"]
            t = meta["transform"]
            assert t["size"] == size and t["scale_x"] == t["resized"][0] / meta["orig_size"][0]
            rebuilt = S.mask_from_metadata(anns[meta["image_id"]], records[meta["image_id"]], meta)
            assert (rebuilt == s["mask"]).all(), (shape, hide, s["key"])


def test_bboxes_are_checked_or_taken_from_the_segmentation(coco_sample, val, tmp_path):
    """A zero-size or missing bbox beside a usable segmentation becomes the segmentation's box; a non-finite or
    far out-of-range bbox or polygon skips the annotation as bad_annotation."""
    nan = float("nan")

    def spoil(data):
        a = [x for x in data["annotations"] if not x["iscrowd"]]
        a[0]["bbox"] = [a[0]["bbox"][0], a[0]["bbox"][1], 0, 0]
        del a[1]["bbox"]
        a[2]["bbox"] = [nan, 1, 2, 3]
        a[3]["bbox"] = [0, 0, 1e12, 5]
        a[4]["segmentation"][0][3] = float("inf")
        a[5]["segmentation"][0][0] = -1e9
        data["spoiled"] = [x["id"] for x in a[:6]]

    ann, images = subset(coco_sample, tmp_path / "src", n=3, edit=spoil)
    data = json.loads(ann.read_text())  # (Python's json writes and reads NaN and Infinity)
    m = build((ann, images), tmp_path / "o", min_area=0, max_area=1.0, shape="box", with_object=True)
    assert m["skipped"]["bad_annotation"] == 4
    got = {s["json"]["annotation_id"]: s for s in samples(tmp_path / "o")}
    assert not set(data["spoiled"][2:]) & set(got)
    for aid in data["spoiled"][:2]:
        x0, y0, x1, y1 = rle_box(val.annToRLE(val.anns[aid]))
        assert got[aid]["json"]["bbox"] == [x0, y0, x1 - x0, y1 - y0]


# --- fills and determinism ------------------------------------------------------------------------------------
def hidden_pixels(s: dict) -> np.ndarray:
    """Output pixels well inside the hidden region (mask eroded by 2 px: JPEG blurs the edge)."""
    inner = np.asarray(Image.fromarray(s["mask"]).filter(ImageFilter.MinFilter(5))) == 255
    return s["jpg"][inner].astype(float)


@pytest.mark.parametrize("fill", ["mean", "black", "noise", "blur"])
def test_fills(coco_sample, tmp_path, fill):
    source = subset(coco_sample, tmp_path / "src", n=4)
    build(source, tmp_path / "a", fill=fill, seed=1, image_size=96)
    got = [hidden_pixels(s) for s in samples(tmp_path / "a")]
    pixels = np.concatenate([g for g in got if len(g)])
    if fill == "mean":
        assert np.abs(pixels.mean(axis=0) - MEAN_RGB).max() < 6
    elif fill == "black":
        assert pixels.mean() < 8
    elif fill == "noise":  # uniform noise: grey on average, far from constant (resizing and JPEG smooth it)
        assert np.abs(pixels.mean(axis=0) - 127.5).max() < 12 and pixels.std() > 15
    else:  # blur: smooth context colours, not a constant
        assert 2 < np.mean([g.std() for g in got if len(g) > 20])
    if fill in ("noise", "blur"):  # same seed: byte-identical shards; another seed: other pixels
        build(source, tmp_path / "b", fill=fill, seed=1, image_size=96)
        assert shard_hashes(tmp_path / "a") == shard_hashes(tmp_path / "b")
        build(source, tmp_path / "c", fill=fill, seed=2, image_size=96)
        a, c = members(tmp_path / "a"), members(tmp_path / "c")
        assert a.keys() == c.keys() and any(a[k] != c[k] for k in a if k.endswith(".jpg"))


def test_determinism_across_workers(small, reference, tmp_path):
    """Same inputs and seed: identical member bytes, with 1 worker or a pool of 2."""
    build(small, tmp_path / "again", maxcount=5, workers=2)
    assert members(tmp_path / "again") == members(reference)
    assert shard_hashes(tmp_path / "again") == shard_hashes(reference)


# --- image order ----------------------------------------------------------------------------------------------
def test_image_order_is_the_documented_seeded_permutation():
    ids = list(range(5, 300, 3))
    order = S.image_order(ids, 0)
    assert sorted(order) == ids and order != ids
    assert order == sorted(ids, key=lambda i: hashlib.sha256(f"0:{i}".encode()).digest())  # docs/shard-format.md
    assert S.image_order(reversed(ids), 0) == order  # not the file's order
    assert S.image_order(ids, 1) != order
    assert S._part_images(ids, (1, 3), 0) == order[1::3]


@pytest.mark.slow
def test_every_shard_samples_the_whole_split(coco_sample, tmp_path):
    """A 2-shard build of coco-sample val2017 (all 128 images): each shard holds images from the lowest and the
    highest quarter of the image ids (in image-id order the second shard would hold only the highest ids)."""
    source = subset(coco_sample, tmp_path / "src", n=None)
    m = build(source, tmp_path / "o", image_size=32, maxcount=220, seed=5)
    assert len(m["shards"]) == 2 and m["params"]["order"] == "shuffled" and m["params"]["order_seed"] == 5
    ids = sorted(im["id"] for im in json.loads(source[0].read_text())["images"])
    low, high = ids[len(ids) // 4], ids[3 * len(ids) // 4]
    for shard in m["shards"]:
        with tarfile.open(tmp_path / "o" / shard["name"]) as t:
            shard_ids = {int(n.split("_")[0]) for n in t.getnames()}
        assert min(shard_ids) < low and max(shard_ids) > high, shard["name"]
    keys = [k for k in members(tmp_path / "o") if k.endswith(".cls")]
    image_positions = [S.image_order(ids, 5).index(int(k.split("_")[0])) for k in keys]
    assert image_positions == sorted(image_positions)  # written in the seeded order, an image's samples together


def test_another_seed_reorders_the_same_samples(small, reference, tmp_path):
    build(small, tmp_path / "other", maxcount=5, seed=1)  # fill mean: the seed changes only the order
    assert members(tmp_path / "other") == members(reference)
    assert shard_hashes(tmp_path / "other") != shard_hashes(reference)


# --- thresholds and hide-same-class ---------------------------------------------------------------------------
def test_min_area_counts_match_pycocotools(small, val, tmp_path):
    ann = json.loads(small[0].read_text())["annotations"]
    targets = [a for a in ann if not a["iscrowd"]]
    pixels = sorted(int(val.annToMask(val.anns[a["id"]]).sum()) for a in targets)
    min_area = pixels[len(pixels) // 2]  # the median instance: about half are too small
    too_small = sum(p < min_area for p in pixels)
    assert 0 < too_small < len(targets)
    m = build(small, tmp_path / "o", min_area=min_area, max_area=1.0)
    assert m["skipped"]["too_small"] == too_small and m["skipped"]["too_large"] == 0
    assert m["totals"]["samples"] == len(targets) - too_small
    assert m["skipped"]["crowd"] == len(ann) - len(targets)
    got = samples(tmp_path / "o")
    assert all(s["json"]["instance_area"] >= min_area and s["json"]["min_area"] == min_area for s in got)
    build(small, tmp_path / "all", min_area=0, max_area=1.0)
    fractions = sorted(s["json"]["area_fraction"] for s in samples(tmp_path / "all"))
    max_area = fractions[len(fractions) // 2]  # the median hidden region: about half are too large
    m = build(small, tmp_path / "lo", min_area=0, max_area=max_area)
    assert m["skipped"]["too_small"] == 0 and m["skipped"]["too_large"] == sum(f > max_area for f in fractions) > 0
    assert max(s["json"]["area_fraction"] for s in samples(tmp_path / "lo")) <= max_area


def _same_class_image(val: COCO) -> tuple[int, int]:
    """(image id, category id): the first val2017 image (by id) holding two or more non-crowd instances of one
    category, each well over the test's min_area (e.g. several cars)."""
    for image_id in sorted(val.imgToAnns):
        counts = np.bincount([a["category_id"] for a in val.imgToAnns[image_id]
                              if not a["iscrowd"] and a["area"] >= 1000], minlength=1)
        if counts.max() >= 2:
            return image_id, int(counts.argmax())
    raise AssertionError("no val2017 image holds two instances of one category")


def test_hide_same_class(coco_sample, val, tmp_path):
    image_id, cat = _same_class_image(val)
    source = subset(coco_sample, tmp_path / "src", ids=[image_id])
    car = sorted(val.cats).index(cat)  # class index of that category (say, car)
    kw = {"min_area": 500, "max_area": 1.0, "shape": "instance", "image_size": 128}
    plain = {s["key"]: s for s in samples_of(build, source, tmp_path / "plain", kw)}
    hidden = {s["key"]: s for s in samples_of(build, source, tmp_path / "hide", {**kw, "hide_same_class": True})}
    rec = val.imgs[image_id]
    cars = [a for a in val.imgToAnns[image_id] if a["category_id"] == cat]
    every_car = Letterbox(rec["width"], rec["height"], 128).mask(
        np.logical_or.reduce([val.annToMask(a).astype(bool) for a in cars]))
    car_keys = [k for k, s in hidden.items() if s["cls"] == car]
    assert len(car_keys) >= 2
    for k in car_keys:
        assert car in plain[k]["json"]["visible_categories"]  # the other cars show
        assert car not in hidden[k]["json"]["visible_categories"] and hidden[k]["json"]["hide_same_class"]
        assert (hidden[k]["mask"][every_car > 0] == 255).all()  # every car is hidden
        assert hidden[k]["json"]["area_fraction"] > plain[k]["json"]["area_fraction"]


def samples_of(build_fn, source, out, kw) -> list[dict]:
    build_fn(source, out, **kw)
    return samples(out)


def test_with_object_and_object_task(small, tmp_path):
    build(small, tmp_path / "w", with_object=True)
    got = samples(tmp_path / "w")
    assert all(s["object"].shape == (64, 64, 3) for s in got)
    m = build(small, tmp_path / "obj", task="object")
    assert m["task"] == "object" and m["params"]["task"] == "object"
    names = members(tmp_path / "obj")
    assert {n.split(".", 1)[1] for n in names} == {"jpg", "cls", "json"}
    # the object task's jpg is the with-object crop (same pixels, same keys)
    assert {s["key"] for s in samples(tmp_path / "obj")} == {s["key"] for s in got}


# --- resume ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop_after", [1, 7, 13])
def test_resume_after_interrupt_equals_uninterrupted(small, reference, tmp_path, monkeypatch, stop_after):
    """Interrupt the writer after `stop_after` samples (also mid-image), resume, compare byte for byte."""
    out = tmp_path / "o"
    real_write = S._Sink.write
    calls = {"n": 0}

    def failing_write(self, sample, position):
        calls["n"] += 1
        if calls["n"] > stop_after:
            raise KeyboardInterrupt
        real_write(self, sample, position)

    monkeypatch.setattr(S._Sink, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        build(small, out, maxcount=5)
    monkeypatch.setattr(S._Sink, "write", real_write)
    assert not (out / "manifest.json").exists() and not list(out.glob("*.partial"))
    with pytest.raises(ScenectlError, match="--resume"):
        build(small, out, maxcount=5)  # neither --resume nor --overwrite
    m = build(small, out, maxcount=5, resume=True)
    ref = json.loads((reference / "manifest.json").read_text())
    assert shard_hashes(out) == shard_hashes(reference)
    assert m["shards"] == ref["shards"] and m["totals"] == ref["totals"] and m["skipped"] == ref["skipped"]
    assert not (out / "progress.json").exists()


@pytest.mark.slow
def test_resume_after_sigkill(coco_sample, tmp_path):
    """Kill -9 a real `python -m scenectl build-shards` after its first shard, resume, compare."""
    source = subset(coco_sample, tmp_path / "src", n=40)
    args = ["--annotations", str(source[0]), "--images", str(source[1]), "--image-size", "64",
            "--maxcount", "3", "--workers", "1"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "scenectl", "build-shards", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("shard-*.tar")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (out / "manifest.json").exists()
    if (out / "progress.json").exists():  # (the kill may land between a shard's rename and its journal entry)
        journal = json.loads((out / "progress.json").read_text())
        assert {p.name for p in out.glob("*.tar")} >= {s["name"] for s in journal["shards"]}
    m = build(source, out, maxcount=3, resume=True)
    build(source, tmp_path / "whole", maxcount=3)
    assert shard_hashes(out) == shard_hashes(tmp_path / "whole")
    assert m["totals"] == json.loads((tmp_path / "whole" / "manifest.json").read_text())["totals"]


def test_out_folder_guards(small, reference, tmp_path):
    with pytest.raises(ScenectlError, match="holds a shard set: pass --resume"):
        build(small, reference, maxcount=5)
    before = shard_hashes(reference)
    m = build(small, reference, maxcount=5, resume=True)  # complete: nothing to do
    assert m["totals"]["samples"] > 0 and shard_hashes(reference) == before
    with pytest.raises(ScenectlError, match="other parameters"):
        build(small, reference, maxcount=5, shape="circle", resume=True)
    with pytest.raises(ScenectlError, match="exclude"):
        build(small, reference, resume=True, overwrite=True)
    out = tmp_path / "o"
    build(small, out, maxcount=50)
    m = build(small, out, maxcount=5, shape="box", overwrite=True)
    assert m["params"]["shape"] == "box" and m["totals"]["shards"] == len(list(out.glob("*.tar"))) > 1


# --- parts ----------------------------------------------------------------------------------------------------
def test_parts_merge_to_the_same_samples(small, reference, tmp_path):
    out = tmp_path / "parts"
    for i in range(2):
        m = build(small, out, maxcount=5, part=f"{i}/2")
        assert m["params"]["part"] == f"{i}/2" and (out / f"manifest.part-{i}-of-2.json").is_file()
    assert all(p.name.startswith(("shard-p0of2-", "shard-p1of2-")) for p in out.glob("*.tar"))
    with pytest.raises(ScenectlError, match="merge-manifests"):
        open_shard_set(str(out))
    merged = S.merge_manifests(out)
    ref = json.loads((reference / "manifest.json").read_text())
    assert members(out) == members(reference)  # the same samples, byte for byte
    assert merged["totals"]["per_class"] == ref["totals"]["per_class"] and merged["skipped"] == ref["skipped"]
    assert merged["totals"]["samples"] == sum(s["samples"] for s in merged["shards"]) == ref["totals"]["samples"]
    assert json.loads((out / "manifest.json").read_text()) == merged and merged["params"]["part"] is None
    assert set(merged["files"]) == {"cooccurrence.h5", "config.part-0-of-2.json", "config.part-1-of-2.json",
                                    "_info.json"}
    open_shard_set(out).cooccurrence()  # the merged set's checksums hold
    assert_timm_index(out, merged)


def test_merge_refuses_missing_or_incompatible_parts(small, tmp_path):
    out = tmp_path / "parts"
    build(small, out, part="0/3")
    build(small, out, part="2/3")
    with pytest.raises(ScenectlError, match="1/3 missing"):
        S.merge_manifests(out)
    build(small, out, part="1/3", shape="circle")
    with pytest.raises(ScenectlError, match="part 1/3 .* different params"):
        S.merge_manifests(out)
    with pytest.raises(ScenectlError, match="no manifest.part"):
        S.merge_manifests(tmp_path)
    with pytest.raises(ScenectlError, match="--part"):
        build(small, out, part="3/3")


@pytest.fixture(scope="module")
def two_parts(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "parts"
    for i in range(2):
        build(small, out, maxcount=5, part=f"{i}/2")
    return out


@pytest.mark.parametrize("tamper, message", [
    (lambda m: m["shards"][0].update(name="../outside.tar"), "lists shard '../outside.tar'"),
    (lambda m: m["files"].update({"../x.json": "0" * 64}), "'files' names '../x.json'"),
    (lambda m: m["totals"].update(samples="7"), "totals.samples = '7'"),
    (lambda m: m["totals"]["per_class"].update(person=-1), "totals.per_class\\['person'\\] = -1"),
    (lambda m: m["skipped"].pop("crowd"), "skipped is missing"),
    (lambda m: m["params"].update(part="0/2"), "params.part is missing or not this part's"),
    (lambda m: m.update(totals=[]), "'totals' or 'skipped' that are not objects"),
], ids=["outside-shard", "outside-file", "string-count", "negative-count", "skipped-keys", "wrong-part", "totals-type"])
def test_merge_validates_every_part(two_parts, tmp_path, tamper, message):
    """Parts are data (issue 23): a part naming ../outside.tar, a junk count or another part's identity is refused
    with a one-line error naming the part file, and nothing is merged (on the last round's main the first reached
    the merged manifest and timm's _info.json, the counts were summed as given)."""
    out = shutil.copytree(two_parts, tmp_path / "parts")
    path = out / "manifest.part-1-of-2.json"
    m = json.loads(path.read_text())
    tamper(m)
    path.write_text(json.dumps(m))
    with pytest.raises(ScenectlError, match=f"manifest.part-1-of-2.json.*{message}"):
        S.merge_manifests(out)
    assert not (out / "manifest.json").exists() and not (out / "_info.json").exists()


def test_merge_refuses_a_shard_two_parts_list(two_parts, tmp_path):
    out = shutil.copytree(two_parts, tmp_path / "parts")
    first = json.loads((out / "manifest.part-0-of-2.json").read_text())["shards"][0]
    path = out / "manifest.part-1-of-2.json"
    m = json.loads(path.read_text())
    m["shards"][0] = first
    path.write_text(json.dumps(m))
    with pytest.raises(ScenectlError, match=f"shard {first['name']} is listed by two part manifests"):
        S.merge_manifests(out)
    assert not (out / "manifest.json").exists()


# --- bad input ------------------------------------------------------------------------------------------------
def test_bad_images_are_skipped_and_odd_jpegs_handled(coco_sample, val, tmp_path):
    """zero-byte, truncated and missing files are skipped (bad_image); grey, CMYK and EXIF-rotated JPEGs work."""
    ids = sorted(val.imgs)[:6]
    folder = tmp_path / "images"
    folder.mkdir()
    names = [val.imgs[i]["file_name"] for i in ids]
    src = [Image.open(coco_sample / "val2017" / n) for n in names]
    src[0].convert("L").save(folder / names[0], quality=95)
    src[1].convert("CMYK").save(folder / names[1], quality=95)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored as annotated, displayed rotated 90° clockwise
    src[2].save(folder / names[2], exif=exif, quality=95)
    (folder / names[3]).write_bytes(b"")
    (folder / names[4]).write_bytes((coco_sample / "val2017" / names[4]).read_bytes()[:3000])
    # names[5] missing altogether
    ann, _ = subset(coco_sample, tmp_path / "src", ids=ids)
    m = build((ann, folder), tmp_path / "o", min_area=0, max_area=1.0, shape="instance", image_size=128)
    targets = {i: [a for a in val.imgToAnns[i] if not a["iscrowd"]] for i in ids}
    assert m["skipped"]["bad_image"] == sum(len(targets[i]) for i in ids[3:]) and m["totals"]["bad_images"] == 3
    got = samples(tmp_path / "o")
    assert {s["json"]["image_id"] for s in got} == set(ids[:3])
    assert sum(s["json"]["image_id"] == i for s in got for i in ids[:2]) == len(targets[ids[0]]) + len(targets[ids[1]])
    rec = val.imgs[ids[2]]
    for s in got:
        if s["json"]["image_id"] != ids[2]:
            continue
        assert s["json"]["orig_size"] == [rec["height"], rec["width"]]  # upright
        truth = val.annToMask(val.anns[s["json"]["annotation_id"]]).astype(bool)
        turned = np.asarray(Image.fromarray(truth).transpose(Image.Transpose.ROTATE_270))
        expected = Letterbox(rec["height"], rec["width"], 128).mask(turned)
        assert (s["mask"][expected > 0] == 255).all()  # the mask turned with the pixels


def test_degenerate_polygons_are_bad_annotations(coco_sample, tmp_path):
    def spoil(data):
        data["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]  # two points
        data["annotations"][1]["segmentation"] = [[0, 0, 10, 10, 20, 20]]  # zero area
        data["annotations"][0]["iscrowd"] = data["annotations"][1]["iscrowd"] = 0
    m = build(subset(coco_sample, tmp_path / "src", n=3, edit=spoil), tmp_path / "o", min_area=0)
    assert m["skipped"]["bad_annotation"] == 2


def test_bad_inputs_are_one_line_errors(coco_sample, small, tmp_path):
    cases = [
        (dict(annotations=tmp_path / "none.json", images=small[1]), "annotation file not found"),
        (dict(coco_root=coco_sample, split="test2017"), "unknown split 'test2017'"),
        (dict(annotations=small[0], images=tmp_path / "noimages"), "image folder"),
    ]
    (tmp_path / "bad.json").write_text('{"images": [')
    cases.append((dict(annotations=tmp_path / "bad.json", images=small[1]), "not valid JSON"))
    for kw, message in cases:
        with pytest.raises(ScenectlError, match=message):
            S.build_shards(S.BuildConfig(out=tmp_path / "o", progress=False, **kw))
    for max_area in (0, -0.1, 1.5):
        with pytest.raises(ScenectlError, match=r"--max-area must be in \(0, 1\]"):
            build(small, tmp_path / "o", max_area=max_area)

    def unknown(data):
        data["annotations"][2]["category_id"] = 4242
    with pytest.raises(ScenectlError, match="category_id 4242"):
        build(subset(coco_sample, tmp_path / "u", n=3, edit=unknown), tmp_path / "o")

    def duplicate(data):
        data["annotations"][2]["id"] = data["annotations"][1]["id"]
    with pytest.raises(ScenectlError, match=r"ann.json is malformed: annotation id \d+ appears 2 times"):
        build(subset(coco_sample, tmp_path / "d", n=3, edit=duplicate), tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_zero_eligible_instances_leave_nothing(small, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(ScenectlError, match="no eligible instances"):
        build(small, out, min_area=10**9)
    assert list(out.iterdir()) == []


# --- the rest of the contract ---------------------------------------------------------------------------------
def test_manifest_cooccurrence_and_config(small, reference, val):
    m = json.loads((reference / "manifest.json").read_text())
    assert m["format"] == "scenectl-shards/1" and m["task"] == "masked" and len(m["classes"]) == len(val.cats)
    assert m["source"]["annotations_sha256"] == hashlib.sha256(small[0].read_bytes()).hexdigest()
    for s in m["shards"]:
        assert hashlib.sha256((reference / s["name"]).read_bytes()).hexdigest() == s["sha256"]
    assert sum(s["samples"] for s in m["shards"]) == m["totals"]["samples"] == sum(m["totals"]["per_class"].values())
    assert sum(m["totals"]["area_fraction_histogram"]["counts"]) == m["totals"]["samples"]
    co = Cooccurrence.load(reference / "cooccurrence.h5")
    data = json.loads(small[0].read_text())
    assert co.n_images == len(data["images"]) and co.instance_counts.sum() == len(data["annotations"])
    assert (np.diag(co.cooccurrence) == co.image_counts).all()
    cfg = json.loads((reference / "config.json").read_text())
    assert cfg["shape"] == "square" and cfg["maxcount"] == 5
    assert m["files"] == {name: hashlib.sha256((reference / name).read_bytes()).hexdigest()
                          for name in ("cooccurrence.h5", "config.json", "_info.json")}
    assert_timm_index(reference, m)
    with tarfile.open(reference / m["shards"][0]["name"]) as t:  # plain tar, fixed mtime
        assert all(x.mtime == 0 and x.isfile() for x in t.getmembers())


def assert_timm_index(out: Path, manifest: dict) -> None:
    """`_info.json` lists the set's split with its shards and their counts, as timm's webdataset reader reads it."""
    split = manifest["params"]["split"]
    info = json.loads((out / "_info.json").read_text())["splits"][split]
    assert info["name"] == split and info["num_samples"] == manifest["totals"]["samples"]
    assert info["filenames"] == [s["name"] for s in manifest["shards"]]
    assert info["shard_lengths"] == [s["samples"] for s in manifest["shards"]]
    assert not list(out.glob("*.tmp*"))  # written atomically


@pytest.mark.slow
def test_timm_reads_the_set_as_scenectl_does(reference):
    """timm's own webdataset reader, pointed at a built folder, gives the same samples: keys and `cls` labels."""
    timm_data = pytest.importorskip("timm.data", reason="timm is not installed (pip install 'scenectl[dev]')")
    split = json.loads((reference / "manifest.json").read_text())["params"]["split"]
    ds = timm_data.create_dataset("wds/scenectl", root=str(reference), split=split)
    keys = [name.removesuffix(ds.reader.key_ext) for name in ds.reader.filenames()]
    labels = [int(target) for _, target in ds]
    ours = [(raw["__key__"], int(raw["cls"])) for raw in raw_samples(open_shard_set(reference))]
    assert len(ds) == len(labels) == len(ours) > 0
    assert list(zip(keys, labels)) == ours


def test_synthetic_shards_fixture(synthetic_shards):
    for name in ("train", "val"):
        m = json.loads((synthetic_shards[name] / "manifest.json").read_text())
        assert m["totals"]["samples"] > 0 and m["params"]["image_size"] == 64 and m["params"]["with_object"]
    s = samples(synthetic_shards["val"])[0]
    assert s["jpg"].shape == (64, 64, 3) and "object" in s and "mask" in s


def test_default_coco_root_env(monkeypatch, coco_sample):
    monkeypatch.setenv(S.COCO_ROOT_ENV, str(coco_sample))
    assert S.BuildConfig(split="val2017").source()[0] == coco_sample / "annotations" / "instances_val2017.json"


def test_tasks_carry_one_image_not_the_annotation_file(small, tmp_path, monkeypatch):
    """What goes to a worker is one image's record and annotations, never the whole annotation file."""
    import pickle

    sizes = []
    real = S._run_task
    monkeypatch.setattr(S, "_run_task", lambda task: (sizes.append(len(pickle.dumps(task))), real(task))[1])
    build(small, tmp_path / "o")
    assert len(sizes) == 12 and max(sizes) < small[0].stat().st_size / 4
