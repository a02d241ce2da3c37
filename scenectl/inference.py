"""Scoring a model, shared by every command that does (eval, compare, train/transfer/distill validation, fuse):

  - run_model: a model over batches -> logits, labels, keys, visible classes and image ids of every sample
  - validate: the one validation of train, transfer and distill (loss, top-1/top-5, micro and class-balanced),
    from per-class sums that are all-reduced over the ranks under DDP
  - a checkpoint on shard sets as `scenectl eval` scores it (open_sets, run_sets, the co-occurrence counts, the ks),
    so compare runs a checkpoint input exactly as eval does
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from scenectl import distributed as D
from scenectl import metrics
from scenectl.checkpoint import Checkpoint
from scenectl.config import EvalConfig
from scenectl.data.coco import classes_match
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.transforms import batch_to_device
from scenectl.errors import ScenectlError
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
    n, t0, limit = 0, time.perf_counter(), math.inf if max_samples is None else max_samples
    with progress(desc=desc, total=None if total is None else min(total, limit), unit="samples", leave=False) as bar:
        for batch in batches:
            x = batch_to_device(batch, device)["input"]  # (B, C, H, W) float
            logits.append(model(x).float().cpu())  # (B, num_classes)
            labels.append(torch.as_tensor(batch["label"]).long().cpu())
            keys.extend(str(k) for k in batch["key"])
            visible.extend([int(v) for v in vs] for vs in batch["visible"])
            images.extend(image_id(m) for m in batch.get("meta") or [{}] * x.shape[0])
            bar.update(min(x.shape[0], limit - n))
            n += x.shape[0]
            if n >= limit:
                break
    if n == 0:
        return Outputs(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [], [], time.perf_counter() - t0)
    return Outputs(torch.cat(logits).numpy()[:max_samples], torch.cat(labels).numpy()[:max_samples],
                   keys[:max_samples], visible[:max_samples], time.perf_counter() - t0,
                   np.array(images[:max_samples], dtype=np.int64))  # [:None]: every sample


def image_id(meta: dict) -> int:
    """A sample's source image id from its metadata (an integer read from a shard: anything else counts as none, -1)."""
    v = meta.get("image_id") if isinstance(meta, dict) else None
    return v if type(v) is int and v >= 0 else -1


def concat(outs: list[Outputs]) -> Outputs:
    return Outputs(np.concatenate([o.logits for o in outs]), np.concatenate([o.labels for o in outs]),
                   [k for o in outs for k in o.keys], [v for o in outs for v in o.visible],
                   sum(o.seconds for o in outs), np.concatenate([o.image_ids for o in outs]))


# --- validation (train, transfer, distill) -------------------------------------------------------------------------
VALIDATION_KS = (1, 5)


def validate(model: torch.nn.Module, batches: Iterable[dict], device: torch.device, num_classes: int, *,
             reduce: bool = False, desc: str = "val", total: int | None = None) -> dict:
    """Validation loss (no label smoothing), top-1 and top-5, micro and class-balanced (k clamped to C), over every
    sample of `batches` once. With `reduce` (DDP: each rank holds its share of the samples) the per-class sums are
    all-reduced first, so every rank returns the whole set's numbers."""
    out = run_model(model, batches, device, desc=desc, total=total)
    sums = class_sums(out, num_classes)  # (C, 2 + len(VALIDATION_KS)) float64
    if reduce:
        sums = D.all_reduce_sum(sums.to(device)).cpu()
    support, loss, hits = sums[:, 0], sums[:, 1], sums[:, 2:]  # (C,), (C,), (C, K)
    n = support.sum().item()
    if n == 0:
        raise ScenectlError("the validation set yielded no samples")
    present = support > 0
    micro = (hits.sum(0) / n).tolist()
    bal = (hits[present] / support[present, None]).mean(0).tolist()
    return {"val_loss": loss.sum().item() / n, "val_top1": micro[0], "val_top5": micro[1], "val_bal_top1": bal[0],
            "val_bal_top5": bal[1], "val_samples": int(n)}


def class_sums(out: Outputs, num_classes: int) -> torch.Tensor:
    """(C, 2 + K) float64 per true class: samples, summed cross-entropy, top-k hits for each k of VALIDATION_KS:
    sums, so that ranks can add theirs up."""
    sums = torch.zeros(num_classes, 2 + len(VALIDATION_KS), dtype=torch.float64)
    if not out.keys:
        return sums
    y = torch.from_numpy(out.labels)
    loss = F.cross_entropy(torch.from_numpy(out.logits).double(), y, reduction="none")  # (N,)
    hits = metrics.topk_hits(out.logits, out.labels, [min(k, num_classes) for k in VALIDATION_KS])
    columns = [torch.ones(len(y), dtype=torch.float64), loss,
               *(torch.from_numpy(hits[min(k, num_classes)]).double() for k in VALIDATION_KS)]
    return sums.index_add_(0, y, torch.stack(columns, 1))


