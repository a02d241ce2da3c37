"""`scenectl verify-shards`: check a shard set against its manifest, member by member, before trusting it.

    report = verify_shards("shards/val2017")          # {"ok": bool, "problems": [...], ...}
    print(format_report(report))

Shard sets travel between people and clusters; a copy can arrive truncated, a build can be left half-done, and a
tar can be tampered with. This reads every shard with Python's `tarfile` (members are never extracted to disk and
nothing is unpickled: only jpg, mask.png, cls, json and object.jpg are decoded, with PIL / json / int) and checks:

  - the folder: manifest.json present and valid; no leftover `*.partial` or `progress*.json` (an unfinished
    build); no unmerged part manifests; no `shard-*.tar` that the manifest does not list
  - each listed shard: the file exists; its sha256 equals the manifest's (when recorded); it reads to the end
    (a truncated or corrupt tar is reported); every member is a regular file with a safe name (no absolute path,
    no `..`); members are grouped into samples by key exactly as webdataset does
  - each sample: the members the build writes are all there (jpg, mask.png, cls, json; object.jpg with
    `--with-object`; jpg, cls, json for `--task object`); no other member (reported: readers ignore them, but a
    scenectl build never writes them); each decodes; images are image_size x image_size and the mask is binary
    and as large as the scene; cls is an index of the class list and equals the json's cls; the key is
    `{image_id:012d}_{annotation_id:012d}` of the json and appears once in the whole set
  - counts: samples per shard, total and per class equal the manifest's

Every problem names the shard (and sample and member where there is one). The CLI prints them and exits 1 when
there is any (`--json` for a machine-readable report); a path that is not a folder is a usage error (exit 2).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from scenectl.errors import ScenectlError

KNOWN = ("jpg", "mask.png", "cls", "json", "object.jpg")  # the only members scenectl writes (and decodes)
_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext: key = up to the first dot


@dataclass
class VerifyConfig:
    directory: Path = Path("shards/val2017")
    json: bool = False  # print the report as JSON
    check_hashes: bool = True  # compare each shard's sha256 with the manifest's
    workers: int = 1  # shards verified in parallel (processes)
    progress: bool = True  # tqdm bar on stderr


@dataclass(frozen=True)
class _Expect:
    """What every sample of this set must look like (from the manifest)."""

    required: tuple[str, ...]
    image_size: int | None
    num_classes: int
    names: tuple[str, ...]
    check_hashes: bool


def _problem(kind: str, message: str, shard: str | None = None, sample: str | None = None,
             member: str | None = None) -> dict:
    return {"kind": kind, "shard": shard, "sample": sample, "member": member, "message": message}


# --- one shard ---------------------------------------------------------------------------------------------------
def verify_shard(path: str | os.PathLike, entry: dict, expect: _Expect) -> dict:
    """Check one shard; returns {problems, samples, keys, per_class} (keys in order, per_class as a list)."""
    path = Path(path)
    name = path.name
    res = {"shard": name, "problems": [], "samples": 0, "keys": [], "per_class": [0] * expect.num_classes}
    add = lambda kind, msg, **kw: res["problems"].append(_problem(kind, f"{name}: {msg}", shard=name, **kw))  # noqa: E731
    if not path.is_file():
        add("missing_shard", "listed in manifest.json but missing")
        return res
    if expect.check_hashes and entry.get("sha256"):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if h.hexdigest() != entry["sha256"]:
            add("checksum", f"sha256 {h.hexdigest()[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
    groups: list[tuple[str, dict]] = []  # samples in tar order: (key, {suffix: bytes})
    try:
        with tarfile.open(path, "r:") as tar:  # plain POSIX tar; read member by member, never extracted
            for info in tar:
                member = info.name
                if not info.isreg():
                    add("unsafe_member", f"member {member!r} is not a regular file (type {info.type!r})", member=member)
                    continue
                if member.startswith("/") or ".." in Path(member).parts:
                    add("unsafe_member", f"member {member!r} has an absolute or '..' path", member=member)
                    continue
                m = _KEY.match(member)
                if not m:
                    add("unexpected_member", f"member {member!r} has no key.suffix name", member=member)
                    continue
                key, suffix = m.group(1), m.group(2)
                if not groups or groups[-1][0] != key:
                    groups.append((key, {}))
                if suffix in groups[-1][1]:
                    add("duplicate_member", f"sample {key}: member {suffix!r} appears twice", sample=key, member=suffix)
                data = tar.extractfile(info).read()  # (regular file: bytes in memory)
                if len(data) != info.size:
                    raise EOFError(f"member {member!r} cut short")
                groups[-1][1][suffix] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        add("unreadable", f"cannot read the tar to its end (truncated or corrupt?): {type(e).__name__}: {e}")
    for key, members in groups:
        _check_sample(key, members, expect, add, res)
    if res["samples"] != int(entry.get("samples", -1)):
        add("count", f"holds {res['samples']} samples, the manifest says {entry.get('samples')}")
    return res


def _check_sample(key: str, members: dict, expect: _Expect, add: Callable, res: dict) -> None:
    res["samples"] += 1
    res["keys"].append(key)
    for suffix in members:
        if suffix not in KNOWN or suffix not in expect.required:
            add("unexpected_member", f"sample {key}: unexpected member {suffix!r} (never decoded)", sample=key,
                member=suffix)
    missing = [m for m in expect.required if m not in members]
    for m in missing:
        add("missing_member", f"sample {key}: member {m!r} is missing", sample=key, member=m)
    sizes = {}
    for m in ("jpg", "object.jpg", "mask.png"):
        if m not in members or m not in expect.required:
            continue
        try:
            with Image.open(io.BytesIO(members[m])) as im:
                im.load()
                arr = np.asarray(im)
                sizes[m] = im.size
        except Exception as e:  # PIL raises many types for bad bytes
            add("undecodable", f"sample {key}: member {m!r} is not a readable image ({type(e).__name__}: {e})",
                sample=key, member=m)
            continue
        if expect.image_size and im.size != (expect.image_size, expect.image_size):
            add("bad_value", f"sample {key}: member {m!r} is {im.size[0]}x{im.size[1]}, not the manifest's "
                f"image_size {expect.image_size}", sample=key, member=m)
        if m == "mask.png" and (arr.ndim != 2 or not np.isin(arr, (0, 255)).all()):
            add("bad_value", f"sample {key}: member 'mask.png' is not a binary greyscale mask (0/255)", sample=key,
                member=m)
    if "jpg" in sizes and "mask.png" in sizes and sizes["jpg"] != sizes["mask.png"]:
        add("bad_value", f"sample {key}: mask.png {sizes['mask.png']} and jpg {sizes['jpg']} differ in size",
            sample=key, member="mask.png")
    cls = None
    if "cls" in members:
        try:
            cls = int(members["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            add("undecodable", f"sample {key}: member 'cls' is not an ASCII integer", sample=key, member="cls")
        if cls is not None and not 0 <= cls < expect.num_classes:
            add("bad_value", f"sample {key}: cls {cls} is not an index of the {expect.num_classes}-class list",
                sample=key, member="cls")
            cls = None
    if "json" in members:
        try:
            meta = json.loads(members["json"])
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            add("undecodable", f"sample {key}: member 'json' is not valid metadata JSON ({e})", sample=key,
                member="json")
            meta = None
        if meta is not None:
            _check_meta(key, meta, cls, expect, add)
    if cls is not None:
        res["per_class"][cls] += 1


def _check_meta(key: str, meta: dict, cls: int | None, expect: _Expect, add: Callable) -> None:
    if cls is not None and meta.get("cls") != cls:
        add("inconsistent", f"sample {key}: cls member {cls} but json cls {meta.get('cls')!r}", sample=key,
            member="json")
    if cls is not None and "category_name" in meta and meta["category_name"] != expect.names[cls]:
        add("inconsistent", f"sample {key}: json category_name {meta['category_name']!r} but class {cls} is "
            f"{expect.names[cls]!r}", sample=key, member="json")
    try:
        want = f"{int(meta['image_id']):012d}_{int(meta['annotation_id']):012d}"
    except (KeyError, TypeError, ValueError):
        add("inconsistent", f"sample {key}: json has no integer image_id / annotation_id", sample=key, member="json")
        return
    if key != want:
        add("inconsistent", f"sample {key}: key does not match the json's ids ({want})", sample=key, member="json")


# --- the whole set -----------------------------------------------------------------------------------------------
def _folder_problems(d: Path) -> tuple[dict | None, list[dict]]:
    """The manifest (or None) and the problems of the folder itself."""
    problems = []
    for p in sorted(d.glob("*.partial")):
        problems.append(_problem("leftover", f"{p.name}: a partly written shard (an interrupted build; finish it with "
                                             "`scenectl build-shards --resume`)", shard=p.name))
    for p in sorted(d.glob("progress*.json")):
        problems.append(_problem("leftover", f"{p.name}: the journal of an unfinished build", shard=None))
    if not (d / "manifest.json").is_file():
        parts = sorted(p.name for p in d.glob("manifest.part-*-of-*.json"))
        why = (f"a build in parts ({parts[0]}, ...): run `scenectl merge-manifests {d}`" if parts else
               "not a shard set written by scenectl build-shards, or an unfinished build")
        problems.append(_problem("manifest", f"manifest.json missing: {why}"))
        return None, problems
    try:
        manifest = json.loads((d / "manifest.json").read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(_problem("manifest", f"manifest.json is not valid JSON: {e}"))
        return None, problems
    ok = (isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("scenectl-shards/")
          and isinstance(manifest.get("classes"), list) and isinstance(manifest.get("shards"), list)
          and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in manifest["shards"]))
    if not ok:
        problems.append(_problem("manifest", "manifest.json is not a scenectl shard manifest (format tag, 'classes' "
                                             "and 'shards' lists)"))
        return None, problems
    listed = {s["name"] for s in manifest["shards"]}
    for s in manifest["shards"]:
        if Path(s["name"]).name != s["name"]:
            problems.append(_problem("manifest", f"manifest.json lists {s['name']!r}, which is not a plain file name"))
    for p in sorted(d.glob("*.tar")):
        if p.name not in listed:
            problems.append(_problem("unlisted_shard", f"{p.name}: a shard the manifest does not list", shard=p.name))
    return manifest, problems


def _expect(manifest: dict, check_hashes: bool) -> _Expect:
    params = manifest.get("params") or {}
    task = manifest.get("task", params.get("task", "masked"))
    required = ("jpg", "cls", "json") if task == "object" else \
        ("jpg", "mask.png", "cls", "json") + (("object.jpg",) if params.get("with_object") else ())
    size = params.get("image_size")
    return _Expect(required, int(size) if size else None, len(manifest["classes"]),
                   tuple(str(c.get("name")) for c in manifest["classes"]), check_hashes)


def _verify_one(args: tuple) -> dict:
    return verify_shard(*args)


def verify_shards(directory: str | os.PathLike, check_hashes: bool = True, workers: int = 1,
                  progress: bool = False) -> dict[str, Any]:
    """Verify a shard-set folder; returns the report (problems: [{kind, shard, sample, member, message}])."""
    d = Path(directory)
    if not d.is_dir():
        raise ScenectlError(f"shard set not found: {d} (no such folder)")
    manifest, problems = _folder_problems(d)
    report = {"format": "scenectl-verify/1", "directory": str(d), "shards": 0, "samples": 0, "problems": problems}
    if manifest is None:
        report["ok"] = False
        return report
    expect = _expect(manifest, check_hashes)
    entries = [s for s in manifest["shards"] if Path(s["name"]).name == s["name"]]
    jobs = [(d / s["name"], s, expect) for s in entries]
    bar = dict(total=len(jobs), desc=f"verify {d.name}", unit="shard", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = list(tqdm(pool.imap(_verify_one, jobs), **bar))
    else:
        results = [verify_shard(*j) for j in tqdm(jobs, **bar)]
    seen: dict[str, str] = {}
    per_class = np.zeros(expect.num_classes, np.int64)
    for r in results:
        problems += r["problems"]
        per_class += np.asarray(r["per_class"], np.int64)
        for k in r["keys"]:
            if k in seen:
                problems.append(_problem("duplicate_key", f"{r['shard']}: sample {k} also appears in {seen[k]}",
                                         shard=r["shard"], sample=k))
            seen.setdefault(k, r["shard"])
    n = sum(r["samples"] for r in results)
    totals = manifest.get("totals") or {}
    if "samples" in totals and totals["samples"] != n:
        problems.append(_problem("count", f"manifest.json: totals.samples is {totals['samples']}, the shards hold {n}"))
    declared = totals.get("per_class")
    if isinstance(declared, dict) and all(isinstance(v, int) for v in declared.values()) and not problems:
        for name, got in zip(expect.names, per_class.tolist()):
            if declared.get(name, 0) != got:
                problems.append(_problem("count", f"manifest.json: totals.per_class[{name!r}] is "
                                                  f"{declared.get(name, 0)}, the shards hold {got}"))
    report.update(shards=len(results), samples=n, ok=not problems)
    return report


def format_report(report: dict, limit: int = 50) -> str:
    """The text the CLI prints: one line per problem (the first `limit`), then the verdict."""
    lines = [f"problem: {p['message']}" for p in report["problems"][:limit]]
    if len(report["problems"]) > limit:
        lines.append(f"... and {len(report['problems']) - limit} more (--json lists them all)")
    kinds = Counter(p["kind"] for p in report["problems"])
    if report["ok"]:
        lines.append(f"OK: {report['directory']}: {report['samples']} samples in {report['shards']} shard{'' if report['shards'] == 1 else 's'} match "
                     "manifest.json")
    else:
        lines.append(f"FAILED: {report['directory']}: {len(report['problems'])} problem(s) "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}) in {report['shards']} shards, "
                     f"{report['samples']} samples read")
    return "\n".join(lines)


def main(cfg: VerifyConfig) -> dict:
    return verify_shards(cfg.directory, cfg.check_hashes, cfg.workers, cfg.progress)
