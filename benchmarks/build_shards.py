"""Throughput of build-shards against its floor, for the very samples the build wrote (same process, same run).

    python benchmarks/build_shards.py --split train2017 --shape box --image-size 224          # workers 1 and 2
    python benchmarks/build_shards.py --split train2017 --shape circle --image-size 256 --naive

Rates (samples/s), each contender run --repeat times, interleaved, best kept:
  floor   for the samples a build writes: decode each source image once (JPEG draft decoding down to the output
          size) and letterbox it once, then per sample encode one JPEG (quality 90) and one PNG mask (Pillow,
          compress level 1) -- no masking, no tar, no metadata, no annotation loading
  build   scenectl.data.shards.build_shards, the whole command (annotation loading, masking, tar writing, manifest,
          co-occurrence), --workers 1 and 2
  naive   (--naive) per instance: reopen + decode the image, COCO.annToMask, geometry, fill, resize the whole scene,
          encode jpg + mask.png (same eligibility, so it makes the same samples)
Targets: build(--workers 1) / floor >= 0.8; --workers 2 faster than --workers 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from scenectl.data.coco import load_coco, split_paths
from scenectl.data.masks import Letterbox, fill, hidden_region
from scenectl.data.shards import BuildConfig, build_shards

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"


def encode(arr: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return buf.getvalue()


def written(cfg: BuildConfig) -> dict[str, list[np.ndarray]]:
    """The samples one build writes: {source file name: [its samples' masks (S, S) uint8]}."""
    import webdataset as wds

    out = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        build_shards(BuildConfig(**{**cfg.__dict__, "out": out, "workers": 1, "progress": False}), echo=lambda s: None)
        per_image = defaultdict(list)
        for s in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False, empty_check=False):
            mask = np.asarray(Image.open(io.BytesIO(s["mask.png"])))
            per_image[json.loads(s["json"])["file_name"]].append(mask)
        return per_image
    finally:
        shutil.rmtree(out)


def floor(per_image: dict[str, list[np.ndarray]], images: Path, size: int) -> tuple[int, float]:
    t, n = time.perf_counter(), 0
    for name, masks in per_image.items():
        with Image.open(images / name) as img:
            s = size / max(img.size)  # libjpeg DCT scaling to >= size on the longer side, as build-shards does
            img.draft("RGB", (int(img.width * s + 1), int(img.height * s + 1)))
            img = img.convert("RGB")
        scene = Letterbox(img.width, img.height, size).image(img)  # (S, S, 3), once per image
        for m in masks:
            encode(scene)
            encode(m, "PNG")
            n += 1
    return n, time.perf_counter() - t


def naive(coco, images: Path, cfg: BuildConfig) -> tuple[int, float]:
    t, n = time.perf_counter(), 0
    for ann in coco.dataset["annotations"]:
        if ann.get("iscrowd"):
            continue
        rec = coco.imgs[ann["image_id"]]
        img = Image.open(images / rec["file_name"]).convert("RGB")  # decoded again for every instance
        m = coco.annToMask(ann).astype(bool)
        if m.sum() < cfg.min_area:
            continue
        region, _ = hidden_region(m, cfg.shape, cfg.margin)
        if region.mean() > cfg.max_area:
            continue
        lb = Letterbox(img.width, img.height, cfg.image_size)
        encode(lb.image(Image.fromarray(fill(np.asarray(img), region, cfg.fill))))
        encode(lb.mask(region), "PNG")
        n += 1
    return n, time.perf_counter() - t


def build(cfg: BuildConfig, workers: int) -> tuple[int, float]:
    out = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        t = time.perf_counter()
        m = build_shards(BuildConfig(**{**cfg.__dict__, "out": out, "workers": workers, "progress": False}), echo=lambda s: None)
        return m["totals"]["samples"], time.perf_counter() - t
    finally:
        shutil.rmtree(out)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coco-root", type=Path, default=SHARED)
    ap.add_argument("--split", default="train2017")
    ap.add_argument("--shape", default="box")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive", action="store_true", help="also run the naive per-instance loop (slow)")
    a = ap.parse_args()
    cfg = BuildConfig(coco_root=a.coco_root, split=a.split, shape=a.shape, image_size=a.image_size)
    ann, images = split_paths(a.coco_root, a.split)
    per_image = written(cfg)
    n_samples = sum(map(len, per_image.values()))
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{load()}; {a.coco_root.name}/{a.split}: {n_samples} samples from {len(per_image)} images, "
          f"--shape {a.shape} --image-size {a.image_size}")
    runs = {"floor (decode+letterbox per image, jpg+png per sample)": lambda: floor(per_image, images, a.image_size)}
    runs.update({f"build-shards --workers {w}": (lambda w=w: build(cfg, w)) for w in a.workers})
    if a.naive:
        coco = load_coco(ann)
        runs["naive (decode + annToMask per instance)"] = lambda: naive(coco, images, cfg)
    best, counts = dict.fromkeys(runs, 0.0), {}
    for _ in range(a.repeat):
        for name, run in runs.items():
            n, s = run()
            best[name], counts[name] = max(best[name], n / s), n
    assert all(n == n_samples for n in counts.values()), counts  # every contender made the same samples
    fl = best["floor (decode+letterbox per image, jpg+png per sample)"]
    for name, rate in best.items():
        print(f"{name:56s} {rate:8.1f} samples/s   {rate / fl:5.2f}x floor")
    b1 = best[f"build-shards --workers {a.workers[0]}"]
    print(f"build/floor = {b1 / fl:.2f} at --workers {a.workers[0]} (target >= 0.8)")
    if len(a.workers) > 1:
        print(f"workers {a.workers[-1]} / workers {a.workers[0]} = {best[f'build-shards --workers {a.workers[-1]}'] / b1:.2f}x")
    if a.naive:
        print(f"build/naive = {b1 / best['naive (decode + annToMask per instance)']:.1f}x")
    print(f"# load average after: {load()}")


if __name__ == "__main__":
    main()
