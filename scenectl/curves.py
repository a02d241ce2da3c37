"""curves.png: a training run's loss, validation accuracy and learning rate, drawn from its metrics.jsonl.

The engine redraws OUT/curves.png after every epoch of every run (train, transfer, distill); transfer and distill
draw their runs side by side in the experiment's curves.png with the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

from scenectl.io import atomic_path

FONT = 10  # points; at the saved 110 dpi every label stays legible at 100 %


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of run_dir/metrics.jsonl in step order. After a resume the latest record of a
    step wins; a line that does not parse (cut short by a kill) is passed over."""
    steps: dict[int, dict] = {}
    epochs: dict[int, dict] = {}
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not isinstance(r, dict) or type(r.get("step")) is not int:
            continue
        if r.get("kind") == "step":
            steps[r["step"]] = r
        elif r.get("kind") in ("epoch", "partial_epoch"):
            epochs[r["step"]] = r
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def _column(records: list[dict], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    rows = [r for r in records if isinstance(r.get(key), (int, float))]
    return [r["step"] for r in rows], [scale * r[key] for r in rows]


def _draw_run(axes, name: str, run_dir: Path, color: str, prefix: str) -> None:
    a_loss, a_acc, a_lr = axes
    steps, epochs = read_metrics(run_dir)
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


def plot_curves(runs: dict[str, Path], path: str | Path, title: str) -> None:
    """Three panels against the optimisation step: loss (per step and per epoch, validation), validation top-1 /
    top-5 in percent (and class-balanced top-1 where logged), learning rate; one colour per run."""
    import matplotlib

    matplotlib.use("Agg")  # headless: clusters, CI and the sandbox have no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), sharex=True, constrained_layout=True)
    for i, (name, run_dir) in enumerate(runs.items()):
        _draw_run(axes, name, Path(run_dir), f"C{i}", f"{name}: " if len(runs) > 1 else "")
    labels = [("Loss", "cross-entropy (nats)"), ("Validation accuracy", "accuracy (%)"),
              ("Learning rate", "learning rate (per step)")]
    for ax, (head, ylabel) in zip(axes, labels):
        ax.set_title(head, fontsize=FONT + 1)
        ax.set_xlabel("optimisation step", fontsize=FONT)
        ax.set_ylabel(ylabel, fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=FONT - 2)
    axes[1].set_ylim(0, 100)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(title, fontsize=FONT + 2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
