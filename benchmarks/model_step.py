"""Train-step time of FFC-ResNets against torchvision ResNets, measured in one process on the same input.

A step is forward + cross-entropy + backward + SGD update, on random data with 4 input channels (RGB + mask)
and 80 classes, as `scenectl train` runs it. The two models of a pair alternate step by step after warm-up;
the table gives each median step time and the median of the per-round ratios.

    python benchmarks/model_step.py                                   # resnet18 vs ffc_resnet18, 64 and 128 px
    python benchmarks/model_step.py --pairs resnet50:ffc_resnet50 --sizes 64 --repeats 5
    python benchmarks/model_step.py --profile ffc_resnet18            # torch.profiler table of one step
    python benchmarks/model_step.py --flops                           # forward FLOPs, independent of machine load
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from scenectl.models import create_model


def step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer):
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def make_step(name: str, size: int, batch: int, device: str):
    """A train-step closure for `name` at `size`×`size` (model, optimiser and data built once)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=80, in_chans=4).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 4, size, size, device=device)  # (B, 4, H, W)
    y = torch.randint(0, 80, (batch,), device=device)  # (B,)
    return step_fn(model, x, y, opt)


def timed(step, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def compare(base: str, cand: str, size: int, batch: int, warmup: int, repeats: int, device: str):
    """Median step seconds of both models and the median of per-round ratios.

    The two models alternate step by step, so a burst of load from other processes (a shared 2-core sandbox)
    slows both sides of a round alike and the per-round ratio stays honest.
    """
    steps = make_step(base, size, batch, device), make_step(cand, size, batch, device)
    for _ in range(warmup):
        for s in steps:
            s()
    tb, tc = [], []
    for _ in range(repeats):
        tb.append(timed(steps[0], device))
        tc.append(timed(steps[1], device))
    ratio = statistics.median(c / b for b, c in zip(tb, tc))
    return statistics.median(tb), statistics.median(tc), ratio


def profile(name: str, size: int, batch: int, device: str) -> None:
    from torch.profiler import ProfilerActivity, profile as tprofile

    torch.manual_seed(0)
    model = create_model(name, num_classes=80, in_chans=4).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step = step_fn(model, torch.randn(batch, 4, size, size, device=device),
                   torch.randint(0, 80, (batch,), device=device), opt)
    step()
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def forward_flops(name: str, size: int) -> int:
    """Convolution and matmul FLOPs of one forward pass on one (4, size, size) image; FFTs are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(name, num_classes=80, in_chans=4).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 4, size, size))
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["resnet18:ffc_resnet18"], help="baseline:candidate pairs")
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--profile", metavar="MODEL", help="print a profiler table for MODEL at the first size and exit")
    ap.add_argument("--flops", action="store_true", help="print forward FLOPs per image (conv + matmul) and exit")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, "
          f"alternating steps, median of {args.repeats} after {args.warmup} warm-up rounds")
    if args.flops:
        for pair in args.pairs:
            base, cand = pair.split(":")
            for size in args.sizes:
                fb, fc = forward_flops(base, size), forward_flops(cand, size)
                print(f"{base} {fb / 1e9:.3f} GFLOPs, {cand} {fc / 1e9:.3f} GFLOPs (FFT excluded) at {size} px: "
                      f"ratio {fc / fb:.2f}")
        return
    if args.profile:
        profile(args.profile, args.sizes[0], args.batch, args.device)
        return
    print(f"{'baseline':>12} {'candidate':>14} {'px':>4} {'base ms':>9} {'cand ms':>9} {'ratio':>6}")
    for pair in args.pairs:
        base, cand = pair.split(":")
        for size in args.sizes:
            tb, tc, ratio = compare(base, cand, size, args.batch, args.warmup, args.repeats, args.device)
            print(f"{base:>12} {cand:>14} {size:>4} {tb * 1e3:9.1f} {tc * 1e3:9.1f} {ratio:6.2f}", flush=True)


if __name__ == "__main__":
    main()
