"""GPU training throughput from shards vs from memory, resnet18 and ffc_resnet18 at 224 px (needs CUDA).

    python benchmarks/gpu_throughput.py --shards /data/shards/train2017 --workers 16 --batch-size 256

In this one process, per model (channels_last, bf16 autocast where supported, as `scenectl train` on CUDA):
  shards   make_train_loader (tar reading, decoding, augmentation in --workers processes) + batch_to_device on the
           GPU (uint8 -> float, colour jitter, normalisation) + train step
  shards, GPU decode   the same with the scene view's defer_jpeg: workers decode only the masks; batch_to_device
           decodes the batch's JPEGs on the GPU (torchvision.io.decode_jpeg(list, device="cuda"), nvJPEG), crops,
           resizes and flips them there
  memory   the same batches, already model input on the GPU, + the same train step
  decode   the batches' JPEGs decoded on the GPU alone
Prints samples/s, the ratio shards / memory and the peak GPU memory. Without CUDA it says so and exits 0;
`--device cpu` runs the same code on the CPU (a check that it works, not a measurement of anything a GPU does).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True)
    p.add_argument("--archs", nargs="+", default=["resnet18", "ffc_resnet18"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (this benchmark needs a GPU)")
        sys.exit(0)
    cuda = dev.type == "cuda"
    from torchvision.io import decode_jpeg

    import scenectl.data.loader as L
    from scenectl.data.loader import make_train_loader, open_shard_set, raw_samples
    from scenectl.data.transforms import batch_to_device
    from scenectl.engine import amp_setup
    from scenectl.models import create_model

    amp, _ = amp_setup(dev, True)
    shards = open_shard_set(a.shards)
    print(f"# {torch.cuda.get_device_name(dev) if cuda else 'CPU'}, torch {torch.__version__}, amp {amp}; {shards.num_samples} samples "
          f"of {shards.location}, {a.image_size} px, batch {a.batch_size}, {a.workers} workers")

    def loader(epoch: int, gpu_decode: bool = False):
        plain = L.make_view  # make_train_loader has no switch for it (yet): its view made with defer_jpeg here
        if gpu_decode:
            L.make_view = lambda *args, **kw: plain(*args, **kw, defer_jpeg=True)
        try:
            return make_train_loader(shards, steps=a.steps, batch_size=a.batch_size, image_size=a.image_size,
                                     workers=a.workers, epoch=epoch)
        finally:
            L.make_view = plain

    def step(model, opt, x, y):
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(fn) -> float:
        sync()
        t = time.perf_counter()
        n = fn()
        sync()
        return n / (time.perf_counter() - t)

    memory = [(b["input"], b["label"]) for b in (batch_to_device(b, dev) for b in loader(999))]
    for arch in a.archs:
        torch.manual_seed(0)
        model = create_model(arch, len(shards.classes), 4).to(dev).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        step(model, opt, *memory[0])  # warm-up: cuDNN autotune, allocator

        def from_shards(gpu_decode: bool = False) -> int:
            n = 0
            for b in loader(0, gpu_decode):
                b = batch_to_device(b, dev)
                step(model, opt, b["input"], b["label"])
                n += len(b["label"])
            return n

        def from_memory() -> int:
            for x, y in memory:
                step(model, opt, x, y)
            return sum(len(y) for _, y in memory)

        s, g, m = timed(from_shards), timed(lambda: from_shards(True)), timed(from_memory)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else float("nan")
        print(f"{arch:14s} shards {s:9.1f}/s   shards, GPU decode {g:9.1f}/s   memory {m:9.1f}/s   ratios "
              f"{s / m:.2f} / {g / m:.2f}   peak GPU memory {peak:.2f} GiB")

    jpgs = [torch.frombuffer(bytearray(r["jpg"]), dtype=torch.uint8) for _, r in zip(range(a.batch_size * 4),
                                                                                       raw_samples(shards))]
    batches = [jpgs[i:i + a.batch_size] for i in range(0, len(jpgs), a.batch_size)]
    decode_jpeg(batches[0], device=dev)  # warm-up (nvjpeg handles)
    rate = timed(lambda: sum(len(decode_jpeg(b, device=dev)) for b in batches))
    print(f"{dev.type} JPEG decode alone (decode_jpeg, batches of {a.batch_size}): {rate:9.1f} images/s")


if __name__ == "__main__":
    main()
