"""`scenectl verify-shards` on a real-COCO shard set: a good set passes; each kind of damage is reported with the
shard's name and exit status 1; nothing in a shard is ever unpickled."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faultkit import evil_pickle, member, rewrite_tar, set_manifest
from scenectl.cli import app
from scenectl.errors import ScenectlError
from scenectl.data.verify import verify_shards
from kit import fast_first

runner = CliRunner()
S0, S1 = "shard-000000.tar", "shard-000001.tar"


def _first_key(members) -> str:
    return members[0][0].name.split(".", 1)[0]


def _replace(suffix: str, data: bytes, index: int = 0):
    """Edit: the `index`-th sample's member `suffix` gets `data` (None: the member is removed)."""
    def edit(members):
        keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m, _ in members))
        name = f"{keys[index]}.{suffix}"
        out = [(m, d) if m.name != name else (m, data) for m, d in members]
        return [(m, d) for m, d in out if d is not None]
    return edit


def _reencode(members):
    """The first jpg re-encoded (still a valid image): only the checksum can notice."""
    import io

    from PIL import Image

    out, done = [], False
    for m, d in members:
        if m.name.endswith(".jpg") and not done:
            buf = io.BytesIO()
            Image.open(io.BytesIO(d)).save(buf, "JPEG", quality=50)
            d, done = buf.getvalue(), True
        out.append((m, d))
    return out


def _cut_at_boundary(folder: Path):
    import tarfile

    with tarfile.open(folder / S1) as t:
        headers = t.getmembers()
        offset = headers[len(headers) // 2].offset  # a header boundary: tarfile stops there quietly
    (folder / S1).write_bytes((folder / S1).read_bytes()[:offset])


def _duplicate_key(folder: Path):
    from faultkit import tar_members

    first = [(m, d) for m, d in tar_members(folder / S0)]
    key = _first_key(first)
    rewrite_tar(folder / S1, lambda ms: ms + [(m, d) for m, d in first if m.name.startswith(key + ".")])


def _n_classes(folder: Path) -> int:
    return len(json.loads((folder / "manifest.json").read_text())["classes"])


def _cls_unlike_json(folder: Path):
    """The first sample's cls becomes another valid class index than its json says."""
    def edit(members):
        cls = next(int(d) for m, d in members if m.name.endswith(".cls"))
        return _replace("cls", str((cls + 1) % _n_classes(folder)).encode())(members)
    rewrite_tar(folder / S1, edit)


# damage name -> (function of the copied folder, expected problem kind, shard named in the problem)
DAMAGE = {
    "missing shard": (lambda d: (d / S1).unlink(), "missing_shard", S1),
    "truncated mid-member": (lambda d: (d / S1).write_bytes((d / S1).read_bytes()[:7000]), "unreadable", S1),
    "cut at a member boundary": (_cut_at_boundary, "count", S1),
    "changed bytes (checksum)": (lambda d: rewrite_tar(d / S1, _reencode), "checksum", S1),
    "missing mask.png": (lambda d: rewrite_tar(d / S1, _replace("mask.png", None)), "missing_member", S1),
    "missing object.jpg": (lambda d: rewrite_tar(d / S1, _replace("object.jpg", None, 1)), "missing_member", S1),
    "jpg not a JPEG": (lambda d: rewrite_tar(d / S1, _replace("jpg", b"not a jpeg")), "undecodable", S1),
    "mask.png cut": (lambda d: rewrite_tar(d / S1, _replace("mask.png", b"\x89PNG\r\n\x1a\n\0\0")), "undecodable", S1),
    "json not JSON": (lambda d: rewrite_tar(d / S1, _replace("json", b"{")), "undecodable", S1),
    "cls outside the class list": (lambda d: rewrite_tar(d / S1, _replace("cls", str(_n_classes(d)).encode())),
                                   "bad_value", S1),
    "cls unlike json": (_cls_unlike_json, "inconsistent", S1),
    "unexpected .pyd member": (lambda d: rewrite_tar(d / S1, lambda ms: ms[:4] + [
        member(ms[0][0].name.split(".", 1)[0] + ".pyd", evil_pickle(d.parent / "MARKER"))] + ms[4:]),
        "unexpected_member", S1),
    "path traversal member": (lambda d: rewrite_tar(d / S1, lambda ms: ms + [member("../../escape.jpg", b"x")]),
                              "unsafe_member", S1),
    "absolute member": (lambda d: rewrite_tar(d / S1, lambda ms: ms + [member("/tmp/escape.jpg", b"x")]),
                        "unsafe_member", S1),
    "leftover .partial": (lambda d: (d / "shard-000005.tar.partial").write_bytes(b"half"), "leftover",
                          "shard-000005.tar.partial"),
    "unlisted shard": (lambda d: shutil.copy(d / S0, d / "shard-000099.tar"), "unlisted_shard", "shard-000099.tar"),
    "duplicate key across shards": (_duplicate_key, "duplicate_key", S1),
    "manifest count": (lambda d: set_manifest(d, lambda m: m["shards"][1].update(samples=m["shards"][1]["samples"] + 1)),
                       "count", S1),
}


def _verify(folder: Path, *extra: str):
    r = runner.invoke(app, ["verify-shards", str(folder), "--no-progress", *extra])
    return r


def test_good_set_passes(real_set):
    r = _verify(real_set)
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1].startswith("OK:")
    rep = json.loads(_verify(real_set, "--json").stdout)
    manifest = json.loads((real_set / "manifest.json").read_text())
    assert rep["ok"] and rep["problems"] == []
    assert rep["samples"] == manifest["totals"]["samples"] and rep["shards"] == len(manifest["shards"]) > 1


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_each_damage_is_reported_with_the_shard(real_set, tmp_path, damage):
    spoil, kind, shard = DAMAGE[damage]
    folder = shutil.copytree(real_set, tmp_path / "set")
    spoil(folder)
    r = _verify(folder)
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines()[-1].startswith("FAILED:") and shard in r.output
    rep = json.loads(_verify(folder, "--json").stdout)
    assert not rep["ok"]
    hits = [p for p in rep["problems"] if p["kind"] == kind and shard in p["message"]]
    assert hits, rep["problems"]
    if kind not in ("leftover", "unlisted_shard", "missing_shard"):
        assert all(p["shard"] == shard for p in hits)
    assert not (tmp_path / "MARKER").exists()  # the .pyd member was never unpickled
    assert not (tmp_path.parent / "escape.jpg").exists() and not Path("/tmp/escape.jpg").exists()


