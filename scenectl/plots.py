"""The PNG figures of `scenectl eval`, `compare`, `predict`, `cooccurrence`, `fuse`, `inspect-shards` and the
training curves of `train`, `transfer` and `distill` (matplotlib, Agg backend: no display needed), drawn to be read
at 100 % without zooming.

The rules every figure keeps (docs/gallery.md shows them; tests/figures.py checks them mechanically on every figure
the tests draw):

- a title, and a label on every axis that has tick labels, with its unit (%, percentage points, samples, ...);
- every text at least 8 points at the saved DPI (>= 100), and no two tick labels of an axis overlapping: a figure
  grows with its class count (CELL_IN inches per class) and shows at most MAX_CLASSES classes, the ones with most
  samples, saying so in its title;
- a colour bar, labelled, wherever colour stands for a number (cells without a value are grey and the title or the
  bar says why).

Draw inside `@styled` (the shared font sizes) and write with `save` (atomically: a temporary name in the target
folder, renamed when whole). A command that draws from a checkpoint or a data set says so once around its drawing,
`with plots.source(checkpoint=..., data=..., n=...):`, and every figure saved inside carries that line as its
subtitle (the foot of the figure), whatever its kind.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: clusters, CI and the sandbox have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from scenectl.io import atomic_path  # noqa: E402

DPI = 110  # saved resolution: 8 pt = 12 px
CELL_IN = 0.16  # inches per class row / column / bar: fits an 8 pt label with a little air
MAX_CLASSES = 100  # classes one figure shows at most (the ones with most samples)
GREY = "#d9d9d9"  # cells without a value
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "figure.titlesize": 11, "savefig.dpi": DPI}


def styled(draw):
    """Decorator: draw (and save) the figure under the shared font sizes (STYLE)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


# --- saving -------------------------------------------------------------------------------------------------------
SOURCE_GID = "scenectl-source"  # the id of the source line's Text artist
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("figure_source", default=None)


def source_text(checkpoint: str | None = None, data: str | None = None, n: int | None = None,
                sha256: str | None = None) -> str:
    """The subtitle of a figure drawn from a checkpoint and/or a data set: "checkpoint runs/train/last.pt (sha256
    1a2b3c4d5e6f) · data shards/val2017 · n = 500"."""
    parts = []
    if checkpoint:
        parts.append(f"checkpoint {checkpoint}" + (f" (sha256 {sha256[:12]})" if sha256 else ""))
    if data:
        parts.append(f"data {data}")
    if n is not None:
        parts.append(f"n = {n}")
    return " · ".join(parts)


@contextlib.contextmanager
def source(**what):
    """Every figure saved inside the block carries `source_text(**what)` as its subtitle."""
    token = _SOURCE.set(source_text(**what) or None)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def stamp(fig) -> None:
    """The current source line at the foot of `fig` (8 pt; bbox_inches="tight" keeps it in the PNG)."""
    text = _SOURCE.get()
    if text:
        fig.text(0.5, 0.0, _wrap_parts(text.split(" · "), 140), ha="center", va="top", fontsize=8, color="#444444",
                 gid=SOURCE_GID)


def _wrap_parts(parts: list[str], width: int) -> str:
    """Parts joined by " · ", lines broken only between parts (a path or "n = 500" is never cut)."""
    lines = [parts[0]]
    for p in parts[1:]:
        if len(lines[-1]) + 3 + len(p) > width:
            lines.append(p)
        else:
            lines[-1] += " · " + p
    return "\n".join(lines)


def save(fig, path: str | Path, dpi: int = DPI) -> None:
    """Write `fig` as PNG at `dpi` with its source subtitle (`source`), atomically, and close it (the rules every
    figure keeps: tests/figures.py)."""
    stamp(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


# --- class selection -----------------------------------------------------------------------------------------------
def top_classes(weights: Sequence[float], limit: int = MAX_CLASSES) -> list[int]:
    """Indices of the `limit` classes of largest weight (samples, images), in their original order."""
    return sorted(sorted(range(len(weights)), key=lambda i: (-float(weights[i]), i))[:limit])


def _shown(n_shown: int, n_all: int, what: str = "samples") -> str:
    """Title suffix when a figure leaves classes out."""
    return "" if n_shown == n_all else f" — the {n_shown} classes with most {what}, of {n_all}"


def _class_ticks(ax, names: Sequence[str]) -> None:
    """Every class named on both axes of a matrix (x names vertical: CELL_IN per class fits them)."""
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)


