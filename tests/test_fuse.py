"""scenectl.fuse: product-of-experts math on hand cases, choosing w, counting changes, and `fuse` end to end on a
validation set and an out-of-context set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import kit
from scenectl.io import file_sha256
from scenectl.cli import app
from scenectl.data.loader import open_shard_set
from scenectl.data.ooc import OOCConfig, build_ooc
from scenectl.errors import ScenectlError
from scenectl.fuse import FuseConfig, changes, choose_weight, crossfit, fuse, fuse_logprobs

runner = CliRunner()
LOG = np.log


def test_product_of_experts_hand_case():
    # object: p = [0.6, 0.4]; context: p = [0.1, 0.9]
    # w = 1: p ∝ [0.06, 0.36] -> [1/7, 6/7]: the context overturns the object model's answer
    # w = 0.5: p ∝ [0.6 * sqrt(0.1), 0.4 * sqrt(0.9)] = [0.18974, 0.37947] -> [1/3, 2/3]
    obj, ctx = LOG([[0.6, 0.4]]), LOG([[0.1, 0.9]])
    assert np.exp(fuse_logprobs(obj, ctx, 1.0)) == pytest.approx(np.array([[1 / 7, 6 / 7]]))
    assert np.exp(fuse_logprobs(obj, ctx, 0.5)) == pytest.approx(np.array([[1 / 3, 2 / 3]]), abs=1e-5)
    assert np.exp(fuse_logprobs(obj, ctx, 0.0)) == pytest.approx(np.array([[0.6, 0.4]]))  # w = 0: object alone


def test_changes_counts_fixed_broken_and_wrong_to_wrong():
    obj = LOG([[0.6, 0.3, 0.1],   # obj says 0, truth 1 -> fused 1: fixed
               [0.6, 0.3, 0.1],   # obj says 0, truth 0 -> fused 1: broken
               [0.6, 0.3, 0.1],   # obj says 0, truth 2 -> fused 1: wrong to wrong
               [0.1, 0.2, 0.7]])  # obj says 2, fused 2: unchanged
    fused = LOG([[0.2, 0.7, 0.1], [0.2, 0.7, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    assert changes(obj, fused, np.array([1, 0, 2, 2])) == {"changed": 3, "fixed": 1, "broken": 1,
                                                            "changed_wrong_to_wrong": 1}


def test_choose_weight_prefers_accuracy_then_likelihood_then_small_w():
    # the object model is unsure between 0 and 1; the context knows the answer -> any w >= some value fixes it
    obj = LOG([[0.55, 0.45], [0.55, 0.45], [0.9, 0.1]])
    ctx = LOG([[0.2, 0.8], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([1, 1, 0])
    w, curve = choose_weight(obj, ctx, y, [0.0, 0.1, 0.5, 1.0, 2.0])
    acc = {r["w"]: r["top1"] for r in curve}
    assert acc[0.0] == pytest.approx(1 / 3) and acc[0.5] == 1.0 and acc[2.0] == 1.0
    best = min((r for r in curve if r["top1"] == 1.0), key=lambda r: r["nll"])
    assert w == best["w"]
    # a context model that knows nothing (uniform) never changes an answer: w = 0 (the smallest) wins the tie
    w0, _ = choose_weight(obj, np.full((3, 2), math.log(0.5)), y, [1.0, 0.0, 2.0])
    assert w0 == 0.0


def test_crossfit_scores_each_half_with_the_other_halfs_weight():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    obj = LOG(np.full((60, 3), 1 / 3)) + rng.normal(0, 0.1, (60, 3))
    ctx = LOG(np.where(np.eye(3)[y] > 0, 0.8, 0.1))  # the context is right every time
    cf = crossfit(obj, ctx, y, [f"k{i}" for i in range(60)], [0.0, 1.0], 3)
    assert cf["weights"] == [1.0, 1.0] and cf["fused_top1"] == 1.0 and cf["fixed"] + cf["object_top1"] * 60 == 60


@pytest.fixture(scope="module")
def models(synthetic_shards, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fuse-models")
    classes = open_shard_set(synthetic_shards["train"]).classes
    config = {"image_size": 32}
    return {"ctx": kit.checkpoint(d / "ctx.pt", classes, 4, config=config),
            "obj": kit.checkpoint(d / "obj.pt", classes, 3, seed=1, config=config),
            "other": kit.checkpoint(d / "other.pt", classes[:-1], 3, seed=1, config=config)}


@pytest.mark.slow
def test_fuse_end_to_end_on_val_and_an_ooc_set(synthetic_scenes, synthetic_shards, models, tmp_path):
    ooc = tmp_path / "ooc"
    m = build_ooc(OOCConfig(coco_root=str(synthetic_scenes), split="val2017",
                            train_cooccurrence=str(synthetic_shards["train"]), out=str(ooc), max_pairs=6,
                            image_size=32, min_area=64))
    assert m["totals"]["pairs"] > 0
    r = runner.invoke(app, ["fuse", "--context", str(models["ctx"]), "--object", str(models["obj"]),
                            "--shards", str(synthetic_shards["val"]), "--ooc-shards", str(ooc),
                            "--out", str(tmp_path / "f"), "--device", "cpu", "-w", "0", "-w", "0.5", "-w", "1"])
    assert r.exit_code == 0, r.output
    assert "fused top-1" in r.output and "ROC AUC" in r.output
    rep = json.loads((tmp_path / "f" / "report.json").read_text())
    assert rep["w"] in (0.0, 0.5, 1.0) and [c["w"] for c in rep["weight_curve"]] == [0.0, 0.5, 1.0]
    n_val = open_shard_set(synthetic_shards["val"]).num_samples
    assert rep["sets"]["val"]["n"] == n_val
    prov = rep["provenance"]  # both checkpoints with their sha256, both sets fingerprinted
    assert [c["sha256"] for c in prov["checkpoints"]] == [file_sha256(models["ctx"]), file_sha256(models["obj"])]
    assert [d["n"] for d in prov["data"]] == [n_val, 2 * m["totals"]["pairs"]] and prov["scenectl"]
    assert rep["sets"]["ooc: out-of-context"]["n"] == rep["sets"]["ooc: in-context"]["n"] == m["totals"]["pairs"]
    for s in rep["sets"].values():  # fixed - broken is exactly the accuracy gained
        assert s["fixed"] - s["broken"] == round((s["fused"]["top1"] - s["object"]["top1"]) * s["n"])
    assert 0 <= rep["ooc_flags"]["auc_context_model"] <= 1
    assert all((tmp_path / "f" / f).is_file() for f in ("report.md", "weights.png", "config.json"))
    r = runner.invoke(app, ["fuse", "--context", str(models["ctx"]), "--object", str(models["obj"]),
                            "--shards", str(synthetic_shards["val"]), "--out", str(tmp_path / "f"), "--device", "cpu"])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_fuse_refuses_mismatched_models_and_sets(synthetic_shards, models, tmp_path):
    base = dict(context=str(models["ctx"]), object=str(models["obj"]), shards=str(synthetic_shards["val"]),
                out=str(tmp_path / "f"), device="cpu")
    with pytest.raises(ScenectlError, match="different classes"):
        fuse(FuseConfig(**{**base, "object": str(models["other"])}))
    with pytest.raises(ScenectlError, match="RGB crops"):
        fuse(FuseConfig(**{**base, "object": str(models["ctx"])}))  # a 4-channel scene model is no object model
    with pytest.raises(ScenectlError, match="^--weight must be"):
        fuse(FuseConfig(**base, weights=[-1.0]))
    r = runner.invoke(app, ["fuse", "--context", str(tmp_path / "nope.pt"), "--object", str(models["obj"]),
                            "--shards", str(synthetic_shards["val"]), "--out", str(tmp_path / "g")])
    assert r.exit_code == 2 and "checkpoint not found" in r.output
