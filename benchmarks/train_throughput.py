"""Training throughput: streaming from shards vs in-memory tensors, and FFC vs ResNet step time.

Both comparisons run in this one process, with the same model, batch size, optimiser and device:
  1. shards:    make_train_loader (tar reading, shuffle buffer, JPEG/PNG decoding, augmentation) + train step
     memory:    the same batches, held in memory as tensors (already on the device), + the same train step
     ratio shards / memory says how much of the model's training speed the data pipeline keeps (target >= 0.9).
  2. ffc_resnet18 vs resnet18 train-step time on equal input (target <= 1.5x).
Rounds alternate the sides, so a burst of load from other processes slows both alike; medians are reported.

    python benchmarks/train_throughput.py                               # builds 64 px shards from coco-sample val2017
    python benchmarks/train_throughput.py --shards shards/train2017 --image-size 224 --batch-size 64 --workers 8
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scenectl.data.loader import make_train_loader, open_shard_set
from scenectl.data.transforms import batch_to_device
from scenectl.models import create_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-sample"


def make_model(arch: str, num_classes: int, device: torch.device):
    torch.manual_seed(0)
    model = create_model(arch, num_classes, 4).to(device).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def step(model, opt, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None) -> None:
    """One training step as scenectl.train runs it: forward, cross-entropy, backward, update."""
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss.item()  # the train loop reads the loss every step (NaN check, logging)


def from_shards(model, opt, shards, args, device, amp, epoch: int) -> float:
    """Samples/s of `args.steps` steps fed by the streaming loader (worker start-up included)."""
    loader = make_train_loader(shards, steps=args.steps, batch_size=args.batch_size, image_size=args.image_size,
                               workers=args.workers, epoch=epoch, shuffle_buffer=args.shuffle_buffer)
    t = time.perf_counter()
    for b in loader:
        b = batch_to_device(b, device)  # as the engine: float input made on the device
        step(model, opt, b["input"], b["label"], amp)
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - t)


def from_memory(model, opt, batches, device, amp) -> float:
    t = time.perf_counter()
    for x, y in batches:
        step(model, opt, x, y, amp)
    _sync(device)
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def default_shards(image_size: int) -> str:
    from scenectl.data.shards import BuildConfig, build_shards

    out = Path(tempfile.mkdtemp(prefix="scenectl-bench-")) / "val2017"
    build_shards(BuildConfig(coco_root=SHARED, split="val2017", out=out, image_size=image_size, progress=False),
                 echo=lambda *_: None)
    return str(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="shard set (default: build coco-sample val2017 at --image-size)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--ffc-arch", default="ffc_resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shuffle-buffer", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    shards = open_shard_set(args.shards or default_shards(args.image_size))
    n_cls = len(shards.classes)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"threads {torch.get_num_threads()}; {args.arch} {args.image_size}px batch {args.batch_size}, "
          f"workers {args.workers}, {shards.num_samples} samples in {shards.location}")

    # 1. shards vs memory: the in-memory batches are the loader's own batches, so content and shape are equal
    model, opt = make_model(args.arch, n_cls, device)
    pre = make_train_loader(shards, steps=args.steps, batch_size=args.batch_size, image_size=args.image_size,
                            workers=args.workers, epoch=999, shuffle_buffer=args.shuffle_buffer)
    batches = [(b["input"], b["label"]) for b in (batch_to_device(b, device) for b in pre)]
    from_memory(model, opt, batches[:2], device, amp)  # warm-up (allocator, cudnn autotune)
    s_rates, m_rates = [], []
    for r in range(args.rounds):
        s_rates.append(from_shards(model, opt, shards, args, device, amp, epoch=r))
        m_rates.append(from_memory(model, opt, batches, device, amp))
    s, m = statistics.median(s_rates), statistics.median(m_rates)
    print(f"shards  {s:8.1f} samples/s   rounds {[round(x, 1) for x in s_rates]}")
    print(f"memory  {m:8.1f} samples/s   rounds {[round(x, 1) for x in m_rates]}")
    print(f"ratio shards/memory {s / m:.2f}  (target >= 0.9)")

    # 2. FFC vs ResNet train step on equal in-memory input
    times = {}
    for arch in (args.arch, args.ffc_arch):
        model, opt = make_model(arch, n_cls, device)
        from_memory(model, opt, batches[:2], device, amp)
        rates = [from_memory(model, opt, batches, device, amp) for _ in range(args.rounds)]
        times[arch] = args.batch_size / statistics.median(rates)
        print(f"{arch:14s} {1000 * times[arch]:8.1f} ms/step")
    print(f"ratio {args.ffc_arch}/{args.arch} {times[args.ffc_arch] / times[args.arch]:.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
