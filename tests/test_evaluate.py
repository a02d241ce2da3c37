"""`scenectl eval` and `scenectl cooccurrence` end to end on shards built from synthetic scenes.

The report's numbers are recomputed from predictions.h5 (and from the shards themselves), so a report that
disagrees with its own predictions fails. Whether a trained model beats the prior is tested in test_quickstart.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import webdataset as wds
from typer.testing import CliRunner

from scenectl.checkpoint import BuildParams, TrainingShards, read_checkpoint, save_checkpoint
from scenectl.cli import app
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.shards import BuildConfig, build_shards
from scenectl.data.synthetic import generate_scenes
from scenectl.errors import ScenectlError
from scenectl.companions import top_companions
from scenectl.evaluate import EvalConfig, evaluate as main
from scenectl.inference import resolve_ks
from scenectl.predictions import read_visible
from scenectl.train import TrainConfig, train

runner = CliRunner()


def _build(root: Path, split: str, out: Path, shape: str) -> Path:
    build_shards(BuildConfig(out=out, coco_root=root, split=split, shape=shape, image_size=32, workers=1,
                             maxcount=20, progress=False), echo=lambda s: None)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Synthetic scenes -> circle train/val shards and a square val set -> a briefly trained checkpoint."""
    d = tmp_path_factory.mktemp("evaldata")
    generate_scenes(d / "scenes", n_train=24, n_val=12, seed=0)
    sets = {"train": _build(d / "scenes", "train2017", d / "train", "circle"),
            "val": _build(d / "scenes", "val2017", d / "val", "circle"),
            "square": _build(d / "scenes", "val2017", d / "val-square", "square")}
    train(TrainConfig(shards=str(sets["train"]), val_shards=str(sets["val"]), out=str(d / "run"), epochs=1,
                      steps_per_epoch=2, batch_size=8, workers=0, device="cpu", log_every=10**6,
                      checkpoint_every=0, shuffle_buffer=16))
    return {**sets, "ckpt": d / "run" / "best.pt", "last": d / "run" / "last.pt"}


