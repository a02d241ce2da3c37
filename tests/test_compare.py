"""`scenectl compare` on prediction files written by scenectl.predictions (as eval writes them), with planted
differences, and on checkpoints run over a shard set."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import kit
from scenectl import metrics
from scenectl.checkpoint import SampleSet, read_checkpoint, save_checkpoint
from scenectl.io import file_sha256
from scenectl.cli import app
from scenectl.compare import CompareConfig, compare, model_names, summary_text
from scenectl.errors import ScenectlError
from scenectl.inference import Outputs
from scenectl.predictions import write_predictions

runner = CliRunner()
C = 12
NAMES = [f"class{i}" for i in range(C)]
PLAUSIBLE = np.eye(C, dtype=bool) | np.eye(C, k=1, dtype=bool) | np.eye(C, k=-1, dtype=bool)


def _samples(n_images: int = 150, per_image: int = 4, seed: int = 0):
    """Keys, labels, image ids and visible classes of n_images * per_image samples (build-shards' key form)."""
    rng = np.random.default_rng(seed)
    image_ids = np.repeat(np.arange(1, n_images + 1) * 3, per_image)
    keys = [f"{i:012d}_{i * 100 + j % per_image:012d}" for j, i in enumerate(image_ids)]
    labels = rng.integers(0, C, image_ids.size)
    visible = [[int((y + 1) % C)] if j % 3 else [] for j, y in enumerate(labels)]
    return keys, labels, image_ids, visible


def _write(path: Path, accuracy: float, seed: int, samples=None, drop: int = 0) -> Path:
    """predictions.h5 of a model whose top-1 is right with probability `accuracy` (the last `drop` samples left out)."""
    keys, labels, image_ids, visible = samples or _samples()
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(keys), C)).astype(np.float32)
    hit = rng.random(len(keys)) < accuracy
    logits[np.arange(len(keys)), labels] = np.where(hit, 10.0, -10.0)  # (N,): first, or last, place for the label
    n = len(keys) - drop
    out = Outputs(logits[:n], labels[:n], keys[:n], visible[:n], 1.0, image_ids[:n])
    path.mkdir(parents=True, exist_ok=True)
    write_predictions(path / "predictions.h5", out, NAMES, 10, plausible=PLAUSIBLE)
    return path


def test_a_planted_difference_is_found_and_its_size_recovered(tmp_path):
    a, b = _write(tmp_path / "a" / "eval", 0.70, seed=1), _write(tmp_path / "b" / "eval", 0.45, seed=2)
    rep = compare(CompareConfig(inputs=[str(a), str(b)], out=str(tmp_path / "cmp"), bootstrap=500))
    assert rep["reference"] == "a/eval" and [m["name"] for m in rep["models"]] == ["a/eval", "b/eval"]
    top1 = rep["differences"]["b/eval"]["top-1"]
    with h5py.File(a / "predictions.h5") as fa, h5py.File(b / "predictions.h5") as fb:
        acc = [(f["topk_indices"][:, 0] == f["labels"][()]).mean() for f in (fa, fb)]
    assert rep["scores"]["a/eval"]["top-1"]["mean"] == pytest.approx(acc[0])
    assert top1["value"] == pytest.approx(acc[1] - acc[0])
    assert top1["verdict"] == "lower" and top1["ci_holm"][1] < 0 and top1["ci"][0] < acc[1] - acc[0] < top1["ci"][1]
    lo, hi = rep["scores"]["b/eval"]["top-1"]["ci"]
    assert lo < acc[1] < hi
    # one seed per arm: the image-only interval, said in words
    assert rep["scores"]["b/eval"]["top-1"]["seed_sd"] is None and top1["notes"] == [metrics.NO_SEED_NOISE]
    disk = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert disk["differences"]["b/eval"]["top-1"]["verdict"] == "lower"
    assert disk["bootstrap"]["images"] == 150 and disk["bootstrap"]["unit"] == "image"
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "b/eval vs a/eval: lower on top-1" in md and "training noise is not in its intervals" in md
    assert "Holm over one family: 1 arm(s) minus a/eval on 9 metrics" in md and "Minimum detectable difference" in md
    for f in ("scores.png", "differences.png", "config.json"):
        assert (tmp_path / "cmp" / f).stat().st_size > 0