def _matrix_figure(n: int):
    side = max(5.0, CELL_IN * n + 3.2)  # + room for the labels and the colour bar
    return plt.subplots(figsize=(side + 1.0, side), layout="constrained")


def _cmap(name: str):
    return plt.get_cmap(name).with_extremes(bad=GREY)


def _title(ax, text: str) -> None:
    """An axes title wrapped to the figure's width (long titles would be cut at the edge of the PNG)."""
    width_in = ax.figure.get_figwidth() * ax.get_position().width
    ax.set_title(textwrap.fill(text, max(30, int(width_in * 72 / (0.55 * STYLE["axes.titlesize"])))))


def _legend_outside(ax) -> None:
    """The legend right of the plot, where it hides no bar."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _yerr(values: Sequence[float], intervals: Sequence | None) -> np.ndarray | None:
    """(2, n) distances below / above each value of its [lo, hi] interval for matplotlib's yerr (0 where none)."""
    if intervals is None or all(ci is None for ci in intervals):
        return None
    return np.array([[max(0.0, v - ci[0]) if ci else 0.0 for v, ci in zip(values, intervals)],
                     [max(0.0, ci[1] - v) if ci else 0.0 for v, ci in zip(values, intervals)]])


# --- eval, compare -------------------------------------------------------------------------------------------------
def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = top-1 prediction."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(conf, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return conf


