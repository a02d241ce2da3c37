"""The shape-leakage control of every eval report: a classifier that sees only the hidden region.

A hole cut in the silhouette of an object tells its class through its shape (Xiao et al., ICLR 2021), and even a
circle or a square tells its size and position. The mask-only baseline is the cheap check of how much the hole
alone gives away: multinomial logistic regression on 26 features of `mask.png` only (never a scene pixel: a 4 x 4
grid and 10 size / aspect / position scalars), fitted on the training shards of the checkpoint and scored on the
evaluated samples; its training and held-out accuracy go into the report. The competent control is a network of the
same recipe trained on the hole alone (`train --hole-only`). Definition, fitting and cost: docs/metrics.md.

    train = read_masks(open_shard_set("shards/train2017"), max_samples=MAX_TRAIN)
    model = fit(train.features, train.labels, train.image_ids, num_classes=80, seed=0)
    scores = model.scores(read_masks(val_set, keys=wanted).features)          # (N, C) logits

Masks are read through the one shard reader (`raw_samples` + `decode_sample` of mask.png alone: no JPEG decoded).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scenectl.errors import ScenectlError
from scenectl.progress import progress

# the mask is area-averaged onto GRID x GRID cells: a coarse silhouette. 16 x 16 cells overfit (train 72.8 % vs
# held-out 46.0 % top-1 on synthetic box holes) and fell 16-17 points below the 10 scalars alone
GRID = 4
N_SCALARS = 10
N_FEATURES = GRID * GRID + N_SCALARS
# candidate L2 strengths, strongest first (each fit starts from the last), chosen by top-1 accuracy on held-out
# training images (ties: the stronger); wide, so that the choice does not sit at an edge of the grid
L2_GRID = (10.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
HOLDOUT = 0.2  # share of training images held out to choose the L2 strength
MAX_TRAIN = 100_000  # training samples read at most (the first in shard order): ample for 26 weights per class


# --- features ------------------------------------------------------------------------------------------------------
def mask_features(mask: Image.Image) -> np.ndarray:
    """(N_FEATURES,) float32 of one hidden region (PIL L, non-zero = hidden): the mask area-averaged onto GRID x GRID
    cells, then area fraction, its square root, box x0, y0, width, height, centre x, y (fractions of the image),
    log aspect (height / width in pixels) and extent (share of the box that is hidden)."""
    grid = np.asarray(mask.resize((GRID, GRID), Image.BOX), dtype=np.float32) / 255.0  # (GRID, GRID)
    m = np.asarray(mask) > 127  # (H, W)
    h, w = m.shape
    area = float(m.mean())
    if not m.any():
        return np.concatenate([grid.ravel(), np.zeros(10, np.float32)])
    ys, xs = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    x0, x1, y0, y1 = xs[0] / w, (xs[-1] + 1) / w, ys[0] / h, (ys[-1] + 1) / h
    bw, bh = x1 - x0, y1 - y0
    scalars = [area, math.sqrt(area), x0, y0, bw, bh, (x0 + x1) / 2, (y0 + y1) / 2, math.log((bh * h) / (bw * w)),
               area / (bw * bh)]
    return np.concatenate([grid.ravel(), np.asarray(scalars, np.float32)])


@dataclass
class Masks:
    keys: list[str]
    features: np.ndarray  # (N, N_FEATURES) float32
    labels: np.ndarray  # (N,) int64
    image_ids: np.ndarray  # (N,) int64


def read_masks(shards, keys: set[str] | None = None, max_samples: int | None = None, desc: str = "masks") -> Masks:
    """The mask features of a shard set's samples (only those in `keys` when given; at most `max_samples`, the
    first in shard order), through the shard reader with its checks; only mask.png is decoded."""
    from scenectl.data.loader import decode_sample, raw_samples
    from scenectl.inference import image_id

    out_keys, feats, labels, images = [], [], [], []
    total = len(keys) if keys is not None else min(shards.num_samples, max_samples or shards.num_samples)
    with progress(total=total, desc=desc, unit="masks", leave=False) as bar:
        for raw in raw_samples(shards):
            if max_samples is not None and len(out_keys) >= max_samples:
                break
            if keys is not None and raw["__key__"] not in keys:
                continue
            s = decode_sample(raw, ("mask.png",), len(shards.classes))
            out_keys.append(s["key"])
            feats.append(mask_features(Image.fromarray(s["mask"][0].numpy())))  # (1, H, W) uint8 -> PIL L
            labels.append(s["label"])
            images.append(image_id(s["meta"]))
            bar.update()
    return Masks(out_keys, np.stack(feats) if feats else np.zeros((0, N_FEATURES), np.float32),
                 np.asarray(labels, np.int64), np.asarray(images, np.int64))


# --- the classifier ------------------------------------------------------------------------------------------------
@dataclass
class MaskOnly:
    """Multinomial logistic regression on standardised mask features."""

    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    weight: np.ndarray  # (F, C)
    bias: np.ndarray  # (C,)
    l2: float
    train_top1: float  # top-1 of the final fit on its own training samples
    heldout_top1: float | None  # top-1 of the chosen L2's fit on the held-out training images (None: none held out)
    heldout_samples: int

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N, C) logits of mask features (N, F)."""
        return ((features - self.mean) / self.std) @ self.weight + self.bias