@pytest.mark.slow
def test_arms_of_three_seeds_find_a_planted_difference_and_call_a_null_one_inconclusive(tmp_path):
    """Two arms of three training seeds each against a reference arm, from the command line: per-seed values, the
    seed SD and the seed-aware intervals printed; the arm 15 points lower is "lower", the arm drawn like the
    reference "inconclusive", after Holm over the table's differences."""
    arm = lambda name, acc, base: f"{name}=" + ",".join(  # noqa: E731
        str(_write(tmp_path / f"{name}{i}", acc, seed=base + i)) for i in range(3))
    r = runner.invoke(app, ["compare", arm("ref", 0.6, 10), arm("same", 0.6, 20), arm("worse", 0.45, 30),
                            "--out", str(tmp_path / "cmp"), "--bootstrap", "300"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert rep["reference"] == "ref" and len(rep["models"]) == 9 and rep["models"][1]["name"] == "ref#2"
    top1 = {a: rep["scores"][a]["top-1"] for a in ("ref", "same", "worse")}
    for a, s in top1.items():
        assert s["seeds"] == 3 and len(s["per_seed"]) == 3 and s["seed_sd"] > 0
        assert s["mean"] == pytest.approx(np.mean(s["per_seed"])) and s["ci"][0] < s["mean"] < s["ci"][1]
    same, worse = rep["differences"]["same"]["top-1"], rep["differences"]["worse"]["top-1"]
    assert same["verdict"] == "inconclusive" and same["ci_holm"][0] < 0 < same["ci_holm"][1]
    assert worse["verdict"] == "lower" and worse["ci_holm"][1] < 0
    # the seed part widens the interval beyond the image bootstrap's
    assert worse["ci"][1] - worse["ci"][0] > worse["image_ci"][1] - worse["image_ci"][0]
    assert worse["family_size"] == 18 and "2 arm(s) minus ref on 9 metrics" in rep["family"]
    assert "SD " in r.output and "inconclusive" in r.output and "minimum detectable difference" in r.output
    assert "same vs ref: inconclusive on top-1" in r.output and "worse vs ref: lower on top-1" in r.output


def test_verdicts_are_holm_adjusted_over_the_table(tmp_path):
    """A difference that a lone comparison would call higher becomes inconclusive once the table's other
    comparisons enter the family: the verdict follows the Holm-adjusted p-value, and ci_holm excludes 0 exactly
    where the verdict is a direction."""
    a = _write(tmp_path / "a", 0.60, seed=1)
    b = _write(tmp_path / "b", 0.655, seed=2)
    rep = compare(CompareConfig(inputs=[str(a), str(b)], out=str(tmp_path / "cmp"), bootstrap=400))
    rows = [r for d in rep["differences"].values() for r in d.values() if r]
    p = [r["p"] for r in rows]
    assert [r["p_holm"] for r in rows] == pytest.approx(metrics.holm(p).tolist())
    for r in rows:
        assert (r["verdict"] == "inconclusive") == (r["p_holm"] >= 0.05)
        assert (r["verdict"] == "inconclusive") == (r["ci_holm"][0] <= 0 <= r["ci_holm"][1])
    lone = metrics.verdict(rep["differences"]["b"]["top-1"]["ci"])
    assert lone == "higher" and rep["differences"]["b"]["top-1"]["verdict"] == "inconclusive", rows[0]


def test_without_intervals_the_seeds_are_shown_and_nothing_is_worded(tmp_path):
    a = [str(_write(tmp_path / f"a{i}", 0.6, seed=i)) for i in range(2)]
    b = str(_write(tmp_path / "b", 0.4, seed=9))
    rep = compare(CompareConfig(inputs=["a=" + ",".join(a), b], out=str(tmp_path / "cmp"), bootstrap=0))
    s = rep["scores"]["a"]["top-1"]
    assert s["seeds"] == 2 and s["ci"] is None and s["mean"] == pytest.approx(np.mean(s["per_seed"]))
    assert rep["differences"] == {} and rep["family"] is None
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Per seed" in md and "60." in md and "## Difference to" not in md
    assert "b: one training seed: training noise is not in its intervals" in md


def test_identical_predictions_are_inconclusive(tmp_path):
    a = _write(tmp_path / "r18", 0.6, seed=1)
    b = tmp_path / "copy"
    shutil.copytree(a, b)
    r = runner.invoke(app, ["compare", str(a), str(b), "--reference", str(b), "--out", str(tmp_path / "cmp"),
                            "--bootstrap", "200", "--topk", "3"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert rep["reference"] == "copy" and rep["ks"] == [1, 3, 5, 10]
    for m, d in rep["differences"]["r18"].items():
        assert d["value"] == 0.0 and d["ci"] == [0.0, 0.0] and d["verdict"] == "inconclusive", m
    assert "r18 vs copy: inconclusive on top-1, top-3" in r.output


def test_a_hole_only_arm_is_the_reference_and_its_differences_the_context_contribution(tmp_path):
    a, h = _write(tmp_path / "model", 0.6, seed=1), _write(tmp_path / "hole", 0.3, seed=2)
    rep = compare(CompareConfig(inputs=[f"model={a}", f"hole={h}"], hole_only_arm="hole", out=str(tmp_path / "cmp"),
                                bootstrap=200))
    assert rep["reference"] == "hole" and rep["differences"]["model"]["top-1"]["verdict"] == "higher"
    assert "context contribution" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(ScenectlError, match="--hole-only-arm hole is the reference"):
        compare(CompareConfig(inputs=[f"model={a}", f"hole={h}"], hole_only_arm="hole", reference="model",
                              out=str(tmp_path / "cmp2")))
    with pytest.raises(ScenectlError, match="named twice"):
        compare(CompareConfig(inputs=[f"m={a}", f"m={h}"], out=str(tmp_path / "cmp2")))


def test_inputs_over_other_samples_are_refused_naming_them(tmp_path):
    a = _write(tmp_path / "a", 0.6, seed=1)
    b = _write(tmp_path / "b", 0.6, seed=2, drop=5)
    r = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "do not cover the same samples (595 vs 600)" in r.output
    assert "5 only in a" in r.output and "000000000450_" in r.output and "0 only in b (none)" in r.output
    assert not (tmp_path / "cmp").exists()  # refused before anything was written
    # same keys, another label for one of them: not the same samples either
    keys, labels, image_ids, visible = _samples()
    labels = labels.copy()
    labels[7] = (labels[7] + 1) % C
    c = _write(tmp_path / "c", 0.6, seed=3, samples=(keys, labels, image_ids, visible))
    with pytest.raises(ScenectlError, match="1 samples different labels"):
        compare(CompareConfig(inputs=[str(a), str(c)], out=str(tmp_path / "cmp")))
    with pytest.raises(ScenectlError, match="--reference"):
        compare(CompareConfig(inputs=[str(a), str(a)], reference="nope", out=str(tmp_path / "cmp")))
    with pytest.raises(ScenectlError, match="at least two arms"):
        compare(CompareConfig(inputs=[str(a)], out=str(tmp_path / "cmp")))
    assert not (tmp_path / "cmp").exists()


def test_older_files_and_top_k_only_files(tmp_path):
    """A predictions.h5 without image_ids (written before they were stored) resamples by the keys' image ids; one
    written with --no-logits is scored from its ranked top-10."""
    a = _write(tmp_path / "a", 0.6, seed=1)
    with h5py.File(a / "predictions.h5", "a") as f:
        del f["image_ids"], f["logits"]
    b = _write(tmp_path / "b", 0.6, seed=2)
    rep = compare(CompareConfig(inputs=[str(a), str(b)], out=str(tmp_path / "cmp"), bootstrap=50))
    assert rep["bootstrap"]["images"] == 150 and any("image ids read from the sample keys" in n for n in rep["notes"])
    with pytest.raises(ScenectlError, match="stores only its top-10"):
        compare(CompareConfig(inputs=[str(a), str(b)], out=str(tmp_path / "cmp2"), topk=[11]))


def test_model_names_are_the_shortest_unique_tails():
    assert model_names(["runs/r18/eval", "runs/ffc18/eval/"]) == ["r18/eval", "ffc18/eval"]
    assert model_names(["x/a.h5", "y/b.h5"]) == ["a.h5", "b.h5"]


@pytest.mark.slow
def test_checkpoints_are_run_on_the_shards(synthetic_shards, tmp_path):
    from scenectl.data.loader import open_shard_set

    classes = open_shard_set(synthetic_shards["val"]).classes
    ckpt = tmp_path / "r18" / "best.pt"
    ckpt.parent.mkdir()
    kit.checkpoint(ckpt, classes, 4, cooccurrence=open_shard_set(synthetic_shards["train"]).cooccurrence().to_state())
    (tmp_path / "copy").mkdir()
    val = open_shard_set(synthetic_shards["val"])  # the copy says it was picked on these samples
    raw = read_checkpoint(ckpt).state
    save_checkpoint(tmp_path / "copy" / "best.pt", {**raw, "selected_on": asdict(SampleSet.of(val.location,
                                                                                             val.manifest))})
    rep = compare(CompareConfig(inputs=[str(ckpt), str(tmp_path / "copy" / "best.pt")], shards=[str(synthetic_shards["val"])],
                                out=str(tmp_path / "cmp"), bootstrap=100, device="cpu", workers=0, batch_size=32))
    n = open_shard_set(synthetic_shards["val"]).num_samples
    assert rep["n"] == n and [m["kind"] for m in rep["models"]] == ["checkpoint", "checkpoint"]
    assert all(d["verdict"] == "inconclusive" for d in rep["differences"]["copy/best.pt"].values() if d)
    assert 0.0 <= rep["scores"]["r18/best.pt"]["top-1"]["mean"] <= 1.0
    assert "super top-1" in rep["metrics"]  # the checkpoint's classes carry their supercategories
    assert list(rep["optimistic"]) == ["copy/best.pt"]  # marked in report.json, report.md and the terminal
    assert (tmp_path / "cmp" / "report.md").read_text().startswith("# compare\n\n**WARNING: copy/best.pt: selected on")
    assert summary_text(rep).startswith("WARNING: copy/best.pt: selected on these samples: optimistic")
    inputs = rep["provenance"]["inputs"]
    assert inputs["r18/best.pt"]["checkpoints"][0]["sha256"] == file_sha256(ckpt) and inputs["r18/best.pt"]["n"] == n
    with pytest.raises(ScenectlError, match="pass --shards"):
        compare(CompareConfig(inputs=[str(ckpt), str(ckpt)], out=str(tmp_path / "cmp2")))
    assert metrics.verdict(rep["differences"]["copy/best.pt"]["top-1"]["ci"]) == "inconclusive"
