"""Hostile HDF5 (issue 23, class "HDF5"): cooccurrence.h5 and predictions.h5 whose datasets live in other files
(external storage, external links, virtual datasets), soft links, and datasets declared huge. Every .h5 scenectl
reads goes through scenectl.h5.open_h5: a one-line error naming the file (exit 2), never another file's bytes;
verify-shards reports such a cooccurrence.h5 even when the manifest's sha256 of it matches."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from scenectl.cli import app
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.errors import ScenectlError
from scenectl.predictions import read_predictions

runner = CliRunner()
SECRET = np.arange(9, dtype=np.int64).reshape(3, 3) * 1000 + 7  # "another file's bytes"


def _sound(path: Path) -> Path:
    Cooccurrence.count([[0, 1], [1, 2], [2]], [1, 2, 3], ["a", "b", "c"]).save(path)
    return path


def _external_storage(h5: Path, other: Path, secret: np.ndarray = SECRET) -> None:
    other.write_bytes(secret.tobytes())
    with h5py.File(h5, "a") as f:
        del f["cooccurrence"]
        f.create_dataset("cooccurrence", shape=secret.shape, dtype=np.int64, external=[(str(other), 0, secret.nbytes)])


def _external_link(h5: Path, other: Path, secret: np.ndarray = SECRET) -> None:
    with h5py.File(other, "w") as g:
        g["data"] = secret
    with h5py.File(h5, "a") as f:
        del f["cooccurrence"]
        f["cooccurrence"] = h5py.ExternalLink(str(other), "data")


def _virtual(h5: Path, other: Path, secret: np.ndarray = SECRET) -> None:
    with h5py.File(other, "w") as g:
        g["data"] = secret
    layout = h5py.VirtualLayout(shape=secret.shape, dtype=np.int64)
    layout[:] = h5py.VirtualSource(str(other), "data", shape=secret.shape)
    with h5py.File(h5, "a") as f:
        del f["cooccurrence"]
        f.create_virtual_dataset("cooccurrence", layout)


def _soft_link(h5: Path, other: Path, secret: np.ndarray = SECRET) -> None:
    with h5py.File(h5, "a") as f:
        f["hidden"] = secret
        del f["cooccurrence"]
        f["cooccurrence"] = h5py.SoftLink("/hidden")


def _declared_huge(h5: Path, other: Path, secret: np.ndarray = SECRET) -> None:
    with h5py.File(h5, "a") as f:  # chunked, never written: 8 TB allocated on read
        del f["cooccurrence"], f["image_counts"], f["instance_counts"], f["coco_ids"], f["names"]
        n = 1_000_000
        f.create_dataset("cooccurrence", shape=(n, n), dtype=np.int64, chunks=(1024, 1024))
        for name in ("image_counts", "instance_counts", "coco_ids"):
            f.create_dataset(name, shape=(n,), dtype=np.int64, chunks=(1024,))
        f.create_dataset("names", shape=(n,), dtype=h5py.string_dtype(), chunks=(1024,))


CRAFTS = {"external storage": (_external_storage, "external storage"), "external link": (_external_link, "ExternalLink"),
          "virtual dataset": (_virtual, "virtual"), "soft link": (_soft_link, "SoftLink"),
          "declared huge": (_declared_huge, "more than is read")}


@pytest.mark.parametrize("case", sorted(CRAFTS))
def test_cooccurrence_never_reads_another_files_bytes(case, tmp_path):
    craft, why = CRAFTS[case]
    h5 = _sound(tmp_path / "c.h5")
    craft(h5, tmp_path / "other.bin")
    r = runner.invoke(app, ["cooccurrence", str(h5), "--out", str(tmp_path / "c.png")])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and str(h5) in lines[0] and why in lines[0], r.output
    assert "7007" not in r.output  # SECRET's values never printed as counts


def test_a_sound_file_reads_as_before(tmp_path):
    c = Cooccurrence.load(_sound(tmp_path / "c.h5"))
    assert c.names == ["a", "b", "c"] and c.cooccurrence[1, 1] == 2 and c.n_images == 3


@pytest.mark.parametrize("case", ["external storage", "external link"])
def test_verify_shards_reports_a_cooccurrence_file_reading_other_files(case, synthetic_shards, tmp_path):
    s = tmp_path / "set"
    shutil.copytree(synthetic_shards["train"], s)
    craft, why = CRAFTS[case]
    h5 = s / "cooccurrence.h5"
    with h5py.File(h5, "a") as f:  # keep the real classes, swap the counts for another file's
        counts = f["cooccurrence"][()]
    craft(h5, tmp_path / "other.bin", counts + 1)
    manifest = json.loads((s / "manifest.json").read_text())
    manifest.setdefault("files", {})["cooccurrence.h5"] = hashlib.sha256(h5.read_bytes()).hexdigest()  # hash matches
    (s / "manifest.json").write_text(json.dumps(manifest))
    r = runner.invoke(app, ["verify-shards", str(s), "--json", "--no-progress"])
    report = json.loads(r.output)
    assert r.exit_code == 1 and not report["ok"], r.output
    assert any(p["kind"] == "unsafe_file" and why in p["message"] for p in report["problems"]), report["problems"]


def _predictions(path: Path) -> Path:
    n, c = 4, 3
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "scenectl-predictions/1"
        f.attrs["k"] = 2
        f.create_dataset("keys", data=np.array([f"k{i}" for i in range(n)], dtype=object),
                         dtype=h5py.string_dtype())
        f["labels"] = np.arange(n) % c
        f["image_ids"] = np.arange(n)
        f["topk_indices"] = np.tile([0, 1], (n, 1))
        f["topk_scores"] = np.full((n, 2), 0.5, np.float32)
        f["logits"] = np.zeros((n, c), np.float32)
        f["visible_flat"] = np.zeros(0, np.int64)
        f["visible_offsets"] = np.zeros(n + 1, np.int64)
        f.create_dataset("class_names", data=np.array(["a", "b", "c"], dtype=object), dtype=h5py.string_dtype())
    return path


def test_predictions_whose_logits_link_to_another_eval_are_refused(tmp_path):
    other = _predictions(tmp_path / "other.h5")
    with h5py.File(other, "a") as f:
        f["logits"][...] = 9.0
    p = _predictions(tmp_path / "p.h5")
    assert read_predictions(p).logits.max() == 0.0
    with h5py.File(p, "a") as f:
        del f["logits"]
        f["logits"] = h5py.ExternalLink(str(other), "logits")
    with pytest.raises(ScenectlError, match=r"p\.h5: 'logits' is a ExternalLink"):
        read_predictions(p)
    with h5py.File(p, "a") as f:
        del f["logits"]
        f.create_dataset("logits", shape=(4, 5), dtype=np.float32)  # 5 classes where class_names lists 3
    with pytest.raises(ScenectlError, match=r"'logits' has C = 5 where another dataset has 3"):
        read_predictions(p)
