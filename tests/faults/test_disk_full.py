"""Disk full (ENOSPC, mocked mid-write) and unwritable output folders: the error names the place, no file that a
later step trusts is left half-written under its final name, and the interrupted work resumes."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
from typer.testing import CliRunner

import webdataset.writer
from faultkit import build, cli_args, shard_hashes, subset
from scenectl.checkpoint import load_checkpoint
from scenectl.cli import app
from scenectl.data import format as F
from scenectl.data import shards as S
from scenectl.data.loader import open_shard_set
from scenectl.errors import ScenectlError
from scenectl.io import atomic_path
from scenectl.train import TrainConfig, train

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
runner = CliRunner()
OPTS = {"maxcount": 4}


def enospc(path=None) -> OSError:
    if path is None:
        return OSError(errno.ENOSPC, "No space left on device")
    return OSError(errno.ENOSPC, "No space left on device", str(path))


class FillingDisk:
    """A file object that accepts `room` bytes in all (shared by every file opened) and then raises ENOSPC, with no
    file name in the error, as `write()` on a real file does: naming the path is scenectl's job."""

    room = 0

    def __init__(self, path, mode):
        self.f, self.path = open(path, mode), path

    def write(self, data):
        if FillingDisk.room < len(data):
            self.f.write(bytes(data[: FillingDisk.room]))
            FillingDisk.room = 0
            raise enospc()  # as a real file object does: errno and message, no path
        FillingDisk.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.fixture(scope="module")
def source(coco_sample, tmp_path_factory):
    return subset(coco_sample, tmp_path_factory.mktemp("full-src"), n=6)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("full-ref") / "set"
    build(source, out, **OPTS)
    return out


def test_build_disk_full_mid_shard_then_resume(source, reference, tmp_path, monkeypatch):
    out = tmp_path / "set"
    sizes = [p.stat().st_size for p in sorted(reference.glob("*.tar"))]  # shard 0, shard 1, ...
    FillingDisk.room = sizes[0] + sizes[1] // 2  # the disk fills in the middle of the second shard
    monkeypatch.setattr(webdataset.writer, "gopen", lambda path, mode="wb": FillingDisk(path, mode))
    with pytest.raises(OSError) as e:
        build(source, out, **OPTS)
    assert e.value.errno == errno.ENOSPC and "shard-000001.tar.partial" in str(e.value)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    journal = json.loads((out / "progress.json").read_text())
    whole = {s["name"]: s["sha256"] for s in journal["shards"]}
    assert shard_hashes(out) == whole  # the only .tar is the finished, journalled shard
    assert whole == {k: v for k, v in shard_hashes(reference).items() if k in whole} and len(whole) == 1
    with pytest.raises(ScenectlError, match="incomplete"):
        open_shard_set(out)
    build(source, out, resume=True, **OPTS)  # space freed: --resume finishes it
    assert shard_hashes(out) == shard_hashes(reference) and not list(out.glob("*.partial"))


def test_build_disk_full_while_writing_the_manifest(source, reference, tmp_path, monkeypatch):
    out = tmp_path / "set"
    real = S.write_json_atomic

    def full(path, obj):
        if path.name == "manifest.json":
            with atomic_path(path) as tmp:
                tmp.write_bytes(json.dumps(obj).encode()[:100])
                raise enospc(tmp)
        real(path, obj)

    monkeypatch.setattr(F, "write_json_atomic", full)  # the format's seal_set writes the manifest
    with pytest.raises(OSError, match="No space left"):
        build(source, out, **OPTS)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists() and not list(out.glob(".manifest.json.tmp-*"))
    assert (out / "progress.json").exists()
    m = build(source, out, resume=True, **OPTS)
    assert shard_hashes(out) == shard_hashes(reference)
    assert m["totals"] == json.loads((reference / "manifest.json").read_text())["totals"]


