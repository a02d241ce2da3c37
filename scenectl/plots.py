"""The PNG figures of `scenectl eval`, `compare`, `predict`, `cooccurrence`, `fuse`, `inspect-shards` and the
training curves of `train`, `transfer` and `distill` (matplotlib, Agg backend: no display needed).

Every figure is written atomically: drawn to a temporary name in the target folder, renamed when whole.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: clusters, CI and the sandbox have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scenectl.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _tick_size(n: int) -> float:
    # 80 COCO names must stay legible: shrink the labels as the class count grows.
    return max(3.0, min(9.0, 400.0 / max(n, 1)))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = top-1 prediction."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return conf


def plot_confusion(conf: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix (each true class sums to 1; rows without samples stay blank)."""
    conf = np.asarray(conf, dtype=np.float64)
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.full_like(conf, np.nan), where=rows > 0)  # (C, C)
    n = len(names)
    side = max(5.0, min(18.0, 0.16 * n + 3))
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=90, fontsize=_tick_size(n))
    ax.set_yticks(range(n), names, fontsize=_tick_size(n))
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("hidden object's class")
    ax.set_title(title or "confusion (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)


def _yerr(values: Sequence[float], intervals: Sequence | None) -> np.ndarray | None:
    """(2, n) distances below / above each value of its [lo, hi] interval for matplotlib's yerr (0 where none)."""
    if intervals is None or all(ci is None for ci in intervals):
        return None
    return np.array([[max(0.0, v - ci[0]) if ci else 0.0 for v, ci in zip(values, intervals)],
                     [max(0.0, ci[1] - v) if ci else 0.0 for v, ci in zip(values, intervals)]])


def plot_per_class(
    per_class: Sequence[float | None], counts: Sequence[int], names: Sequence[str], path: str | Path, title: str = "",
    intervals: Sequence[Sequence[float] | None] | None = None,
) -> None:
    """Top-1 accuracy per class, sorted best first; classes without samples are left out and counted in the title.
    `intervals`: optional [lo, hi] per class, drawn as error bars."""
    idx = [i for i in range(len(names)) if counts[i] > 0 and per_class[i] is not None]
    idx.sort(key=lambda i: -float(per_class[i]))
    acc = [float(per_class[i]) for i in idx]
    n = max(len(idx), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, 0.18 * n + 2)), 4.5))
    ax.bar(range(len(idx)), acc, color="tab:blue",
           yerr=_yerr(acc, [intervals[i] for i in idx] if intervals else None), ecolor="black", capsize=1.5)
    ax.set_xticks(range(len(idx)), [f"{names[i]} ({counts[i]})" for i in idx], rotation=90, fontsize=_tick_size(n))
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1 accuracy")
    missing = len(names) - len(idx)
    ax.set_title((title or "per-class top-1 accuracy (samples in brackets)") + (f"; {missing} classes absent" if missing else ""))
    _save(fig, path)


def plot_comparison(rows: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "",
                    errors: Mapping[str, Mapping[str, Sequence[float] | None]] | None = None) -> None:
    """Grouped bars: one group per metric (columns of `rows`), one bar per shard set or model (keys of `rows`);
    `errors`: optional [lo, hi] per name and metric, drawn as error bars. Missing values (None) are left blank."""
    names = list(rows)
    metrics = list(next(iter(rows.values())).keys()) if rows else []
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 1.2 * len(metrics) * max(1, len(names)) * 0.5 + 3)), 4.5))
    x = np.arange(len(metrics))
    for j, name in enumerate(names):
        vals = [np.nan if rows[name].get(m) is None else float(rows[name][m]) for m in metrics]
        cis = [(errors.get(name) or {}).get(m) for m in metrics] if errors else None
        ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, label=name,
               yerr=_yerr(np.nan_to_num(vals), cis), ecolor="black", capsize=2)
    ax.set_xticks(x, metrics, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.set_title(title or "comparison")
    _save(fig, path)


def plot_differences(diffs: Mapping[str, Mapping[str, Mapping]], path: str | Path, reference: str,
                     title: str = "") -> None:
    """`scenectl compare`: each model's paired difference to the reference, per metric (groups), in percentage
    points, with its 95% interval as error bars and a line at zero (no difference).
    diffs: {model: {metric: {"difference": float, "ci": [lo, hi] | None}}}."""
    names = list(diffs)
    metrics = list(next(iter(diffs.values())).keys()) if diffs else []
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.6 * len(metrics) * max(1, len(names)) + 3)), 4.5))
    x = np.arange(len(metrics))
    for j, name in enumerate(names):
        d = [diffs[name].get(m) or {} for m in metrics]
        vals = [100 * r["difference"] if "difference" in r else np.nan for r in d]
        cis = [[100 * v for v in r["ci"]] if r.get("ci") else None for r in d]
        ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, label=name,
               yerr=_yerr(np.nan_to_num(vals), cis) if any(cis) else None, ecolor="black", capsize=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, metrics, rotation=30, ha="right")
    ax.set_xlabel("metric")
    ax.set_ylabel(f"model − {reference} (percentage points)")
    ax.legend(fontsize=8)
    ax.set_title(title or f"difference to {reference} (paired, 95% intervals)")
    _save(fig, path)


