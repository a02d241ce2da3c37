"""Malicious inputs: shards carrying pickles (.pyd / .pickle / .pth members whose unpickling would create a marker
file), members whose names try path traversal, and checkpoints crafted to run code on load. Nothing is ever
unpickled (the marker never appears), nothing is written outside the output folder, and a crafted checkpoint is
refused with one line."""

from __future__ import annotations

import io
import json
import pickle
import re
import resource
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from faultkit import evil_pickle, evil_torch, member, rewrite_tar, tar_members, tree
from scenectl.cli import app

runner = CliRunner()


def _insert_after_first_sample(extra):
    def edit(members):
        key = members[0][0].name.split(".", 1)[0]
        end = max(i for i, (m, _) in enumerate(members) if m.name.startswith(key + ".")) + 1
        return members[:end] + extra(key) + members[end:]
    return edit


@pytest.fixture(scope="module")
def evil(real_set, tmp_path_factory):
    """A copy of the real set whose first sample of every shard also holds .pyd, .pickle and .pth members."""
    root = tmp_path_factory.mktemp("evil")
    marker = root / "MARKER"
    folder = shutil.copytree(real_set, root / "set")
    payload = [("pyd", evil_pickle(marker)), ("pickle", evil_pickle(marker)), ("pth", evil_torch(marker))]
    for tar in folder.glob("*.tar"):
        rewrite_tar(tar, _insert_after_first_sample(lambda key: [member(f"{key}.{s}", d) for s, d in payload]))
    return {"set": folder, "marker": marker, "root": root}


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(r, text):
    """Exit 2 and one 'error: ...' line (after any progress bar on stderr), no traceback."""
    last = r.output.strip().splitlines()[-1] if r.output.strip() else ""
    assert r.exit_code == 2 and last.startswith("error: ") and text in last and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("command", ["train", "eval", "inspect-shards", "export-imagefolder", "object-crops",
                                     "verify-shards"])
def test_pickles_in_shards_are_never_loaded(evil, real_ckpt, tmp_path, command):
    """A member the format does not have is refused by the reader (one line naming the shard, exit 2) and reported
    by verify-shards; it is never decoded, let alone unpickled."""
    s, marker = evil["set"], evil["marker"]
    refused = "unexpected member 'pyd' (never decoded)"
    if command == "train":
        r = _cli("train", "--shards", s, "--val-shards", s, "--out", tmp_path / "run", "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--image-size", "32", "--workers", "0", "--device",
                 "cpu", "--checkpoint-every", "0")
        _one_line_error(r, refused)
    elif command == "eval":
        r = _cli("eval", "-c", real_ckpt, "--shards", s, "--out", tmp_path / "eval", "--workers", "0", "--device", "cpu")
        _one_line_error(r, refused)
        assert ".tar" in r.output.strip().splitlines()[-1]
    elif command == "inspect-shards":
        _one_line_error(_cli("inspect-shards", s, "--out", tmp_path / "sheet.png"), refused)
    elif command == "export-imagefolder":
        r = _cli("export-imagefolder", s, tmp_path / "folder")
        _one_line_error(r, refused)
        assert not list((tmp_path / "folder").rglob("*.pyd")) and not list((tmp_path / "folder").rglob("*.pth"))
    elif command == "object-crops":  # what transfer and distill read from a shard set
        from scenectl.data.imagefolder import make_loader, open_target
        from scenectl.errors import ScenectlError

        with pytest.raises(ScenectlError, match=re.escape(refused)):
            list(make_loader(open_target(s), image_size=32, batch_size=8))
    else:
        r = _cli("verify-shards", s, "--json", "--no-progress")
        rep = json.loads(r.stdout)
        assert r.exit_code == 1 and {p["member"] for p in rep["problems"] if p["kind"] == "unexpected_member"} == \
            {"pyd", "pickle", "pth"}
    assert not marker.exists(), f"{command} unpickled a shard member"


def test_the_payloads_are_live(evil, tmp_path):
    """The test's pickles do run code when unpickled: the absence of the marker above means something."""
    members = {m.name.split(".", 1)[1]: d for m, d in tar_members(evil["set"] / "shard-000000.tar")
               if m.name.endswith((".pyd", ".pth"))}
    pickle.loads(members["pyd"])
    assert evil["marker"].exists()
    evil["marker"].unlink()
    torch.load(io.BytesIO(members["pth"]), weights_only=False)
    assert evil["marker"].exists()
    evil["marker"].unlink()