@pytest.mark.slow
def test_checkpoint_disk_full_keeps_the_last_good_one(real_set, tmp_path, monkeypatch):
    import torch

    out = tmp_path / "run"
    opts = dict(shards=str(real_set), val_shards=str(real_set), out=str(out), image_size=32, batch_size=2,
                epochs=1, steps_per_epoch=3, checkpoint_every=1, workers=0, log_every=1, device="cpu",
                shuffle_buffer=4)
    real, calls = torch.save, []

    def full(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 2:  # last.pt at step 2: half written, then the disk is full
            real(obj, f, *a, **k)
            with open(f, "r+b") as fh:
                fh.truncate(fh.seek(0, 2) // 2)
            raise enospc(f)
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left"):
        train(TrainConfig(**opts))
    monkeypatch.undo()
    assert calls[1].name.startswith(".last.pt.tmp-")  # written under a temporary name ...
    assert not list(out.glob(".*.tmp-*"))  # ... removed on failure
    assert load_checkpoint(out / "last.pt")["step"] == 1  # the last good checkpoint, whole
    assert all(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    assert train(TrainConfig(**opts, resume=True))["step"] == 3


@pytest.mark.slow
def test_eval_disk_full_leaves_no_report(real_set, real_ckpt, tmp_path, monkeypatch):
    import scenectl.evaluate as E

    out = tmp_path / "eval"
    base = ["eval", "-c", str(real_ckpt), "--shards", str(real_set), "--out", str(out), "--workers", "0",
            "--device", "cpu"]
    assert runner.invoke(app, base).exit_code == 0 and (out / "report.json").exists()

    def full(path, *a, **k):
        raise enospc(path)

    monkeypatch.setattr(E, "write_report_md", full)  # the disk fills after predictions.h5 and the plots
    r = runner.invoke(app, base + ["--overwrite"])
    assert r.exit_code == 2 and "No space left on device" in r.output  # one line, no traceback
    assert not (out / "report.json").exists()  # the old report is gone and no new one looks complete
    monkeypatch.undo()
    assert runner.invoke(app, base).exit_code == 0 and json.loads((out / "report.json").read_text())["n"] > 0


# --- an output path that cannot be a folder -------------------------------------------------------------------
def _under_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path / "afile" / "out"


def test_output_under_a_file_is_refused_and_nothing_is_written(source, real_set, real_ckpt, tmp_path):
    bad = _under_a_file(tmp_path)
    with pytest.raises(OSError, match="Not a directory"):
        build(source, bad)
    with pytest.raises(OSError, match="Not a directory"):
        train(TrainConfig(shards=str(real_set), val_shards=str(real_set), out=str(bad), device="cpu", workers=0))
    r = runner.invoke(app, ["eval", "-c", str(real_ckpt), "--shards", str(real_set), "--out", str(bad),
                            "--workers", "0", "--device", "cpu"])
    assert r.exit_code == 2 and "afile" in r.output
    assert (tmp_path / "afile").read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("command", ["build-shards", "train", "eval"])
def test_unwritable_output_is_a_one_line_cli_error(command, source, real_set, real_ckpt, tmp_path):
    bad = _under_a_file(tmp_path)
    args = {"build-shards": ["build-shards", *cli_args(source, bad)],
            "train": ["train", "--shards", str(real_set), "--val-shards", str(real_set), "--out", str(bad),
                      "--device", "cpu", "--workers", "0"],
            "eval": ["eval", "-c", str(real_ckpt), "--shards", str(real_set), "--out", str(bad), "--workers", "0",
                     "--device", "cpu"]}[command]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and str(bad) in r.output, r.output


def test_disk_full_is_a_one_line_cli_error(source, tmp_path, monkeypatch):
    def full(path, obj):
        raise enospc(path)

    monkeypatch.setattr(S, "write_json_atomic", full)
    r = runner.invoke(app, ["build-shards", *cli_args(source, tmp_path / "o")])
    assert r.exit_code == 2 and "No space left on device" in r.output and len(r.output.strip().splitlines()) == 1
