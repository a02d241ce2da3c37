"""predictions.h5: every sample's label, top-k classes and scores (and optionally its full logits), written by
`scenectl eval` and read back by anyone re-scoring a model without running it (layout: docs/evaluation.md).

    write_predictions(path, outputs, class_names, k=10)
    with h5py.File(path) as f:
        visible = read_visible(f)   # the ragged visible-class lists
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from scenectl.inference import Outputs
from scenectl.io import atomic_path

FORMAT = "scenectl-predictions/1"


def write_predictions(path: Path, out: Outputs, names: list[str], k: int, set_index: np.ndarray | None = None,
                      sets: list[str] | None = None, save_logits: bool = True, attrs: dict | None = None) -> None:
    """Top-k by softmax probability, ties to the lower class index (metrics.ranking's rule); written atomically."""
    probs = torch.softmax(torch.from_numpy(out.logits), dim=1).numpy()  # (N, C)
    top = np.argsort(-out.logits, axis=1, kind="stable")[:, :k]  # (N, k)
    lengths = np.array([len(v) for v in out.visible], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (N + 1,)
    flat = np.array([c for v in out.visible for c in v], dtype=np.int64)
    string = h5py.string_dtype()
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["k"] = k
            for name, value in (attrs or {}).items():
                f.attrs[name] = value
            f.create_dataset("keys", data=np.array(out.keys, dtype=object), dtype=string)
            f["labels"] = out.labels.astype(np.int64)
            f["topk_indices"] = top.astype(np.int64)
            f["topk_scores"] = np.take_along_axis(probs, top, axis=1).astype(np.float32)
            if save_logits:
                f.create_dataset("logits", data=out.logits.astype(np.float32), compression="gzip", compression_opts=4)
            f["visible_flat"] = flat
            f["visible_offsets"] = offsets
            f.create_dataset("class_names", data=np.array(names, dtype=object), dtype=string)
            if set_index is not None:
                f["set_index"] = set_index.astype(np.int64)
                f.create_dataset("set_names", data=np.array(sets, dtype=object), dtype=string)


def read_visible(f: h5py.File) -> list[list[int]]:
    """The ragged visible-class lists back from predictions.h5 (flat + offsets)."""
    flat, off = f["visible_flat"][()], f["visible_offsets"][()]
    return [flat[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)]
