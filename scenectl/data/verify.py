"""`scenectl verify-shards`: check a shard set against its manifest, member by member, before trusting it.

    report = verify_shards("shards/val2017")          # {"ok": bool, "problems": [...], ...}
    print(format_report(report))

Shard sets travel between people and clusters; a copy can arrive truncated, a build can be left half-done, and a
tar can be tampered with. This reads every shard with Python's `tarfile` (members are never extracted to disk and
nothing is unpickled: only jpg, mask.png, cls, json and object.jpg are decoded, with PIL / json / int) and checks:

  - the folder: manifest.json present and valid, every name it lists a plain file name of the folder (no scheme,
    separator or `..`); no leftover `*.partial` or `progress*.json` (an unfinished build); no unmerged part
    manifests; no `shard-*.tar` that the manifest does not list (a remote folder cannot be listed: these two are
    not looked for there)
  - the set's other files: `cooccurrence.h5`, the build's config and `_info.json` against the manifest's `files`
    sha256 (sets built before that field have none)
  - each listed shard: the file exists; its sha256 equals the manifest's (when recorded); it reads to the end as
    a plain tar (a truncated, corrupt or compressed tar is reported); every member passes the format's member
    rules (scenectl.data.format.shard_samples: a regular file, a UTF-8 `KEY.SUFFIX` name of a format member, within
    the size cap); members are grouped into samples by key exactly as webdataset does
  - each sample (scenectl.data.format.sample_problems, the reader's own checks, here with pixels decoded too):
    the members the build writes are all there (jpg, mask.png, cls, json; object.jpg with
    `--with-object`; jpg, cls, json for `--task object`); no other member (the reader refuses them too); each decodes;
    images are image_size x image_size (their headers, before decoding) and the mask is binary; cls is ASCII
    digits naming a class of the list and equals the json's cls; visible_categories are class indices; the key is
    `{image_id:012d}_{annotation_id:012d}` of the json and appears once in the whole set
  - counts: samples per shard, total and per class equal the manifest's

Each shard is read once, as a stream, through the reader's opener (`scenectl.data.remote.open_stream`), so a remote
set (`https://host/dir/`, `pipe:COMMAND-PREFIX/`) is verified with the same retries as every other read. Every
problem names the shard (and sample and member where there is one). The CLI prints them and exits 1 when there is
any (`--json` for a machine-readable report); a path that is not a folder is a usage error (exit 2).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from scenectl.data.cooccurrence import LAYOUT as COOCCURRENCE_LAYOUT
from scenectl.data.format import (JOURNAL_GLOB, PARTIAL_GLOB, Problem, SampleSpec, join, manifest_problems,
                                  no_manifest, parse_cls, sample_problems, shard_samples, usable_shards)
from scenectl.data.remote import (Net, NetOptions, check_scheme, is_local, local_path, net_options, open_stream,
                                  plain_name_problem, read_remote)
from scenectl.errors import OutOfMemory, ScenectlError
from scenectl.h5 import MAX_FILE_BYTES as MAX_H5_BYTES, file_problems
from scenectl.io import MAX_JSON_BYTES, read_regular
from scenectl.options import Options, group, option
from scenectl.progress import progress as progress_of

REPORT_FORMAT = "scenectl-verify/1"


@dataclass(init=False)
class VerifyConfig(Options):
    """`scenectl verify-shards`."""

    directory: str | Path = option("shards/val2017", "Shard-set folder (with manifest.json), or a remote set's folder "
                                   "URL (https://host/dir/, pipe:COMMAND-PREFIX/).", type=str, argument=True,
                                   required=True)
    json: bool = option(False, "Print the report as JSON (machine-readable).", "--json")
    check_hashes: bool = option(True, "Compare each shard's sha256 with the manifest's.", "--hashes/--no-hashes")
    workers: int = option(0, "Processes verifying shards in parallel; 0: the main process alone (so does 1).")
    progress: bool = option(True, "Progress bar on stderr.", "--progress/--no-progress")
    net: Net = group(Net)


def _problem(kind: str, message: str, shard: str | None = None, sample: str | None = None,
             member: str | None = None) -> dict:
    return {"kind": kind, "shard": shard, "sample": sample, "member": member, "message": message}


# --- one shard ---------------------------------------------------------------------------------------------------
def verify_shard(url: str | os.PathLike, entry: dict, spec: SampleSpec, check_hashes: bool = True,
                 net: NetOptions = NetOptions()) -> dict:
    """Check one shard (a local path or a URL) against the format's sample spec (from the manifest) and, with
    `check_hashes`, its sha256; returns {problems, samples, keys, per_class} (keys in order, per_class as a list)."""
    url = str(url)
    name = entry.get("name") or Path(url).name
    res = {"shard": name, "problems": [], "samples": 0, "keys": [], "per_class": [0] * spec.num_classes}
    add = lambda kind, msg, **kw: res["problems"].append(  # noqa: E731
        _problem(kind, f"{name}: {msg}", shard=name, **kw))
    if is_local(url) and not Path(local_path(url)).is_file():
        add("missing_shard", "listed in manifest.json but missing")
        return res
    groups, digest = _read_tar(url, spec, net, add)
    if check_hashes and entry.get("sha256") and digest and digest != entry["sha256"]:
        add("checksum", f"sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
    res["samples"], res["keys"] = len(groups), [key for key, _ in groups]
    for key, members in groups:  # the format's checks of each sample (pixels decoded too), its class counted
        for p in sample_problems(key, members, spec, decode=True):
            _add_problem(add, p)
        cls = parse_cls(members.get("cls", b""))
        if cls is not None and cls < spec.num_classes:
            res["per_class"][cls] += 1
    if res["samples"] != int(entry.get("samples", -1)):
        add("count", f"holds {res['samples']} samples, the manifest says {entry.get('samples')}")
    return res


class _Hashing(io.RawIOBase):
    """A file read front to back, hashed on the way (sha256 of every byte read)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.f.readinto(b)
        self.sha.update(memoryview(b)[:n])
        return n


