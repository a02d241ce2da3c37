"""scenectl sample: COCO layout, polygons that match the pixels, determinism, and context that carries the class."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from scenectl import folders
from scenectl.cli import app
from scenectl.data import synthetic
from scenectl.data.synthetic import generate_scenes
from scenectl.errors import ScenectlError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, n_train=40, n_val=20, seed=0)
    return out


def _digest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("config.json", folders.MARKER))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _erode(m: np.ndarray, steps: int) -> np.ndarray:
    """Shrink a (H, W) bool mask by `steps` pixels (4-neighbourhood), dropping the drawn outline and JPEG edges."""
    m = m.copy()
    for _ in range(steps):
        m[1:] &= m[:-1].copy()
        m[:-1] &= m[1:].copy()
        m[:, 1:] &= m[:, :-1].copy()
        m[:, :-1] &= m[:, 1:].copy()
    return m


def test_coco_layout_readable_by_pycocotools(scenes):
    for split, n in (("train2017", 40), ("val2017", 20)):
        coco = COCO(str(scenes / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n
        assert len(list((scenes / split).glob("*.jpg"))) == n
        for key in ("info", "licenses", "images", "annotations", "categories"):
            assert key in coco.dataset
        ids = sorted(coco.getCatIds())
        assert 12 <= len(ids) <= 16
        assert ids != list(range(1, len(ids) + 1)), "category ids must skip numbers like COCO's"
        for img in coco.dataset["images"]:
            assert set(img) >= {"id", "file_name", "width", "height", "license"}
            with Image.open(scenes / split / img["file_name"]) as im:
                assert im.size == (img["width"], img["height"]) and im.mode == "RGB"
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 2 <= len(anns) <= 6
    cfg = json.loads((scenes / "config.json").read_text())
    assert cfg["n_train"] == 40 and cfg["seed"] == 0


def test_polygons_decode_to_what_is_drawn(scenes):
    coco = COCO(str(scenes / "annotations" / "instances_val2017.json"))
    colors = {c.coco_id: np.array(c.color, dtype=np.float64) for c in synthetic.CLASSES}
    areas = []
    for img in coco.dataset["images"]:
        pixels = np.asarray(Image.open(scenes / "val2017" / img["file_name"]), dtype=np.float64)  # (H, W, 3)
        union = np.zeros((img["height"], img["width"]), dtype=np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            seg = ann["segmentation"]
            assert isinstance(seg, list) and all(len(p) >= 6 and len(p) % 2 == 0 for p in seg)
            assert ann["iscrowd"] == 0
            m = coco.annToMask(ann)  # (H, W) uint8
            assert m.sum() > 0 and abs(m.sum() - ann["area"]) <= 0.01 * ann["area"] + 1
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            # The polygon covers the drawn object: inside it (away from the outline) the class colour shows.
            inner = _erode(m.astype(bool), 3)
            assert inner.sum() > 50
            assert np.abs(pixels[inner].mean(0) - colors[ann["category_id"]]).max() < 25
            union += m
            areas.append(ann["area"])
        assert union.max() == 1, "objects must not overlap"
    assert np.mean(np.array(areas) >= 1024) > 0.8, "most instances are big enough for build-shards' min-area"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = (generate_scenes(tmp_path / n, 6, 3, seed=s) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    assert a["splits"] == b["splits"]
    da, db, dc = (_digest(tmp_path / n) for n in "abc")
    assert da == db and len(da) == 6 + 3 + 2  # images, annotation files (not config.json or the marker: options, time)
    assert da.keys() == dc.keys()
    assert all(da[k] != dc[k] for k in da if k.endswith(".jpg") or k.endswith(".json"))


def test_crowds_are_uncompressed_rle_of_drawn_pixels_and_change_nothing_else(tmp_path):
    """crowd_every=k: images 0, k, 2k, ... gain one iscrowd annotation (COCO's uncompressed RLE over a row of
    same-class objects, clear of the other objects) where it fits; every other file stays byte-identical."""
    generate_scenes(tmp_path / "plain", 12, 12, seed=0)
    generate_scenes(tmp_path / "crowd", 12, 12, seed=0, crowd_every=3)
    plain, crowd = _digest(tmp_path / "plain"), _digest(tmp_path / "crowd")
    assert json.loads((tmp_path / "crowd" / "config.json").read_text())["crowd_every"] == 3
    colors = {c.coco_id: np.array(c.color, dtype=np.float64) for c in synthetic.CLASSES}
    crowded = set()
    for split in ("train2017", "val2017"):
        before = json.loads((tmp_path / "plain" / "annotations" / f"instances_{split}.json").read_text())
        coco = COCO(str(tmp_path / "crowd" / "annotations" / f"instances_{split}.json"))
        crowds = [a for a in coco.dataset["annotations"] if a["iscrowd"]]
        assert [a for a in coco.dataset["annotations"] if not a["iscrowd"]] == before["annotations"]
        for a in crowds:
            img = coco.imgs[a["image_id"]]
            assert (img["id"] - min(coco.imgs)) % 3 == 0  # image 0, 3, 6, ... of the split
            seg = a["segmentation"]
            assert seg["size"] == [img["height"], img["width"]] and sum(seg["counts"]) == img["height"] * img["width"]
            m = coco.annToMask(a).astype(bool)  # (H, W)
            assert m.sum() == a["area"] > 0
            others = [coco.annToMask(o).astype(bool) for o in coco.imgToAnns[img["id"]] if o is not a]
            assert not any((m & o).any() for o in others), "a crowd keeps clear of the other objects"
            pixels = np.asarray(Image.open(tmp_path / "crowd" / split / img["file_name"]), dtype=np.float64)
            assert np.abs(pixels[_erode(m, 3)].mean(0) - colors[a["category_id"]]).max() < 25
            crowded.add(f"{split}/{img['file_name']}")
    assert len(crowded) >= 3, "most eligible images (0, 3, 6, 9 of each split) have room for a crowd"
    assert {k for k in plain if plain[k] != crowd[k]} == crowded | {f"annotations/instances_{s}.json" for s in
                                                                     ("train2017", "val2017")}


def _label_only_topk(root: Path, k: int = 3) -> dict[str, float]:
    """Name each val object from labels alone: class prior vs co-occurrence naive Bayes on the other objects."""

    def load(split):
        d = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        index = {c["id"]: i for i, c in enumerate(d["categories"])}
        per = {im["id"]: [] for im in d["images"]}
        for a in d["annotations"]:
            per[a["image_id"]].append(index[a["category_id"]])
        return list(per.values()), len(index)

    train, n_cls = load("train2017")
    inst, img, co = np.ones(n_cls), np.full(n_cls, 2.0), np.ones((n_cls, n_cls))  # Laplace-smoothed counts
    for classes in train:
        np.add.at(inst, classes, 1)
        u = np.unique(classes)
        img[u] += 1
        co[np.ix_(u, u)] += 1
    prior = np.log(inst / inst.sum())  # (C,)
    hits = {"prior": [], "context": []}
    for classes in load("val2017")[0]:
        for j, target in enumerate(classes):
            visible = np.unique(classes[:j] + classes[j + 1:])
            context = prior + np.log(co[:, visible] / img[:, None]).sum(1)  # log P(c) + sum_v log P(v | c)
            for name, score in (("prior", prior), ("context", context)):
                hits[name].append(target in np.argsort(-score, kind="stable")[:k])
    return {name: float(np.mean(h)) for name, h in hits.items()}


@pytest.mark.slow
def test_context_predicts_the_hidden_class_better_than_the_prior(tmp_path):
    generate_scenes(tmp_path, 60, 30, seed=0)
    acc = _label_only_topk(tmp_path)
    assert acc["context"] >= acc["prior"] + 0.1, acc
    # No class dominates: the most frequent class is a small share of all instances.
    d = json.loads((tmp_path / "annotations" / "instances_train2017.json").read_text())
    counts = np.bincount([a["category_id"] for a in d["annotations"]])
    assert counts.max() / counts.sum() < 0.25


@pytest.mark.slow
def test_context_test_fails_when_scenes_are_random(tmp_path, monkeypatch):
    # Negative control: one scene type holding every class with equal weight leaves no context to exploit.
    flat = dataclasses.replace(synthetic.SCENES[1], weights={c.name: 1 for c in synthetic.CLASSES})
    monkeypatch.setattr(synthetic, "SCENES", (flat,))
    generate_scenes(tmp_path, 60, 30, seed=0)
    acc = _label_only_topk(tmp_path)
    assert acc["context"] < acc["prior"] + 0.1, acc


def test_existing_out_needs_overwrite_and_foreign_data_is_kept(tmp_path):
    out = tmp_path / "scenes"
    generate_scenes(out, 3, 2)
    with pytest.raises(ScenectlError, match="--overwrite"):
        generate_scenes(out, 3, 2)
    summary = generate_scenes(out, 2, 2, seed=1, overwrite=True)
    assert summary["splits"]["train2017"]["images"] == 2
    assert len(list((out / "train2017").glob("*.jpg"))) == 2  # stale images of the first run are gone
    foreign = tmp_path / "coco"
    (foreign / "annotations").mkdir(parents=True)
    (foreign / "annotations" / "instances_val2017.json").write_text("{}")
    with pytest.raises(ScenectlError, match="did not write"):
        generate_scenes(foreign, 2, 2, overwrite=True)
    assert (foreign / "annotations" / "instances_val2017.json").read_text() == "{}"


def test_interrupted_run_does_not_look_complete(tmp_path, monkeypatch):
    calls = []
    real = synthetic.draw_scene

    def failing(rng, *rest):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(rng, *rest)

    monkeypatch.setattr(synthetic, "draw_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_scenes(tmp_path, 5, 2)
    assert not list(tmp_path.rglob("instances_*.json")), "no annotation file may exist before all images are written"
    monkeypatch.setattr(synthetic, "draw_scene", real)
    generate_scenes(tmp_path, 5, 2, overwrite=True)  # our marker makes the leftovers safe to replace
    assert len(list((tmp_path / "annotations").glob("instances_*.json"))) == 2


def test_bad_counts_are_one_line_errors(tmp_path):
    with pytest.raises(ScenectlError, match="--val-images"):
        generate_scenes(tmp_path, 3, 0)


def test_cli_sample(tmp_path):
    runner = CliRunner()
    out = tmp_path / "scenes"
    args = ["sample", "--out", str(out), "--train-images", "3", "--val-images", "2", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "train2017: 3 images" in result.output
    assert f"scenectl build-shards --coco-root {out}" in result.output
    assert COCO(str(out / "annotations" / "instances_val2017.json")).getImgIds()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "error:" in again.output and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert "Example" in runner.invoke(app, ["sample", "--help"]).output
