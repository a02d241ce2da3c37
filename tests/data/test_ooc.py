"""scenectl.data.ooc: pasting geometry, host choice, and build-ooc on real coco-sample images (its metrics,
roc_auc and flag_report, are tested in test_metrics.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from typer.testing import CliRunner

from scenectl.data.inspect import report as inspect_report
from scenectl.cli import app
from scenectl.data.coco import ClassTable, load_coco
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.loader import decode_sample, open_shard_set
from scenectl.errors import ScenectlError
from scenectl.metrics import plausible_matrix
from scenectl.data.ooc import (OOCConfig, build_ooc, candidate_hosts, paste, paste_scale, resolve_params,
                               train_side as read_train_side)

runner = CliRunner()


# --- pasting ----------------------------------------------------------------------------------------------------
def test_paste_copies_the_silhouette_only_scaled_and_centred():
    host = np.zeros((20, 30, 3), np.uint8)
    donor = np.full((10, 10, 3), 7, np.uint8)
    donor[2:4, 3:6] = 200  # the object: a 2 x 3 block (rows 2-3, cols 3-5) ...
    mask = np.zeros((10, 10), bool)
    mask[2:4, 3:6] = True
    mask[3, 3] = False  # ... with one pixel not in the silhouette
    out, pasted = paste(host, donor, mask, scale=2.0, centre=(15, 10))
    # the 3 x 2 box becomes 6 x 4, centred on (15, 10): columns 12..17, rows 8..11
    ys, xs = np.nonzero(pasted)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (12, 17, 8, 11)
    assert pasted.sum() == 4 * mask.sum()  # nearest-neighbour x2: every pixel becomes 2 x 2
    assert not pasted[10:12, 12:14].any()  # the hole (row 3, col 3) scaled to rows 10-11, cols 12-13
    assert (out[pasted] == 200).all() and (out[~pasted] == 0).all()  # donor background never pasted


def test_paste_shifts_inside_at_the_border_and_refuses_what_cannot_fit():
    host = np.zeros((20, 30, 3), np.uint8)
    donor = np.full((4, 4, 3), 255, np.uint8)
    mask = np.ones((4, 4), bool)
    _, pasted = paste(host, donor, mask, scale=1.0, centre=(0, 0))
    assert pasted[0:4, 0:4].all() and pasted.sum() == 16  # moved inside, not clipped
    _, pasted = paste(host, donor, mask, scale=1.0, centre=(100, 100))
    assert pasted[16:20, 26:30].all()
    with pytest.raises(ValueError):
        paste(host, donor, mask, scale=6.0, centre=(15, 10))  # 24 px tall in a 20 px host
    # the scale keeps the image-area share, capped so that the box fits
    assert paste_scale((200, 100), (100, 50), (0, 0, 10, 10)) == pytest.approx(2.0)
    assert paste_scale((200, 100), (100, 50), (0, 0, 10, 90)) == pytest.approx(100 / 90)


def test_candidate_hosts_follow_the_training_counts():
    # classes 0..3; training: 0 with 1 (often), 2 with 3; class 0 never with 2 or 3
    cooc = Cooccurrence.count([[0, 1]] * 5 + [[2, 3]] * 5 + [[1]] * 2, [1, 2, 3, 4], ["a", "b", "c", "d"])
    present = np.array([[1, 0, 0, 0],   # 0: has class 0 itself (the donor image)
                        [0, 1, 0, 0],   # 1: b -> in-context for a
                        [0, 0, 1, 1],   # 2: c, d -> out-of-context for a
                        [0, 1, 1, 0],   # 3: b and c -> neither (b co-occurs, so not OOC; b plausible -> IC)
                        [0, 0, 0, 0]], bool)  # 4: empty scene -> never a host
    ooc, ic = candidate_hosts(0, donor_row=0, present=present, cooc=cooc, plausible=plausible_matrix(cooc))
    assert ooc.tolist() == [2] and ic.tolist() == [1, 3]


TRAIN_PARAMS = {"shape": "square", "fill": "mean", "margin": 3, "image_size": 32, "max_area": 0.3, "min_area": 1024}


@pytest.mark.parametrize("params, flag", [({"margin": -1}, "--margin"), ({"max_area": "x"}, "--max-area"),
                                           ({"shape": "hexagon"}, "--shape"), ({"image_size": 10**9}, "--image-size")])
def test_training_params_are_data_checked_as_their_options(params, flag):
    """Unset geometry comes from the training manifest's params: each value is checked as its option would be, in
    one line naming the option (a text max_area was a TypeError traceback); the option given wins."""
    cfg, name = OOCConfig(), flag[2:].replace("-", "_")
    with pytest.raises(ScenectlError, match=f"^{flag} must .*training shards' params"):
        resolve_params(cfg, {"params": {**TRAIN_PARAMS, **params}})
    with pytest.raises(ScenectlError, match=f"records no params.{name}: give {flag}"):
        resolve_params(cfg, {"params": {k: v for k, v in TRAIN_PARAMS.items() if k != name}})
    given = {"margin": 5, "max_area": 0.5, "shape": "circle", "image_size": 64}[name]
    assert resolve_params(replace(cfg, **{name: given}), {"params": {**TRAIN_PARAMS, **params}})[name] == given


def test_a_training_cooccurrence_h5_unlike_its_manifest_is_refused(tmp_path):
    """The training side's counts decide which pairs are out of context: its cooccurrence.h5 is checked against the
    manifest's `files` sha256 (Cooccurrence.of_set, as every reader of a set checks it), not taken as found."""
    Cooccurrence.count([[0, 1]], [1, 2], ["a", "b"]).save(tmp_path / "cooccurrence.h5")
    manifest = {"format": "scenectl-shards/1", "task": "masked", "shards": [], "params": TRAIN_PARAMS,
                "classes": [{"index": 0, "coco_id": 1, "name": "a"}, {"index": 1, "coco_id": 2, "name": "b"}],
                "files": {"cooccurrence.h5": hashlib.sha256((tmp_path / "cooccurrence.h5").read_bytes()).hexdigest()}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert read_train_side(tmp_path)[2].names == ["a", "b"]
    Cooccurrence.count([[0]], [1, 2], ["a", "b"]).save(tmp_path / "cooccurrence.h5")  # other counts, same classes
    with pytest.raises(ScenectlError, match="cooccurrence.h5: sha256 .* differs from the manifest's"):
        read_train_side(tmp_path)


# --- building from real COCO images ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_side(coco_sample, tmp_path_factory) -> Path:
    """A training side as build-shards writes it (manifest + cooccurrence.h5), counted from coco-sample train2017
    annotations (no pixels needed)."""
    folder = tmp_path_factory.mktemp("trainside")
    coco = load_coco(coco_sample / "annotations" / "instances_train2017.json")
    table = ClassTable.from_coco(coco)
    idx = table.index()
    per_image = [[idx[a["category_id"]] for a in coco.imgToAnns.get(i, [])] for i in sorted(coco.imgs)]
    Cooccurrence.count(per_image, table.coco_ids, table.names).save(folder / "cooccurrence.h5")
    manifest = {"format": "scenectl-shards/1", "task": "masked", "classes": table.to_json(), "shards": [],
                "params": {"shape": "square", "fill": "mean", "margin": 3, "image_size": 32, "max_area": 0.3,
                           "min_area": 1024}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _samples(folder: Path) -> list[dict]:
    urls = open_shard_set(folder).urls
    return list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))


