"""The mask-only probe's feature sets compared (docs/metrics.md, "Why 4 x 4 cells").

    python3 benchmarks/maskonly_features.py /tmp/mm 300 120     # OUT_DIR [n_train n_val] synthetic scenes

Builds box- and instance-hole shards (64 px) of synthetic scenes once in OUT_DIR, then fits the probe with a
16 x 16 grid + scalars, the shipped 4 x 4 grid + scalars and the 10 scalars alone (the same L2 grid and held-out
rule), printing top-1 on the training samples, on the held-out training images and on the validation split.
"""

import sys
from pathlib import Path

import numpy as np

from scenectl import maskonly as MO
from scenectl.data.loader import open_shard_set
from scenectl.data.shards import BuildConfig, build_shards
from scenectl.data.synthetic import generate_scenes


def shard_sets(root: Path, shape: str) -> dict:
    sets = {}
    for split in ("train", "val"):
        out = root / f"{shape}-{split}"
        if not out.exists():
            build_shards(BuildConfig(out=out, coco_root=root / "scenes", split=f"{split}2017", shape=shape,
                                     image_size=64, workers=1, maxcount=200, progress=False), echo=lambda s: None)
        sets[split] = open_shard_set(str(out))
    return sets


def main(root: Path, n_train: int, n_val: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "scenes").exists():
        generate_scenes(root / "scenes", n_train=n_train, n_val=n_val, seed=0)
    shipped = MO.GRID
    for shape in ("box", "instance"):
        sets = shard_sets(root, shape)
        c = len(sets["train"].classes)
        for name, grid, scalars_only in (("16x16 grid + scalars", 16, False), ("4x4 grid + scalars", shipped, False),
                                         ("10 scalars alone", shipped, True)):
            MO.GRID = grid  # mask_features reads the module's grid size
            tr, va = MO.read_masks(sets["train"]), MO.read_masks(sets["val"])
            if scalars_only:
                tr.features, va.features = tr.features[:, -MO.N_SCALARS:], va.features[:, -MO.N_SCALARS:]
            m = MO.fit(tr.features, tr.labels, tr.image_ids, c, 0)
            val = float((np.argmax(m.scores(va.features), 1) == va.labels).mean())
            prior = float((va.labels == np.bincount(tr.labels, minlength=c).argmax()).mean())
            print(f"{shape:8s} {name:22s} l2={m.l2:g} train={100 * m.train_top1:.1f} "
                  f"held-out={100 * m.heldout_top1:.1f} val={100 * val:.1f} prior={100 * prior:.1f} "
                  f"(n train {len(tr.labels)}, val {len(va.labels)}, {c} classes)", flush=True)
    MO.GRID = shipped


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]), int(args[1]) if len(args) > 1 else 300, int(args[2]) if len(args) > 2 else 120)
