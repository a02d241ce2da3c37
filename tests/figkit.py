"""The figure linter: what keeps a figure of scenectl.plots from being read at 100 % (the rules in plots' docstring).
Used by tests only, so it lives here; `watch()` sees every figure `plots.save` writes, with its problems:

    with figkit.watch() as drawn:
        plots.plot_weights(curve, 0.5, tmp_path / "weights.png")
    assert drawn[0].problems == []
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from unittest import mock

import numpy as np
from matplotlib.text import Text

from scenectl import plots

MIN_PT = 8.0  # smallest text allowed, in points at the saved DPI
MIN_DPI = 100


@dataclass
class Drawn:
    path: Path
    figure: object  # matplotlib Figure (closed: inspect it, do not show it)
    problems: list[str]


@contextlib.contextmanager
def watch() -> Iterator[list[Drawn]]:
    """Every figure `plots.save` writes inside the block is appended, with `figure_problems` of it (checked before
    it is saved and closed)."""
    drawn: list[Drawn] = []
    save = plots.save

    def checked(fig, path, dpi: int = plots.DPI) -> None:
        drawn.append(Drawn(Path(path), fig, figure_problems(fig, dpi)))
        save(fig, path, dpi)

    with mock.patch.object(plots, "save", checked):
        yield drawn


def figure_problems(fig, dpi: int = plots.DPI) -> list[str]:
    """What keeps `fig` from being read at 100 % when saved at `dpi`: missing titles or axis labels, texts under
    MIN_PT, overlapping tick labels, number-coloured images without a labelled colour bar. Empty: none found."""
    fig.canvas.draw()  # lays out the tick labels the PNG will hold
    renderer = fig.canvas.get_renderer()
    problems = [] if dpi >= MIN_DPI else [f"saved at {dpi} dpi, under {MIN_DPI}"]
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    for i, ax in enumerate(a for a in fig.axes if a.get_visible()):
        problems += _axes_problems(ax, ax.get_title() or f"panel {i + 1}", bool(suptitle), renderer)
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_PT:
            problems.append(f"text {t.get_text()[:30]!r} is {t.get_fontsize():.1f} pt, under {MIN_PT:g}")
    return problems


def _axes_problems(ax, name: str, has_suptitle: bool, renderer) -> list[str]:
    cbar = getattr(ax, "_colorbar", None)
    if cbar is not None:
        return [] if cbar.long_axis.get_label_text().strip() else [f"{name}: colour bar without a label"]
    problems = [] if ax.get_title() or has_suptitle else [f"{name}: no title"]
    for im in ax.get_images():
        if np.ndim(im.get_array()) == 2 and im.colorbar is None:
            problems.append(f"{name}: an image of numbers without a colour bar")
    if not ax.axison:
        return problems
    for letter, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
        labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text().strip()]
        if labels and not axis.get_label_text().strip():
            problems.append(f"{name}: {letter} axis without a label")
        clash = _overlapping(labels, renderer, letter)
        if clash:
            problems.append(f"{name}: {letter} tick labels overlap ({clash})")
    return problems


def _overlapping(labels: list[Text], renderer, letter: str) -> str:
    """The first two tick labels whose boxes overlap (beyond half a pixel), as 'a / b'; '' when none do. Labels
    rotated other than 0 or 90 degrees are not checked (their boxes overlap where the glyphs do not)."""
    if any(round(t.get_rotation()) % 90 for t in labels):
        return ""
    boxes = sorted(((t.get_window_extent(renderer), t.get_text()) for t in labels),
                   key=lambda b: b[0].x0 if letter == "x" else b[0].y0)
    for (a, ta), (b, tb) in zip(boxes, boxes[1:]):
        if a.padded(-0.5).overlaps(b.padded(-0.5)):
            return f"{ta!r} / {tb!r}"
    return ""
