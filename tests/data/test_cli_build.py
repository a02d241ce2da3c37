"""The build-shards, merge-manifests and inspect-shards commands, driven through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from scenectl.cli import app
from scenectl.data import shards as S

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy-2 notice
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_root(coco_sample, tmp_path_factory) -> Path:
    """A COCO-layout root holding the first 6 images of coco-sample's val2017 (images linked, not copied)."""
    root = tmp_path_factory.mktemp("coco")
    data = json.loads((coco_sample / "annotations" / "instances_val2017.json").read_text())
    data["images"] = sorted(data["images"], key=lambda im: im["id"])[:6]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    (root / "val2017").symlink_to(coco_sample / "val2017")
    return root


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_explains_defaults_and_example():
    r = invoke("build-shards", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for needle in ("SCENECTL_COCO_ROOT", "data/scenes", "train2017 and val2017", "shards/{split}", "1024",
                   "scenectl build-shards --shape circle --max-area 0.3", "letterboxed", "124,116,104"):
        assert needle in text, needle
    for cmd in ("merge-manifests", "inspect-shards"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "Example" in r.output


def test_build_circle_then_inspect(tiny_root, tmp_path):
    out = tmp_path / "x"
    r = invoke("build-shards", "--coco-root", tiny_root, "--split", "val2017", "--shape", "circle", "--max-area", "0.3",
               "--out", out, "--image-size", "64", "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "samples in" in r.output and "skipped: crowd" in r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["params"]["shape"] == "circle" and m["params"]["max_area"] == 0.3 and m["params"]["split"] == "val2017"
    areas = [json.loads(s["json"])["area_fraction"] for s in wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False)]
    assert len(areas) == m["totals"]["samples"] > 0 and max(areas) <= 0.3

    r = invoke("inspect-shards", out, "--n", "4", "--out", tmp_path / "sheet.png")
    assert r.exit_code == 0, r.output
    assert "samples per class:" in r.output and "hidden area / image area:" in r.output and "shape=circle" in r.output
    assert Image.open(tmp_path / "sheet.png").size[0] > 100


def test_parts_then_merge_manifests(tiny_root, tmp_path):
    out = tmp_path / "p"
    for i in range(2):
        r = invoke("build-shards", "--coco-root", tiny_root, "--split", "val2017", "--out", out, "--part", f"{i}/2",
                   "--image-size", "32", "--workers", "1")
        assert r.exit_code == 0, r.output
    r = invoke("inspect-shards", out)
    assert r.exit_code == 2 and "merge-manifests" in r.output
    r = invoke("merge-manifests", out)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "manifest.json").read_text())["parts"] == 2


@pytest.mark.parametrize("args, message", [
    (["--split", "val2017", "--split", "train2017", "--out", "flat"], "must contain {split}"),
    (["--split", "val2017", "--max-area", "1.5"], "--max-area must be in (0, 1]"),
    (["--split", "test2017"], "unknown split 'test2017'"),
    (["--split", "val2017", "--shape", "hexagon"], "--shape must be one of"),
    (["--split", "val2017", "--annotations", "a.json", "--images", "."], "--split goes with --coco-root"),
    (["--split", "val2017", "--part", "2/2"], "--part must be i/n"),
])
def test_bad_options_are_one_line_errors(tiny_root, tmp_path, args, message):
    r = invoke("build-shards", "--coco-root", tiny_root, "--out", tmp_path / "o-{split}", *args)
    assert r.exit_code == 2
    assert message in r.output and r.output.strip().count("\n") == 0  # one line


def test_defaults_chain_generates_synthetic_scenes(tmp_path, monkeypatch):
    """No --coco-root and no $SCENECTL_COCO_ROOT: data/scenes is generated, then both splits are built."""
    synthetic = pytest.importorskip("scenectl.data.synthetic")
    real = synthetic.generate_scenes
    calls = []

    def small_generate(out, seed=0, **kw):  # the real generator, fewer images to stay quick
        calls.append((Path(out), seed))
        return real(out=out, n_train=12, n_val=6, seed=seed)

    monkeypatch.setattr(synthetic, "generate_scenes", small_generate)
    monkeypatch.delenv(S.COCO_ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    r = invoke("build-shards", "--image-size", "32", "--workers", "1", "--seed", "3")
    assert r.exit_code == 0, r.output
    assert calls == [(Path("data/scenes"), 3)] and "generating synthetic scenes" in r.output
    for split in ("train2017", "val2017"):
        assert json.loads((tmp_path / "shards" / split / "manifest.json").read_text())["totals"]["samples"] > 0
    r = invoke("build-shards", "--image-size", "32", "--workers", "1", "--seed", "3", "--overwrite")
    assert r.exit_code == 0 and len(calls) == 1  # data/scenes exists now: not generated again


def test_object_task_via_cli(tiny_root, tmp_path):
    out = tmp_path / "obj"
    r = invoke("build-shards", "--coco-root", tiny_root, "--split", "val2017", "--task", "object", "--out", out,
               "--image-size", "48", "--workers", "1")
    assert r.exit_code == 0, r.output
    sample = next(iter(wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False)))
    assert set(sample) >= {"jpg", "cls", "json"} and "mask.png" not in sample
    assert json.loads((out / "manifest.json").read_text())["task"] == "object"
    import io

    assert np.asarray(Image.open(io.BytesIO(sample["jpg"]))).shape == (48, 48, 3)
