"""`scenectl rescore`: context rescoring of COCO detection results, measured by COCOeval (issue 25).

A tiny untrained context model (32 px) and the simulated detector (benchmarks/noisy_detector.py) on a dozen
synthetic images keep the fast tests fast; the test that the context actually helps trains a quickstart model
(slow)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kit
from scenectl import boxap, plots
from scenectl.io import file_sha256
from scenectl.cli import app
from scenectl.data.coco import ClassTable, load_coco
from scenectl.data.synthetic import generate_scenes
from scenectl.detections import read_results
from scenectl.errors import ScenectlError
from scenectl.metrics import image_resamples
from figures import watch

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _simulator():
    spec = importlib.util.spec_from_file_location("noisy_detector", ROOT / "benchmarks" / "noisy_detector.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _checkpoint(path: Path, classes: list[dict]) -> Path:  # a context model that names its training shards' hiding
    return kit.checkpoint(path, classes, config={"shard_params": {"shape": "box", "fill": "mean", "margin": 3,
                                                                  "image_size": 32}})


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """12 synthetic val images, their simulated detections, and an untrained 32 px context model of their classes."""
    d = tmp_path_factory.mktemp("rescore")
    generate_scenes(d / "scenes", n_train=1, n_val=12, seed=5)
    ann = d / "scenes" / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    dets = d / "dets.json"
    dets.write_text(json.dumps(_simulator().simulate(data, seed=0, confuse=0.3)))
    classes = ClassTable.from_coco(load_coco(ann)).to_json()
    return {"dir": d, "ann": ann, "data": data, "images": d / "scenes" / "val2017", "dets": dets,
            "ckpt": _checkpoint(d / "ctx.pt", classes), "classes": classes}


def _argv(s: dict, out: Path, *extra, dets: Path | None = None) -> list[str]:
    return ["rescore", "--detections", str(dets or s["dets"]), "--images", str(s["images"]), "--annotations",
            str(s["ann"]), "-c", str(s["ckpt"]), "--out", str(out), "--device", "cpu", "--batch-size", "16",
            "--bootstrap", "50", *extra]


def _cocoeval_ap(ann: Path, rows: list[dict], ids: list[int]) -> float:
    """COCOeval run directly, the way its authors show it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(rows), "bbox")
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


# --- the bootstrap's AP is COCOeval's ---------------------------------------------------------------------------

