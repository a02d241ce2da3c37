"""Damaged copies of a shard set, one kind of damage each, for tests of every command that reads shard sets.

    from damaged_sets import KINDS, damage

    d = damage(src, tmp_path / "bad", "keys_across_shards")   # -> Damaged(path, kind, shard, match, at_open)
    with pytest.raises(ScenectlError, match=d.match):
        <read d.path with any command>

`src` is any shard-set folder (a build, `synthetic_shards[...]`, tests/kit.write_shards). The copy is
re-sharded into `shards` tars (default 3) of consecutive samples, in the source's order, with a true manifest;
then shard 1 (`d.shard`, the second in the manifest) is damaged. `damage(src, dst, None)` is the same copy
undamaged (a control: it must read whole). `d.match` is a regex for the reader's one-line
error, naming the damaged shard where the error does. `at_open`: refused by open_shard_set itself (the manifest is
wrong), before any sample is read. Every other kind is found while reading: a training stream finds it once it
reads the damaged shard (give it enough steps to read the whole set).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

KINDS = (
    "zero_sample_shard",        # a whole, empty tar where the manifest lists samples
    "shard_listed_twice",       # the manifest lists one shard twice
    "shard_copied",             # a copy of a shard under another name, listed in the manifest: every key twice
    "fewer_than_manifest",      # a shard's last sample removed (the manifest still counts it)
    "more_than_manifest",       # a shard holds one more sample (a new key) than the manifest says
    "keys_across_shards",       # a sample of shard 1 renamed to a key of shard 0
    "key_twice_in_shard",       # a sample renamed to the key of another sample of the same shard
    "cls_disagrees_with_json",  # a sample's `cls` member changed, its json's `cls` not
    "truncated_tar",            # a shard cut inside a member's data
)

Sample = tuple[str, list[tuple[str, bytes]]]  # (key, [(member suffix, bytes)])


@dataclass
class Damaged:
    path: Path
    kind: str | None
    shard: str  # the damaged shard's file name
    match: str  # regex for the reader's error message
    at_open: bool  # refused by open_shard_set


def damage(src: Path, dst: Path, kind: str | None, shards: int = 3) -> Damaged:
    """A copy of the shard set `src` at `dst` (re-sharded into `shards` tars) with one kind of damage (None: none)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown damage {kind!r}; one of {KINDS}")
    samples = [s for p in _shard_paths(src) for s in read_samples(p)]
    if len(samples) < 3 * shards:
        raise ValueError(f"{src}: {len(samples)} samples; damage needs at least {3 * shards}")
    dst.mkdir(parents=True)
    for f in ("cooccurrence.h5", "config.json"):
        if (src / f).is_file():
            shutil.copy(src / f, dst / f)
    cut = [round(i * len(samples) / shards) for i in range(shards + 1)]
    parts = [samples[cut[i]:cut[i + 1]] for i in range(shards)]
    names = [f"shard-{i:06d}.tar" for i in range(shards)]
    listed = [len(p) for p in parts]  # what the manifest will say
    name = names[1]
    match, at_open, truncate = _apply(kind, parts, names, listed) if kind else ("", False, False)
    for n, p in zip(names, parts):
        write_samples(dst / n, p)
    if truncate:
        _cut_inside_a_member(dst / name)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.get("files", {}).pop("_info.json", None)  # the index of the source's shards, not copied
    manifest["shards"] = [{"name": n, "samples": c, "sha256": _sha256(dst / n)} for n, c in zip(names, listed)]
    if kind == "shard_listed_twice":
        manifest["shards"].append(dict(manifest["shards"][1]))
    manifest.setdefault("totals", {})["samples"] = sum(listed)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return Damaged(dst, kind, name, match.replace("{shard}", re.escape(name)), at_open)


def _apply(kind: str, parts: list[list[Sample]], names: list[str], listed: list[int]) -> tuple[str, bool, bool]:
    """Damage the samples of shard 1 in place (names/listed too); (error regex with {shard}, at_open, truncate)."""
    one = parts[1]
    if kind == "zero_sample_shard":
        one.clear()
        return r"shard \S*{shard} gave 0 samples where its manifest lists \d+", False, False
    if kind == "shard_listed_twice":
        return r"lists shard {shard} twice", True, False
    if kind == "shard_copied":
        parts.append(list(one))
        names.append(names[1].replace(".tar", "-copy.tar"))
        listed.append(len(one))
        return r"is in two shards: .*{shard}", False, False
    if kind == "fewer_than_manifest":
        one.pop()
        return r"shard \S*{shard} gave \d+ samples where its manifest lists \d+", False, False
    if kind == "more_than_manifest":
        one.append(_rekeyed(one[0], "999999999999_999999999999"))
        return r"shard \S*{shard} gave \d+ samples where its manifest lists \d+", False, False
    if kind == "keys_across_shards":
        one[0] = _rekeyed(one[0], parts[0][0][0])
        return r"is in two shards: .*{shard}", False, False
    if kind == "key_twice_in_shard":
        one[2] = _rekeyed(one[2], one[0][0])
        return r"occurs twice in shard \S*{shard}", False, False
    if kind == "cls_disagrees_with_json":
        members = dict(one[0][1])
        label = json.loads(members["json"])["cls"]
        members["cls"] = str(label - 1 if label > 0 else label + 1).encode()  # another class of the manifest
        one[0] = (one[0][0], list(members.items()))
        return r"sample \S+ in shard \S*{shard}: member 'cls' is \d+ but the json metadata says cls", False, False
    return r"cannot read shard \S*{shard} \(truncated or corrupt\?\)", False, True  # truncated_tar


def _rekeyed(sample: Sample, key: str) -> Sample:
    """`sample` under another key, its json's ids made to match (the sample is otherwise what the format says)."""
    image_id, annotation_id = (int(k) for k in key.split("_"))
    members = [(suffix, json.dumps({**json.loads(data), "image_id": image_id, "annotation_id": annotation_id}).encode()
                if suffix == "json" else data) for suffix, data in sample[1]]
    return key, members


def _shard_paths(folder: Path) -> list[Path]:
    return [folder / s["name"] for s in json.loads((folder / "manifest.json").read_text())["shards"]]


def read_samples(tar: Path) -> list[Sample]:
    """The samples of a whole webdataset tar, in order: members grouped by key (the name up to its first dot)."""
    out: list[Sample] = []
    with tarfile.open(tar) as t:
        for m in t.getmembers():
            key, suffix = m.name.split(".", 1)
            if not out or out[-1][0] != key:
                out.append((key, []))
            out[-1][1].append((suffix, t.extractfile(m).read()))
    return out


def write_samples(tar: Path, samples: list[Sample]) -> None:
    """A webdataset tar of `samples` (members `{key}.{suffix}`, in order); no samples: a whole, empty tar."""
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as t:
        for key, members in samples:
            for suffix, data in members:
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))


def _cut_inside_a_member(tar: Path) -> None:
    with tarfile.open(tar) as t:
        m = next(m for m in t.getmembers()[3:] if m.size > 2)
    tar.write_bytes(tar.read_bytes()[:m.offset_data + m.size // 2])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