def _read_tar(url: str, spec: SampleSpec, net: NetOptions,
              add: Callable) -> tuple[list[tuple[str, dict]], str | None]:
    """The samples of one shard in tar order, (key, {suffix: bytes}), read once as a stream through the reader's
    opener (remote reads retried) by the format's member reader (refused members reported, not read), with the
    sha256 of all its bytes (None when the bytes could not all be read)."""
    groups: list[tuple[str, dict]] = []
    try:
        with open_stream(url, net) as raw:
            f = _Hashing(raw)
            try:
                for item in shard_samples(f, spec):
                    if isinstance(item, Problem):
                        _add_problem(add, item)
                    else:
                        groups.append(item)
            except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                add("unreadable", f"cannot read the tar to its end (truncated or corrupt?): {type(e).__name__}: {e}")
            while f.read(1 << 20):  # the end-of-archive padding the tar reader leaves, for the checksum
                pass
            return groups, f.sha.hexdigest()
    except OutOfMemory:  # this machine's limit, not the shard's fault
        raise
    except (ScenectlError, OSError) as e:  # RemoteError: a remote read that failed for good
        add("unreadable", str(e))
        return groups, None


def _add_problem(add: Callable, p: Problem) -> None:
    where = f"sample {p.sample}: " if p.sample else ""
    add(p.kind, where + p.message, sample=p.sample, member=p.member)


# --- the whole set -----------------------------------------------------------------------------------------------
def _folder_problems(d: Path) -> tuple[dict | None, list[dict]]:
    """The manifest (or None) and the problems of a local folder: leftovers of a build, unlisted shards."""
    problems = [_problem("leftover", f"{p.name}: a partly written shard (an interrupted build; finish it with "
                                     "`scenectl build-shards --resume`)", shard=p.name)
                for p in sorted(d.glob(PARTIAL_GLOB))]
    problems += [_problem("leftover", f"{p.name}: the journal of an unfinished build")
                 for p in sorted(d.glob(JOURNAL_GLOB))]
    if not (d / "manifest.json").is_file():
        return None, problems + [_problem("manifest", f"{d} {no_manifest(d)}")]
    try:
        manifest, found = _parse_manifest(read_regular(d / "manifest.json", "manifest", MAX_JSON_BYTES))
    except ScenectlError as e:  # not a regular file, or too large
        return None, problems + [_problem("manifest", str(e))]
    listed = {s["name"] for s in usable_shards(manifest)} if manifest is not None else None
    problems += found + [_problem("unlisted_shard", f"{p.name}: a shard the manifest does not list", shard=p.name)
                         for p in sorted(d.glob("*.tar")) if listed is not None and p.name not in listed]
    return manifest, problems


def _parse_manifest(data: bytes) -> tuple[dict | None, list[dict]]:
    """The manifest from its bytes (scenectl.data.format), or None, and its problems."""
    manifest, found = manifest_problems(data)
    return manifest, [_problem(p.kind, f"manifest.json {p.message}") for p in found]


def _files_problems(location: str, manifest: dict, net: NetOptions) -> list[dict]:
    """The set's other files (`files`: cooccurrence.h5, config.json, _info.json) against their sha256, when the
    manifest records them (sets built before the field have none to check)."""
    problems = []
    for name, want in manifest.get("files", {}).items():
        if plain_name_problem(name):
            continue
        where = join(location, name)
        if is_local(where) and not os.path.lexists(local_path(where)):
            problems.append(_problem("missing_file", f"{name}: listed in manifest.json 'files' but missing"))
            continue
        try:
            data = read_remote(where, net, "file", MAX_H5_BYTES)  # bounded; a local one must be a regular file
        except (ScenectlError, OSError) as e:
            problems.append(_problem("unreadable", f"{name}: {e}"))
            continue
        if name == "cooccurrence.h5":  # its own bytes may match and still make a reader open other files
            problems += [_problem("unsafe_file", f"{name}: {p}") for p in file_problems(data, COOCCURRENCE_LAYOUT)]
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            problems.append(_problem("checksum", f"{name}: sha256 {got[:12]}... differs from the manifest's "
                                                 f"{str(want)[:12]}... (a file of another build?)"))
    return problems