def test_matching_ap_is_cocoeval_ap_and_weights_are_copies(setup):
    """Weights of 1 give COCOeval's AP exactly; integer weights give COCOeval's AP on a file where each image is
    copied that many times (new ids), which is what a bootstrap resample means."""
    gt = load_coco(setup["ann"])
    rows = json.loads(setup["dets"].read_text())
    ids = sorted(gt.getImgIds())
    ev = boxap.evaluate(gt, rows, ids)
    m = boxap.Matching.of(ev)
    assert m.ap(np.ones((1, len(ids))))[0] == pytest.approx(ev.stats[0], abs=1e-12)
    counts = np.array([2, 0, 1, 3] + [1, 0] * ((len(ids) - 4) // 2) + [1] * ((len(ids) - 4) % 2))
    data, dup_rows = _copies(setup["data"], rows, dict(zip(ids, counts)))
    path = setup["dir"] / "copies.json"
    path.write_text(json.dumps(data))
    want = _cocoeval_ap(path, dup_rows, sorted(im["id"] for im in data["images"]))
    assert m.ap(counts[None, :].astype(float))[0] == pytest.approx(want, abs=1e-9)
    draws = m.ap(image_resamples(ids, 20, 0).weights)
    assert draws.shape == (20,) and np.isfinite(draws).all() and draws.std() > 0


def _copies(data: dict, rows: list[dict], counts: dict[int, int]) -> tuple[dict, list[dict]]:
    images, anns, out_rows, next_ann = [], [], [], 1
    for im in data["images"]:
        for k in range(counts[im["id"]]):
            new = im["id"] * 100 + k
            images.append({**im, "id": new})
            for a in data["annotations"]:
                if a["image_id"] == im["id"]:
                    anns.append({**a, "id": next_ann, "image_id": new})
                    next_ann += 1
            out_rows += [{**r, "image_id": new} for r in rows if r["image_id"] == im["id"]]
    return {**data, "images": images, "annotations": anns}, out_rows


# --- the command ------------------------------------------------------------------------------------------------

def test_weight_zero_reproduces_the_detector_and_cocoeval_agrees(setup, tmp_path):
    out = tmp_path / "w0"
    r = runner.invoke(app, _argv(setup, out, "--weight", "0"))
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    ev = rep["evaluation"]
    ids = rep["split"]["evaluation_image_ids"]
    assert rep["split"]["calibration_image_ids"] == [] and len(ids) == 12  # a fixed w evaluates every image
    assert ev["after"]["AP"] == ev["before"]["AP"] and ev["delta"]["AP"] == 0
    m = re.search(r"AP (\d+\.\d+) -> (\d+\.\d+)", r.output)
    assert m and m[1] == m[2]
    rows = json.loads(setup["dets"].read_text())
    assert ev["before"]["AP"] == pytest.approx(_cocoeval_ap(setup["ann"], rows, ids), abs=1e-12)
    rescored = json.loads((out / "rescored.json").read_text())
    assert len(rescored) == len(rows) and ev["after"]["AP"] == pytest.approx(
        _cocoeval_ap(setup["ann"], rescored, ids), abs=1e-12)
    assert ev["delta_AP_ci"] == [0.0, 0.0]
    for f in ("report.md", "delta_ap.png", "config.json"):
        assert (out / f).is_file()


GRID2 = ("--relabel", "2", "--seed", "3", "--weight", "0", "--weight", "1.5")


@pytest.mark.slow
def test_calibration_split_and_rescored_file(setup, tmp_path):
    """w is chosen on the calibration images; AP before/after is COCOeval's on the other part, of the input and of
    rescored.json; the split is seeded and recorded; --relabel adds K rows per box."""
    out = tmp_path / "cal"
    with watch() as drawn:
        r = runner.invoke(app, _argv(setup, out, *GRID2))
    assert r.exit_code == 0, r.output
    assert all(d.problems == [] for d in drawn), [(d.path.name, d.problems) for d in drawn]
    feet = [" ".join(t.get_text() for t in d.figure.texts if t.get_gid() == plots.SOURCE_GID) for d in drawn]
    assert feet and all("checkpoint " in f and "data " in f and "n = 6" in f for f in feet), feet  # 6 evaluation images
    rep = json.loads((out / "report.json").read_text())
    prov = rep["provenance"]
    assert prov["checkpoints"][0]["sha256"] == file_sha256(setup["ckpt"]) and prov["n"] == 6
    assert [d["sha256"] for d in prov["data"][:2]] == [file_sha256(setup["dets"]), file_sha256(setup["ann"])]
    sp = rep["split"]
    cal, evl = sp["calibration_image_ids"], sp["evaluation_image_ids"]
    assert len(cal) == 6 and len(evl) == 6 and not set(cal) & set(evl)
    assert sorted(cal + evl) == sorted(im["id"] for im in setup["data"]["images"])
    assert rep["w"] in rep["grid"] and len(rep["weight_curve"]) == len(rep["grid"])
    assert rep["w"] == min(rep["weight_curve"], key=lambda c: (-c["AP"], c["w"]))["w"]
    rows = json.loads(setup["dets"].read_text())
    rescored = json.loads((out / "rescored.json").read_text())
    assert len(rescored) == 3 * len(rows) and rep["rows"]["relabel_rows"] == 2 * len(rows)
    ev = rep["evaluation"]
    assert ev["before"]["AP"] == pytest.approx(_cocoeval_ap(setup["ann"], rows, evl), abs=1e-12)
    assert ev["after"]["AP"] == pytest.approx(_cocoeval_ap(setup["ann"], rescored, evl), abs=1e-12)
    assert ev["delta_AP_ci"] is not None and ev["verdict"] is not None
    again = tmp_path / "again"
    assert runner.invoke(app, _argv(setup, again, *GRID2)).exit_code == 0
    rep2 = json.loads((again / "report.json").read_text())
    assert rep2["split"] == sp and rep2["evaluation"] == ev  # deterministic given --seed
    # the guard: a second run into the folder needs --overwrite
    r = runner.invoke(app, _argv(setup, out))
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_a_box_is_hidden_exactly_as_build_shards_hides_it(setup, tmp_path):
    """A detection on an object's box goes through build-shards' own masking: the context model sees the pixels of
    build-shards' sample of that object (box shape), mask and JPEG alike."""
    import webdataset as wds
    from PIL import Image

    from scenectl.checkpoint import read_checkpoint
    from scenectl.data.coco import decode_mask
    from scenectl.data.masks import bbox
    from scenectl.data.shards import BuildConfig, build_shards
    from scenectl.detections import Detections
    from scenectl.rescore import BoxScenes, Inputs

    build_shards(BuildConfig(out=tmp_path / "sh", coco_root=setup["dir"] / "scenes", split="val2017", shape="box",
                             margin=3, image_size=32, min_area=0, workers=1, progress=False), echo=lambda s: None)
    sample = next(iter(wds.WebDataset(str(sorted((tmp_path / "sh").glob("*.tar"))[0]), shardshuffle=False)))
    meta = json.loads(sample["json"])
    a = next(x for x in setup["data"]["annotations"] if x["id"] == meta["annotation_id"])
    im = next(x for x in setup["data"]["images"] if x["id"] == meta["image_id"])
    x0, y0, x1, y1 = bbox(decode_mask(a["segmentation"], im["height"], im["width"]))
    dets = Detections(np.array([im["id"]]), np.array([a["category_id"]]), np.array([[x0, y0, x1 - x0, y1 - y0]], float),
                      np.array([0.5]), np.array([0]))
    params = {"shape": "box", "fill": "mean", "margin": 3, "image_size": 32}
    ds = BoxScenes(Inputs(load_coco(setup["ann"]), read_checkpoint(setup["ckpt"]), {}, dets, params, ""),
                   str(setup["images"]), seed=0)
    scene, mask = ds.hidden(*ds.scene(im["id"]), 0)
    assert np.array_equal(mask, np.asarray(Image.open(io.BytesIO(sample["mask.png"]))))
    assert np.array_equal(scene, np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))


def test_classes_must_match_by_name(setup, tmp_path):
    classes = [dict(c) for c in setup["classes"]]
    classes[0]["name"] = "zebra"
    ck = _checkpoint(tmp_path / "other.pt", classes)
    r = runner.invoke(app, _argv({**setup, "ckpt": ck}, tmp_path / "o"))
    assert r.exit_code == 2 and "different classes" in r.output and "zebra" in r.output
    assert not (tmp_path / "o").exists()


def test_help_shows_an_example():
    r = runner.invoke(app, ["rescore", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "--detections dets.json" in r.output


# --- hostile results files --------------------------------------------------------------------------------------

def _one(setup, **change) -> dict:
    row = {"image_id": setup["data"]["images"][0]["id"], "category_id": setup["classes"][0]["coco_id"],
           "bbox": [10.0, 10.0, 20.0, 20.0], "score": 0.5}
    row.update(change)
    return {k: v for k, v in row.items() if v is not None}


HOSTILE_ROWS = [
    ("not a list", "not a COCO results file"),
    ("not an object", "row 1 is not an object"),
    ("no bbox", "row 1 has no 'bbox'"),
    ("no score", "row 1 has no 'score'"),
    ("nan box", "row 1: 'bbox'"),
    ("negative width", "row 1: 'bbox' has a negative width"),
    ("huge box", "row 1: 'bbox' reaches beyond"),
    ("three numbers", "row 1: 'bbox' must be 4 numbers"),
    ("nan score", "row 1: 'score' must be a finite number"),
    ("score 2", "row 1: 'score' must be a finite number"),
    ("unknown image", "row 1: image_id 999999999 is not in the annotation file"),
    ("unknown category", "row 1: category_id 999 is not a category"),
    ("string id", "row 1: 'image_id' must be an integer"),
]


# every row kind through the command; the fast tier runs the first three
@pytest.mark.parametrize("case, text", [pytest.param(*c, marks=() if k < 3 else pytest.mark.slow)
                                        for k, c in enumerate(HOSTILE_ROWS)])
def test_hostile_rows_are_refused_naming_the_row(setup, tmp_path, case, text):
    bad = {"not an object": [1, 2], "no bbox": _one(setup, bbox=None), "no score": _one(setup, score=None),
           "nan box": _one(setup, bbox=[float("nan"), 1, 2, 3]), "negative width": _one(setup, bbox=[1, 1, -5, 3]),
           "huge box": _one(setup, bbox=[0, 0, 1e12, 10]), "three numbers": _one(setup, bbox=[0, 0, 1]),
           "nan score": _one(setup, score=float("nan")), "score 2": _one(setup, score=2),
           "unknown image": _one(setup, image_id=999999999), "unknown category": _one(setup, category_id=999),
           "string id": _one(setup, image_id="1")}.get(case)
    dets = tmp_path / "bad.json"
    dets.write_text(json.dumps({"rows": []} if case == "not a list" else [_one(setup), bad]))
    r = runner.invoke(app, _argv(setup, tmp_path / "o", dets=dets))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and text in lines[0] and str(dets) in lines[0], r.output
    assert not (tmp_path / "o").exists()  # nothing written


def test_documented_skips_are_counted(setup, tmp_path):
    """Duplicates, empty boxes, boxes outside the image, rows at or below --min-score and rows beyond
    --max-per-image are skipped and counted in the report."""
    im = setup["data"]["images"][0]
    good = _one(setup)
    rows = [good, dict(good), _one(setup, bbox=[5, 5, 0, 10]), _one(setup, bbox=[im["width"] + 5, 5, 10, 10]),
            _one(setup, score=0.0), _one(setup, score=0.01)]
    rows += [_one(setup, score=0.5 + i / 1000, bbox=[i, 1, 10, 10]) for i in range(1, 8)]
    dets = tmp_path / "skips.json"
    dets.write_text(json.dumps(rows))
    out = tmp_path / "o"
    r = runner.invoke(app, _argv(setup, out, "--max-per-image", "5", "--min-score", "0.02", "--weight", "1",
                                 dets=dets))
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["rows"]["read"] == len(rows) and rep["rows"]["kept"] == 5
    assert rep["rows"]["skipped"] == {"below_min_score": 2, "duplicate": 1, "empty_box": 1, "outside_image": 1,
                                      "over_max_per_image": 3}
    assert "skipped" in (out / "report.md").read_text()


@pytest.mark.parametrize("n", [20_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
def test_a_flood_of_rows_for_one_image_costs_max_per_image(setup, tmp_path, n):
    im = setup["data"]["images"][0]
    cat = setup["classes"][0]["coco_id"]
    rng = np.random.default_rng(0)
    xs, scores = rng.uniform(0, im["width"] - 20, n).round(3), rng.uniform(0.01, 1, n).round(6)
    text = ",".join(f'{{"image_id":{im["id"]},"category_id":{cat},"bbox":[{x},5,10,10],"score":{s}}}'
                    for x, s in zip(xs, scores))
    path = tmp_path / "flood.json"
    path.write_text("[" + text + "]")
    sizes = {i["id"]: (i["width"], i["height"]) for i in setup["data"]["images"]}
    d = read_results(path, sizes, {c["coco_id"] for c in setup["classes"]}, 100, 0.0)
    assert len(d) == 100 and d.rows_read == n
    assert d.skipped["over_max_per_image"] + d.skipped["duplicate"] == n - 100
    assert d.score.min() >= np.sort(scores)[-100:].min() - 1e-12  # the 100 best kept


def test_read_results_refuses_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ScenectlError, match="not found"):
        read_results(tmp_path / "none.json", {}, set(), 100, 0.0)
    (tmp_path / "b.json").write_text("[{")
    with pytest.raises(ScenectlError, match="not valid JSON"):
        read_results(tmp_path / "b.json", {}, set(), 100, 0.0)


# --- the torchvision recipe of docs/detectors.md ------------------------------------------------------------------

@pytest.mark.slow
def test_docs_torchvision_recipe_writes_results_rescore_reads(setup, tmp_path, monkeypatch):
    """The recipe in docs/detectors.md, run as written with an untrained (weights=None) small detector saved to a
    local file: its output is a results file that read_results and COCO.loadRes accept (format only)."""
    import torchvision

    code = re.search(r"```python\n(# torchvision detector -> COCO results.*?)```", (ROOT / "docs" / "detectors.md")
                     .read_text(), re.S)[1]
    torch.manual_seed(0)
    small = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn
    torch.save(small(weights=None, weights_backbone=None, num_classes=91).state_dict(), tmp_path / "detector.pt")
    images = setup["data"]["images"][:2]
    keep = {im["id"] for im in images}
    few = {**setup["data"], "images": images,
           "annotations": [a for a in setup["data"]["annotations"] if a["image_id"] in keep]}
    (tmp_path / "ann.json").write_text(json.dumps(few))
    monkeypatch.chdir(tmp_path)
    code = (code.replace('"annotations/instances_val2017.json"', repr(str(tmp_path / "ann.json")))
            .replace('"val2017"', repr(str(setup["images"])))
            .replace("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn"))
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "docs/detectors.md", "exec"), {})
    rows = json.loads((tmp_path / "dets.json").read_text())
    assert isinstance(rows, list)
    sizes = {i["id"]: (i["width"], i["height"]) for i in few["images"]}
    d = read_results(tmp_path / "dets.json", sizes, {c["id"] for c in few["categories"]}, 100, 0.0)
    assert d.rows_read == len(rows) > 0  # an untrained model's scores (~1/91) pass box_score_thresh 0.001
    if rows:
        boxap.evaluate(load_coco(tmp_path / "ann.json"), rows, sorted(sizes))  # COCO.loadRes accepts it


# --- the context helps where the scenes have context (slow: trains a model) ---------------------------------------

@pytest.mark.slow
def test_rescoring_class_confused_detections_raises_ap_on_synthetic_scenes(tmp_path):
    """The quickstart recipe's context model rescoring the simulator's class-confused detections raises AP on the
    evaluation half, with the ΔAP interval above 0."""
    from scenectl.quickstart import QuickstartConfig, quickstart

    qs = tmp_path / "qs"
    quickstart(QuickstartConfig(out=str(qs), train_images=400, val_images=100, workers=0, device="cpu"),
               echo=lambda s: None)
    ann = qs / "scenes" / "annotations" / "instances_val2017.json"
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps(_simulator().simulate(json.loads(ann.read_text()), seed=0, confuse=0.3)))
    out = tmp_path / "rs"
    r = runner.invoke(app, ["rescore", "--detections", str(dets), "--images", str(qs / "scenes" / "val2017"),
                            "--annotations", str(ann), "-c", str(qs / "run" / "last.pt"), "--out", str(out),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ev = json.loads((out / "report.json").read_text())["evaluation"]
    assert ev["delta"]["AP"] > 0 and ev["delta_AP_ci"][0] > 0, ev
    assert math.isclose(ev["after"]["AP"] - ev["before"]["AP"], ev["delta"]["AP"])
