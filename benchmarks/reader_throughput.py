"""Shard readers against their decode floor, one core, same samples, same process.

    python benchmarks/reader_throughput.py                       # coco-sample train2017 built at 224 px (cached)
    python benchmarks/reader_throughput.py --shards /tmp/s/train2017 --image-size 224 --repeat 3

Rates (samples/s), each contender run --repeat times, interleaved, best kept:
  floor   every sample's `jpg` + `mask.png` decoded from memory with Pillow (bytes read beforehand; nothing else)
  train   make_train_loader, workers 0: tar reading, shuffle, decoding, augmentation, collate (no model);
          --passes over the set in one epoch, so the shuffle buffer's first fill (read, not yet yielded) counts little
  eval    make_eval_loader, workers 0: tar reading, decoding, collate (no model)
  "+ batch": the same, plus the per-batch step every command applies where the batch meets the model
             (transforms.batch_to_device on the CPU: uint8 -> float, colour jitter, normalisation)
Targets: train / floor >= 0.35, eval / floor >= 0.6. One torch thread (torch.set_num_threads(1)).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from scenectl.data import loader as L
from scenectl.data import transforms as T

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"


def default_shards(image_size: int) -> Path:
    """coco-sample train2017 at `image_size`, built once into the temp folder and reused."""
    from scenectl.data.shards import BuildConfig, build_shards

    out = Path(tempfile.gettempdir()) / f"scenectl-reader-bench-{image_size}" / "train2017"
    if not (out / "manifest.json").is_file():
        build_shards(BuildConfig(coco_root=SHARED, split="train2017", out=out, image_size=image_size, progress=False,
                                 overwrite=out.exists()), echo=lambda *_: None)
    return out


def floor(raws: list[dict]) -> tuple[int, float]:
    t = time.perf_counter()
    for r in raws:
        for member in ("jpg", "mask.png"):
            with Image.open(io.BytesIO(r[member])) as im:
                im.load()
    return len(raws), time.perf_counter() - t


def finish(batch: dict) -> None:
    """The per-batch step, where the code under test has one (batches are final otherwise)."""
    if hasattr(T, "batch_to_device"):
        T.batch_to_device(batch, torch.device("cpu"))


def train(shards, a, with_batch: bool) -> tuple[int, float]:
    steps = a.passes * shards.num_samples // a.batch_size  # passes > 1: the shuffle buffer's first fill amortised
    t = time.perf_counter()
    loader = L.make_train_loader(shards, steps=steps, batch_size=a.batch_size, image_size=a.image_size, workers=0,
                                 shuffle_buffer=a.shuffle_buffer)
    for b in loader:
        if with_batch:
            finish(b)
    return steps * a.batch_size, time.perf_counter() - t


def evaluate(shards, a, with_batch: bool) -> tuple[int, float]:
    n, t = 0, time.perf_counter()
    for b in L.make_eval_loader(shards, image_size=a.image_size, batch_size=a.batch_size, workers=0):
        if with_batch:
            finish(b)
        n += len(b["key"])
    return n, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, help="shard set (default: coco-sample train2017 at --image-size)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shuffle-buffer", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--passes", type=int, default=3, help="train reader: passes over the set per run")
    a = ap.parse_args()
    torch.set_num_threads(1)
    shards = L.open_shard_set(a.shards or default_shards(a.image_size))
    raws = list(L.raw_samples(shards))
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}, 1 thread; "
          f"{len(raws)} samples of {shards.location} (built at {shards.image_size} px), read at {a.image_size} px, "
          f"batch {a.batch_size}")
    runs = {"floor: Pillow decode of jpg + mask.png": lambda: floor(raws),
            "train reader": lambda: train(shards, a, False),
            "train reader + batch step": lambda: train(shards, a, True),
            "eval reader": lambda: evaluate(shards, a, False),
            "eval reader + batch step": lambda: evaluate(shards, a, True)}
    if not hasattr(T, "batch_to_device"):  # the batches are already final: nothing to add
        del runs["train reader + batch step"], runs["eval reader + batch step"]
    best = dict.fromkeys(runs, 0.0)
    for _ in range(a.repeat):
        for name, run in runs.items():
            n, s = run()
            best[name] = max(best[name], n / s)
    fl = best["floor: Pillow decode of jpg + mask.png"]
    for name, rate in best.items():
        print(f"{name:40s} {rate:8.1f} samples/s   {rate / fl:5.2f}x floor")
    print(f"train/floor = {best['train reader'] / fl:.2f} (target >= 0.35); "
          f"eval/floor = {best['eval reader'] / fl:.2f} (target >= 0.6)")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
