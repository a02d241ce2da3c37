"""The one shard-set format module (scenectl.data.format): both builders write through its sink and seal, the reader
and verify-shards read through its manifest parser, member reader and sample checks. Round trips: write with the
sink, read with the reader, verify with verify-shards, for a build-shards set and a build-ooc set."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from kit import write_shards
from test_shards import build, subset

from scenectl.data.coco import ClassTable, load_coco
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.format import (TIMM_INFO, Problem, SampleSpec, ShardSink, SinkTarget, manifest_problems,
                                  parse_manifest, sample_problems)
from scenectl.data.loader import open_shard_set, raw_samples
from scenectl.data.ooc import OOCConfig, build_ooc
from scenectl.data.verify import verify_shards
from scenectl.errors import ScenectlError


def _no_pax_headers(folder: Path) -> None:
    """Every member of every tar is one plain ustar header: no PAX extended header (a float mtime adds one)."""
    for tar in sorted(folder.glob("*.tar")):
        data = tar.read_bytes()
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                assert m.pax_headers == {} and m.mtime == 0, (tar.name, m.name)
                assert data[m.offset + 156:m.offset + 157] == b"0", (tar.name, m.name)  # typeflag: regular file


def _round_trip(folder: Path) -> list[str]:
    """Read the whole set with the reader, then verify it: both accept it; returns the keys read."""
    keys = [raw["__key__"] for raw in raw_samples(open_shard_set(folder))]
    report = verify_shards(folder)
    assert report["ok"], report["problems"][:3]
    assert report["samples"] == len(keys) == json.loads((folder / "manifest.json").read_text())["totals"]["samples"]
    return keys


# --- the sink -----------------------------------------------------------------------------------------------------
def test_sink_lists_each_shard_with_its_count_and_hash_without_rereading(tmp_path):
    folder = write_shards(tmp_path / "set", n=20, per_shard=8)
    m = json.loads((folder / "manifest.json").read_text())
    assert [s["samples"] for s in m["shards"]] == [8, 8, 4]
    assert set(m["files"]) == {"cooccurrence.h5", TIMM_INFO} and not (folder / "progress.json").exists()
    assert not list(folder.glob("*.partial"))
    _no_pax_headers(folder)
    _round_trip(folder)


def test_sink_journals_finished_shards_and_drops_an_aborted_one(tmp_path):
    journal = {"shards": []}
    sink = ShardSink(SinkTarget(tmp_path, maxcount=2), journal, lambda j: j.update(note="filled"))
    sample = {"cls": b"0", "json": b"{}"}
    for i in range(3):
        sink.write({"__key__": f"{i:012d}_{i:012d}", **sample})
    sink.abort()  # the third sample's shard was open: dropped, the journal still lists the first, whole one
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["note"] == "filled" and [s["samples"] for s in saved["shards"]] == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.json", "shard-000000.tar"]


# --- the manifest: one parser, raising or collecting ----------------------------------------------------------------
@pytest.mark.parametrize("manifest,message", [
    (b"{", "is not valid JSON"),
    (b"[1]", "is not a scenectl shard manifest"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [], "shards": []}).encode(), "'classes' list"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a", "coco_id": 1}], "shards": [],
                 "params": {"image_size": 10**6}}).encode(), "params.image_size"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a", "coco_id": 1}], "task": "evil", "shards": []}).encode(),
     "has task 'evil'"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a", "coco_id": 1}],
                 "shards": [{"name": "../x.tar", "samples": 1}]}).encode(), "not a plain .tar file name"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a"}], "shards": []}).encode(),
     "'coco_id': int, 'name': str"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a", "coco_id": "1"}], "shards": []}).encode(),
     "'coco_id': int, 'name': str"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a", "coco_id": 1}, {"name": "a", "coco_id": 2}],
                 "shards": []}).encode(), "names a class or COCO id twice"),
    (json.dumps({"format": "scenectl-shards/1", "classes": [{"name": "a", "coco_id": 1}], "shards": [],
                 "totals": {"samples": -1}}).encode(), "totals.samples = -1"),
])
def test_manifest_problems_are_raised_by_the_reader_and_listed_by_verify(tmp_path, manifest, message):
    found = manifest_problems(manifest)[1]
    assert found and message in found[0].message
    with pytest.raises(ScenectlError, match=f"manifest here .*{message}"):
        parse_manifest(manifest, "here")
    d = tmp_path / "set"
    d.mkdir()
    (d / "manifest.json").write_bytes(manifest)
    with pytest.raises(ScenectlError, match=message):
        open_shard_set(d)
    report = verify_shards(d)
    assert not report["ok"] and any(message in p["message"] for p in report["problems"])


# --- samples: one check for the reader and verify-shards --------------------------------------------------------------
def test_sample_problems_name_each_fault():
    spec = SampleSpec(("jpg", "cls", "json"), None, ("a", "b"))
    meta = {"image_id": 1, "annotation_id": 2, "cls": 1, "visible_categories": [0]}
    good = {"cls": b"1", "json": json.dumps(meta).encode()}
    key = "000000000001_000000000002"
    assert [p.kind for p in sample_problems(key, good, spec)] == ["missing_member"]  # no jpg
    for members, kind in [({**good, "cls": b"2", "json": json.dumps({**meta, "cls": 2}).encode()}, "bad_value"),
                          ({**good, "json": json.dumps({**meta, "cls": 0}).encode()}, "inconsistent"),
                          ({**good, "pyd": b"x"}, "unexpected_member")]:
        assert kind in [p.kind for p in sample_problems(key, members, spec)]
    other = sample_problems("000000000001_000000000003", good, spec)
    assert all(isinstance(p, Problem) and p.sample == "000000000001_000000000003" for p in other)
    assert any("key does not match the json's ids" in p.message for p in other)


# --- round trips of both set kinds ------------------------------------------------------------------------------------
def test_build_shards_round_trip(coco_sample, tmp_path):
    folder = tmp_path / "set"
    build(subset(coco_sample, tmp_path / "src", n=6), folder, maxcount=4, image_size=32, with_object=True)
    _no_pax_headers(folder)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert {"cooccurrence.h5", "config.json", TIMM_INFO} <= set(files)
    _round_trip(folder)


@pytest.fixture(scope="module")
def ooc_set(coco_sample, tmp_path_factory) -> Path:
    """A small build-ooc set over a training side counted from coco_sample's train2017 annotations."""
    root = tmp_path_factory.mktemp("ooc")
    train = root / "train"
    train.mkdir()
    coco = load_coco(coco_sample / "annotations" / "instances_train2017.json")
    table = ClassTable.from_coco(coco)
    idx = table.index()
    per_image = [[idx[a["category_id"]] for a in coco.imgToAnns.get(i, [])] for i in sorted(coco.imgs)]
    Cooccurrence.count(per_image, table.coco_ids, table.names).save(train / "cooccurrence.h5")
    (train / "manifest.json").write_text(json.dumps({
        "format": "scenectl-shards/1", "task": "masked", "classes": table.to_json(), "shards": [],
        "params": {"shape": "square", "fill": "mean", "margin": 3, "image_size": 32, "max_area": 0.3,
                   "min_area": 1024}}))
    build_ooc(OOCConfig(coco_root=str(coco_sample), split="val2017", train_cooccurrence=str(train),
                        out=str(root / "ooc"), max_pairs=3, maxcount=4, seed=1))
    return root / "ooc"