@styled
def plot_confusion(conf: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix in % (each true class sums to 100; rows without samples are grey); beyond
    MAX_CLASSES classes, the rows and columns of the classes with most samples."""
    conf = np.asarray(conf, dtype=np.float64)
    rows = conf.sum(axis=1)  # (C,) samples per true class
    keep = top_classes(rows)
    norm = np.divide(conf, rows[:, None], out=np.full_like(conf, np.nan), where=rows[:, None] > 0)  # (C, C)
    fig, ax = _matrix_figure(len(keep))
    im = ax.imshow(100 * norm[np.ix_(keep, keep)], cmap=_cmap("viridis"), vmin=0, vmax=100, interpolation="nearest")
    _class_ticks(ax, [names[i] for i in keep])
    ax.set_xlabel("predicted class (top-1)")
    ax.set_ylabel("true class (the hidden object)")
    empty = int((rows[keep] == 0).sum())
    _title(ax, (title or "confusion (row-normalised)") + _shown(len(keep), len(names))
           + (f"; {empty} grey rows: classes without samples" if empty else ""))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="share of the true class's samples (%)")
    save(fig, path)


@styled
def plot_per_class(
    per_class: Sequence[float | None], counts: Sequence[int], names: Sequence[str], path: str | Path, title: str = "",
    intervals: Sequence[Sequence[float] | None] | None = None,
) -> None:
    """Top-1 accuracy per class in %, best first; classes without samples are left out and counted in the title
    (beyond MAX_CLASSES, the classes with most samples). `intervals`: optional [lo, hi] per class, error bars."""
    idx = [i for i in range(len(names)) if counts[i] > 0 and per_class[i] is not None]
    shown = [idx[j] for j in top_classes([counts[i] for i in idx])]
    shown.sort(key=lambda i: -float(per_class[i]))
    acc = [100 * float(per_class[i]) for i in shown]
    cis = [[100 * v for v in intervals[i]] if intervals[i] else None for i in shown] if intervals else None
    fig, ax = plt.subplots(figsize=(max(6.0, CELL_IN * len(shown) + 2.0), 4.8), layout="constrained")
    ax.bar(range(len(shown)), acc, color="tab:blue", yerr=_yerr(acc, cis), ecolor="black", capsize=1.5)
    ax.set_xticks(range(len(shown)), [f"{names[i]} ({counts[i]})" for i in shown], rotation=90)
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylim(0, 100)
    ax.set_xlabel("class (samples), best first")
    ax.set_ylabel("top-1 accuracy (%)")
    missing = len(names) - len(idx)
    _title(ax, (title or "per-class top-1 accuracy") + _shown(len(shown), len(idx))
           + (f"; {missing} classes without samples left out" if missing else ""))
    save(fig, path)


def _metric_bars(metrics: list[str], values: Mapping[str, Sequence[float]], intervals: Mapping[str, Sequence] | None,
                 ylabel: str, title: str):
    """Grouped bars: one group per metric (its name under it, at 0 degrees: the figure is wide enough), one bar per
    name (legend), with optional [lo, hi] error bars; NaN stays blank. Returns (fig, ax) for the caller to finish."""
    fig, ax = plt.subplots(figsize=(max(6.0, len(metrics) * max(1.0, 0.3 * len(values)) + 3.0), 4.5),
                           layout="constrained")
    width = 0.8 / max(len(values), 1)
    for j, (name, vals) in enumerate(values.items()):
        x = np.arange(len(vals)) + (j - (len(values) - 1) / 2) * width
        ax.bar(x, vals, width, label=name, yerr=_yerr(np.nan_to_num(vals), (intervals or {}).get(name)),
               ecolor="black", capsize=2)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_xlabel("metric")
    ax.set_ylabel(ylabel)
    _legend_outside(ax)
    _title(ax, title)
    return fig, ax


@styled
def plot_comparison(rows: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "",
                    errors: Mapping[str, Mapping[str, Sequence[float] | None]] | None = None) -> None:
    """Grouped bars in %: one group per metric (columns of `rows`, fractions), one bar per shard set or model (keys
    of `rows`); `errors`: optional [lo, hi] per name and metric, drawn as error bars. Missing values stay blank."""
    metrics = list(next(iter(rows.values())).keys()) if rows else []
    vals = {n: [np.nan if r.get(m) is None else 100 * float(r[m]) for m in metrics] for n, r in rows.items()}
    cis = {n: [[100 * v for v in ci] if (ci := (errors.get(n) or {}).get(m)) else None for m in metrics]
           for n in rows} if errors else None
    fig, ax = _metric_bars(metrics, vals, cis, "score (%)", title or "comparison")
    ax.set_ylim(0, 100)
    save(fig, path)


@styled
def plot_differences(diffs: Mapping[str, Mapping[str, Mapping]], path: str | Path, reference: str,
                     title: str = "") -> None:
    """`scenectl compare`: each model's paired difference to the reference, per metric (groups), in percentage
    points, with its 95% interval as error bars and a line at zero (no difference).
    diffs: {model: {metric: {"difference": float, "ci": [lo, hi] | None}}}."""
    metrics = list(next(iter(diffs.values())).keys()) if diffs else []
    cells = {n: [d.get(m) or {} for m in metrics] for n, d in diffs.items()}
    vals = {n: [100 * r["difference"] if "difference" in r else np.nan for r in rs] for n, rs in cells.items()}
    cis = {n: [[100 * v for v in r["ci"]] if r.get("ci") else None for r in rs] for n, rs in cells.items()}
    fig, ax = _metric_bars(metrics, vals, cis, f"model − {reference} (percentage points)",
                           title or f"difference to {reference} (paired, 95% intervals)")
    ax.axhline(0, color="black", linewidth=0.8)
    save(fig, path)


# --- predict, cooccurrence, fuse -----------------------------------------------------------------------------------
def outline(ax, mask: np.ndarray) -> None:
    """The hidden region's edge (mask (H, W), > 127 = hidden) as a yellow line on a black one: visible on the
    padding's grey, on dark and on light scenes."""
    if mask is not None and np.asarray(mask).any():
        hidden = np.asarray(mask) > 127
        ax.contour(hidden, levels=[0.5], colors="black", linewidths=2.6)
        ax.contour(hidden, levels=[0.5], colors="yellow", linewidths=1.2)


@styled
def plot_prediction(image: np.ndarray, probs: Sequence[float], names: Sequence[str], path: str | Path,
                    title: str = "", mask: np.ndarray | None = None,
                    full: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """The masked model input, its hidden region outlined (`mask` (S, S), 255 = hidden), beside a horizontal bar
    chart of its top classes in % (best on top, each bar labelled with its value); with `full` ((h, w, 3) image,
    (h, w) mask), the whole image with the hidden region outlined first, on the left."""
    pct = [100 * float(p) for p in probs]
    height = max(4.6, 0.24 * len(names) + 1.4)
    if full is not None:
        fig, (af, a0, a1) = plt.subplots(1, 3, figsize=(16, height), width_ratios=[1, 1, 1.15], layout="constrained")
        af.imshow(full[0])
        outline(af, full[1])
        af.set_axis_off()
        _title(af, "the whole image; outline: hidden region")
    else:
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, height), width_ratios=[1, 1.15], layout="constrained")
    a0.imshow(image, interpolation="nearest")
    outline(a0, mask)
    a0.set_axis_off()
    _title(a0, title or "model input; outline: hidden region")
    y = np.arange(len(names))[::-1]
    a1.barh(y, pct, color="tab:orange")
    for yi, v in zip(y, pct):
        a1.text(v, yi, f" {v:.1f}%", va="center", fontsize=8)
    a1.set_yticks(y, names)
    a1.set_xlim(0, max(1e-3, max(pct, default=0.0)) * 1.25)  # room for the value labels
    a1.xaxis.set_major_locator(MaxNLocator(nbins=5))  # few ticks: they never run together
    a1.set_xlabel("probability (%)")
    a1.set_ylabel("class (most probable on top)")
    _title(a1, f"top-{len(names)} classes")
    save(fig, path)


