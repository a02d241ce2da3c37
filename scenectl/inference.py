"""Running a model over batches: logits, labels, keys and visible classes of every sample, for every command that
scores a model (eval, transfer and distill validation, fuse, compare)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch

from scenectl.data.transforms import batch_to_device
from scenectl.progress import progress


@dataclass
class Outputs:
    logits: np.ndarray  # (N, C) float32
    labels: np.ndarray  # (N,) int64
    keys: list[str]
    visible: list[list[int]]  # the other visible classes of each scene (may be empty)
    seconds: float = 0.0
    # (N,) int64: each sample's source image (metadata `image_id`; -1 where a sample has none): the unit that
    # bootstrap intervals resample, since the instances of one image share a scene
    image_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@torch.inference_mode()
def run_model(model: torch.nn.Module, batches: Iterable[dict], device: torch.device, max_samples: int | None = None,
              desc: str = "eval", total: int | None = None) -> Outputs:
    """Forward every batch in eval mode (BatchNorm running statistics; the model's mode is restored after);
    batches are dicts with input (B, C, H, W), label (B,), key [B], visible [B lists]. Progress counts samples,
    out of `total` when the caller knows it (a manifest's count)."""
    was_training = model.training
    model.eval()
    try:
        return _run_model(model, batches, device, max_samples, desc, total)
    finally:
        model.train(was_training)


def _run_model(model, batches, device, max_samples, desc, total) -> Outputs:
    logits, labels, keys, visible, images = [], [], [], [], []
    n, t0 = 0, time.perf_counter()
    if max_samples is not None and total is not None:
        total = min(total, max_samples)
    with progress(desc=desc, total=total, unit="samples", leave=False) as bar:
        for batch in batches:
            x = batch_to_device(batch, device)["input"]  # (B, C, H, W) float
            logits.append(model(x).float().cpu())  # (B, num_classes)
            labels.append(torch.as_tensor(batch["label"]).long().cpu())
            keys.extend(str(k) for k in batch["key"])
            visible.extend([int(v) for v in vs] for vs in batch["visible"])
            images.extend(image_id(m) for m in batch.get("meta") or [{}] * x.shape[0])
            bar.update(min(x.shape[0], max_samples - n) if max_samples is not None else x.shape[0])
            n += x.shape[0]
            if max_samples is not None and n >= max_samples:
                break
    if n == 0:
        return Outputs(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [], [], time.perf_counter() - t0)
    cut = max_samples if max_samples is not None else n
    return Outputs(torch.cat(logits).numpy()[:cut], torch.cat(labels).numpy()[:cut], keys[:cut], visible[:cut],
                   time.perf_counter() - t0, np.array(images[:cut], dtype=np.int64))


def image_id(meta: dict) -> int:
    """A sample's source image id from its metadata (an integer read from a shard: anything else counts as none, -1)."""
    v = meta.get("image_id") if isinstance(meta, dict) else None
    return v if type(v) is int and v >= 0 else -1


def concat(outs: list[Outputs]) -> Outputs:
    return Outputs(np.concatenate([o.logits for o in outs]), np.concatenate([o.labels for o in outs]),
                   [k for o in outs for k in o.keys], [v for o in outs for v in o.visible],
                   sum(o.seconds for o in outs), np.concatenate([o.image_ids for o in outs]))