def test_checksum_only_damage_passes_without_hashes(real_set, tmp_path):
    folder = shutil.copytree(real_set, tmp_path / "set")
    rewrite_tar(folder / S1, _reencode)
    assert _verify(folder).exit_code == 1
    assert _verify(folder, "--no-hashes").exit_code == 0  # every other check still passes


def test_incomplete_or_foreign_folders(real_set, tmp_path):
    unfinished = shutil.copytree(real_set, tmp_path / "unfinished")
    (unfinished / "manifest.json").unlink()
    (unfinished / "progress.json").write_text("{}")
    rep = verify_shards(unfinished)
    assert not rep["ok"] and {p["kind"] for p in rep["problems"]} == {"leftover", "manifest"}
    (unfinished / "manifest.json").write_text("{not json")
    assert any("not valid JSON" in p["message"] for p in verify_shards(unfinished)["problems"])
    r = _verify(tmp_path / "nowhere")  # not a folder at all: a usage error, one line, exit 2
    assert r.exit_code == 2 and "no such folder" in r.output and len(r.output.strip().splitlines()) == 1
    with pytest.raises(ScenectlError, match="no such folder"):
        verify_shards(tmp_path / "nowhere")


@pytest.mark.slow
def test_workers_give_the_same_report(real_set, tmp_path):
    folder = shutil.copytree(real_set, tmp_path / "set")
    rewrite_tar(folder / S1, _replace("json", b"{"))
    one, two = verify_shards(folder), verify_shards(folder, workers=2)
    assert one == two and not one["ok"]


@pytest.mark.parametrize("what", fast_first(["no such folder", "a FIFO", "a shard's URL"]))
def test_json_is_printed_even_when_the_set_cannot_be_opened(tmp_path, what):
    """--json always prints a JSON report (issue 23: a set that could not be opened printed no JSON, only the
    error line); the one-line error still goes to stderr and the exit is 2."""
    target = tmp_path / "missing"
    if what == "a FIFO":
        os.mkfifo(target)
    elif what == "a shard's URL":
        target = "http://127.0.0.1:9/set/shard-000000.tar"  # refused before any connection: a set is its folder
    r = _verify(target, "--json")
    rep = json.loads(r.stdout)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "error:" in r.stderr
    assert rep["ok"] is False and rep["shards"] == 0 and [p["kind"] for p in rep["problems"]] == ["set"]


@pytest.mark.parametrize("how", fast_first(["missing", "a FIFO"]))
def test_a_listed_file_missing_or_not_regular_is_reported_never_a_hang(real_set, tmp_path, how):
    """The manifest's `files` are read through the reader's opener: a missing one is `missing_file`; a FIFO in its
    place is `unreadable` at once (it hung verify-shards in open() before open_stream opened local files through
    io.open_regular)."""
    folder = shutil.copytree(real_set, tmp_path / "set")
    assert "cooccurrence.h5" in json.loads((folder / "manifest.json").read_text())["files"]
    (folder / "cooccurrence.h5").unlink()
    if how == "a FIFO":
        os.mkfifo(folder / "cooccurrence.h5")
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("verify-shards hung on cooccurrence.h5"))
    signal.alarm(60)
    try:
        rep = verify_shards(folder)
    finally:
        signal.alarm(0)
    kind = "missing_file" if how == "missing" else "unreadable"
    assert [p["kind"] for p in rep["problems"]] == [kind], rep["problems"]
    assert "cooccurrence.h5" in rep["problems"][0]["message"] and not rep["ok"]
