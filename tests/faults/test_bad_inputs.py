"""Corrupt and mismatched inputs on real COCO data: damaged shards met by `scenectl eval`, broken annotation
files met by build-shards, and checkpoints / shard sets / resumes that do not belong together. Each gives the
documented behaviour: one 'error:' line naming the file (exit 2), or skip-and-count where the command offers it.
(What the owners' tests already prove is listed in docs/reliability.md and not repeated here.)"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from faultkit import build, rewrite_tar, subset
from scenectl.checkpoint import load_checkpoint, save_checkpoint
from scenectl.cli import app
from scenectl.errors import ScenectlError
from scenectl.models import create_model
from scenectl.train import TrainConfig, load_data, train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
runner = CliRunner()
S1 = "shard-000001.tar"


def _one_line_error(r, *texts):
    last = r.output.strip().splitlines()[-1] if r.output.strip() else ""
    assert r.exit_code == 2 and last.startswith("error: ") and "Traceback" not in r.output, r.output
    assert all(t in last for t in texts), last


def _set_member(suffix, data):
    def edit(members):
        key = members[0][0].name.split(".", 1)[0]
        out = [(m, data if m.name == f"{key}.{suffix}" else d) for m, d in members]
        return [(m, d) for m, d in out if d is not None]
    return edit


DAMAGE = {
    "truncated tar": (lambda d: (d / S1).write_bytes((d / S1).read_bytes()[:7000]), S1),
    "jpg not a JPEG": (lambda d: rewrite_tar(d / S1, _set_member("jpg", b"\xff\xd8garbage")), "'jpg' is not a readable"),
    "mask.png not a PNG": (lambda d: rewrite_tar(d / S1, _set_member("mask.png", b"PNG?")), "'mask.png' is not a readable"),
    "json not JSON": (lambda d: rewrite_tar(d / S1, _set_member("json", b'{"cls": ')), "'json' is not valid"),
    "sample missing cls": (lambda d: rewrite_tar(d / S1, _set_member("cls", None)), "'cls' is missing"),
}


@pytest.mark.parametrize("damage", [pytest.param(d, marks=() if k == 0 else pytest.mark.slow)
                                    for k, d in enumerate(DAMAGE)])  # one damage kind in the fast tier
def test_eval_names_the_damaged_shard(real_set, real_ckpt, tmp_path, damage):
    spoil, text = DAMAGE[damage]
    folder = shutil.copytree(real_set, tmp_path / "set")
    spoil(folder)
    r = runner.invoke(app, ["eval", "-c", str(real_ckpt), "--shards", str(folder), "--out", str(tmp_path / "e"),
                            "--workers", "0", "--device", "cpu", "--batch-size", "64"])
    _one_line_error(r, S1, text)
    assert not (tmp_path / "e" / "report.json").exists()


# --- annotation files -------------------------------------------------------------------------------------------
def test_annotation_for_a_missing_image_record_is_refused(coco_sample, tmp_path):
    def orphan(data):
        data["annotations"][0]["image_id"] = 999_999_999
    with pytest.raises(ScenectlError, match=r"annotation \d+ .*image_id 999999999.*not in 'images'"):
        build(subset(coco_sample, tmp_path / "src", n=3, edit=orphan), tmp_path / "o")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


NASTY = [None, "polygon", [["a", "b", "c", "d", "e", "f"]], [[1, 2, 3]], [[float("nan")] * 6],
         [[-50, -50, -10, -50, -10, -10]], [[1e9, 1e9, 2e9, 1e9, 2e9, 2e9]], {"counts": "??", "size": [1, 1]},
         {"counts": [5, 5], "size": "big"}, [[]], 42]


def test_nasty_segmentations_are_counted_not_crashing(coco_sample, tmp_path):
    """Segmentations of every broken shape: each is skipped as bad_annotation; the rest of the build goes on."""
    def spoil(data):
        for a, segm in zip(data["annotations"], NASTY):
            a["segmentation"], a["iscrowd"] = segm, 0
    src = subset(coco_sample, tmp_path / "src", n=8, edit=spoil)
    m = build(src, tmp_path / "o", min_area=0, max_area=1.0)
    assert m["skipped"]["bad_annotation"] == len(NASTY) and m["totals"]["samples"] > 0
    assert m["totals"]["samples"] + sum(m["skipped"].values()) == m["totals"]["instances"]


# --- things that do not belong together --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_build(coco_sample, tmp_path_factory):
    """A real build whose annotation file lacks its last category (real COCO: 'toothbrush'): one class fewer."""
    def drop(data):
        gone = max(c["id"] for c in data["categories"])
        data["categories"] = [c for c in data["categories"] if c["id"] != gone]
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] != gone]
    root = tmp_path_factory.mktemp("other")
    out = root / "set"
    build(subset(coco_sample, root / "src", n=6, edit=drop), out, maxcount=8)
    return out


def test_train_refuses_sets_of_different_builds(real_set, other_build, tmp_path):
    with pytest.raises(ScenectlError, match="class lists differ"):
        load_data(TrainConfig(shards=str(real_set), val_shards=str(other_build)))


@pytest.mark.slow
def test_resume_refuses_another_class_list(real_set, other_build, tmp_path):
    out = tmp_path / "run"
    kw = dict(out=str(out), image_size=32, batch_size=2, epochs=1, steps_per_epoch=2, workers=0, device="cpu",
              log_every=0, checkpoint_every=0, shuffle_buffer=4, max_steps=1)
    train(TrainConfig(shards=str(real_set), val_shards=str(real_set), **kw))
    before = load_checkpoint(out / "last.pt")["step"]
    with pytest.raises(ScenectlError, match="another class list"):
        train(TrainConfig(shards=str(other_build), val_shards=str(other_build), resume=True, **kw))
    assert load_checkpoint(out / "last.pt")["step"] == before  # the refused resume changed nothing


@pytest.mark.slow
def test_eval_and_fuse_refuse_other_classes(real_ckpt, other_build, tmp_path):
    r = runner.invoke(app, ["eval", "-c", str(real_ckpt), "--shards", str(other_build), "--out", str(tmp_path / "e")])
    _one_line_error(r, "class list differs")
    classes = json.loads((other_build / "manifest.json").read_text())["classes"]
    obj = tmp_path / "object.pt"
    save_checkpoint(obj, {"kind": "distill", "arch": "resnet18", "in_chans": 3, "num_classes": len(classes),
                          "image_size": 64, "classes": classes,
                          "model": create_model("resnet18", len(classes), 3).state_dict()})
    r = runner.invoke(app, ["fuse", "--context", str(real_ckpt), "--object", str(obj), "--shards", str(other_build),
                            "--out", str(tmp_path / "f")])
    _one_line_error(r, "name different classes")


def test_truncated_checkpoint_is_a_one_line_error(real_ckpt, real_set, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(real_ckpt.read_bytes()[: real_ckpt.stat().st_size // 3])
    r = runner.invoke(app, ["eval", "-c", str(cut), "--shards", str(real_set), "--out", str(tmp_path / "e")])
    _one_line_error(r, "cut.pt", "truncated or corrupt")
    with pytest.raises(Exception):
        torch.load(cut, weights_only=True)  # (really unreadable)