def _remote_manifest(location: str, net: NetOptions) -> tuple[dict | None, list[dict]]:
    """The manifest of a remote set (a folder URL or pipe: command prefix) and its problems."""
    try:
        data = read_remote(join(location, "manifest.json"), net, "manifest", MAX_JSON_BYTES)
    except ScenectlError as e:
        return None, [_problem("manifest", f"manifest.json: {e}")]
    return _parse_manifest(data)


def _verify_one(args: tuple) -> dict:
    return verify_shard(*args)


def verify_shards(directory: str | os.PathLike, check_hashes: bool = True, workers: int = 1,
                  progress: bool = False, net: NetOptions | None = None) -> dict[str, Any]:
    """Verify a shard set: a local folder, or a remote one (a folder URL `https://host/dir/` or a `pipe:` command
    prefix, read through the reader's retrying opener; a remote folder cannot be listed, so leftovers and unlisted
    shards are not looked for). Returns the report (problems: [{kind, shard, sample, member, message}])."""
    spec = str(directory)
    check_scheme(spec, "verify-shards")
    net = net or net_options()
    if is_local(spec):
        d = Path(local_path(spec))
        if not d.is_dir():
            raise ScenectlError(f"shard set not found: {d} (no such folder)")
        manifest, problems = _folder_problems(d)
    else:
        if re.search(r"\.tar\b", spec):
            raise ScenectlError(f"verify-shards {spec}: give the set's folder (a URL ending in '/'), not shards")
        manifest, problems = _remote_manifest(spec, net)
    report = {"format": REPORT_FORMAT, "directory": spec, "shards": 0, "samples": 0, "problems": problems}
    if manifest is None:
        return {**report, "ok": False}
    sample_spec = SampleSpec.of(manifest)
    if check_hashes:
        problems += _files_problems(spec, manifest, net)
    jobs = [(join(spec, s["name"]), s, sample_spec, check_hashes, net) for s in usable_shards(manifest)]
    bar = dict(total=len(jobs), desc=f"verify {spec.rstrip('/').rsplit('/', 1)[-1]}", unit="shards",
               disable=not progress)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = list(progress_of(pool.imap(_verify_one, jobs), **bar))
    else:
        results = [verify_shard(*j) for j in progress_of(jobs, **bar)]
    _set_problems(manifest, sample_spec, results, problems)
    report.update(shards=len(results), samples=sum(r["samples"] for r in results), ok=not problems)
    return report


def _set_problems(manifest: dict, spec: SampleSpec, results: list[dict], problems: list[dict]) -> None:
    """Keys across shards and the totals against the manifest's, added to `problems`."""
    seen: dict[str, str] = {}
    per_class = np.zeros(spec.num_classes, np.int64)
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
        problems += [_problem("count", f"manifest.json: totals.per_class[{name!r}] is {declared.get(name, 0)}, the "
                                       f"shards hold {got}")
                     for name, got in zip(spec.names, per_class.tolist()) if declared.get(name, 0) != got]


def format_report(report: dict, limit: int = 50) -> str:
    """The text the CLI prints: one line per problem (the first `limit`), then the verdict."""
    lines = [f"problem: {p['message']}" for p in report["problems"][:limit]]
    if len(report["problems"]) > limit:
        lines.append(f"... and {len(report['problems']) - limit} more (--json lists them all)")
    kinds = Counter(p["kind"] for p in report["problems"])
    if report["ok"]:
        lines.append(f"OK: {report['directory']}: {report['samples']} samples in {report['shards']} "
                     f"shard{'' if report['shards'] == 1 else 's'} match manifest.json")
    else:
        lines.append(f"FAILED: {report['directory']}: {len(report['problems'])} problem(s) "
                     f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}) in {report['shards']} shards, "
                     f"{report['samples']} samples read")
    return "\n".join(lines)


def main(cfg: VerifyConfig) -> dict:
    cfg.check()
    return verify_shards(cfg.directory, cfg.check_hashes, cfg.workers, cfg.progress, cfg.net.options())


def unopened_report(directory: str, error: ScenectlError) -> dict:
    """The report of a set that could not be opened at all (no such folder, a shard's URL): one `set` problem, so
    that `--json` always prints JSON (the error also goes to stderr, exit 2)."""
    return {"format": REPORT_FORMAT, "directory": str(directory), "shards": 0, "samples": 0,
            "problems": [_problem("set", str(error))], "ok": False}
