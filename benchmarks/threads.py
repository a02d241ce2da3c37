"""CPU training speed: scenectl's intra-op threads (one per core of the process) against leaving the loader workers
cores of their own (cores - workers), the rule issue 24 proposed.

Each round runs the same short `scenectl train` twice, each in its own process (torch's thread pool is fixed once a
process has used it): once with $OMP_NUM_THREADS set to cores - workers (scenectl keeps a variable that is set) and
once without it (scenectl.devices.set_cpu_threads: one thread per core). Rounds alternate which side goes first, so a burst of other load slows both alike; the speed
is each run's training samples/s (metrics.jsonl, its epoch record: validation excluded); medians are reported.

    python benchmarks/threads.py                                   # builds 64 px shards from coco-sample val2017
    python benchmarks/threads.py --shards shards/train2017 --workers 2 --steps 30 --rounds 3

Run it on an idle machine: the ratio of a box shared with other work is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scenectl.devices import available_cores, cpu_threads
from train_throughput import default_shards  # benchmarks/ is on sys.path when a script there runs

def one_run(args, out: Path, threads_env: str | None) -> float:
    """Training samples/s of one short run in a fresh process; threads_env None: scenectl chooses."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads_env is not None:
        env["OMP_NUM_THREADS"] = threads_env
    env["SCENECTL_PROGRESS"] = "off"
    cmd = [sys.executable, "-m", "scenectl", "train", "--shards", args.shards, "--val-shards", args.shards,
           "--out", str(out), "--overwrite", "--epochs", "1", "--steps-per-epoch", str(args.steps), "--batch-size",
           str(args.batch_size), "--image-size", str(args.image_size), "--workers", str(args.workers), "--device",
           "cpu", "--log-every", "0", "--checkpoint-every", "0", "--arch", args.arch]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(r["train_samples_per_s"] for r in epochs if r.get("kind") in ("epoch", "partial_epoch"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="shard set (default: build coco-sample val2017 at --image-size)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="training steps per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="loader workers (train's default: min(4, cores))")
    args = p.parse_args()
    args.shards = args.shards or default_shards(args.image_size)
    cores = available_cores()
    # the alternative, measured slower and not taken: leave the loader workers cores of their own
    alternative = max(1, cores - args.workers)
    sides = {f"cores - workers ({alternative})": str(alternative), f"scenectl ({cpu_threads(cores)} threads)": None}
    speeds: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="threads-runs-") as tmp:
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                speeds[name].append(one_run(args, Path(tmp) / f"round{r}-{order.index(name)}", sides[name]))
    print(f"{cores} cores, {args.workers} loader workers, {args.arch} at {args.image_size} px, batch "
          f"{args.batch_size}, {args.steps} steps x {args.rounds} rounds (median training samples/s):")
    med = {name: statistics.median(v) for name, v in speeds.items()}
    for name, v in med.items():
        print(f"  {name:<24} {v:8.1f}   (runs: {', '.join(f'{x:.1f}' for x in speeds[name])})")
    alternative, chosen = med.values()
    print(f"  ratio cores - workers / scenectl: {alternative / chosen:.2f}")


if __name__ == "__main__":
    main()
