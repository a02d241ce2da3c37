"""What inspect-shards reads of a shard set (the command, which draws: scenectl.inspect_shards): the report of what
it holds (per-class counts, mask-area histogram, build params) and the samples of a contact sheet, drawn at random
across images. The set is read by the one shard reader (scenectl.data.loader: a folder, a pattern or a URL, with
its checks and retries)."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import replace

import numpy as np
from PIL import Image

from scenectl.data.format import MEMBERS, parse_cls
from scenectl.data.loader import ShardSet, raw_samples
from scenectl.errors import ScenectlError
from scenectl.io import parse_json
from scenectl.progress import progress

SCAN_SAMPLES = 20_000  # samples read at most (whole shards drawn at random) to draw a contact sheet


def pick_shards(shards: ShardSet, seed: int, budget: int = SCAN_SAMPLES) -> ShardSet:
    """The set cut to whole shards drawn at random (seeded) until they hold `budget` samples (a smaller set whole),
    in the set's order: a contact sheet reads a bounded share of a large set, and not only its first shard."""
    sizes, order = shards.shard_sizes(), np.random.default_rng(seed).permutation(len(shards.urls))
    totals = np.cumsum([sizes[shards.urls[i]] for i in order])  # samples in the first 1, 2, ... shards drawn
    chosen = order[: np.searchsorted(totals, budget) + 1]  # up to the first that reaches `budget`
    return replace(shards, urls=[shards.urls[i] for i in sorted(chosen)])


def _rank(seed: int, *parts) -> int:
    """A seeded pseudo-random rank that depends only on `parts` (not on the order the set is read in)."""
    return int.from_bytes(hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest(), "big")


def _image_of(raw: dict) -> object:
    """The sample's source image (metadata `image_id`); a sample without a readable one stands for itself."""
    try:
        image = parse_json(raw.get("json", b"{}"), "member 'json'").get("image_id")
    except ScenectlError:  # not JSON, or not an object: decoded (and refused) later if drawn
        image = None
    return image if type(image) is int else ("key", raw["__key__"])


def draw_samples(shards: ShardSet, n: int, seed: int) -> list[dict]:
    """`n` raw samples drawn at random (seeded) from `shards`, from `n` different images where the set has that
    many (the n images of lowest rank, each by its sample of lowest rank), else topped up with other samples."""
    images: dict[object, tuple[int, int, dict]] = {}  # image -> (image rank, sample rank, raw): the n best images
    spare: list[tuple[int, dict]] = []  # the n best samples overall: the top-up when the set has < n images
    for raw in progress(raw_samples(shards), desc=f"inspect-shards {set_name(shards.location)}", unit="samples",
                        total=shards.num_samples):
        image, r_sample = _image_of(raw), _rank(seed, raw["__key__"])
        entry = (_rank(seed, "image", image), r_sample, raw)
        if image not in images or r_sample < images[image][1]:  # a new image, or a lower-ranked sample of one
            images[image] = entry
            if len(images) > n:
                del images[max(images, key=lambda k: images[k][0])]
        spare = sorted(spare + [(r_sample, raw)], key=lambda e: e[0])[:n]
    chosen = [raw for _, _, raw in images.values()]
    keys = {raw["__key__"] for raw in chosen}
    chosen += [raw for _, raw in spare if raw["__key__"] not in keys][: n - len(chosen)]
    return sorted(chosen, key=lambda raw: raw["__key__"])


def decode_known(raw: dict) -> dict:
    """A raw sample with only the known members decoded (no pickle, ever)."""
    s = {"__key__": raw["__key__"]}
    for k in [m for m in MEMBERS if m in raw]:
        if k.endswith(("jpg", "png")):
            s[k] = np.asarray(Image.open(io.BytesIO(raw[k])))
        elif k == "json":
            s[k] = parse_json(raw[k], f"sample {raw['__key__']}: member 'json'")
        else:
            s[k] = parse_cls(raw[k])
    return s


def report(manifest: dict) -> str:
    """Build params, per-class counts and the area-fraction histogram, as text."""
    t = manifest.get("totals", {})  # checked by the format's manifest check; an OOC set's counts pairs, no histogram
    counts = ", ".join(f"{t[k]} {k.replace('_', '-')}" for k in ("instances", "pairs") if k in t)
    lines = [f"task {manifest.get('task', 'masked')}, {t.get('samples', '?')} samples in "
             f"{t.get('shards', len(manifest['shards']))} shards from {t.get('images', '?')} images"
             + (f" ({counts})" if counts else ""),
             "params: " + " ".join(f"{k}={v}" for k, v in manifest.get("params", {}).items()),
             "skipped: " + (", ".join(f"{k} {v}" for k, v in manifest.get("skipped", {}).items()) or "none recorded"),
             "samples per class:"]
    per_class = sorted(t.get("per_class", {}).items(), key=lambda kv: (-kv[1], kv[0]))
    width = max((len(k) for k, _ in per_class), default=0)
    lines += [f"  {k:{width}s} {v:7d}" for k, v in per_class if v]
    empty = [k for k, v in per_class if not v]
    if empty:
        lines.append(f"  (no samples: {', '.join(empty)})")
    hist = t.get("area_fraction_histogram")
    if hist and hist["counts"]:
        peak = max(hist["counts"]) or 1
        lines.append("hidden area / image area:")
        lines += [f"  {lo:5.3f}-{hi:5.3f} {c:7d} {'#' * round(40 * c / peak)}"
                  for lo, hi, c in zip(hist["edges"], hist["edges"][1:], hist["counts"])]
    return "\n".join(lines)


def set_name(location: str) -> str:
    """A set's last path component, for titles and file names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "", location.split("\0")[0].rstrip("/").rsplit("/", 1)[-1]) or "shards"