def plot_prediction(image: np.ndarray, probs: Sequence[float], names: Sequence[str], path: str | Path, title: str = "") -> None:
    """The masked model input beside a horizontal bar chart of its top classes (best on top)."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [1, 1.1]})
    a0.imshow(image)
    a0.set_axis_off()
    a0.set_title(title or "model input (hidden region filled)")
    y = np.arange(len(names))[::-1]
    a1.barh(y, probs, color="tab:orange")
    a1.set_yticks(y, names)
    a1.set_xlim(0, max(1e-6, float(max(probs, default=0))) * 1.15)
    a1.set_xlabel("probability")
    a1.set_title(f"top-{len(names)} classes")
    _save(fig, path)


def plot_heatmap(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str, label: str) -> None:
    """A (C, C) class-by-class heatmap (co-occurrence PMI or conditional probability)."""
    n = len(names)
    side = max(5.0, min(18.0, 0.16 * n + 3))
    fig, ax = plt.subplots(figsize=(side, side))
    finite = np.asarray(matrix, dtype=np.float64)
    lim = np.nanmax(np.abs(finite[np.isfinite(finite)])) if np.isfinite(finite).any() else 1.0
    diverging = np.nanmin(finite[np.isfinite(finite)]) < 0 if np.isfinite(finite).any() else False
    im = ax.imshow(
        np.where(np.isfinite(finite), finite, np.nan),
        cmap="RdBu_r" if diverging else "viridis",
        vmin=-lim if diverging else 0,
        vmax=lim,
        interpolation="nearest",
    )
    ax.set_xticks(range(n), names, rotation=90, fontsize=_tick_size(n))
    ax.set_yticks(range(n), names, fontsize=_tick_size(n))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    _save(fig, path)


def plot_weights(curve: Sequence[Mapping[str, float]], chosen: float, path: str | Path) -> None:
    """`scenectl fuse`: validation top-1 of the fused model against the context weight w, the chosen w marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["w"] for r in curve], [r["top1"] for r in curve], marker="o")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen w = {chosen}")
    ax.set_xlabel("context weight w   (log p_obj + w log p_ctx)")
    ax.set_ylabel("validation top-1 (fused)")
    ax.legend()
    _save(fig, path)


def plot_contact_sheet(samples: Sequence[Mapping], path: str | Path) -> None:
    """`scenectl inspect-shards`: a grid of decoded samples ({"jpg", "mask.png", "json", "cls"}), each scene with
    its hidden region outlined in red, titled with its label and hidden-area fraction."""
    cols = max(1, math.ceil(math.sqrt(len(samples))))
    rows = max(1, math.ceil(len(samples) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples):
        ax.imshow(s["jpg"])
        if "mask.png" in s and s["mask.png"].any():
            ax.contour(s["mask.png"] > 127, levels=[0.5], colors="red", linewidths=1.0)
        meta = s.get("json", {})
        title = meta.get("category_name", str(s.get("cls")))
        if "area_fraction" in meta:
            title += f" ({meta['area_fraction']:.2f})"
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# --- training curves (curves.png) ----------------------------------------------------------------------------------
CURVES_FONT = 10  # points; at the saved 110 dpi every label stays legible at 100 %


def _column(records: list[dict], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    rows = [r for r in records if isinstance(r.get(key), (int, float))]
    return [r["step"] for r in rows], [scale * r[key] for r in rows]


def _draw_run(axes, name: str, steps: list[dict], epochs: list[dict], color: str, prefix: str) -> None:
    a_loss, a_acc, a_lr = axes
    if steps:
        a_loss.plot(*_column(steps, "loss"), color=color, alpha=0.35, lw=0.8, label=f"{prefix}training (per step)")
    a_loss.plot(*_column(epochs, "train_loss"), "o-", color=color, label=f"{prefix}training (epoch mean)")
    a_loss.plot(*_column(epochs, "val_loss"), "s--", color=color, label=f"{prefix}validation")
    a_acc.plot(*_column(epochs, "val_top1", 100), "o-", color=color, label=f"{prefix}top-1")
    a_acc.plot(*_column(epochs, "val_top5", 100), "^--", color=color, label=f"{prefix}top-5")
    if any("val_bal_top1" in r for r in epochs):
        a_acc.plot(*_column(epochs, "val_bal_top1", 100), "d:", color=color, label=f"{prefix}balanced top-1")
    lr = _column(steps, "lr") if steps else _column(epochs, "lr")
    a_lr.plot(*lr, "-" if steps else "o-", color=color, label=name)


def plot_training_curves(runs: Mapping[str, tuple[list[dict], list[dict]]], path: str | Path, title: str) -> None:
    """curves.png of `train`, `transfer` and `distill`: three panels against the optimisation step — loss (per
    logged step, epoch mean, validation), validation top-1 / top-5 in percent (and class-balanced top-1 where
    logged), learning rate; one colour per run. runs: name -> (step records, epoch records) of its metrics.jsonl."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharex=True, constrained_layout=True)
    for i, (name, (steps, epochs)) in enumerate(runs.items()):
        _draw_run(axes, name, steps, epochs, f"C{i}", f"{name}: " if len(runs) > 1 else "")
    labels = [("Loss", "cross-entropy (nats)"), ("Validation accuracy", "accuracy (%)"),
              ("Learning rate", "learning rate (per step)")]
    for ax, (head, ylabel) in zip(axes, labels):
        ax.set_title(head, fontsize=CURVES_FONT + 1)
        ax.set_xlabel("optimisation step", fontsize=CURVES_FONT)
        ax.set_ylabel(ylabel, fontsize=CURVES_FONT)
        ax.tick_params(labelsize=CURVES_FONT - 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=CURVES_FONT - 2)
    axes[1].set_ylim(0, 100)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(title, fontsize=CURVES_FONT + 2)
    _save(fig, path)
