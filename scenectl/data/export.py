"""`scenectl export-imagefolder`: a shard set's crops as an ImageFolder tree (`OUT/<class name>/<key>.jpg`), read
through the one shard reader (`loader.raw_samples`), for `transfer` and `distill` (scenectl.data.imagefolder)."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from scenectl.data.configs import ExportConfig
from scenectl.data.imagefolder import CLASSES_FILE
from scenectl.data.loader import ShardSet, decode_sample, open_shard_set, raw_samples
from scenectl.errors import ScenectlError
from scenectl.folders import claim
from scenectl.io import atomic_path, write_json_atomic
from scenectl.progress import progress


def safe_dirname(name: str) -> str:
    """A class name as a folder name: path separators and leading dots replaced (COCO names are already safe)."""
    name = re.sub(r"[/\\\0]", "_", name).strip()
    return re.sub(r"^\.+", "_", name) or "_"


def export_imagefolder(cfg: ExportConfig) -> dict:
    """Write OUT/<class name>/<key>.jpg from a shard set; classes.json + config.json + export.json beside them.

    The JPEG bytes are copied as stored (no re-encoding). Returns the export summary (also export.json, written
    LAST: its presence = export complete).
    """
    cfg.check()
    shards = open_shard_set(cfg.shards, cfg.net.options())
    member = {"object": "object.jpg", "jpg": "jpg"}.get(cfg.member) or shards.object_member()  # or auto
    with claim(cfg.out, "export", overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        write_json_atomic(folder.path / "config.json", asdict(cfg))
        return _export(cfg, shards, member, folder.path)


def _export(cfg: ExportConfig, shards: ShardSet, member: str, out: Path) -> dict:
    """The export's files in `out` (claimed); export.json last."""
    dirs = [safe_dirname(str(c["name"])) for c in shards.classes]
    if len(set(dirs)) != len(dirs):
        raise ScenectlError(f"{cfg.shards}: two class names map to the same folder name")
    counts = [0] * len(dirs)
    # the reader's checked stream: shard counts, unique keys (no file written twice); decode_sample checks that
    # the image decodes and that the label parses, agrees with the json and names a manifest class
    for raw in progress(raw_samples(shards), desc=f"export-imagefolder {Path(cfg.out).name}", unit="img",
                        total=shards.num_samples):
        key = raw["__key__"]
        if Path(key).name != key or key.startswith("."):  # a tar member named '../x.jpg' or '/abs/x.jpg'
            raise ScenectlError(f"sample key {key!r} in {raw.get('__url__')} is not a plain file name; not writing it")
        label = decode_sample(raw, (member,), len(dirs))["label"]
        folder = out / dirs[label]
        folder.mkdir(exist_ok=True)
        with atomic_path(folder / f"{key}.jpg") as tmp:
            tmp.write_bytes(raw[member])
        counts[label] += 1
    present = [{"index": i, "coco_id": int(c["coco_id"]), "name": dirs[i]} for i, c in enumerate(shards.classes)
               if counts[i]]
    write_json_atomic(out / CLASSES_FILE, present)
    summary = {"shards": cfg.shards, "member": member, "images": sum(counts), "classes": len(present),
               "per_class": {d: n for d, n in zip(dirs, counts) if n}}
    write_json_atomic(out / "export.json", summary)
    return summary