@pytest.mark.slow
def test_build_ooc_from_real_coco_sample(coco_sample, train_side, tmp_path):
    cfg = OOCConfig(coco_root=str(coco_sample), split="val2017", train_cooccurrence=str(train_side / "cooccurrence.h5"),
                    out=str(tmp_path / "ooc"), max_pairs=4, seed=3)
    m = build_ooc(cfg)
    assert m["totals"]["pairs"] == 4 and m["totals"]["samples"] == 8
    assert m["classes"] == json.loads((train_side / "manifest.json").read_text())["classes"]
    assert (tmp_path / "ooc" / "cooccurrence.h5").read_bytes() == (train_side / "cooccurrence.h5").read_bytes()
    raw = _samples(tmp_path / "ooc")
    assert len(raw) == 8
    cooc = Cooccurrence.load(train_side / "cooccurrence.h5")
    flags = []
    for r in raw:
        s = decode_sample(r)  # the standard reader accepts every sample
        meta = s["meta"]
        flags.append(meta["ooc"])
        assert s["image"].shape == (3, 32, 32) and "object" in s and s["object"].shape == (3, 32, 32)
        assert s["mask"].max() == 255 and meta["area_fraction"] <= 0.3
        assert meta["host_image_id"] == meta["image_id"] != meta["donor_image_id"]
        assert r["__key__"] == f"{meta['image_id']:012d}_{meta['donor_annotation_id']:012d}"
        c = s["label"]
        co = cooc.cooccurrence[c, meta["visible_categories"]]
        if meta["ooc"]:  # never seen with any visible host class in the training counts
            assert meta["visible_categories"] and (co == 0).all()
        else:
            assert plausible_matrix(cooc)[c, meta["visible_categories"]].any()
    assert sorted(flags) == [False] * 4 + [True] * 4
    text = inspect_report(m)  # inspect-shards' text: an OOC set counts pairs and has no area histogram
    assert text.startswith("task ooc, 8 samples in 1 shards from") and "(4 pairs)" in text, text
    # same seed -> the same bytes; another seed -> other pairs
    again = build_ooc(OOCConfig(**{**cfg.__dict__, "out": str(tmp_path / "again")}))
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in m["shards"]]
    other = build_ooc(OOCConfig(**{**cfg.__dict__, "out": str(tmp_path / "other"), "seed": 4}))
    assert [s["sha256"] for s in other["shards"]] != [s["sha256"] for s in m["shards"]]


@pytest.mark.slow
def test_build_ooc_bad_inputs(coco_sample, train_side, tmp_path):
    args = ["build-ooc", "--coco-root", str(coco_sample), "--split", "val2017", "--out", str(tmp_path / "o")]
    r = runner.invoke(app, args + ["--train-cooccurrence", str(tmp_path / "missing.h5")])
    assert r.exit_code == 2 and "no such file" in r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cooccurrence.h5").write_bytes(b"not hdf5")
    (bad / "manifest.json").write_text((train_side / "manifest.json").read_text())
    r = runner.invoke(app, args + ["--train-cooccurrence", str(bad)])
    assert r.exit_code == 2 and "not a scenectl cooccurrence.h5" in r.output
    r = runner.invoke(app, args + ["--train-cooccurrence", str(train_side), "--split", "test2017"])
    assert r.exit_code == 2 and "unknown split" in r.output
    # a training side with other classes than the annotation file
    other = tmp_path / "other"
    other.mkdir()
    m = json.loads((train_side / "manifest.json").read_text())
    m["classes"] = m["classes"][:10]
    (other / "manifest.json").write_text(json.dumps(m))
    Cooccurrence.count([[0]], [c["coco_id"] for c in m["classes"]], [c["name"] for c in m["classes"]]).save(
        other / "cooccurrence.h5")
    r = runner.invoke(app, args + ["--train-cooccurrence", str(other)])
    assert r.exit_code == 2 and "differ from the training shards' classes" in r.output
    assert len(r.output.strip().splitlines()) == 1