@styled
def plot_heatmap(matrix: np.ndarray, names: Sequence[str], path: str | Path, title: str, label: str,
                 counts: Sequence[float] | None = None, xlabel: str = "companion class j",
                 ylabel: str = "class i") -> None:
    """A (C, C) class-by-class heatmap (co-occurrence PMI or conditional probability); NaN cells (no value, or
    filtered out) are grey. Beyond MAX_CLASSES classes, the ones of largest `counts` (images)."""
    keep = top_classes(counts if counts is not None else [1.0] * len(names))
    m = np.asarray(matrix, dtype=np.float64)[np.ix_(keep, keep)]  # (K, K)
    finite = np.isfinite(m)
    lim = float(np.abs(m[finite]).max() if finite.any() else 0.0) or 1.0  # all-zero or no values: any scale
    diverging = bool(finite.any() and m[finite].min() < 0)
    fig, ax = _matrix_figure(len(keep))
    im = ax.imshow(np.where(finite, m, np.nan), cmap=_cmap("RdBu_r" if diverging else "viridis"),
                   vmin=-lim if diverging else 0.0, vmax=lim, interpolation="nearest")
    _class_ticks(ax, [names[i] for i in keep])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, title + _shown(len(keep), len(names), "images"))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=label)
    save(fig, path)


