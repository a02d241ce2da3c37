"""`scenectl inspect-shards`: what a shard set holds (per-class counts, mask-area histogram, build params) and a
contact sheet of samples drawn across images (masked scene, outline of the hidden region, label; scenectl.plots),
written outside the set's folder, which belongs to build-shards (scenectl.folders.check_file_target). What is read
of the set: scenectl.data.inspect."""

from __future__ import annotations

import os
from pathlib import Path

from scenectl import plots
from scenectl.data.inspect import decode_known, draw_samples, pick_shards, report, set_name
from scenectl.data.loader import open_shard_set
from scenectl.data.remote import NetOptions, is_local, local_path
from scenectl.errors import ScenectlError
from scenectl.folders import check_file_target
from scenectl.options import range_problem


def default_sheet(location: str) -> Path:
    """Where the contact sheet goes without --out: beside a local set, named after it (the set's folder is
    build-shards'); for a remote set, in the current folder."""
    if not is_local(location):
        return Path(f"{set_name(location)}-contact-sheet.png")
    d = Path(local_path(location)).resolve()
    return d.parent / f"{d.name}-contact-sheet.png"


def inspect_shards(spec: str | os.PathLike, n: int = 16, out: str | os.PathLike | None = None,
                   net: NetOptions | None = None, seed: int = 0) -> dict:
    """Report on a shard set and write its contact sheet (default: DIR-contact-sheet.png beside DIR): `n` samples
    drawn at random (`seed`) across images, and the set's hidden-area histogram."""
    if problem := range_problem("n", n):  # --n's range, as the command line checks it
        raise ScenectlError(f"--n {problem}")
    shards = open_shard_set(spec, net)
    sheet = Path(out) if out is not None else default_sheet(shards.location)
    check_file_target(sheet, "--out")
    manifest = shards.manifest
    scanned = pick_shards(shards, seed)
    samples = [decode_known(raw) for raw in draw_samples(scanned, n, seed)]
    images = len({str(s.get("json", {}).get("image_id", s["__key__"])) for s in samples})
    drawn = (f"{len(samples)} samples of {images} images drawn at random (seed {seed}) from "
             f"{len(scanned.urls)} of {len(shards.urls)} shards")
    with plots.source(data=shards.location, n=shards.num_samples):
        plots.plot_contact_sheet(samples, sheet, title=f"{set_name(shards.location)}: {drawn}; outline: hidden region",
                                 histogram=manifest.get("totals", {}).get("area_fraction_histogram"))
    return {"manifest": manifest, "text": report(manifest) + f"\ncontact sheet: {drawn}", "sheet": str(sheet),
            "keys": [s["__key__"] for s in samples]}
