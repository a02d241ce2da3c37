"""`scenectl cooccurrence`: which classes keep each class company, as text and as a heatmap.

    rows, text = cooccurrence_main(CooccurrenceConfig(source="shards/train2017", top=5, by="pmi", min_count=5))

The counts come from a shard set (its cooccurrence.h5), a checkpoint (the training split's, read by
scenectl.checkpoint.read_checkpoint) or a cooccurrence.h5 file; scenectl.data.cooccurrence holds them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenectl import plots
from scenectl.checkpoint import read_checkpoint
from scenectl.config import CooccurrenceConfig
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.data.remote import NetOptions
from scenectl.errors import ScenectlError
from scenectl.folders import check_file_target


def load_cooccurrence(source: str, net: NetOptions | None = None) -> tuple[Cooccurrence, str]:
    """Counts from a checkpoint (the training split's), a cooccurrence.h5, or a shard set's folder/URL."""
    path = Path(source)
    if path.is_file() and path.suffix in (".h5", ".hdf5"):
        return Cooccurrence.load(path), f"{path}"
    if path.is_file():
        cooc = read_checkpoint(path).cooccurrence
        if cooc is None:
            raise ScenectlError(f"{path} carries no co-occurrence counts")
        return cooc, f"{path} (training split)"
    from scenectl.data.loader import open_shard_set

    ss = open_shard_set(source, net)
    return ss.cooccurrence(), f"{ss.location}/cooccurrence.h5"


def companion_matrix(cooc: Cooccurrence, by: str, min_count: int = 1) -> np.ndarray:
    """(C, C) float: [i, j] = how strongly j accompanies i; NaN where undefined (i or j never seen, j = i) or
    filtered out (i and j together in fewer than `min_count` images, at least 1: the one filter of the text and
    of the heatmap)."""
    co = cooc.cooccurrence.astype(np.float64)  # (C, C) images holding both
    n_i = cooc.image_counts.astype(np.float64)  # (C,)
    with np.errstate(divide="ignore", invalid="ignore"):
        if by == "conditional":
            m = co / n_i[:, None]  # P(j | i), rows of unseen classes are NaN
        elif by == "pmi":
            m = np.log(co * cooc.n_images) - np.log(n_i[:, None] * n_i[None, :])  # -inf where never together
        else:
            raise ScenectlError(f"--by must be 'conditional' or 'pmi', got '{by}'")
    m[n_i == 0, :] = np.nan
    m[:, n_i == 0] = np.nan
    m[cooc.cooccurrence < max(min_count, 1)] = np.nan  # rare pairs: PMI over-rates them
    np.fill_diagonal(m, np.nan)
    return m


def top_companions(cooc: Cooccurrence, top: int = 5, by: str = "conditional", min_count: int = 1) -> list[dict]:
    """Per class seen at least once: its `top` companions [{name, value, images}], best first (ties: more images)."""
    if top < 1:
        raise ScenectlError(f"--top must be a positive integer, got {top}")
    m = companion_matrix(cooc, by, min_count)
    rows = []
    for i, name in enumerate(cooc.names):
        if cooc.image_counts[i] == 0:
            continue
        ok = [j for j in range(len(cooc.names)) if np.isfinite(m[i, j])]
        ok.sort(key=lambda j: (-m[i, j], -int(cooc.cooccurrence[i, j]), j))
        rows.append({"class": name, "images": int(cooc.image_counts[i]),
                     "companions": [{"name": cooc.names[j], "value": float(m[i, j]),
                                     "images": int(cooc.cooccurrence[i, j])} for j in ok[:top]]})
    return rows


def cooccurrence_main(cfg: CooccurrenceConfig) -> tuple[list[dict], str]:
    """Top companions per class, as text lines ready to print; writes the heatmap unless --no-plot."""
    cfg.check()
    if cfg.heatmap():
        check_file_target(cfg.heatmap(), "--out", inputs=(cfg.source,))
    cooc, where = load_cooccurrence(cfg.source, cfg.net.options())
    rows = top_companions(cooc, cfg.top, cfg.by, cfg.min_count)
    measure = "P(companion in image | class in image)" if cfg.by == "conditional" else "PMI = ln P(i,j) / (P(i) P(j))"
    lines = [f"co-occurrence of {cooc.n_images} images from {where}; companions ranked by {measure} "
             f"(pairs in >= {max(cfg.min_count, 1)} images; image count in brackets)"]
    width = max((len(r["class"]) for r in rows), default=0)
    for r in rows:
        comp = ", ".join(f"{c['name']} {c['value']:.2f} ({c['images']})" for c in r["companions"]) or "(none)"
        lines.append(f"{r['class']:<{width}}  [{r['images']:>5} images]  {comp}")
    if cfg.heatmap():
        from_checkpoint = Path(cfg.source).is_file() and Path(cfg.source).suffix not in (".h5", ".hdf5")
        with plots.source(checkpoint=cfg.source if from_checkpoint else None,
                          data=None if from_checkpoint else where, n=cooc.n_images):
            plot_companions(cooc, cfg)
        lines.append(f"wrote {cfg.heatmap()}")
    return rows, "\n".join(lines)


def plot_companions(cooc: Cooccurrence, cfg: CooccurrenceConfig) -> None:
    """The heatmap of exactly the pairs the text ranks (the same --min-count filter: grey = filtered or undefined)."""
    grey = "never together" if cfg.min_count <= 1 else f"together in fewer than {cfg.min_count} images (--min-count)"
    plots.plot_heatmap(companion_matrix(cooc, cfg.by, cfg.min_count), cooc.names, cfg.heatmap(),
                       counts=cooc.image_counts,
                       title=f"co-occurrence ({cfg.by}) over {cooc.n_images} images; grey: pairs {grey}, or a class "
                             "with itself",
                       label="P(j in image | i in image)" if cfg.by == "conditional"
                       else "PMI = ln P(i,j) / (P(i) P(j))  (nats; 0 = as often as chance)",
                       xlabel="companion class j", ylabel="class i (in the image)")
