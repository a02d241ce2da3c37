"""Category co-occurrence statistics of a split: counted from annotations, stored in HDF5, carried in checkpoints;
which class pairs they make plausible companions (plausible_matrix: used by build-ooc and by every metric)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

from scenectl.data.format import COOCCURRENCE, join, read_set_file
from scenectl.data.remote import NetOptions
from scenectl.errors import ScenectlError
from scenectl.h5 import MAX_FILE_BYTES, Field, open_h5
from scenectl.io import atomic_path

# cooccurrence.h5: C classes (scenectl.h5 checks this before reading; attribute n_images: the split's image count)
LAYOUT = {"cooccurrence": Field("int", ("C", "C")), "image_counts": Field("int", ("C",)),
          "instance_counts": Field("int", ("C",)), "coco_ids": Field("int", ("C",)), "names": Field("str", ("C",))}
COUNTS = tuple(name for name, field in LAYOUT.items() if field.kind == "int")  # the (C, C) and (C,) int64 arrays


@dataclass
class Cooccurrence:
    """Image-level counts over one split. C = number of classes."""

    cooccurrence: np.ndarray  # (C, C) int64: images where i and j both appear; diagonal = image_counts
    image_counts: np.ndarray  # (C,) int64
    instance_counts: np.ndarray  # (C,) int64
    coco_ids: np.ndarray  # (C,) int64
    names: list[str]
    n_images: int

    def __post_init__(self):
        """Counts read from a file or checkpoint are data: C classes throughout, whole numbers >= 0, own memory
        (a copy: a stride-0 or read-only view from a file never reaches the metrics). ValueError otherwise."""
        c = len(self.names)
        for name in COUNTS:
            shape = (c,) * len(LAYOUT[name].dims)
            arr = np.array(getattr(self, name), dtype=np.int64, copy=True)
            if arr.shape != shape or (name != "coco_ids" and (arr < 0).any()):
                raise ValueError(f"'{name}' has shape {arr.shape} (expected {shape} for {c} names) or a negative count")
            setattr(self, name, arr)
        if not all(isinstance(n, str) for n in self.names) or type(self.n_images) is not int or self.n_images < 0:
            raise ValueError("'names' are not strings or 'n_images' is not a whole number >= 0")

    @classmethod
    def count(cls, image_classes: Iterable[Sequence[int]], coco_ids: Sequence[int],
              names: Sequence[str]) -> "Cooccurrence":
        """Count from one sequence of class indices per image (one entry per annotation, repeats allowed)."""
        c = len(coco_ids)
        co = np.zeros((c, c), dtype=np.int64)
        inst = np.zeros(c, dtype=np.int64)
        n = 0  # images counted
        for n, classes in enumerate(image_classes, 1):
            classes = np.asarray(classes, dtype=np.int64)
            np.add.at(inst, classes, 1)
            present = np.unique(classes)
            co[np.ix_(present, present)] += 1
        return cls(co, np.diag(co), inst, coco_ids, list(names), n)  # __post_init__ makes coco_ids int64

    # --- HDF5 -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                for name in COUNTS:
                    f[name] = getattr(self, name)
                f.create_dataset("names", data=np.array(self.names, dtype=object), dtype=h5py.string_dtype())
                f.attrs["n_images"] = self.n_images

    @classmethod
    def of_set(cls, location: str, manifest: dict, net: NetOptions | None = None,
               name: str = COOCCURRENCE) -> "Cooccurrence":
        """A shard set's counts: file `name` beside its manifest at `location` (a folder or URL prefix), checked
        against the manifest's `files` sha256 (format.read_set_file) before it is read."""
        what = "co-occurrence file"
        data = read_set_file(location, manifest, name, what, MAX_FILE_BYTES, net)
        return cls.load(data, f"{what} {join(location, name)}")

    @classmethod
    def load(cls, source: str | Path | bytes, where: str | None = None) -> "Cooccurrence":
        """From a cooccurrence.h5 file, or its bytes read elsewhere (`where`: their URL), checked by
        scenectl.h5.open_h5 (only datasets stored in the file itself, of this LAYOUT) before anything is read."""
        where = where or f"co-occurrence file {source}"
        try:
            with open_h5(source, "cooccurrence.h5 file", LAYOUT, where) as f:  # __post_init__ makes the counts int64
                return cls(*(f[name][()] for name in COUNTS),
                           [s.decode() if isinstance(s, bytes) else str(s) for s in f["names"][()]],
                           int(f.attrs["n_images"]))
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise ScenectlError(f"{where} is not a scenectl cooccurrence.h5 file: {e}") from None

    # --- checkpoints (torch.load(weights_only=True) accepts plain tensors, lists and dicts) --------------------
    def to_state(self) -> dict:
        import torch

        return {**{name: torch.from_numpy(getattr(self, name)) for name in COUNTS},
                "names": list(self.names), "n_images": int(self.n_images)}

    @classmethod
    def from_state(cls, state: Mapping) -> "Cooccurrence":
        counts = (state[k].cpu().numpy() if hasattr(state[k], "cpu") else state[k] for k in COUNTS)
        return cls(*counts, list(state["names"]), state["n_images"])


MIN_PAIR_COUNT = 3  # training images a pair must share to count as plausible (plausible_matrix)


def plausible_matrix(cooc: Cooccurrence, min_count: int | None = None) -> np.ndarray:
    """(C, C) bool: [c, v] = c is a plausible companion of v, i.e. PMI(c, v) > 0 on image-level counts AND the pair
    was seen together in at least `min_count` training images (default MIN_PAIR_COUNT): a positive PMI resting on
    one or two images is noise (540 of 1,162 plausible pairs of coco-sample rested on one image).

    PMI(c, v) > 0  <=>  N * n_cv > n_c * n_v  (integers: no log, defined for every zero count, symmetric).
    Shrinking the joint toward independence (any pseudo-count) leaves this sign unchanged; adding a pseudo-count
    to the joint itself would make pairs never seen together "plausible" (docs/metrics.md has the derivation).
    """
    min_count = MIN_PAIR_COUNT if min_count is None else int(min_count)
    if min_count < 1:
        raise ScenectlError(f"the plausible-pair count threshold must be >= 1, got {min_count}")
    n_cv, n_c = cooc.cooccurrence, cooc.image_counts  # (C, C), (C,) int64: Cooccurrence checked their shapes
    if not np.array_equal(n_cv, n_cv.T):
        raise ScenectlError("co-occurrence table is not symmetric")
    # int64 is exact here: N * n_cv <= N^2, far below 2^63 for any real dataset
    return (int(cooc.n_images) * n_cv > n_c[:, None] * n_c[None, :]) & (n_cv >= min_count)
