"""`scenectl predict`: the hidden region is exactly build-shards' one, and the CLI's outputs and refusals."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from figures import watch

from scenectl.checkpoint import save_checkpoint
from scenectl.cli import app
from scenectl.data.coco import decode_mask
from scenectl.data.shards import BuildConfig, build_shards
from scenectl.data.synthetic import generate_scenes
from scenectl.models import create_model
from scenectl.hiding import masked_sample, shard_params
from scenectl.predict import PredictConfig, load_upright, object_mask, predict

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Two synthetic images -> a box-shaped, margin-5, 48 px shard set -> an untrained checkpoint that names it."""
    d = tmp_path_factory.mktemp("predict")
    generate_scenes(d / "scenes", n_train=2, n_val=1, seed=3)
    shards = d / "shards"
    build_shards(BuildConfig(out=shards, coco_root=d / "scenes", split="train2017", shape="box", margin=5,
                             image_size=48, min_area=0, workers=1, progress=False), echo=lambda s: None)
    manifest = json.loads((shards / "manifest.json").read_text())
    torch.manual_seed(0)
    model = create_model("resnet18", len(manifest["classes"]), 4)
    ckpt = d / "model.pt"
    save_checkpoint(ckpt, {"kind": "context", "arch": "resnet18", "in_chans": 4, "num_classes": len(manifest["classes"]),
                           "model": model.state_dict(), "classes": manifest["classes"], "cooccurrence": None,
                           "config": {"shards": str(shards), "image_size": 32, "mask_channel": True}})
    ann = json.loads((d / "scenes" / "annotations" / "instances_train2017.json").read_text())
    return {"dir": d, "shards": shards, "ckpt": ckpt, "ann": ann, "images": d / "scenes" / "train2017"}


def test_params_come_from_the_training_shards(setup):
    from scenectl.checkpoint import read_checkpoint

    params, source = shard_params(read_checkpoint(setup["ckpt"]))
    assert (params["shape"], params["margin"], params["image_size"]) == ("box", 5, 48) and "manifest" in source


@pytest.mark.parametrize("how", ["mask-file", "polygon"])
def test_hides_exactly_what_build_shards_hid(setup, how, tmp_path):
    """The instance's own mask through predict's path gives build-shards' mask.png and jpg, pixel for pixel."""
    sample = next(iter(wds.WebDataset(str(sorted(setup["shards"].glob("*.tar"))[0]), shardshuffle=False)))
    meta = json.loads(sample["json"])
    a = next(x for x in setup["ann"]["annotations"] if x["id"] == meta["annotation_id"])
    img = next(x for x in setup["ann"]["images"] if x["id"] == meta["image_id"])
    m = decode_mask(a["segmentation"], img["height"], img["width"])
    if how == "mask-file":
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
        cfg = PredictConfig(mask_file=str(tmp_path / "m.png"))
    else:
        cfg = PredictConfig(polygon=",".join(str(v) for v in a["segmentation"][0]))
    obj, notes = object_mask(cfg, img["width"], img["height"])
    assert notes == [] and np.array_equal(obj, m)
    dec = load_upright(setup["images"] / img["file_name"], 48)
    params = {"shape": "box", "fill": "mean", "margin": 5, "image_size": 48}
    scene, mask, frac = masked_sample(dec, obj, params, seed=0)
    assert np.array_equal(mask, np.asarray(Image.open(io.BytesIO(sample["mask.png"]))))
    assert np.array_equal(scene, np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
    assert frac == pytest.approx(meta["area_fraction"])


@pytest.mark.slow
def test_cli_prints_top10_and_draws(setup, tmp_path):
    image = setup["images"] / setup["ann"]["images"][0]["file_name"]
    out = tmp_path / "pred.png"
    with watch() as drawn:
        r = runner.invoke(app, ["predict", "-c", str(setup["ckpt"]), str(image), "--box", "100,60,50,40", "--out",
                                str(out)])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0] == f"checkpoint: {setup['ckpt']} (resnet18, 16 classes, context)"  # which model answered
    assert lines[1].startswith("hidden: box, fill mean, margin 5 px") and "manifest of" in lines[1]
    # the whole image (its own size) with the hidden region outlined, beside the model's input, and the source line
    fig = drawn[0].figure
    whole, model_input = fig.axes[0], fig.axes[1]
    assert "whole image" in whole.get_title() and "model input" in model_input.get_title()
    assert whole.images[0].get_array().shape[:2] != model_input.images[0].get_array().shape[:2]
    assert whole.collections, "the hidden region is outlined on the whole image"
    assert any(str(setup["ckpt"]) in t.get_text() for t in fig.texts)
    ranked = [ln for ln in lines if re.match(r"\s*\d+\. ", ln)]
    assert len(ranked) == 10
    probs = [float(ln.split()[-1].rstrip("%")) for ln in ranked]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
    assert out.stat().st_size > 0
    res = predict(PredictConfig(checkpoint=str(setup["ckpt"]), image=str(image), box="100,60,50,40", shape="circle",
                                top=16))
    assert res["params"]["shape"] == "circle" and sum(t["probability"] for t in res["top"]) == pytest.approx(1, abs=1e-4)


