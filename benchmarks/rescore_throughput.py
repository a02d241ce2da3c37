"""Rescore throughput against eval's, in one process: `scenectl rescore`'s context-model pass (decode each image,
hide each detection's box as build-shards would, batch across images, forward) against `scenectl eval`'s streaming
loop (read shards, decode, forward), the same checkpoint, batch size and device. Rounds alternate the two, so load
from other processes slows both alike; medians and their ratio are reported (the target: rescore within 2x of eval
per sample, i.e. a ratio >= 0.5).

    python benchmarks/rescore_throughput.py --checkpoint runs/train/last.pt --shards shards/val2017 \
        --detections dets.json --images coco/val2017 --annotations coco/annotations/instances_val2017.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from scenectl.config import RescoreConfig
from scenectl.data.loader import make_eval_loader, open_shard_set
from scenectl.devices import parse_device
from scenectl.inference import run_model
from scenectl.rescore import context_logprobs, read_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--checkpoint", "--shards", "--detections", "--images", "--annotations"):
        p.add_argument(name, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    os.environ.setdefault("SCENECTL_PROGRESS", "off")
    device = parse_device(args.device)
    cfg = RescoreConfig(detections=args.detections, images=args.images, annotations=args.annotations,
                        checkpoint=args.checkpoint, batch_size=args.batch_size, workers=args.workers,
                        device=str(device))
    inp = read_inputs(cfg)
    shards = open_shard_set(args.shards)
    model = inp.ckpt.build_model(device)
    eval_rates, rescore_rates = [], []
    for _ in range(args.rounds):
        loader = make_eval_loader(shards, image_size=inp.ckpt.image_size, batch_size=args.batch_size,
                                  workers=args.workers, mask_channel=inp.ckpt.mask_channel)
        t0 = time.perf_counter()
        n = len(run_model(model, loader, device).labels)
        eval_rates.append(n / (time.perf_counter() - t0))
        rescore_rates.append(context_logprobs(inp, cfg, device)[1])
    e, r = statistics.median(eval_rates), statistics.median(rescore_rates)
    print(f"{platform.node()} {device}, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}: "
          f"eval {e:.1f} samples/s, rescore {r:.1f} detections/s (medians of {args.rounds} alternating rounds; "
          f"each {', '.join(f'{x:.0f}' for x in eval_rates)} / {', '.join(f'{x:.0f}' for x in rescore_rates)}), "
          f"ratio {r / e:.2f}")


if __name__ == "__main__":
    main()