# --- path traversal -----------------------------------------------------------------------------------------------
@pytest.fixture
def traversal(real_set, tmp_path):
    """Shard 0 gains two whole samples (every member) keyed '../../escape' and '<abs path>/abs-escape', and a
    symlink member to /etc/passwd. Reading never extracts; an export must not write outside its folder."""
    folder = shutil.copytree(real_set, tmp_path / "a" / "b" / "set")
    first = tar_members(folder / "shard-000000.tar")
    key = first[0][0].name.split(".", 1)[0]
    sample = [(m.name.split(".", 1)[1], d) for m, d in first if m.name.startswith(key + ".")]
    absolute = str(tmp_path / "abs-escape").lstrip("/")
    link = tarfile.TarInfo(f"{key}.link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"

    def edit(members):
        extra = [member(f"../../escape.{s}", d) for s, d in sample] + [member(f"/{absolute}.{s}", d) for s, d in sample]
        return members + extra + [(link, b"")]

    rewrite_tar(folder / "shard-000000.tar", edit)
    with tarfile.open(folder / "shard-000000.tar") as t:  # tarfile keeps the names as written
        assert "../../escape.jpg" in t.getnames() and f"/{absolute}.jpg" in t.getnames()
    return folder


def _escapes(tmp_path):
    return [p for p in [tmp_path / "escape.jpg", tmp_path / "a" / "escape.jpg", tmp_path / "abs-escape.jpg",
                        tmp_path / "a" / "b" / "escape.jpg"] if p.exists()]


@pytest.mark.slow
def test_traversal_members_are_never_written_outside(traversal, real_ckpt, tmp_path):
    before = tree(tmp_path)
    r = _cli("eval", "-c", real_ckpt, "--shards", traversal, "--out", tmp_path / "out" / "eval", "--workers", "0",
             "--device", "cpu")
    _one_line_error(r, "shard-000000.tar")  # 8 samples listed, 10 read: the shard is not what the manifest says
    r = _cli("train", "--shards", traversal, "--val-shards", traversal, "--out", tmp_path / "out" / "run", "--epochs",
             "1", "--steps-per-epoch", "1", "--batch-size", "2", "--image-size", "32", "--workers", "0", "--device",
             "cpu", "--skip-corrupt", "--checkpoint-every", "0")
    assert r.exit_code == 0, r.output
    r = _cli("export-imagefolder", traversal, tmp_path / "out" / "folder")
    assert r.exit_code == 2 and "escape" in r.output, r.output
    assert _escapes(tmp_path) == []
    outs = ("out/eval", "out/run", "out/folder")
    new = tree(tmp_path) - before - {"out"}
    assert all(p.startswith(outs) for p in new), sorted(p for p in new if not p.startswith(outs))
    r = _cli("verify-shards", traversal, "--json", "--no-progress")
    kinds = {(p["kind"], p["member"]) for p in json.loads(r.stdout)["problems"]}
    assert r.exit_code == 1 and ("unsafe_member", "../../escape.jpg") in kinds and \
        ("unsafe_member", f"{traversal.name}.link") not in kinds  # (named by member)
    assert any(k == "unsafe_member" and m.endswith(".link") for k, m in kinds)


# --- checkpoints crafted to run code --------------------------------------------------------------------------------
@pytest.fixture
def evil_ckpt(real_set, tmp_path):
    marker = tmp_path / "MARKER"
    classes = json.loads((real_set / "manifest.json").read_text())["classes"]
    path = tmp_path / "evil.pt"
    path.write_bytes(evil_torch(marker, {"arch": "resnet18", "num_classes": len(classes), "classes": classes,
                                         "model": {}, "in_chans": 4}))
    return path, marker


@pytest.mark.parametrize("command", ["eval", "predict", "train --resume", "transfer", "distill", "fuse", "cooccurrence"])
def test_crafted_checkpoint_is_refused(evil_ckpt, real_set, coco_sample, tmp_path, command):
    path, marker = evil_ckpt
    image = sorted((coco_sample / "val2017").glob("*.jpg"))[0]
    run = tmp_path / "run"
    if command == "train --resume":
        run.mkdir()
        shutil.copy(path, run / "last.pt")
    args = {
        "eval": ["eval", "-c", path, "--shards", real_set, "--out", tmp_path / "e"],
        "predict": ["predict", image, "-c", path, "--box", "10,10,40,40"],
        "train --resume": ["train", "--shards", real_set, "--val-shards", real_set, "--out", run, "--resume",
                           "--device", "cpu"],
        "transfer": ["transfer", "-c", path, "--train", real_set, "--val", real_set, "--out", tmp_path / "t"],
        "distill": ["distill", "--teacher", path, "--shards", real_set, "--val-shards", real_set, "--out", tmp_path / "d"],
        "fuse": ["fuse", "--context", path, "--object", path, "--shards", real_set, "--out", tmp_path / "f"],
        "cooccurrence": ["cooccurrence", path, "--out", tmp_path / "c.png"],
    }[command]
    _one_line_error(_cli(*args), "refusing to load")
    assert not marker.exists(), f"{command} ran code from a checkpoint"
    torch.load(path, weights_only=False)  # the file does run code when unpickled
    assert marker.exists()



# --- tar members: one rule for the reader and verify-shards (scenectl.data.format) ------------------------------------
def _header(name: str, size: int, sparse: bool = False) -> bytes:
    """A tar header for `name` (bytes beyond UTF-8 kept as they are); `sparse`: a GNU sparse file whose real size
    field declares `size` bytes and which carries no data (the 512-byte header of issue 23)."""
    info = tarfile.TarInfo(name)
    info.size = 0 if sparse else size
    head = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    if sparse:
        head[156:157], head[483:495] = tarfile.GNUTYPE_SPARSE, b"%011o\0" % size
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    return bytes(head)


def _write_raw(path: Path, members: list[tuple[str, bytes | int]]) -> None:
    """A tar of (name, data) members; (name, n) with an int: a sparse header declaring n bytes."""
    out = io.BytesIO()
    for name, data in members:
        if isinstance(data, int):
            out.write(_header(name, data, sparse=True))
        else:
            out.write(_header(name, len(data)) + data + b"\0" * (-len(data) % 512))
    out.write(b"\0" * 1024)
    path.write_bytes(out.getvalue())


def _edit_shard(folder: Path, edit) -> None:
    """Shard 1 rewritten as `edit([(name, bytes)]) -> members`, the manifest's sha256 following (a tampered set
    that is internally consistent: only the member rules can catch it)."""
    from scenectl.io import file_sha256

    path = folder / "shard-000001.tar"
    _write_raw(path, edit([(m.name, d) for m, d in tar_members(path)]))
    m = json.loads((folder / "manifest.json").read_text())
    next(s for s in m["shards"] if s["name"] == path.name)["sha256"] = file_sha256(path)
    (folder / "manifest.json").write_text(json.dumps(m))


def _first_sample_member(suffix: str, new):
    """Edit: the first sample's member `suffix` gets new(key, old bytes) (json given as a dict)."""
    def edit(members):
        key = members[0][0].split(".", 1)[0]
        out = []
        for name, data in members:
            if name == f"{key}.{suffix}":
                data = new(key, json.loads(data) if suffix == "json" else data)
                data = json.dumps(data).encode() if isinstance(data, dict) else data
            out.append((name, data))
        return out
    return edit


def _big_jpeg_header(key, data):
    """The jpg's SOF marker patched to declare 20000 x 20000 pixels (the bytes after it stay a 32 x 32 image's)."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + (20000).to_bytes(2, "big") * 2 + data[at + 4:]


def _gzipped(folder: Path) -> None:
    import gzip

    from scenectl.io import file_sha256

    path = folder / "shard-000001.tar"
    path.write_bytes(gzip.compress(path.read_bytes()))
    m = json.loads((folder / "manifest.json").read_text())
    next(s for s in m["shards"] if s["name"] == path.name)["sha256"] = file_sha256(path)
    (folder / "manifest.json").write_text(json.dumps(m))


def _insert(extra):
    return lambda members: members[:4] + extra(members[0][0].split(".", 1)[0]) + members[4:]


# class -> (damage of the copied set, the reader's one-line message, verify-shards' problem kind)
TAR_MEMBERS = {
    "gzipped shard": (_gzipped, "not a plain POSIX tar", "unreadable"),
    "GNU sparse header declaring 3 GB": (lambda d: _edit_shard(d, _insert(lambda k: [(f"{k}.object.jpg", 3 << 30)])),
                                         "is not a regular file (type b'S')", "unsafe_member"),
    "member larger than the size cap": (
        lambda d: _edit_shard(d, _first_sample_member("json", lambda k, meta: {**meta, "pad": "x" * (2 << 20)})),
        "more than the", "too_large"),
    "image header declaring 20000 x 20000": (lambda d: _edit_shard(d, _first_sample_member("jpg", _big_jpeg_header)),
                                             "not the manifest's image_size 32",
                                             "bad_value"),
    "non-UTF-8 member name": (lambda d: _edit_shard(d, _insert(lambda k: [(f"{k}.jp\udcffg", b"x")])),
                              "has a name that is not UTF-8", "bad_name"),
    "cls ' 1_0\\n'": (lambda d: _edit_shard(d, _first_sample_member("cls", lambda k, v: b" 1_0\n")),
                      "member 'cls' is not an ASCII integer", "undecodable"),
    "visible_categories [-1]": (
        lambda d: _edit_shard(d, _first_sample_member("json", lambda k, meta: {**meta, "visible_categories": [-1]})),
        "visible_categories [-1] are not class indices", "bad_value"),
    "visible_categories out of range": (
        lambda d: _edit_shard(d, _first_sample_member("json", lambda k, meta: {**meta, "visible_categories": [12]})),
        "visible_categories [12] are not class indices", "bad_value"),
}


@pytest.fixture(scope="module")
def twelve_classes(tmp_path_factory) -> Path:
    """A set of 12 classes (so that cls 10 would be a valid index), 3 shards of 8 samples, 32 px."""
    from kit import write_shards

    classes = [{"index": i, "coco_id": i + 1, "name": f"c{i}"} for i in range(12)]
    labels = [10] * 8 + [i % 12 for i in range(16)]
    folder = write_shards(tmp_path_factory.mktemp("twelve") / "set", size=32, classes=classes, labels=labels)
    m = json.loads((folder / "manifest.json").read_text())  # the totals a build writes (inspect-shards shows them)
    per_class = {c["name"]: labels.count(c["index"]) for c in classes}
    m["totals"].update(shards=3, images=24, instances=24, per_class=per_class,
                       area_fraction_histogram={"edges": [0.0, 0.5, 1.0], "counts": [24, 0]})
    m["skipped"] = {"crowd": 0}
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


@pytest.mark.slow
def test_the_twelve_class_set_is_read_whole(twelve_classes, tmp_path):
    """The control of the member tests below: untouched, the set reads and verifies."""
    assert _cli("inspect-shards", twelve_classes, "--out", tmp_path / "sheet.png").exit_code == 0
    assert _cli("verify-shards", twelve_classes, "--no-progress").exit_code == 0


@pytest.mark.parametrize("damage", [pytest.param(d, marks=() if k < 3 else pytest.mark.slow)  # 3 in the fast tier
                                    for k, d in enumerate(TAR_MEMBERS)])
def test_tar_members_are_refused_by_the_reader_and_verify(twelve_classes, tmp_path, damage):
    """Each hostile member class: the reader stops with one line naming the shard (exit 2), before decoding or
    allocating what the member declares; verify-shards reports the same rule's problem for that shard."""
    spoil, message, kind = TAR_MEMBERS[damage]
    d = shutil.copytree(twelve_classes, tmp_path / "set")
    spoil(d)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    r = _cli("inspect-shards", d, "--out", tmp_path / "sheet.png")
    _one_line_error(r, message)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 << 10  # nothing declared was allocated
    assert "shard-000001.tar" in r.output.strip().splitlines()[-1]
    rep = json.loads(_cli("verify-shards", d, "--json", "--no-progress").stdout)
    assert not rep["ok"] and any(p["kind"] == kind and p["shard"] == "shard-000001.tar" for p in rep["problems"]), \
        rep["problems"]


_PEAK = """
import resource, sys
from scenectl.cli import main
sys.argv[0], code = "scenectl", None
try:
    main()
except SystemExit as e:
    code = e.code
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "EXIT", code, flush=True)
"""


def _eval_peak(ckpt: Path, shards: Path, out: Path) -> tuple[int, int, str]:
    """`scenectl eval` in a fresh interpreter: (its peak resident memory in KiB, exit status, output)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _PEAK, "eval", "--checkpoint", str(ckpt), "--shards", str(shards),
                        "--out", str(out), "--device", "cpu", "--workers", "0", "--cooccurrence",
                        str(shards / "cooccurrence.h5")],
                       capture_output=True, text=True, timeout=300)
    peak, code = re.search(r"PEAK_KIB (\d+) EXIT (\S+)", r.stdout).groups()
    return int(peak), code, r.stdout + r.stderr


@pytest.mark.slow
def test_eval_peak_memory_with_one_hostile_member_stays_near_the_clean_sets(twelve_classes, tmp_path):
    """Issue 23's bar: eval's peak memory (getrusage in a subprocess) on a set with one hostile member stays within
    200 MB of the clean set's: a member declaring 3 GB (GNU sparse) or an image header declaring 20000 x 20000
    (1.2 GB of pixels) is refused from its header, never allocated."""
    from kit import checkpoint

    classes = json.loads((twelve_classes / "manifest.json").read_text())["classes"]
    ckpt = checkpoint(tmp_path / "c.pt", classes)
    clean, code, out = _eval_peak(ckpt, twelve_classes, tmp_path / "clean")
    assert code in ("0", "None") and (tmp_path / "clean" / "report.json").is_file(), out
    for name in ("GNU sparse header declaring 3 GB", "image header declaring 20000 x 20000"):
        d = shutil.copytree(twelve_classes, tmp_path / name.split()[0])
        TAR_MEMBERS[name][0](d)
        peak, code, out = _eval_peak(ckpt, d, tmp_path / f"{name.split()[0]}-eval")
        assert code == "2" and "shard-000001.tar" in out.strip().splitlines()[-1], out  # refused, one line
        print(f"eval peak: {name}: {peak >> 10} MiB, clean set: {clean >> 10} MiB")
        assert peak - clean < 200 << 10, f"{name}: peak {peak >> 10} MiB, clean {clean >> 10} MiB"