def test_instance_polygon_and_clipping(setup):
    image = setup["images"] / setup["ann"]["images"][0]["file_name"]
    base = ["predict", "-c", str(setup["ckpt"]), str(image)]
    r = runner.invoke(app, base + ["--shape", "instance", "--polygon", "10,10,80,12,40,70", "--top", "3"])
    assert r.exit_code == 0 and "hidden: instance" in r.output, r.output
    r = runner.invoke(app, base + ["--box", "-20,-20,60,60"])
    assert r.exit_code == 0 and "clipped" in r.output, r.output


@pytest.mark.slow
def test_refusals(setup, tmp_path):
    image = setup["images"] / setup["ann"]["images"][0]["file_name"]
    base = ["predict", "-c", str(setup["ckpt"])]

    def fails(args, text):
        r = runner.invoke(app, base + args)
        assert r.exit_code == 2 and text in r.output and len(r.output.strip().splitlines()) == 1, r.output

    fails([str(tmp_path / "nope.jpg"), "--box", "1,1,5,5"], "image not found")
    fails([str(image), "--box", "5000,5000,10,10"], "outside")
    fails([str(image), "--box", "1,1,0,5"], "positive w and h")
    fails([str(image)], "exactly one of")
    fails([str(image), "--box", "1,1,5,5", "--polygon", "1,1,5,1,5,5"], "exactly one of")
    fails([str(image), "--shape", "hexagon", "--box", "1,1,5,5"], "--shape")
    Image.new("L", (7, 7), 255).save(tmp_path / "small.png")
    fails([str(image), "--shape", "instance", "--mask-file", str(tmp_path / "small.png")], "7x7")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    fails([str(tmp_path / "bad.jpg"), "--box", "1,1,5,5"], "not a readable image")


@pytest.mark.parametrize("option,value,why", [
    ("--box", "nan,10,20,20", "finite|beyond|outside"), ("--box", "0,0,inf,5", "finite|beyond|outside"),
    ("--box", "1e300,0,5,5", "beyond|outside"), ("--polygon", "0,0,nan,5,5,5", "finite|beyond|outside"),
    ("--polygon", "0,0,1e12,5,5,1e12", "beyond|outside"), ("--margin", "100001", "integer (in|from)"),
])
def test_hostile_user_geometry_is_one_line_before_any_pixel_work(option, value, why, setup, tmp_path):
    image = setup["images"] / setup["ann"]["images"][0]["file_name"]
    args = ["predict", str(image), "-c", str(setup["ckpt"]), "--out", str(tmp_path / "p.png")]
    args += [option, value] if option != "--margin" else ["--box", "1,1,10,10", option, value]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert re.search(why, r.output) and r.output.count("\n") == 1 and option in r.output
    assert not (tmp_path / "p.png").exists()