@styled
def plot_weights(curve: Sequence[Mapping[str, float]], chosen: float, path: str | Path) -> None:
    """`scenectl fuse`: validation top-1 of the fused model (%) against the context weight w, the chosen w marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ax.plot([r["w"] for r in curve], [100 * r["top1"] for r in curve], marker="o")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"chosen w = {chosen:g}")
    ax.set_xlabel("context weight w   (log p_obj + w · log p_ctx; 0: object model alone)")
    ax.set_ylabel("validation top-1, fused (%)")
    ax.legend()
    _title(ax, "fuse: validation top-1 against the context weight")
    save(fig, path)


# --- inspect-shards ------------------------------------------------------------------------------------------------
def _tile(ax, s: Mapping) -> None:
    """One sample: the masked scene, its hidden region outlined, titled with its class and hidden-area fraction."""
    ax.imshow(s["jpg"], interpolation="nearest")
    outline(ax, s.get("mask.png"))
    ax.set_axis_off()
    meta = s.get("json") or {}
    name = str(meta.get("category_name", f"class {s.get('cls')}"))
    text = name if "area_fraction" not in meta else f"{name}\nhidden area {float(meta['area_fraction']):.2f}"
    ax.set_title(text, fontsize=8)


def _area_histogram(ax, hist: Mapping) -> None:
    """The set's hidden-area histogram (manifest totals: `edges`, `counts`)."""
    edges, counts = np.asarray(hist["edges"], np.float64), np.asarray(hist["counts"], np.float64)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:red", edgecolor="white")
    ax.set_xticks(edges, [f"{e:.2f}" for e in edges])
    ax.set_xlabel("hidden area / image area (fraction)")
    ax.set_ylabel("samples")
    ax.set_title(f"hidden-area histogram of all {int(counts.sum())} samples in the set")


@styled
def plot_contact_sheet(samples: Sequence[Mapping], path: str | Path, title: str = "",
                       histogram: Mapping | None = None) -> None:
    """`scenectl inspect-shards`: a grid of decoded samples ({"jpg", "mask.png", "json", "cls"}), each scene with
    its hidden region outlined and titled with its class and hidden-area fraction; below, the set's hidden-area
    histogram (`histogram`: the manifest's {"edges", "counts"}) when given."""
    cols = max(1, math.ceil(math.sqrt(len(samples))))
    rows = max(1, math.ceil(len(samples) / cols))
    heights = [2.3] * rows + ([2.6] if histogram else [])
    fig = plt.figure(figsize=(max(6.5, 2.0 * cols), sum(heights) + 0.5), layout="constrained")
    grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    for k, s in enumerate(samples):
        _tile(fig.add_subplot(grid[k // cols, k % cols]), s)
    if histogram:
        _area_histogram(fig.add_subplot(grid[rows, :]), histogram)
    fig.suptitle(textwrap.fill(title or f"{len(samples)} samples; outline: hidden region", 100))
    save(fig, path)


# --- training curves (curves.png) ----------------------------------------------------------------------------------
CURVES_FONT = 10  # points; at the saved 110 dpi every label stays legible at 100 %


def _column(records: list[dict], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    rows = [r for r in records if isinstance(r.get(key), (int, float))]
    return [r["step"] for r in rows], [scale * r[key] for r in rows]


def _learning_rates(steps: list[dict], epochs: list[dict]) -> tuple[list[int], list[float]]:
    """The rate at every step a record holds it (logged steps and epoch ends), in step order: a run that logged one
    step line still draws its points (with markers: a line through one point is invisible)."""
    by_step = {r["step"]: float(r["lr"]) for r in [*epochs, *steps] if isinstance(r.get("lr"), (int, float))}
    return sorted(by_step), [by_step[k] for k in sorted(by_step)]


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
    x, y = _learning_rates(steps, epochs)
    a_lr.plot(x, y, "-", marker="o" if len(x) < 30 else None, markersize=3, color=color, label=name)


@styled
def plot_training_curves(runs: Mapping[str, tuple[list[dict], list[dict]]], path: str | Path, title: str) -> None:
    """curves.png of `train`, `transfer` and `distill`: three panels against the optimisation step — loss (per
    logged step, epoch mean, validation), validation top-1 / top-5 in percent (and class-balanced top-1 where
    logged), learning rate; one colour per run. runs: name -> (step records, epoch records) of its metrics.jsonl."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharex=True, constrained_layout=True)
    for i, (name, (steps, epochs)) in enumerate(runs.items()):
        _draw_run(axes, name, steps, epochs, f"C{i}", f"{name}: " if len(runs) > 1 else "")
    labels = [("Loss", "cross-entropy (nats)"), ("Validation accuracy", "accuracy (%)"),
              ("Learning rate", "learning rate (at logged steps)")]
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
    save(fig, path)
