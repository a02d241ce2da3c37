"""COCO detection results files (`[{image_id, category_id, bbox, score}, ...]`, what every detector's COCO evaluation
writes), read as data: every row checked before use, against the annotation file the results belong to.

    dets = read_results("dets.json", coco, max_per_image=100, min_score=0.0)   # -> Detections (arrays)
    rows = dets.rows(scores)                                                   # back to results rows (COCO.loadRes)

What a row must be (else a one-line ScenectlError naming the file and the row's index):
- a JSON object with `image_id` and `category_id` (integers the annotation file lists), `bbox` (4 finite numbers
  x, y, w, h, w and h >= 0, within one image size of the image: scenectl.data.masks.shape_problem) and `score` (a
  finite number in [0, 1]); other keys (`segmentation`, `id`, ...) are ignored.
What is skipped, and counted in `Detections.skipped` (the report lists the counts):
- `empty_box`: w or h below one hundredth of a pixel (no pixel to hide);
- `outside_image`: a box that does not overlap its image;
- `below_min_score`: score <= --min-score (the default 0 drops score-0 rows);
- `duplicate`: a row equal to an earlier one in image, class, box and score (a detector never means it twice);
- `over_max_per_image`: beyond the --max-per-image highest-scoring rows of an image (ties: earlier row first), so a
  file with 10^6 rows for one image costs no more than 100 rows.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from scenectl.data.coco import ANNOTATION_BYTES
from scenectl.data.masks import shape_problem
from scenectl.errors import ScenectlError
from scenectl.io import read_json

FIELDS = ("image_id", "category_id", "bbox", "score")
MIN_SIDE = 0.01  # pixels: a box thinner than this hides nothing


@dataclass
class Detections:
    """The kept rows of a results file, as arrays (N rows, in file order)."""

    image_id: np.ndarray  # (N,) int64
    category_id: np.ndarray  # (N,) int64
    bbox: np.ndarray  # (N, 4) float64, x, y, w, h as given
    score: np.ndarray  # (N,) float64 in (min_score, 1]
    row: np.ndarray  # (N,) int64: the row's index in the file
    rows_read: int = 0
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def take(self, idx: np.ndarray) -> "Detections":
        return Detections(self.image_id[idx], self.category_id[idx], self.bbox[idx], self.score[idx], self.row[idx],
                          self.rows_read, Counter(self.skipped))

    def rows(self, scores: np.ndarray | None = None) -> list[dict]:
        """COCO results rows (what COCO.loadRes reads), with `scores` (N,) in place of the detector's when given."""
        s = self.score if scores is None else np.asarray(scores, np.float64)
        return [{"image_id": int(i), "category_id": int(c), "bbox": [float(v) for v in b], "score": float(x)}
                for i, c, b, x in zip(self.image_id, self.category_id, self.bbox, s)]


def _int_id(value, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenectlError(f"{where}: '{what}' must be an integer, got {value!r}"[:300])
    return value


def _row(r, k: int, path, sizes: dict[int, tuple[int, int]], categories: set[int]) -> tuple | str:
    """Row `k` checked -> (image id, category id, [x, y, w, h], score), or the name of a skip."""
    where = f"--detections {path}: row {k}"
    if not isinstance(r, dict):
        raise ScenectlError(f"{where} is not an object ({type(r).__name__})")
    missing = [f for f in FIELDS if f not in r]
    if missing:
        raise ScenectlError(f"{where} has no {', '.join(repr(m) for m in missing)}")
    image_id, cat = _int_id(r["image_id"], "image_id", where), _int_id(r["category_id"], "category_id", where)
    if image_id not in sizes:
        raise ScenectlError(f"{where}: image_id {image_id} is not in the annotation file (--annotations): results "
                            "and annotations of different image sets")
    if cat not in categories:
        raise ScenectlError(f"{where}: category_id {cat} is not a category of the annotation file (--annotations)")
    score = r["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or not 0 <= score <= 1:
        raise ScenectlError(f"{where}: 'score' must be a finite number in [0, 1], got {score!r}"[:300])
    width, height = sizes[image_id]
    problem = shape_problem("box", r["bbox"], width, height)
    if problem:
        raise ScenectlError(f"{where}: 'bbox' {problem}"[:400])
    x, y, w, h = (float(v) for v in r["bbox"])
    if w < MIN_SIDE or h < MIN_SIDE:
        return "empty_box"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "outside_image"
    return image_id, cat, (x, y, w, h), float(score)


def read_results(path, sizes: dict[int, tuple[int, int]], categories: set[int], max_per_image: int,
                 min_score: float) -> Detections:
    """The rows of results file `path` (see the module docstring), checked against the images' stored (width,
    height) `sizes` and the annotation file's `categories`."""
    # a detector writes up to 100 rows per image: a full val2017 file is tens of MB, like an annotation file
    data = read_json(path, "--detections file", expect=None, limit=ANNOTATION_BYTES)
    if not isinstance(data, list):
        raise ScenectlError(f"--detections {path}: not a COCO results file (a JSON list of {{image_id, category_id, "
                            f"bbox, score}} rows), but a {type(data).__name__}")
    kept, seen, skipped = [], set(), Counter()
    for k, r in enumerate(data):
        got = _row(r, k, path, sizes, categories)
        if isinstance(got, str):
            skipped[got] += 1
        elif got[3] <= min_score:
            skipped["below_min_score"] += 1
        elif got in seen:
            skipped["duplicate"] += 1
        else:
            seen.add(got)
            kept.append((*got, k))
    return _cap_per_image(_arrays(kept, len(data), skipped), max_per_image)


def _arrays(kept: list[tuple], n_read: int, skipped: Counter) -> Detections:
    img, cat, box, score, row = zip(*kept) if kept else ((),) * 5
    return Detections(np.array(img, np.int64), np.array(cat, np.int64), np.array(box, np.float64).reshape(-1, 4),
                      np.array(score, np.float64), np.array(row, np.int64), n_read, skipped)


def _cap_per_image(d: Detections, cap: int) -> Detections:
    """The `cap` highest-scoring rows of each image (ties: earlier row first), in file order."""
    order = np.lexsort((d.row, -d.score, d.image_id))  # by image, then score descending, then row
    img = d.image_id[order]
    first = np.r_[0, np.flatnonzero(img[1:] != img[:-1]) + 1]  # (images,) where each image's run starts
    rank = np.arange(img.size) - np.repeat(first, np.diff(np.r_[first, img.size]))
    keep = np.sort(order[rank < cap]) if img.size else order
    out = d.take(keep)
    out.skipped["over_max_per_image"] += int(len(d) - len(out))
    return out