def _shard_samples(folder: Path) -> dict[str, tuple[int, list[int], int]]:
    """key -> (cls, visible_categories, image_id), read straight from the tars."""
    out = {}
    for tar in sorted(folder.glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(s["json"])
            out[s["__key__"]] = (int(s["cls"]), meta["visible_categories"], meta["image_id"])
    return out


def _flat_cis(rep: dict) -> list[tuple[float, list[float]]]:
    """(value, [lo, hi]) of the micro top-k and plausibility@10 of a report's summary (balanced accuracy's interval
    may miss its point estimate: resamples without a rare class shift it, and the report says so)."""
    pairs = [(rep["topk"][k], rep["topk_ci"][k]) for k in rep["topk"]]
    return pairs + [(rep["plausibility@10"], rep["plausibility@10_ci"])]


@pytest.mark.slow
def test_report_agrees_with_predictions_and_shards(data, tmp_path):
    out = tmp_path / "eval"
    rep = main(EvalConfig(checkpoint=str(data["ckpt"]), shards=[str(data["val"])], topk=[3, 50], out=str(out),
                          workers=0, batch_size=7, device="cpu"))
    disk = json.loads((out / "report.json").read_text())
    names = disk["classes"]
    C = len(names)
    assert C == 16 and disk["ks"] == [1, 3, 5, 10]  # 50 >= the 16 synthetic classes: left out, said once
    assert [n for n in disk["notes"] if "top-50" in n] == ["top-50 not reported: the model knows only 16 classes, so "
                                                           "every top-16 is 100 %"]
    with h5py.File(out / "predictions.h5", "r") as f:
        labels, top, logits = f["labels"][()], f["topk_indices"][()], f["logits"][()]
        keys = [k.decode() for k in f["keys"][()]]
        visible = read_visible(f)
        image_ids = f["image_ids"][()].tolist()
        assert [n.decode() for n in f["class_names"][()]] == names and f.attrs["k"] == 10
    truth = _shard_samples(data["val"])
    assert sorted(keys) == sorted(truth) and disk["n"] == len(keys) == rep["n"]  # every sample exactly once
    assert [truth[k][0] for k in keys] == labels.tolist()
    assert [truth[k][1] for k in keys] == visible
    assert [truth[k][2] for k in keys] == image_ids  # the bootstrap's unit, from each sample's metadata
    assert (top == np.argsort(-logits, axis=1, kind="stable")[:, :10]).all()
    for k in disk["ks"]:
        hits = (top[:, :k] == labels[:, None]).any(1)
        assert disk["topk"][str(k)] == pytest.approx(hits.mean())
        declared = [c for c in np.unique(labels) if (labels == c).sum() >= 5]  # --min-class-samples 5
        per_class = [hits[labels == c].mean() for c in declared]
        assert disk["topk_balanced"][str(k)] == pytest.approx(np.mean(per_class))
    cs = disk["class_set"]
    assert cs["classes"] == [int(c) for c in declared] and cs["size"] == len(declared) and cs["min_class_samples"] == 5
    assert cs["sample_share"] == pytest.approx(np.isin(labels, declared).mean())
    assert "16" not in disk["topk"] and "| top-16 |" not in (out / "report.md").read_text()
    support = np.bincount(labels, minlength=C)
    assert [r["support"] for r in disk["per_class"]] == support.tolist()
    for name, b in disk["baselines"].items():
        assert {"topk", "topk_balanced", "plausibility@10"} <= set(b), name
        assert b["n"] == disk["n"]
    assert disk["plausibility_n"] + disk["plausibility_excluded"] == disk["n"]
    assert disk["plausibility_excluded"] == sum(1 for v in visible if not v)
    assert 0 <= disk["plausibility@10"] <= disk["plausibility@10_max"] <= 1
    assert disk["plausibility"]["k=1"]["true label"] == disk["plausibility_true_label"]
    assert set(disk["plausibility"]) == {"k=1", "k=10"} and "attainable maximum" in disk["plausibility"]["k=10"]
    # the field's numbers: top-3 always, supercategory top-1/5 from the shard set's class table
    assert "3" in disk["topk"] and set(disk["supercategory_topk"]) == {"1", "5"}
    sup = disk["supercategories"]
    assert len(sup) == C and all(isinstance(x, str) for x in sup)
    same = [sup[a] == sup[b] for a, b in zip(top[:, 0], labels)]
    assert disk["supercategory_topk"]["1"] == pytest.approx(np.mean(same))
    assert disk["cooccurrence_source"].startswith("checkpoint")
    # intervals: over the images, for the model and every baseline, each holding its point estimate
    boot = disk["bootstrap"]
    assert boot["resamples"] == 1000 and boot["unit"] == "image" and boot["images"] == len(set(image_ids))
    for summary in [disk, *disk["baselines"].values()]:
        for value, (lo, hi) in _flat_cis(summary):
            assert lo - 1e-6 <= value <= hi + 1e-6
    # the prior is a constant predictor: its balanced metrics are fixed, so no interval, and the reason
    prior = disk["baselines"]["prior"]
    assert all(ci is None for ci in prior["topk_balanced_ci"].values()) and "constant predictor" in prior["no_interval"]
    assert disk["topk_balanced_ci"]["1"] is not None and "no_interval" not in disk
    lo, hi = disk["plausibility_true_label_ci"]
    assert lo <= disk["plausibility_true_label"] <= hi
    # per-class intervals: Wilson, hidden below 5 samples
    assert all((r["ci"] is not None) == (r["support"] >= 5) for r in disk["per_class"])
    assert set(disk["vs_baselines"]) == {"prior", "cooccurrence", "random", "mask_only"}
    d = disk["vs_baselines"]["prior"]["topk"]["1"]
    assert d["difference"] == pytest.approx(disk["topk"]["1"] - disk["baselines"]["prior"]["topk"]["1"])
    assert d["verdict"] == ("inconclusive" if d["ci"][0] <= 0 <= d["ci"][1] else "higher" if d["ci"][0] > 0 else "lower")
    # the shape-leakage control, fitted on the checkpoint's training shards
    assert disk["mask_only"]["run"] and disk["mask_only"]["train_shards"] == str(data["train"])
    assert disk["mask_only"]["train_samples"] == len(_shard_samples(data["train"]))
    assert disk["baselines"]["mask_only"]["n"] == disk["n"] and "vs_prior" in disk["baselines"]["mask_only"]
    assert 0 <= disk["mask_only"]["train_top1"] <= 1 and 0 <= disk["mask_only"]["heldout_top1"] <= 1
    share = disk["mask_only"]["explained_top1"]
    assert share is None or share["value"] is None or 0 <= share["value"] <= 1
    for f in ("config.json", "report.md", "confusion.png", "per_class.png", "baselines.png"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "report.md").read_text()
    assert "|  | model | prior | co-occurrence | mask-only | random |" in md
    assert "Mask-only baseline (shape-leakage probe" in md and "model - prior" in md
    assert "declared class set" in md and "| super top-1 |" in md
    at10 = f"| k=10 | {100 * disk['plausibility@10']:5.1f} | {100 * disk['plausibility@10_max']:5.1f} |"
    assert at10 + " attainable maximum |" in md
    assert "| true label |" in md
    assert "prior: no balanced interval, a constant predictor" in md
    assert not list(out.glob(".*tmp*"))  # nothing half-written left behind


@pytest.mark.slow
def test_cli_defaults_chain_and_refuses_to_overwrite(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "train").mkdir(parents=True)
    shutil.copy(data["last"], tmp_path / "runs" / "train" / "last.pt")  # eval's default: the final weights
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "val2017").symlink_to(data["val"])
    r = runner.invoke(app, ["eval", "--topk", "50", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "optimistic" not in r.output  # the README chain's number was not selected on the samples it scores
    assert "model - prior" in r.output and "mask-only" in r.output and r.output.count("top-50 not reported") == 1
    assert "percentile-bootstrap interval, 1000 resamples" in r.output
    assert (tmp_path / "runs" / "train" / "eval" / "report.json").is_file()
    again = runner.invoke(app, ["eval", "--workers", "0"])
    assert again.exit_code == 2 and "holds an evaluation report" in again.output and "--overwrite" in again.output
    assert runner.invoke(app, ["eval", "--workers", "0", "--overwrite", "--no-logits"]).exit_code == 0
    with h5py.File(tmp_path / "runs" / "train" / "eval" / "predictions.h5", "r") as f:
        assert "logits" not in f and f["topk_indices"].shape[1] == 10


def test_a_folder_given_as_checkpoint_is_named_as_such(data, tmp_path):
    """One error-line format, `error: scenectl CMD: ...`, and a precise message for a folder given as -c."""
    r = runner.invoke(app, ["eval", "-c", str(data["val"]), "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        f"error: scenectl eval: checkpoint {data['val']} is a folder, not a checkpoint file: a checkpoint is the .pt "
        "file that train, transfer or distill write (e.g. runs/train/last.pt)"), r.output
    r = runner.invoke(app, ["eval", "-c", str(data["ckpt"].parent), "--out", str(tmp_path / "e")])
    assert r.output.strip().splitlines()[-1].endswith("is a folder, not a checkpoint file: give one of its best.pt, "
                                                      "last.pt"), r.output
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_best_checkpoint_scored_on_its_selection_set_is_marked_optimistic(data, tmp_path):
    """best.pt records the validation samples it was picked on; eval marks a report of it on them, and only then."""
    from scenectl.checkpoint import SampleSet
    from scenectl.io import file_sha256
    from scenectl.data.loader import open_shard_set

    best, last = read_checkpoint(data["ckpt"]), read_checkpoint(data["last"])
    val = open_shard_set(str(data["val"]))
    assert last.selected_on is None and best.selected_on.location == val.location
    assert best.selected_on.same_samples(SampleSet.of(val.location, val.manifest, list(_shard_samples(data["val"]))))
    assert best.selected_on.n == len(_shard_samples(data["val"]))
    fast = ["--workers", "0", "--bootstrap", "0", "--no-mask-only", "--device", "cpu"]
    r = runner.invoke(app, ["eval", "-c", str(data["ckpt"]), "--shards", str(data["val"]), "--out",
                            str(tmp_path / "opt"), *fast])
    assert r.exit_code == 0, r.output
    assert r.output.count("WARNING: selected on these samples: optimistic") == 2  # above and below the tables
    disk = json.loads((tmp_path / "opt" / "report.json").read_text())
    assert disk["selection"]["optimistic"] and disk["selection"]["selected_on"]["location"] == val.location
    assert "**Selected on these samples: optimistic" in (tmp_path / "opt" / "report.md").read_text()
    # provenance: version, commit (None outside a git checkout), the checkpoint's hash, the data's fingerprint, n
    prov = disk["provenance"]
    assert prov["scenectl"] and "git_commit" in prov and prov["n"] == disk["n"]
    assert prov["checkpoints"] == [{"path": str(data["ckpt"]), "sha256": file_sha256(data["ckpt"])}]
    assert prov["data"][0]["manifest_sha256"] == best.selected_on.manifest_sha256
    for ckpt, shards in ((data["last"], data["val"]), (data["ckpt"], data["train"])):  # not selected on these
        rep = main(EvalConfig(checkpoint=str(ckpt), shards=[str(shards)], out=str(tmp_path / ckpt.stem / shards.name),
                              workers=0, bootstrap=0, mask_only=False, device="cpu"))
        assert not rep["selection"]["optimistic"] and "optimistic" not in (
            tmp_path / ckpt.stem / shards.name / "report.md").read_text()


@pytest.mark.slow
def test_several_shard_sets_give_a_comparison(data, tmp_path):
    out = tmp_path / "cmp"
    r = runner.invoke(app, ["eval", "-c", str(data["ckpt"]), "--shards", str(data["val"]), "--shards",
                            str(data["square"]), "--out", str(out), "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "per shard set" in r.output
    top = json.loads((out / "report.json").read_text())
    subs = {n: json.loads((out / "sets" / n / "report.json").read_text()) for n in ("val", "val-square")}
    assert set(top["sets"]) == set(subs) and (out / "comparison.png").stat().st_size > 0
    assert top["n"] == sum(s["n"] for s in subs.values())
    for n, s in subs.items():
        assert top["sets"][n]["topk"] == s["topk"] and s["shards"] == [str(data["val" if n == "val" else "square"])]
    # the overall top-1 is the sample-weighted mean of the sets'
    assert top["topk"]["1"] == pytest.approx(sum(s["n"] * s["topk"]["1"] for s in subs.values()) / top["n"])
    with h5py.File(out / "predictions.h5", "r") as f:
        counts = np.bincount(f["set_index"][()])
        assert counts.tolist() == [subs["val"]["n"], subs["val-square"]["n"]]
        assert [s.decode() for s in f["set_names"][()]] == ["val", "val-square"]


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(data, tmp_path):
    base = ["eval", "-c", str(data["ckpt"]), "--shards", str(data["val"]), "--workers", "0"]

    def fails(args, text):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and text in r.output and len(r.output.strip().splitlines()) == 1, r.output

    fails(base + ["--topk", "0", "--out", str(tmp_path / "a")], "--topk must be an integer from 1")
    fails(base + ["--topk", "-3", "--out", str(tmp_path / "a")], "--topk must be an integer from 1")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    fails(["eval", "-c", str(junk), "--shards", str(data["val"])], "junk.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    fails(["eval", "-c", str(foreign), "--shards", str(data["val"])], "not a scenectl checkpoint")
    headless = tmp_path / "headless.pt"
    save_checkpoint(headless, {"kind": "context"})
    fails(["eval", "-c", str(headless), "--shards", str(data["val"])], "not a usable scenectl model checkpoint")
    fails(["eval", "-c", str(tmp_path / "missing.pt")], "checkpoint not found")
    # a shard set of other classes: same tars, one class renamed in the manifest
    other = tmp_path / "other"
    shutil.copytree(data["val"], other)
    manifest = json.loads((other / "manifest.json").read_text())
    old = manifest["classes"][0]["name"]
    manifest["classes"][0]["name"] = "zebra"  # a consistent manifest of another class list: its counts follow
    per_class = manifest["totals"].get("per_class", {})
    if old in per_class:
        per_class["zebra"] = per_class.pop(old)
    (other / "manifest.json").write_text(json.dumps(manifest))
    fails(["eval", "-c", str(data["ckpt"]), "--shards", str(other), "--out", str(tmp_path / "b")], "class list differs")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({**manifest, "shards": []}))
    fails(["eval", "-c", str(data["ckpt"]), "--shards", str(empty), "--out", str(tmp_path / "c")], "no samples")
    assert not (tmp_path / "a" / "report.json").exists() and not (tmp_path / "b" / "report.json").exists()


@pytest.mark.slow
def test_object_crop_shards_are_refused_by_train_and_eval(data, tmp_path):
    """`build-shards --task object` sets (crops, no mask.png) belong to transfer/distill; train and eval say so
    up front instead of failing on the first sample's missing mask."""
    crops = tmp_path / "crops"
    build_shards(BuildConfig(out=crops, coco_root=data["train"].parent / "scenes", split="val2017", task="object",
                             image_size=32, workers=1, progress=False), echo=lambda s: None)
    r = runner.invoke(app, ["eval", "-c", str(data["ckpt"]), "--shards", str(crops), "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "--task object" in r.output and "transfer" in r.output, r.output
    r = runner.invoke(app, ["train", "--shards", str(crops), "--val-shards", str(data["val"]),
                            "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "--shards" in r.output and "--task object" in r.output, r.output
    assert not (tmp_path / "e").exists() and not (tmp_path / "t" / "config.json").exists()


def test_resolve_ks():
    assert resolve_ks([50], 80) == ([1, 3, 5, 10, 50], [])
    ks, notes = resolve_ks([100, 80, 1], 80)  # k >= C: 100 % by construction, said once instead of rows of 100 %
    assert ks == [1, 3, 5, 10] and notes == ["top-80, top-100 not reported: the model knows only 80 classes, so "
                                             "every top-80 is 100 %"]
    assert resolve_ks([], 3) == ([1], ["top-3, top-5, top-10 not reported: the model knows only 3 classes, so every "
                                       "top-3 is 100 %"])
    with pytest.raises(ScenectlError, match="positive"):
        resolve_ks([0], 80)


# --- scenectl cooccurrence -------------------------------------------------------------------------------------

def test_cooccurrence_companions_match_the_counts(data, tmp_path):
    cooc = Cooccurrence.load(data["train"] / "cooccurrence.h5")
    rows = top_companions(cooc, top=3)
    for row in rows:
        i = cooc.names.index(row["class"])
        want = sorted(((cooc.cooccurrence[i, j] / cooc.image_counts[i], cooc.cooccurrence[i, j], -j)
                       for j in range(len(cooc.names)) if j != i and cooc.cooccurrence[i, j] > 0), reverse=True)[:3]
        assert [c["name"] for c in row["companions"]] == [cooc.names[-j] for _, _, j in want]
        assert [c["value"] for c in row["companions"]] == pytest.approx([v for v, _, _ in want])
    pmi = top_companions(cooc, top=1, by="pmi", min_count=2)
    for row in pmi:
        for c in row["companions"]:
            i, j = cooc.names.index(row["class"]), cooc.names.index(c["name"])
            n = cooc.n_images
            assert c["images"] >= 2
            assert c["value"] == pytest.approx(np.log(n * cooc.cooccurrence[i, j] / (cooc.image_counts[i] * cooc.image_counts[j])))


@pytest.mark.slow
def test_cooccurrence_cli(data, tmp_path):
    png = tmp_path / "heat.png"
    r = runner.invoke(app, ["cooccurrence", str(data["train"]), "--top", "2", "--out", str(png)])
    assert r.exit_code == 0, r.output
    assert "P(companion in image | class in image)" in r.output and png.stat().st_size > 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 + sum(1 for n in Cooccurrence.load(data["train"] / "cooccurrence.h5").image_counts if n)
    r = runner.invoke(app, ["cooccurrence", str(data["ckpt"]), "--by", "pmi", "--no-plot"])
    assert r.exit_code == 0 and "PMI" in r.output and "training split" in r.output
    r = runner.invoke(app, ["cooccurrence", str(data["train"]), "--by", "lift", "--no-plot"])
    assert r.exit_code == 2 and "--by" in r.output
    r = runner.invoke(app, ["cooccurrence", str(tmp_path / "nowhere")])
    assert r.exit_code == 2


# --- intervals and the shape-leakage control -------------------------------------------------------------------

@pytest.mark.slow
def test_bootstrap_and_mask_only_options(data, tmp_path):
    """--bootstrap 0 leaves the intervals out; a checkpoint whose training shards cannot be read still gets its
    report, which says the mask-only control was not run and why; a bad --mask-only-train is refused up front."""
    # train records its shards and their build params in the checkpoint (what the control fits on)
    assert read_checkpoint(data["ckpt"]).training_shards == TrainingShards(str(data["train"]),
                                                                           BuildParams("circle", "mean", 3, 32, 0.3))
    moved = tmp_path / "moved.pt"
    ckpt = torch.load(data["ckpt"], weights_only=True)
    ckpt["training_shards"]["spec"] = str(tmp_path / "gone")  # (the record train writes: checkpoint.TrainingShards)
    save_checkpoint(moved, ckpt)
    rep = main(EvalConfig(checkpoint=str(moved), shards=[str(data["val"])], out=str(tmp_path / "e"), workers=0,
                          device="cpu", bootstrap=0, min_class_samples=1))
    assert rep["bootstrap"] == {"resamples": 0} and "topk_ci" not in rep and "vs_baselines" not in rep
    # --min-class-samples 1: every class present enters the balanced mean, covering every sample
    present = [r["class"] for r in rep["per_class"] if r["support"]]
    assert rep["class_set"]["classes"] == present and rep["class_set"]["sample_share"] == 1.0
    assert not rep["mask_only"]["run"] and "gone" in rep["mask_only"]["reason"]
    assert "mask_only" not in rep["baselines"] and "not run" in (tmp_path / "e" / "report.md").read_text()
    for args, text in ((["--mask-only-train", str(tmp_path / "none")], "shard set not found"),
                       (["--bootstrap", "-1"], "--bootstrap")):
        r = runner.invoke(app, ["eval", "-c", str(moved), "--shards", str(data["val"]), "--out", str(tmp_path / "f"),
                                "--workers", "0", *args])
        assert r.exit_code == 2 and text in r.output, r.output
        assert not (tmp_path / "f").exists()
    r = runner.invoke(app, ["eval", "-c", str(data["ckpt"]), "--shards", str(data["val"]), "--out",
                            str(tmp_path / "g"), "--workers", "0", "--no-mask-only", "--bootstrap", "20"])
    assert r.exit_code == 0 and "not run (--no-mask-only)" in r.output, r.output


@pytest.fixture(scope="module")
def holes(synthetic_scenes, tmp_path_factory) -> dict[str, Path]:
    """Instance- and square-shaped holes over the same synthetic scenes (their classes have their own shapes)."""
    d = tmp_path_factory.mktemp("holes")
    return {f"{shape}-{split}": _build(synthetic_scenes, f"{split}2017", d / f"{shape}-{split}", shape)
            for shape in ("instance", "square") for split in ("train", "val")}


def _untrained(path: Path, train_shards: Path) -> Path:
    """A random-weight context checkpoint whose config names its training shards (the mask-only control's data), as
    checkpoints did before they recorded checkpoint.TrainingShards."""
    from scenectl.data.loader import open_shard_set
    from scenectl.models import create_model

    classes = open_shard_set(train_shards).classes
    torch.manual_seed(0)
    model = create_model("resnet18", len(classes), in_chans=4)
    save_checkpoint(path, {"kind": "context", "arch": "resnet18", "in_chans": 4, "num_classes": len(classes),
                           "model": model.state_dict(), "classes": classes, "image_size": 32, "mask_channel": True,
                           "config": {"data": {"shards": str(train_shards)}}, "cooccurrence": None, "metrics": {}})
    return path


@pytest.mark.slow
def test_mask_only_reads_the_class_from_instance_shaped_holes(holes, tmp_path):
    gain = {}
    for shape in ("instance", "square"):
        ckpt = _untrained(tmp_path / f"{shape}.pt", holes[f"{shape}-train"])
        rep = main(EvalConfig(checkpoint=str(ckpt), shards=[str(holes[f"{shape}-val"])], out=str(tmp_path / shape),
                              workers=0, device="cpu", bootstrap=500,
                              cooccurrence=str(holes[f"{shape}-train"] / "cooccurrence.h5")))
        assert "named by --cooccurrence" in rep["cooccurrence_source"]
        hole, prior = rep["baselines"]["mask_only"], rep["baselines"]["prior"]
        gain[shape] = hole["topk"][1] - prior["topk"][1]
        assert rep["mask_only"]["train_shards"] == str(holes[f"{shape}-train"])  # from config["data"]["shards"]
        if shape == "instance":  # the silhouette names the class: far above the prior, paired interval above 0
            assert hole["topk_ci"][1][0] > prior["topk"][1] and hole["vs_prior"]["topk"][1]["verdict"] == "higher"
            md = (tmp_path / shape / "report.md").read_text()
            assert "Mask-only baseline (shape-leakage probe" in md and "mask-only minus prior: +" in md
    # a square keeps only size and position: it tells much less than the silhouette
    assert gain["square"] < gain["instance"] - 0.05, gain


@pytest.mark.slow
def test_a_checkpoint_without_counts_is_not_scored_with_the_evaluated_splits_own(data, tmp_path):
    """Plausibility and the label-only baselines need the TRAINING split's counts: without them in the checkpoint,
    eval refuses in one line (exit 2, nothing written) unless --cooccurrence names a file."""
    raw = torch.load(data["ckpt"], weights_only=True)
    raw["cooccurrence"] = None
    torch.save(raw, tmp_path / "nocounts.pt")
    args = ["eval", "-c", str(tmp_path / "nocounts.pt"), "--shards", str(data["val"]), "--out", str(tmp_path / "e"),
            "--workers", "0", "--device", "cpu", "--bootstrap", "0", "--no-mask-only"]
    res = runner.invoke(app, args)
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "carries no co-occurrence counts" in lines[0], res.output
    assert "--cooccurrence" in lines[0] and not (tmp_path / "e").exists()
    res = runner.invoke(app, args + ["--cooccurrence", str(data["train"] / "cooccurrence.h5")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rep["cooccurrence_source"].endswith("(named by --cooccurrence)")


@pytest.mark.slow
def test_densenet_is_evaluated_beside_its_hole_only_control(data, tmp_path):
    """train --arch densenet121 trains and evaluates; --hole-only-checkpoint adds model - hole-only (the context
    contribution) as a paired difference; an ordinary checkpoint is refused as the control."""
    base = dict(shards=str(data["train"]), val_shards=str(data["val"]), epochs=1, steps_per_epoch=1, batch_size=8,
                workers=0, device="cpu", log_every=10**6, checkpoint_every=0, shuffle_buffer=16)
    train(TrainConfig(**base, arch="densenet121", out=str(tmp_path / "dn")))
    train(TrainConfig(**base, arch="resnet18", hole_only=True, out=str(tmp_path / "hole")))
    cfg = dict(checkpoint=str(tmp_path / "dn" / "last.pt"), shards=[str(data["val"])], workers=0, device="cpu",
               bootstrap=200, mask_only=False)
    rep = main(EvalConfig(**cfg, out=str(tmp_path / "e"), hole_only_checkpoint=str(tmp_path / "hole" / "last.pt")))
    assert rep["arch"] == "densenet121" and "hole_only" in rep["baselines"]
    d = rep["vs_baselines"]["hole_only"]["topk"][1]
    assert d["difference"] == pytest.approx(rep["topk"][1] - rep["baselines"]["hole_only"]["topk"][1])
    assert d["verdict"] in ("higher", "lower", "inconclusive") and rep["vs_baselines"]["hole_only"]["notes"]
    assert "model - hole-only (context)" in (tmp_path / "e" / "report.md").read_text()
    with pytest.raises(ScenectlError, match="was not trained with --hole-only"):
        main(EvalConfig(**cfg, out=str(tmp_path / "e2"), hole_only_checkpoint=str(data["ckpt"])))
    assert not (tmp_path / "e2").exists()


@pytest.mark.slow
def test_training_shards_named_by_a_checkpoint_are_data(data, tmp_path):
    """A checkpoint's record of its training shards is read from a file: a URL or pipe: command found there is never
    opened or run."""
    ckpt = torch.load(data["ckpt"], weights_only=True)
    marker = tmp_path / "ran"
    ckpt["training_shards"]["spec"] = f"pipe:touch {marker}; cat {data['train']}/shard-000000.tar"
    save_checkpoint(tmp_path / "c.pt", ckpt)
    rep = main(EvalConfig(checkpoint=str(tmp_path / "c.pt"), shards=[str(data["val"])], out=str(tmp_path / "e"),
                          workers=0, device="cpu", bootstrap=0))
    assert not rep["mask_only"]["run"] and "not opened" in rep["mask_only"]["reason"] and not marker.exists()
