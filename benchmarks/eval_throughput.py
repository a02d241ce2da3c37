"""Evaluation throughput: `scenectl eval`'s streaming loop against the model's forward pass alone.

Both sides run in this one process with the same model, batch size and device:
  - eval:    scenectl.inference.run_model over make_eval_loader (tar reading, JPEG/PNG decoding, to_input, forward)
  - forward: the same batches, already decoded and held in memory as tensors, through model(x) alone
The ratio eval / forward says how much of the model's speed the data pipeline keeps (target >= 0.9).
Rounds alternate the two sides, so a burst of load from other processes slows both alike; medians are reported.

    python benchmarks/eval_throughput.py --shards shards/val2017
    python benchmarks/eval_throughput.py --shards shards/val2017 --checkpoint runs/train/best.pt --workers 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from scenectl.checkpoint import read_checkpoint
from scenectl.data.loader import make_eval_loader, open_shard_set
from scenectl.data.transforms import batch_to_device
from scenectl.devices import parse_device
from scenectl.inference import run_model
from scenectl.models import create_model


def build(args, num_classes: int, device: torch.device):
    """The checkpoint's model (and its image size / mask channel), or a fresh one of --arch."""
    if args.checkpoint:
        ckpt = read_checkpoint(args.checkpoint)
        return ckpt.build_model(device), ckpt.image_size, ckpt.mask_channel
    torch.manual_seed(0)
    return create_model(args.arch, num_classes, 4).to(device).eval(), args.image_size, True


@torch.inference_mode()
def forward_only(model, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds to forward the in-memory batches (inputs already on the device)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x in batches:
        model(x).float().cpu()  # same device->host copy of the logits as run_model
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="shard set to read")
    p.add_argument("--checkpoint", default=None, help="model to run (default: a fresh --arch)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-samples", type=int, default=512, help="samples per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    device = parse_device(args.device)
    shards = open_shard_set(args.shards)
    model, size, mask_channel = build(args, len(shards.classes), device)

    def loader():
        return make_eval_loader(shards, image_size=size, batch_size=args.batch_size, workers=args.workers,
                                mask_channel=mask_channel)

    # the in-memory side: the very same batches, decoded once up front
    batches, n = [], 0
    for b in loader():
        batches.append(batch_to_device(b, device)["input"])
        n += b["input"].shape[0]
        if n >= args.max_samples:
            break
    n = sum(x.shape[0] for x in batches)
    forward_only(model, batches[:1], device)  # warm-up (allocator, cuDNN autotune, thread pools)
    eval_rates, fwd_rates, ratios = [], [], []
    for _ in range(args.rounds):
        out = run_model(model, loader(), device, max_samples=n)
        ev = len(out.keys) / out.seconds
        fw = n / forward_only(model, batches, device)
        eval_rates.append(ev), fwd_rates.append(fw), ratios.append(ev / fw)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {device}; torch {torch.__version__}")
    print(f"model: {args.checkpoint or args.arch}, {size} px, mask channel {mask_channel}; batch {args.batch_size}, "
          f"workers {args.workers}; {n} samples per round from {args.shards}, {args.rounds} rounds (medians)")
    print(f"eval loop (shards -> logits): {statistics.median(eval_rates):8.1f} samples/s")
    print(f"forward alone (in memory):    {statistics.median(fwd_rates):8.1f} samples/s")
    print(f"ratio eval / forward:         {statistics.median(ratios):8.2f}")


if __name__ == "__main__":
    main()
