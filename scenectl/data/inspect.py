"""inspect-shards: what a shard set holds (per-class counts, mask-area histogram, build params) and a contact
sheet of its first samples (masked scene, outline of the hidden region, label; drawn by scenectl.plots), written
outside the set's folder, which belongs to build-shards (scenectl.folders.check_file_target). The set is opened and
read by the one shard reader (scenectl.data.loader: a folder, a pattern or a URL, with its checks and retries)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from scenectl.data.loader import ShardSet, open_shard_set, raw_samples
from scenectl.data.remote import NetOptions, is_local, local_path
from scenectl.errors import ScenectlError
from scenectl.folders import check_file_target
from scenectl.io import read_json

KNOWN_MEMBERS = ("jpg", "mask.png", "cls", "json", "object.jpg")  # decoded; anything else in a tar is ignored


def load_manifest(directory: str | os.PathLike) -> dict:
    d = Path(directory)
    if not (d / "manifest.json").is_file():
        if list(d.glob("manifest.part-*-of-*.json")):
            raise ScenectlError(f"{d} holds a build in parts: run `scenectl merge-manifests {d}` first")
        if (d / "progress.json").is_file():
            raise ScenectlError(f"{d} holds an unfinished build (progress.json): rerun build-shards with --resume")
        raise ScenectlError(f"{d} is not a shard set: no manifest.json")
    return read_json(d / "manifest.json", "manifest")


def read_samples(shards: ShardSet, n: int) -> list[dict]:
    """The first `n` samples in shard order, with only the known members decoded (no pickle, ever)."""
    out = []
    for raw in raw_samples(shards):
        s = {"__key__": raw["__key__"]}
        for k in KNOWN_MEMBERS:
            if k in raw:
                v = raw[k]
                if k.endswith(("jpg", "png")):
                    s[k] = np.asarray(Image.open(io.BytesIO(v)))
                elif k == "json":
                    s[k] = json.loads(v)
                else:
                    s[k] = int(v)
        out.append(s)
        if len(out) >= n:
            break
    return out


def report(manifest: dict) -> str:
    """Build params, per-class counts and the area-fraction histogram, as text."""
    t = manifest["totals"]
    lines = [f"task {manifest['task']}, {t['samples']} samples in {t['shards']} shards from {t['images']} images "
             f"({t['instances']} instances)",
             "params: " + " ".join(f"{k}={v}" for k, v in manifest["params"].items()),
             "skipped: " + ", ".join(f"{k} {v}" for k, v in manifest["skipped"].items()),
             "samples per class:"]
    per_class = sorted(t["per_class"].items(), key=lambda kv: (-kv[1], kv[0]))
    width = max(len(k) for k, _ in per_class)
    lines += [f"  {k:{width}s} {v:7d}" for k, v in per_class if v]
    empty = [k for k, v in per_class if not v]
    if empty:
        lines.append(f"  (no samples: {', '.join(empty)})")
    hist = t["area_fraction_histogram"]
    peak = max(hist["counts"]) or 1
    lines.append("hidden area / image area:")
    for lo, hi, c in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
        lines.append(f"  {lo:5.3f}-{hi:5.3f} {c:7d} {'#' * round(40 * c / peak)}")
    return "\n".join(lines)


def default_sheet(location: str) -> Path:
    """Where the contact sheet goes without --out: beside a local set, named after it (the set's folder is
    build-shards'); for a remote set, in the current folder."""
    if not is_local(location):
        name = re.sub(r"[^A-Za-z0-9_.-]", "", location.split("\0")[0].rstrip("/").rsplit("/", 1)[-1])
        return Path(f"{name or 'shards'}-contact-sheet.png")
    d = Path(local_path(location)).resolve()
    return d.parent / f"{d.name}-contact-sheet.png"


def inspect_shards(spec: str | os.PathLike, n: int = 16, out: str | os.PathLike | None = None,
                   net: NetOptions | None = None) -> dict:
    """Report on a shard set and write its contact sheet (default: DIR-contact-sheet.png beside DIR)."""
    if n < 1:
        raise ScenectlError(f"--n must be >= 1, got {n}")
    shards = open_shard_set(spec, net)
    sheet = Path(out) if out is not None else default_sheet(shards.location)
    check_file_target(sheet, "--out")
    manifest = shards.manifest
    samples = read_samples(shards, n)
    from scenectl.plots import plot_contact_sheet  # matplotlib: only when drawing

    plot_contact_sheet(samples, sheet)
    return {"manifest": manifest, "text": report(manifest), "sheet": str(sheet), "keys": [s["__key__"] for s in samples]}