def _fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
         start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + l2 / 2 * |W|^2 (bias not penalised), full batch, L-BFGS, from `start` (a
    previous solution: the problem is convex, so a start only saves iterations) or zeros. Deterministic."""
    w0, b0 = start if start is not None else (torch.zeros(x.shape[1], num_classes), torch.zeros(num_classes))
    w = w0.clone().to(x.dtype).requires_grad_(True)  # (F, C)
    b = b0.clone().to(x.dtype).requires_grad_(True)  # (C,)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, history_size=20, tolerance_grad=1e-5,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


@contextlib.contextmanager
def _threads_for(size: int):
    """One torch thread for a small problem (`size` = samples x features x classes): on small products the
    threads' synchronisation costs more than it saves (10x slower with 2 threads on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    if size < 50_000_000:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _holdout(image_ids: np.ndarray, seed: int) -> np.ndarray:
    """(N,) bool: the samples of a seeded HOLDOUT share of the images (whole images, as the bootstrap resamples)."""
    images = np.unique(image_ids)
    rng = np.random.default_rng([seed, 14])
    held = rng.choice(images, size=max(1, int(round(HOLDOUT * len(images)))), replace=False)
    return np.isin(image_ids, held)


def _top1(x: torch.Tensor, y: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Top-1 accuracy of the linear model wb = (W (F, C), b (C,)) on x (N, F), y (N,) (ties: the lower class)."""
    return float((torch.argmax(x @ wb[0] + wb[1], dim=1) == y).double().mean()) if len(y) else float("nan")


def fit(features: np.ndarray, labels: np.ndarray, image_ids: np.ndarray, num_classes: int,
        seed: int) -> MaskOnly:
    """Fit the mask-only classifier: standardise, choose the L2 strength from L2_GRID by top-1 accuracy on held-out
    training images (whole images, HOLDOUT of them), refit on every training sample."""
    if len(labels) == 0:
        raise ScenectlError("the mask-only baseline has no training samples")
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)  # constant features (e.g. grid cells never hidden) stay 0
    x = torch.from_numpy(((features - mean) / std).astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    held = torch.from_numpy(_holdout(image_ids, seed))
    l2, best, heldout = L2_GRID[2], None, None
    with _threads_for(x.shape[0] * x.shape[1] * num_classes):
        if held.any() and (~held).any():
            accuracy, fits = [], []
            for lam in L2_GRID:
                fits.append(_fit(x[~held], y[~held], num_classes, lam, fits[-1] if fits else None))
                accuracy.append(_top1(x[held], y[held], fits[-1]))
            pick = int(np.argmax(accuracy))  # the first maximum: the strongest L2 among equals
            l2, best, heldout = L2_GRID[pick], fits[pick], accuracy[pick]
        w, b = _fit(x, y, num_classes, l2, best)
    return MaskOnly(mean, std, w.numpy().astype(np.float64), b.numpy().astype(np.float64), l2,
                    _top1(x, y, (w, b)), heldout, int(held.sum()) if heldout is not None else 0)


# --- the control as eval runs it -----------------------------------------------------------------------------------
def run_control(train_set, train_spec: str, eval_sets: list, keys: list[list[str]], num_classes: int,
                seed: int) -> tuple[np.ndarray, dict]:
    """Fit on `train_set` and score every evaluated sample: (N, C) scores in the order of `keys` (one list per
    evaluated shard set, concatenated) and the report's `mask_only` record."""
    t0 = time.perf_counter()
    train = read_masks(train_set, max_samples=MAX_TRAIN, desc="mask-only: training masks")
    model = fit(train.features, train.labels, train.image_ids, num_classes, seed)
    t_fit = time.perf_counter() - t0
    parts = []
    for ss, ks in zip(eval_sets, keys):
        got = read_masks(ss, keys=set(ks), desc="mask-only: evaluated masks")
        where = {k: i for i, k in enumerate(got.keys)}
        missing = [k for k in ks if k not in where]
        if missing:
            raise ScenectlError(f"mask-only baseline: sample {missing[0]} was evaluated but its mask was not "
                                "read again")
        parts.append(model.scores(got.features[[where[k] for k in ks]]))
    record = {"run": True, "train_shards": train_spec, "train_samples": len(train.labels),
              "train_capped": len(train.labels) >= MAX_TRAIN, "features": N_FEATURES,
              "feature_set": f"{GRID}x{GRID} grid + {N_SCALARS} scalars", "l2": model.l2, "l2_grid": list(L2_GRID),
              "train_top1": model.train_top1, "heldout_top1": model.heldout_top1,
              "heldout_samples": model.heldout_samples,
              "seconds_fit": t_fit, "seconds": time.perf_counter() - t0}
    return np.concatenate(parts), record


def explained_share(model: float, hole: float, prior: float, dists: dict[str, np.ndarray] | None = None) -> dict:
    """The share of the model's top-1 gain over the prior that the hole alone reaches, (hole - prior) / (model -
    prior), clipped to [0, 1] (a hole that beats the model explains all of its gain, not 346 % of it):
    {"value": share | None, "ci": [lo, hi] | None, "unclipped": the ratio itself | None}. None where the model does
    not beat the prior. `dists` {"model", "mask_only", "prior"}: top-1 on the same image resamples (B,) each; the
    interval is the percentile interval of the clipped ratio over the resamples where the model beats the prior."""
    from scenectl.metrics import interval

    if model <= prior:
        return {"value": None, "ci": None, "unclipped": None}
    ratio = (hole - prior) / (model - prior)
    ci = None
    if dists is not None:
        gain = np.asarray(dists["model"], np.float64) - np.asarray(dists["prior"], np.float64)  # (B,)
        hole_gain = np.asarray(dists["mask_only"], np.float64) - np.asarray(dists["prior"], np.float64)
        ok = gain > 0
        ci = interval(np.clip(hole_gain[ok] / gain[ok], 0.0, 1.0)) if ok.any() else None
    return {"value": float(np.clip(ratio, 0.0, 1.0)), "ci": ci, "unclipped": float(ratio)}