# --- a checkpoint on shard sets, as `scenectl eval` scores it (eval, compare) ----------------------------------------
def resolve_ks(requested: Iterable[int], num_classes: int) -> tuple[list[int], list[str]]:
    """Sorted ks (1, 3, 5, 10 always, and those requested) below the class count C; a k >= C is 100 % by construction,
    so it is left out of every table and plot and said once in a note."""
    requested = [int(k) for k in requested]
    bad = [k for k in requested if k < 1]
    if bad:
        raise ScenectlError(f"--topk must be a positive integer, got {bad[0]}")
    wanted = sorted(set(requested) | set(metrics.DEFAULT_KS))
    ks = [k for k in wanted if k < num_classes] or [1]
    beyond = [k for k in wanted if k not in ks]
    notes = [f"top-{', top-'.join(map(str, beyond))} not reported: the model knows only {num_classes} classes, so "
             f"every top-{num_classes} is 100 %"] if beyond else []
    return ks, notes


def checkpoint_cooccurrence(ckpt: Checkpoint, named: str | None = None) -> tuple[Cooccurrence, str]:
    """The training split's counts the plausibility metric and the label-only baselines use: the checkpoint's, else
    the file `named` (--cooccurrence). Without either, refused: the evaluated split's own counts would be fitted on
    the test labels, so they are used only when named."""
    if named is not None:
        cooc = Cooccurrence.load(Path(named), f"--cooccurrence {named}")
        if len(cooc.image_counts) != ckpt.num_classes:
            raise ScenectlError(f"--cooccurrence {named}: {len(cooc.image_counts)} classes, the checkpoint has "
                                f"{ckpt.num_classes}")
        return cooc, f"{named} (named by --cooccurrence)"
    if ckpt.cooccurrence is not None:
        return ckpt.cooccurrence, "checkpoint (training split)"
    raise ScenectlError(f"{ckpt.path} carries no co-occurrence counts: pass --cooccurrence FILE (the training "
                        "split's cooccurrence.h5) to scenectl eval; plausibility is not scored with the evaluated "
                        "split's own counts unless that file is named")


def open_sets(cfg: EvalConfig, ckpt: Checkpoint) -> list:
    """The --shards sets, each refused unless it holds masked scenes of the checkpoint's classes."""
    from scenectl.data.loader import open_shard_set

    if not cfg.shards:
        raise ScenectlError("no shard set given (--shards)")
    sets = [open_shard_set(s, cfg.net.options()) for s in cfg.shards]
    for spec, ss in zip(cfg.shards, sets):
        ss.require_masked("--shards")
        if not classes_match(ckpt.classes, ss.classes):
            raise ScenectlError(f"--shards {spec}: its class list differs from the checkpoint's "
                                f"({len(ss.classes)} vs {ckpt.num_classes} classes, or other names/ids)")
    return sets


def set_names(specs: list[str]) -> list[str]:
    """Short unique names for shard sets: the folder's name, numbered where two collide."""
    base = [Path(str(s).rstrip("/")).name.split("{")[0].split("*")[0] or f"set{i}" for i, s in enumerate(specs)]
    return [b if base.count(b) == 1 else f"{b}-{i}" for i, b in enumerate(base)]


def eval_loader(shard_set, ckpt: Checkpoint, cfg: EvalConfig, device: torch.device | None = None):
    """The shard set as batches shaped for this checkpoint's model (image size, mask channel as in training); on a
    CUDA `device` the JPEGs are decoded per batch there (transforms.batch_to_device)."""
    from scenectl.data.loader import EvalBatches, make_eval_loader

    return make_eval_loader(shard_set, EvalBatches(image_size=ckpt.image_size, mask_channel=ckpt.mask_channel,
                                                   batch_size=cfg.batch_size, workers=cfg.workers,
                                                   defer_jpeg=device is not None and device.type == "cuda"))


def run_sets(cfg: EvalConfig, ckpt: Checkpoint, model: torch.nn.Module, shard_sets: list,
             device: torch.device) -> list[Outputs]:
    """The model over each shard set of cfg.shards (named as set_names names them), up to cfg.max_samples each."""
    outs = []
    for spec, name, ss in zip(cfg.shards, set_names(list(cfg.shards)), shard_sets):
        o = run_model(model, eval_loader(ss, ckpt, cfg, device), device, cfg.max_samples, desc=f"eval {name}",
                      total=ss.num_samples)  # the manifest's count: the progress shows N/TOTAL and an ETA
        if not o.keys:
            raise ScenectlError(f"--shards {spec}: the shard set yielded no samples")
        outs.append(o)
    return outs