def test_build_ooc_round_trip_writes_a_set_like_build_shards(ooc_set):
    m = json.loads((ooc_set / "manifest.json").read_text())
    assert set(m["files"]) == {"cooccurrence.h5", "config.json", TIMM_INFO}
    assert [s["samples"] for s in m["shards"]] == [4, 2] and m["totals"]["samples"] == 6
    info = json.loads((ooc_set / TIMM_INFO).read_text())["splits"]["val2017"]
    assert info["filenames"] == [s["name"] for s in m["shards"]] and info["num_samples"] == 6
    assert not (ooc_set / "progress.json").exists()
    _no_pax_headers(ooc_set)
    assert len(_round_trip(ooc_set)) == 6


def test_verify_detects_a_tampered_ooc_cooccurrence(ooc_set, tmp_path):
    d = shutil.copytree(ooc_set, tmp_path / "ooc")
    (d / "cooccurrence.h5").write_bytes((d / "cooccurrence.h5").read_bytes() + b"\0")
    report = verify_shards(d)
    assert not report["ok"]
    assert [(p["kind"], p["message"].split(":")[0]) for p in report["problems"]] == [("checksum", "cooccurrence.h5")]
    with pytest.raises(ScenectlError, match="cooccurrence.h5: sha256"):
        open_shard_set(d).cooccurrence()
