"""A SIMULATED detector: turns COCO ground truth into detector-like COCO results, to test `scenectl rescore` where no
detector weights can be downloaded. It is not a detector and its AP says nothing about any real one.

    python benchmarks/noisy_detector.py --annotations scenes/annotations/instances_val2017.json \
        --out dets.json --seed 0

Per ground-truth object (crowd regions excluded), independently and seeded (numpy PCG64, --seed):
- missed with probability --miss;
- else one detection: its box jittered (centre moved by N(0, jitter) box sizes, width and height scaled by
  exp(N(0, jitter))), clipped to the image; its class confused with probability --confuse, drawn uniformly from
  the OTHER classes of the same COCO supercategory (any other class when it is alone in its supercategory): the
  confusion model of a detector that sees what kind of thing it is but not which;
- its score: sigmoid(N(--score-mean, 1)), the same law for a right and a confused class (the detector cannot tell
  them apart: that is what the context is asked to do).
Per image, Poisson(--false-positives) extra boxes: a random class, a box of a random ground-truth object's size at
a uniform place, score sigmoid(N(--score-mean - 2, 1)).

Writes `[{image_id, category_id, bbox, score}, ...]` (COCO's results format, loadable by COCO.loadRes).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def confusion_groups(categories: list[dict]) -> dict[int, list[int]]:
    """{category id: the other category ids of its supercategory (all others when it is alone)}."""
    by_super = defaultdict(list)
    for c in categories:
        by_super[c.get("supercategory", "")].append(c["id"])
    every = [c["id"] for c in categories]
    out = {}
    for c in categories:
        others = [i for i in by_super[c.get("supercategory", "")] if i != c["id"]]
        out[c["id"]] = others or [i for i in every if i != c["id"]]
    return out


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _jitter(box: list[float], jitter: float, width: int, height: int, rng: np.random.Generator) -> list[float] | None:
    x, y, w, h = box
    cx, cy = x + w / 2 + rng.normal(0, jitter) * w, y + h / 2 + rng.normal(0, jitter) * h
    w, h = w * np.exp(rng.normal(0, jitter)), h * np.exp(rng.normal(0, jitter))
    x0, y0 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
    x1, y1 = min(float(width), cx + w / 2), min(float(height), cy + h / 2)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def simulate(coco: dict, seed: int = 0, miss: float = 0.1, confuse: float = 0.3, jitter: float = 0.05,
             false_positives: float = 1.0, score_mean: float = 1.0) -> list[dict]:
    """Detector-like results for every image of COCO instances dict `coco` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    groups = confusion_groups(coco["categories"])
    cat_ids = sorted(groups)
    anns = defaultdict(list)
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0):
            anns[a["image_id"]].append(a)
    out = []
    for im in sorted(coco["images"], key=lambda i: i["id"]):
        objs = sorted(anns[im["id"]], key=lambda a: a["id"])
        for a in objs:
            if rng.random() < miss:
                continue
            box = _jitter(a["bbox"], jitter, im["width"], im["height"], rng)
            cat = a["category_id"]
            if rng.random() < confuse:
                cat = int(rng.choice(groups[cat]))
            if box is not None:
                out.append({"image_id": im["id"], "category_id": cat, "bbox": box,
                            "score": round(_sigmoid(rng.normal(score_mean, 1.0)), 5)})
        for _ in range(rng.poisson(false_positives) if objs else 0):
            w, h = objs[rng.integers(len(objs))]["bbox"][2:]
            x, y = rng.uniform(0, max(1.0, im["width"] - w)), rng.uniform(0, max(1.0, im["height"] - h))
            box = _jitter([x, y, w, h], 0.0, im["width"], im["height"], rng)
            if box is not None:
                out.append({"image_id": im["id"], "category_id": int(rng.choice(cat_ids)), "bbox": box,
                            "score": round(_sigmoid(rng.normal(score_mean - 2.0, 1.0)), 5)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", required=True, help="COCO instances JSON (the ground truth to perturb)")
    ap.add_argument("--out", required=True, help="results JSON to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--miss", type=float, default=0.1, help="probability an object is not detected")
    ap.add_argument("--confuse", type=float, default=0.3, help="probability of a class within its supercategory")
    ap.add_argument("--jitter", type=float, default=0.05, help="box noise, in box sizes")
    ap.add_argument("--false-positives", type=float, default=1.0, help="mean extra boxes per image (Poisson)")
    ap.add_argument("--score-mean", type=float, default=1.0, help="mean logit of a true detection's score")
    args = ap.parse_args()
    coco = json.loads(Path(args.annotations).read_text())
    rows = simulate(coco, args.seed, args.miss, args.confuse, args.jitter, args.false_positives, args.score_mean)
    Path(args.out).write_text(json.dumps(rows))
    print(f"{len(rows)} simulated detections of {len(coco['images'])} images -> {args.out}")


if __name__ == "__main__":
    main()
