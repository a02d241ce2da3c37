"""Batch mixing: does the training loss alternate from step to step (batches drawn from different sub-populations)?

Trains `scenectl train` with `--log-every 1` and reads the per-step losses l_t of metrics.jsonl:

    lag ratio = mean |l_t - l_{t-1}| / mean |l_t - l_{t-2}|

With every batch a sample of the same split the two are alike (ratio about 1; the downward trend of the loss adds
a little to lag 2). When batches alternate between two populations (two DataLoader workers each holding their own
shard) lag-1 changes are large and lag-2 changes small. Done when the ratio is below 1.3 (issue 13). The interval
is a moving-block bootstrap over steps (blocks of 8 steps, 2000 resamples), so it includes the autocorrelation of
nearby steps.

    python benchmarks/batch_mixing.py                       # builds coco-sample train2017 / val2017 at 32 px
    python benchmarks/batch_mixing.py --shards S --val-shards V --workers 2 --epochs 4 --batch-size 32
    python benchmarks/batch_mixing.py --code /tmp/old-checkout  # the same run with another checkout's scenectl
    python benchmarks/batch_mixing.py --metrics runs/x/metrics.jsonl   # only the ratio of an existing run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COCO_SAMPLE = ROOT.parent / "shared" / "data" / "coco-sample"


def step_losses(metrics: Path) -> np.ndarray:
    """The training loss of every step, in step order (one line per step with --log-every 1)."""
    steps = {}
    for line in metrics.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "step":
            steps[rec["step"]] = rec["loss"]
    if len(steps) < 10:
        sys.exit(f"{metrics}: {len(steps)} step lines; train with --log-every 1 for at least 10 steps")
    return np.array([steps[k] for k in sorted(steps)])


def lag_ratio(losses: np.ndarray) -> float:
    return float(np.abs(np.diff(losses)).mean() / np.abs(losses[2:] - losses[:-2]).mean())


def block_interval(losses: np.ndarray, block: int = 8, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % moving-block bootstrap interval of the lag ratio: resample blocks of consecutive (lag-1, lag-2) change
    pairs, so changes of nearby steps stay together."""
    d1, d2 = np.abs(losses[2:] - losses[1:-1]), np.abs(losses[2:] - losses[:-2])  # aligned at t = 2..T-1
    starts = np.arange(len(d1) - block + 1)
    rng = np.random.default_rng(seed)
    k = int(np.ceil(len(d1) / block))
    idx = (rng.choice(starts, (n, k))[:, :, None] + np.arange(block)).reshape(n, -1)  # (n, k * block)
    ratios = d1[idx].mean(1) / d2[idx].mean(1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def read_cost(shards: Path, image_size: int, rounds: int = 3) -> None:
    """What reading every shard in every stream costs: the time to read a sample's tar members (raw_samples) as a
    fraction of the time to read, decode and augment it (the training view); rounds alternate, medians reported.
    A stream of G that reads whole shards and keeps every G-th sample reads G - 1 samples it does not decode."""
    sys.path.insert(0, str(ROOT))
    from scenectl.data.loader import make_view, open_shard_set, raw_samples

    s = open_shard_set(shards)
    view = make_view(s, "scene", image_size)
    read, full = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        raws = list(raw_samples(s))
        read.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i, raw in enumerate(raw_samples(s)):
            view(raw, np.random.default_rng(i))
        full.append(time.perf_counter() - t)
    r, f = float(np.median(read)), float(np.median(full))
    print(f"read cost: {1e3 * r / len(raws):.3f} ms a sample to read, {1e3 * f / len(raws):.3f} ms to read, decode "
          f"and augment ({r / f:.0%}); rounds read {[round(x, 3) for x in read]} s, full {[round(x, 3) for x in full]} s")


def scenectl(code: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-m", "scenectl", *args], env=env, check=True, cwd=code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", type=Path, help="only compute the ratio of this metrics.jsonl")
    ap.add_argument("--shards", type=Path, help="training shard set (default: build coco-sample train2017)")
    ap.add_argument("--val-shards", type=Path, help="validation shard set (default: build coco-sample val2017)")
    ap.add_argument("--coco-root", type=Path, default=COCO_SAMPLE)
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose scenectl trains (default: this one)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="folder for built shards and the run (default: a temporary one)")
    args = ap.parse_args()
    if args.metrics:
        report(step_losses(args.metrics), args.metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        shards, val = args.shards or work / "train2017", args.val_shards or work / "val2017"
        for split, folder in (("train2017", shards), ("val2017", val)):
            if not (folder / "manifest.json").is_file():
                scenectl(args.code, "build-shards", "--coco-root", str(args.coco_root.resolve()), "--split", split,
                         "--image-size", str(args.image_size), "--out", str(folder.resolve()))
        run = work / "run"
        t = time.perf_counter()
        scenectl(args.code, "train", "--shards", str(shards.resolve()), "--val-shards", str(val.resolve()),
                 "--out", str(run.resolve()), "--overwrite", "--epochs", str(args.epochs), "--batch-size",
                 str(args.batch_size), "--workers", str(args.workers), "--log-every", "1", "--seed", str(args.seed),
                 "--image-size", str(args.image_size), "--device", "cpu")
        print(f"train: {time.perf_counter() - t:.0f} s with {args.code}")
        report(step_losses(run / "metrics.jsonl"), run / "metrics.jsonl")
        read_cost(shards, args.image_size)


def report(losses: np.ndarray, where: Path) -> None:
    lo, hi = block_interval(losses)
    print(f"{where}: {len(losses)} steps; mean |l_t - l_t-1| = {np.abs(np.diff(losses)).mean():.3f}, "
          f"mean |l_t - l_t-2| = {np.abs(losses[2:] - losses[:-2]).mean():.3f}")
    print(f"lag-1 / lag-2 loss-change ratio: {lag_ratio(losses):.2f} (95 % block bootstrap {lo:.2f}-{hi:.2f}); "
          f"done when < 1.3")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
