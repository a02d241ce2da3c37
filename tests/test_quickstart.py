"""`scenectl quickstart` at a tiny size: the whole chain runs from library calls and the model beats the prior."""

from __future__ import annotations

import json

import h5py
import pytest
from typer.testing import CliRunner

from scenectl.cli import app
from scenectl.quickstart import QuickstartConfig, quickstart

runner = CliRunner()


@pytest.mark.slow
def test_quickstart_chain_beats_the_prior(tmp_path):
    out = tmp_path / "qs"
    lines = []
    rep = quickstart(QuickstartConfig(out=str(out), train_images=120, val_images=40, image_size=32, epochs=4,
                                      batch_size=16, workers=0, device="cpu"), echo=lines.append)
    text = "\n".join(lines)
    assert "[4/4] eval" in text and "model - prior" in text and str(out / "run" / "eval") in text
    ev = out / "run" / "eval"
    for f in ("report.json", "report.md", "predictions.h5", "confusion.png", "per_class.png", "config.json"):
        assert (ev / f).is_file(), f
    for f in ("scenes/annotations/instances_val2017.json", "shards/train2017/manifest.json",
              "shards/val2017/manifest.json", "run/best.pt", "config.json"):
        assert (out / f).is_file(), f
    disk = json.loads((ev / "report.json").read_text())
    assert disk["n"] == rep["n"] == json.loads((out / "shards/val2017/manifest.json").read_text())["totals"]["samples"]
    prior = disk["baselines"]["prior"]
    # context is learnable: the model clearly beats the class prior, micro and class-balanced
    assert disk["topk"]["1"] > prior["topk"]["1"] + 0.05, (disk["topk"], prior["topk"])
    assert disk["topk_balanced"]["1"] > prior["topk_balanced"]["1"] + 0.05
    with h5py.File(ev / "predictions.h5", "r") as f:
        assert f["labels"].shape == (disk["n"],)
    # a second run into the same folder is refused without --overwrite
    r = runner.invoke(app, ["quickstart", "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_quickstart_bad_options(tmp_path):
    r = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--epochs", "0"])
    assert r.exit_code == 2 and "--epochs" in r.output
    r = runner.invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--coco-root", str(tmp_path / "none")])
    assert r.exit_code == 2 and "--coco-root" in r.output
    assert "Example" in runner.invoke(app, ["quickstart", "--help"]).output
    # README's two lines write to different folders: quickstart/ and quickstart-coco/
    assert QuickstartConfig().resolved().out == "quickstart"
    assert QuickstartConfig(coco_root=str(tmp_path)).resolved().out == "quickstart-coco"
    assert QuickstartConfig(out="mine", coco_root=str(tmp_path)).resolved().out == "mine"
