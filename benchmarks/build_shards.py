"""Throughput of build-shards against a naive per-instance loop and the decode/resize/encode floor.

    python benchmarks/build_shards.py                      # coco-sample val2017, 256 px, square
    python benchmarks/build_shards.py --split train2017 --shape circle

Rates, all measured in this run on the same images:
  naive      per instance: reopen + decode the image, COCO.annToMask, geometry, fill, resize the whole scene,
             encode jpg + mask.png (same eligibility, so it makes the same samples)
  floor      per image, once: decode + letterbox resize + encode JPEG; its "per-sample rate" counts one sample
             per image (what a build would cost if every sample were as cheap as touching its image once)
  build      scenectl.data.shards.build_shards, whole command (annotation loading, tar writing, manifest)
Targets: build(workers=1) >= 5x naive and >= 0.7x floor; workers=2 faster than workers=1.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scenectl.data.coco import load_coco, split_paths
from scenectl.data.masks import Letterbox, fill, hidden_region
from scenectl.data.shards import BuildConfig, build_shards

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"


def encode(arr: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def floor(coco, images: Path, size: int, draft: bool = False) -> tuple[int, float]:
    t = time.perf_counter()
    for rec in coco.imgs.values():
        img = Image.open(images / rec["file_name"])
        if draft:  # libjpeg DCT scaling to >= size on the longer side, as build-shards does for masked scenes
            s = size / max(img.size)
            img.draft(None, (int(img.width * s + 1), int(img.height * s + 1)))
        img = img.convert("RGB")
        encode(Letterbox(img.width, img.height, size).image(img))
    return len(coco.imgs), time.perf_counter() - t


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coco-root", type=Path, default=SHARED)
    ap.add_argument("--split", default="val2017")
    ap.add_argument("--shape", default="square")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cfg = BuildConfig(coco_root=a.coco_root, split=a.split, shape=a.shape, image_size=a.image_size)
    ann, images = split_paths(a.coco_root, a.split)
    coco = load_coco(ann)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{a.coco_root.name}/{a.split} ({len(coco.imgs)} images), --shape {a.shape} --image-size {a.image_size}")
    # the machine is shared: every contender runs --repeat times, interleaved, and keeps its best rate
    runs = {"floor (decode+resize+encode per image)": lambda: floor(coco, images, a.image_size),
            "floor, JPEG draft decode": lambda: floor(coco, images, a.image_size, draft=True),
            "naive (decode + annToMask per instance)": lambda: naive(coco, images, cfg)}
    runs.update({f"build-shards --workers {w}": (lambda w=w: build(cfg, w)) for w in a.workers})
    rows, counts = dict.fromkeys(runs, 0.0), {}
    for _ in range(a.repeat):
        for name, run in runs.items():
            n, s = run()
            rows[name], counts[name] = max(rows[name], n / s), n
    naive_samples = counts["naive (decode + annToMask per instance)"]
    assert all(counts[f"build-shards --workers {w}"] == naive_samples for w in a.workers), counts  # same samples
    for name, rate in rows.items():
        print(f"{name:45s} {rate:8.1f} samples/s")
    b1 = rows[f"build-shards --workers {a.workers[0]}"]
    print(f"build/naive = {b1 / rows['naive (decode + annToMask per instance)']:.1f}x (target >= 5)")
    print(f"build/floor = {b1 / rows['floor (decode+resize+encode per image)']:.2f}x (target >= 0.7); "
          f"vs the draft-decode floor {b1 / rows['floor, JPEG draft decode']:.2f}x")
    if len(a.workers) > 1:
        print(f"workers {a.workers[-1]} / workers {a.workers[0]} = {rows[f'build-shards --workers {a.workers[-1]}'] / b1:.2f}x")


if __name__ == "__main__":
    main()
