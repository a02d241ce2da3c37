"""predictions.h5: every sample's label, image, top-k classes and scores (and optionally its full logits), written by
`scenectl eval` and read back by anyone re-scoring a model without running it, `scenectl compare` first
(layout: docs/evaluation.md).

    write_predictions(path, outputs, class_names, k=10)
    p = read_predictions(path)      # validated: keys, labels, image_ids, ranked, logits, visible, plausible, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from scenectl.errors import ScenectlError
from scenectl.h5 import Field, open_h5
from scenectl.inference import Outputs
from scenectl.io import atomic_path

FORMAT = "scenectl-predictions/1"
# N samples, C classes, K ranked, V visible-class entries, S shard sets; checked by scenectl.h5 before any read
LAYOUT = {"keys": Field("str", ("N",)), "labels": Field("int", ("N",)), "image_ids": Field("int", ("N",), False),
          "topk_indices": Field("int", ("N", "K")), "topk_scores": Field("float", ("N", "K")),
          "logits": Field("float", ("N", "C"), False), "visible_flat": Field("int", ("V",)),
          "visible_offsets": Field("int", ("N+1",)), "class_names": Field("str", ("C",)),
          "plausible": Field("bool", ("C", "C"), False), "set_index": Field("int", ("N",), False),
          "set_names": Field("str", ("S",), False)}


@dataclass(frozen=True)
class SetIndex:
    """Which shard set each sample comes from: `index` (N,) int into `names`."""

    index: np.ndarray
    names: list[str]


def write_predictions(path: Path, out: Outputs, names: list[str], k: int, sets: SetIndex | None = None,
                      save_logits: bool = True, attrs: dict | None = None, plausible: np.ndarray | None = None) -> None:
    """Top-k by softmax probability, ties to the lower class index (metrics.ranking's rule); written atomically.
    `plausible`: the (C, C) plausible-pair matrix the report's plausibility@10 used (stored for re-scoring)."""
    probs = torch.softmax(torch.from_numpy(out.logits), dim=1).numpy()  # (N, C)
    top = np.argsort(-out.logits, axis=1, kind="stable")[:, :k]  # (N, k)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in out.visible])]).astype(np.int64)  # (N + 1,)
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
            f["image_ids"] = np.asarray(out.image_ids, dtype=np.int64)
            f["topk_indices"] = top.astype(np.int64)
            f["topk_scores"] = np.take_along_axis(probs, top, axis=1).astype(np.float32)
            if save_logits:
                f.create_dataset("logits", data=out.logits.astype(np.float32), compression="gzip", compression_opts=4)
            f["visible_flat"] = flat
            f["visible_offsets"] = offsets
            f.create_dataset("class_names", data=np.array(names, dtype=object), dtype=string)
            if plausible is not None:
                f["plausible"] = np.asarray(plausible, dtype=np.uint8)
            if sets is not None:
                f["set_index"] = np.asarray(sets.index, dtype=np.int64)
                f.create_dataset("set_names", data=np.array(sets.names, dtype=object), dtype=string)


def read_visible(f: h5py.File) -> list[list[int]]:
    """The ragged visible-class lists back from predictions.h5 (flat + offsets)."""
    flat, off = f["visible_flat"][()], f["visible_offsets"][()]
    return [flat[off[i]:off[i + 1]].tolist() for i in range(len(off) - 1)]


@dataclass
class Predictions:
    """A predictions.h5 read back and checked (every array's shape and range), for re-scoring without the model."""

    path: Path
    keys: list[str]
    labels: np.ndarray  # (N,) int64
    image_ids: np.ndarray  # (N,) int64; -1 where unknown
    ranked: np.ndarray  # (N, K) int64 class indices, best first
    logits: np.ndarray | None  # (N, C) float32, absent with eval --no-logits
    visible: list[list[int]]
    class_names: list[str]
    plausible: np.ndarray | None  # (C, C) bool; absent in files written before it was stored
    attrs: dict
    notes: list[str]

    @property
    def scores(self) -> np.ndarray:
        """What metrics take as predictions: the logits when stored, else the ranked top-K indices."""
        return self.logits if self.logits is not None else self.ranked


def image_ids_from_keys(keys: list[str]) -> np.ndarray:
    """(N,) image ids read from sample keys `{image_id:012d}_{annotation_id:012d}` (build-shards' keys); -1 where a
    key has another form."""
    found = [re.fullmatch(r"(\d{1,18})_\d{1,18}", k) for k in keys]
    return np.array([int(m.group(1)) if m else -1 for m in found], dtype=np.int64)


def read_predictions(path: str | Path) -> Predictions:
    """Read and check predictions.h5; a file that is not one, or whose arrays disagree, is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise ScenectlError(f"predictions file not found: {path} (written by `scenectl eval`)")
    try:
        with open_h5(path, "predictions file", LAYOUT) as f:
            if f.attrs.get("format") != FORMAT:
                raise ScenectlError(f"{path} is not a scenectl predictions file (no '{FORMAT}' format tag)")
            return _read(path, f)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ScenectlError(f"{path} is not a readable predictions file ({type(e).__name__}: {e})") from None


def _read(path: Path, f: h5py.File) -> Predictions:
    keys = [str(k) for k in f["keys"].asstr()[()]]
    names = [str(n) for n in f["class_names"].asstr()[()]]
    n, c = len(keys), len(names)
    labels, ranked = f["labels"][()].astype(np.int64), f["topk_indices"][()].astype(np.int64)
    logits = f["logits"][()].astype(np.float32) if "logits" in f else None
    off = f["visible_offsets"][()].astype(np.int64)
    flat = f["visible_flat"][()].astype(np.int64)

    def bad(what: str) -> ScenectlError:
        return ScenectlError(f"{path}: {what}: not a consistent predictions file")

    if len(set(keys)) != n or labels.shape != (n,) or ranked.ndim != 2 or ranked.shape[0] != n:
        raise bad(f"keys ({n}, unique {len(set(keys))}), labels {labels.shape} and topk_indices {ranked.shape} "
                  "disagree")
    if n and (labels.min() < 0 or labels.max() >= c or ranked.min() < 0 or ranked.max() >= c):
        raise bad(f"labels or topk_indices outside the {c} classes")
    if logits is not None and logits.shape != (n, c):
        raise bad(f"logits have shape {logits.shape}, expected {(n, c)}")
    if off.shape != (n + 1,) or off[0] != 0 or (np.diff(off) < 0).any() or off[-1] != len(flat) or \
            (len(flat) and (flat.min() < 0 or flat.max() >= c)):
        raise bad("visible_offsets / visible_flat are not a ragged list of class indices")
    notes = []
    if "image_ids" in f:
        image_ids = f["image_ids"][()].astype(np.int64)
        if image_ids.shape != (n,):
            raise bad(f"image_ids have shape {image_ids.shape}, expected ({n},)")
    else:  # written before image ids were stored: build-shards' keys begin with the image id
        image_ids = image_ids_from_keys(keys)
        notes.append(f"{path}: no image_ids (an older eval); image ids read from the sample keys")
    plausible = f["plausible"][()].astype(bool) if "plausible" in f else None
    if plausible is not None and plausible.shape != (c, c):
        raise bad(f"plausible has shape {plausible.shape}, expected {(c, c)}")
    attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return Predictions(path, keys, labels, image_ids, ranked, logits, read_visible(f), names, plausible, attrs, notes)
