"""Helpers of the fault suite: small builds from coco_sample, tar surgery, and files that would run code if unpickled."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path
from typing import Callable

from scenectl.data import shards as S

ROOT = Path(__file__).resolve().parents[2]  # the repository


def subset(coco_sample: Path, dst: Path, n: int = 8, edit: Callable[[dict], None] | None = None,
           split: str = "val2017") -> tuple[Path, Path]:
    """An annotation file of the first `n` images (by id) of a coco_sample split, beside its JPEGs (not copied)."""
    data = json.loads((coco_sample / "annotations" / f"instances_{split}.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in images}
    data["images"], data["annotations"] = images, [a for a in data["annotations"] if a["image_id"] in keep]
    if edit:
        edit(data)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "ann.json").write_text(json.dumps(data))
    return dst / "ann.json", coco_sample / split


def build_cfg(source: tuple[Path, Path], out: Path, **kw) -> S.BuildConfig:
    kw = {"image_size": 48, "workers": 1, "progress": False, **kw}
    return S.BuildConfig(out=out, annotations=source[0], images=source[1], **kw)


def build(source, out, **kw) -> dict:
    return S.build_shards(build_cfg(source, out, **kw), echo=lambda s: None)


def cli_args(source, out, **kw) -> list[str]:
    """The same build as `build`, as `scenectl build-shards` arguments."""
    kw = {"image_size": 48, "workers": 1, **kw}
    args = ["--annotations", str(source[0]), "--images", str(source[1]), "--out", str(out)]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        args += [flag] if v is True else [flag, str(v)]
    return args


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_hashes(out: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(out.glob("*.tar"))}


def tar_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every member of a whole tar, in order (raises on a truncated one)."""
    with tarfile.open(path, "r:") as t:
        return [(m, t.extractfile(m).read() if m.isreg() else b"") for m in t.getmembers()]


def rewrite_tar(path: Path, edit: Callable[[list[tuple[tarfile.TarInfo, bytes]]], list]) -> None:
    """Rewrite a shard with `edit(members) -> members` applied (tar surgery for damaged / malicious shards)."""
    members = edit(tar_members(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(buf.getvalue())


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def set_manifest(folder: Path, edit: Callable[[dict], None]) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


class Evil:
    """Unpickling this creates (opens for writing) the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(Evil(marker))


def evil_torch(marker: Path, extra: dict | None = None) -> bytes:
    """A torch.save file (zip + pickle) holding a code-running object, dressed as a scenectl checkpoint."""
    import torch

    buf = io.BytesIO()
    torch.save({"format": "scenectl-checkpoint/1", "kind": "context", "payload": Evil(marker), **(extra or {})}, buf)
    return buf.getvalue()


def tree(root: Path) -> set[str]:
    """Every path under root (to prove nothing was written outside an output folder)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}
