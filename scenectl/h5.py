"""Opening an HDF5 file scenectl reads (cooccurrence.h5, predictions.h5): its bytes only, its declared layout checked
before any dataset is read.

    with open_h5(path, "predictions file", LAYOUT) as f:   # LAYOUT: {"labels": Field("int", ("N",)), ...}
        labels = f["labels"][()]

HDF5 can make a reader open other files: an external link, a dataset with external storage, a virtual dataset
mapping another file's data. A crafted file would then be scored with another file's bytes (and its sha256 in a
manifest, which covers only its own bytes, would still match). So the file is read whole (a regular file, size
bounded) and opened from memory (`h5py.File(io.BytesIO(...))`), and before anything is read every member of its root
must be a hard link to a dataset stored in the file itself (contiguous, chunked or compact; no external storage, no
virtual layout), and each dataset the layout names must have its kind of dtype and a shape consistent with the
others (dimension names bind across datasets: N samples, C classes, ...), within a size bound (a dataset declared
huge but never written would otherwise be allocated whole on read).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from typing import Iterator

import h5py
import numpy as np

from scenectl.errors import ScenectlError
from scenectl.io import read_regular

MAX_FILE_BYTES = 4 << 30  # the file, read whole
MAX_DATASET_BYTES = 2 << 30  # one dataset, as it will be allocated when read
MAX_STRINGS = 1 << 24  # one string dataset's entries (each becomes a Python object)


@dataclass(frozen=True)
class Field:
    kind: str  # "int", "float", "str" or "bool" (bool: also any integer type, e.g. uint8 0/1)
    dims: tuple[str, ...]  # named dimensions ("N", "C"); a name binds the same length in every dataset
    required: bool = True


Layout = dict[str, Field]


@contextlib.contextmanager
def open_h5(source: str | os.PathLike | bytes, what: str, layout: Layout, where: str | None = None
            ) -> Iterator[h5py.File]:
    """The file `source` (a path, or bytes read elsewhere, e.g. from a URL: then `where` names it) opened read-only
    from memory after `layout_problems` found nothing; every failure is a one-line ScenectlError naming it."""
    if isinstance(source, bytes):
        data, where = source, where or what
    else:
        data, where = read_regular(source, what, MAX_FILE_BYTES), where or f"{what} {source}"
    with _opened(data, where, what) as f:
        problems = layout_problems(f, layout)
        if problems:
            raise ScenectlError(f"{where}: {problems[0]}")
        yield f


def file_problems(data: bytes, layout: Layout) -> list[str]:
    """What `open_h5` would refuse in the file `data`, all of it (for verify-shards); [] for a sound file."""
    try:
        with _opened(data, "the file", "HDF5 file") as f:
            return layout_problems(f, layout)
    except ScenectlError as e:
        return [str(e)]


def _opened(data: bytes, where: str, what: str) -> h5py.File:
    try:  # an h5py.File closes itself when the caller's `with` ends
        return h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as e:
        raise ScenectlError(f"{where} is not a scenectl {what} (not HDF5: {e})") from None


def layout_problems(f: h5py.File, layout: Layout) -> list[str]:
    """Every member of the root a hard-linked dataset stored in this file; those in `layout` of its dtype kind and
    consistent shape, within the size bounds. Nothing is read but the file's metadata."""
    problems, dims = [], {}
    for name in f:
        link = f.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            problems.append(f"'{name}' is a {type(link).__name__} (only datasets stored in the file are read)")
            continue
        obj = f[name]
        if not isinstance(obj, h5py.Dataset):
            problems.append(f"'{name}' is a {type(obj).__name__}, not a dataset")
            continue
        problems += _storage_problems(name, obj)
        if name in layout:
            problems += _shape_problems(name, obj, layout[name], dims)
    problems += [f"no dataset '{name}'" for name, field in layout.items() if field.required and name not in f]
    return problems


def _storage_problems(name: str, ds: h5py.Dataset) -> list[str]:
    plist = ds.id.get_create_plist()
    if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
        return [f"dataset '{name}' is virtual (its data would come from other files)"]
    if plist.get_external_count():
        return [f"dataset '{name}' has external storage (its data would come from other files)"]
    return []


def _shape_problems(name: str, ds: h5py.Dataset, field: Field, dims: dict[str, int]) -> list[str]:
    if not _kind_matches(ds.dtype, field.kind):
        return [f"dataset '{name}' has dtype {ds.dtype}, expected {field.kind}"]
    if len(ds.shape) != len(field.dims):
        return [f"dataset '{name}' has shape {ds.shape}, expected {len(field.dims)} dimension(s) {field.dims}"]
    for dim, n in zip(field.dims, ds.shape):
        if dims.setdefault(dim, n) != n:
            return [f"dataset '{name}' has {dim} = {n} where another dataset has {dims[dim]}"]
    if ds.size * ds.dtype.itemsize > MAX_DATASET_BYTES or (field.kind == "str" and ds.size > MAX_STRINGS):
        return [f"dataset '{name}' declares shape {ds.shape}, more than is read ({MAX_DATASET_BYTES} bytes)"]
    return []


def _kind_matches(dtype: np.dtype, kind: str) -> bool:
    if kind == "str":
        return h5py.check_string_dtype(dtype) is not None
    if kind == "float":
        return np.issubdtype(dtype, np.floating)
    integer = np.issubdtype(dtype, np.integer)
    return integer or dtype == np.bool_ if kind == "bool" else integer
