"""No command writes into or deletes from a folder another command owns (scenectl.folders, issue 11).

For each command, its output is pointed at a folder of every other kind (made with `folders.claim(path, kind)` plus
a file), with and without --overwrite (and --resume where the command has it): the command must refuse in one line
and leave every file of that folder as it was. A command that writes one file (a PNG) is pointed inside the folder.

To add a command: an argv builder in ARGV (output path, inputs -> argv), its own kind in OWN (None for a command that
writes one file: every kind is then a target) and its flag sets in FLAGS.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

import kit
from scenectl.cli import app
from scenectl.data.loader import open_shard_set
from scenectl.data.shards import BuildConfig, build_shards
from scenectl.folders import KINDS, claim

runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(synthetic_scenes, synthetic_shards, tmp_path_factory) -> dict:
    """Valid inputs for every command, so that each gets as far as its output folder."""
    d = tmp_path_factory.mktemp("guard-inputs")
    classes = open_shard_set(synthetic_shards["val"]).classes
    parts = d / "parts"  # a build in one part, whose part manifest merge-manifests would merge
    build_shards(BuildConfig(out=parts, coco_root=synthetic_scenes, split="val2017", image_size=32, part="0/1",
                             workers=1, progress=False), echo=lambda s: None)
    return {"scenes": synthetic_scenes, "train": synthetic_shards["train"], "val": synthetic_shards["val"],
            "ctx": kit.checkpoint(d / "ctx.pt", classes, 4,
                                  cooccurrence=open_shard_set(synthetic_shards["train"]).cooccurrence().to_state()),
            "obj": kit.checkpoint(d / "obj.pt", classes, 3),
            "image": next((synthetic_scenes / "val2017").glob("*.jpg")), "parts": parts}


def _with_parts(out: Path, i: dict) -> Path:
    """Put a complete part manifest and its shards into `out`, so merge-manifests gets as far as writing."""
    for p in i["parts"].iterdir():
        if p.name.startswith(("manifest.part-", "shard-")):
            shutil.copy(p, out / p.name)
    return out


def _build(out: Path, i: dict) -> list:
    return ["build-shards", "--coco-root", i["scenes"], "--split", "val2017", "--out", out, "--image-size", "32",
            "--workers", "1"]


ARGV: dict[str, Callable[[Path, dict], list]] = {
    "eval": lambda out, i: ["eval", "-c", i["ctx"], "--shards", i["val"], "--out", out, "--workers", "0",
                            "--device", "cpu"],
    "fuse": lambda out, i: ["fuse", "--context", i["ctx"], "--object", i["obj"], "--shards", i["val"], "--out", out,
                            "--device", "cpu"],
    "build-ooc": lambda out, i: ["build-ooc", "--coco-root", i["scenes"], "--split", "val2017", "--train-cooccurrence",
                                 i["train"], "--out", out, "--image-size", "32", "--min-area", "64"],
    "quickstart": lambda out, i: ["quickstart", "--out", out, "--coco-root", i["scenes"], "--device", "cpu"],
    "build-shards": _build,
    "build-shards --part": lambda out, i: _build(out, i) + ["--part", "1/2"],
    "merge-manifests": lambda out, i: ["merge-manifests", _with_parts(out, i)],
    "predict": lambda out, i: ["predict", "-c", i["ctx"], i["image"], "--box", "8,8,24,24", "--out", out / "p.png",
                               "--device", "cpu"],
    "cooccurrence": lambda out, i: ["cooccurrence", i["train"], "--out", out / "c.png"],
    "inspect-shards": lambda out, i: ["inspect-shards", i["val"], "--out", out / "sheet.png"],
    "export-imagefolder": lambda out, i: ["export-imagefolder", i["val"], out, "--member", "jpg"],
}
OWN = {"eval": "eval", "fuse": "fuse", "build-ooc": "ooc", "quickstart": "quickstart", "build-shards": "shards",
       "build-shards --part": "shards", "merge-manifests": "shards", "predict": None, "cooccurrence": None,
       "inspect-shards": None, "export-imagefolder": "export"}
FLAGS = {"eval": [[], ["--overwrite"]], "fuse": [[], ["--overwrite"]], "build-ooc": [[], ["--overwrite"]],
         "quickstart": [[], ["--overwrite"]], "build-shards": [[], ["--overwrite"], ["--resume"]],
         "build-shards --part": [[], ["--overwrite"], ["--resume"]], "export-imagefolder": [[], ["--overwrite"]]}


def _cases() -> list:
    """Every (command, kind of folder) pair. The fast tier keeps one pair of every third command, its target kind
    rotating so that the fast pairs meet different kinds (tests/test_folders.py checks the guard itself in the fast
    tier); the rest of the matrix is marked slow."""
    cases = []
    for i, cmd in enumerate(ARGV):
        kinds = [kind for kind in sorted(KINDS) if kind != OWN[cmd]]
        cases += [pytest.param(cmd, kind, id=f"{cmd}->{kind}", marks=() if j == i % len(kinds) and i % 3 == 0 else pytest.mark.slow)
                  for j, kind in enumerate(kinds)]
    return cases


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, kind", _cases())
def test_refuses_a_folder_of_another_kind(command, kind, inputs, tmp_path):
    target = tmp_path / kind
    with claim(target, kind):
        (target / "config.json").write_text('{"mine": true}\n')
    for flags in FLAGS.get(command, [[]]):
        argv = [str(a) for a in ARGV[command](target, inputs) + flags]
        before = _files(target)
        r = runner.invoke(app, argv)
        what = f"written by `scenectl {KINDS[kind].command}`" if OWN[command] else f"is inside {KINDS[kind].what}"
        assert r.exit_code == 2 and what in r.output and len(r.output.strip().splitlines()) == 1, (argv, r.output)
        assert _files(target) == before, argv


def test_the_table_covers_every_command_it_names():
    assert set(ARGV) == set(OWN) and set(FLAGS) <= set(ARGV)
    assert all(kind is None or kind in KINDS for kind in OWN.values())


def test_inspect_shards_draws_beside_the_set_not_in_it(inputs, tmp_path):
    s = tmp_path / "set"
    shutil.copytree(inputs["val"], s)
    before = _files(s)
    r = runner.invoke(app, ["inspect-shards", str(s), "--n", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "set-contact-sheet.png").stat().st_size > 0 and _files(s) == before


@pytest.mark.parametrize("which", ["image", "ctx"])
def test_predict_never_writes_over_its_own_inputs(which, inputs, tmp_path):
    victim = tmp_path / inputs[which].name
    shutil.copy(inputs[which], victim)
    image = victim if which == "image" else inputs["image"]
    ckpt = victim if which == "ctx" else inputs["ctx"]
    before = victim.read_bytes()
    r = runner.invoke(app, ["predict", "-c", str(ckpt), str(image), "--box", "8,8,24,24", "--out", str(victim),
                            "--device", "cpu"])
    assert r.exit_code == 2 and "is the command's input" in r.output and str(victim) in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and victim.read_bytes() == before


def test_cooccurrence_never_writes_over_the_file_it_reads(inputs, tmp_path):
    c = tmp_path / "c.h5"
    shutil.copy(Path(inputs["train"]) / "cooccurrence.h5", c)
    before = c.read_bytes()
    r = runner.invoke(app, ["cooccurrence", str(c), "--out", str(c)])
    assert r.exit_code == 2 and "is the command's input" in r.output and len(r.output.strip().splitlines()) == 1
    assert c.read_bytes() == before


def test_eval_default_out_beside_a_checkpoint_inside_a_shard_set_is_refused(inputs, tmp_path):
    s = tmp_path / "set"
    shutil.copytree(inputs["val"], s)
    shutil.copy(inputs["ctx"], s / "ctx.pt")
    before = _files(s)
    r = runner.invoke(app, ["eval", "-c", str(s / "ctx.pt"), "--shards", str(s), "--workers", "0", "--device", "cpu"])
    assert r.exit_code == 2 and "lies inside a shard set" in r.output, r.output
    assert _files(s) == before


@pytest.mark.slow
def test_export_overwrite_leaves_exactly_the_new_export(inputs, tmp_path):
    out = tmp_path / "x"
    r = runner.invoke(app, ["export-imagefolder", str(inputs["val"]), str(out), "--member", "jpg"])
    assert r.exit_code == 0, r.output
    stale = out / "zz-old-class"
    stale.mkdir()
    (stale / "old.jpg").write_bytes(b"j")  # a class folder of an earlier export (other classes or images)
    r = runner.invoke(app, ["export-imagefolder", str(inputs["val"]), str(out), "--member", "jpg", "--overwrite"])
    assert r.exit_code == 0, r.output
    listed = json.loads((out / "export.json").read_text())
    jpgs = sorted(p for p in out.rglob("*.jpg"))
    assert not stale.exists() and len(jpgs) == listed["images"], (len(jpgs), listed)
