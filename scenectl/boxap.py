"""Box AP exactly as pycocotools' COCOeval computes it, and its image-level bootstrap.

    ev = evaluate(gt, rows, image_ids)        # COCOeval (bbox) run, accumulated and summarised (quietly)
    summary(ev, names)                         # {"AP", "AP50", "AP75", "APs", "APm", "APl", "per_class": {...}}
    m = Matching.of(ev)                        # the per-image matching COCOeval.evaluate() made (evalImgs)
    m.ap(weights)                              # (B,) AP when image g is counted weights[b, g] times

The point estimates are COCOeval's own numbers. The bootstrap resamples images (scenectl.metrics.image_resamples):
an image drawn k times contributes its detections, matches and ground truth k times. COCOeval would redo the
matching on every resample, but an image's matching does not depend on which other images are drawn, so `Matching`
keeps each detection's match once and `ap` re-accumulates COCOeval's precision envelope (101 recall points, 10 IoU
thresholds, area "all", 100 detections) with weights instead of copies: identical to COCOeval's AP for weights of 1
(tests/test_rescore.py), a few milliseconds per resample instead of a full evaluation.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]
_CHUNK = 2_000_000  # float64 cells of one (resamples, thresholds, detections) block: bounded memory


def evaluate(gt, rows: list[dict], image_ids):
    """COCOeval (bbox) of results `rows` against COCO `gt` on `image_ids`, evaluated, accumulated and summarised;
    pycocotools' printing is swallowed."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(rows) if rows else _empty_results(gt)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _empty_results(gt):
    """A results COCO with no detections (loadRes refuses an empty list)."""
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt


def _ap_of(precision: np.ndarray) -> float | None:
    """COCOeval's mean over the defined (> -1) cells of a precision block; None when none is defined."""
    p = precision[precision > -1]
    return float(p.mean()) if p.size else None


def summary(ev, names: dict[int, str]) -> dict:
    """AP, AP50, AP75, APs, APm, APl (COCOeval.stats; None where undefined, COCOeval's -1) and per-class AP
    {name: AP or None (no ground truth of the class on these images)}."""
    out = {m: (float(v) if v > -1 else None) for m, v in zip(METRICS, ev.stats[:6])}
    prec = ev.eval["precision"]  # (T, R, K, A, M); area "all" is index 0, 100 detections the last
    out["per_class"] = {names[c]: _ap_of(prec[:, :, k, 0, -1]) for k, c in enumerate(ev.params.catIds)}
    return out


@dataclass
class _Class:
    """One category's detections over all images, in COCOeval's accumulation order."""

    image: np.ndarray  # (n,) index of each detection's image in Matching.image_ids
    tp: np.ndarray  # (T, n) bool: matched at IoU threshold t (and not ignored)
    fp: np.ndarray  # (T, n) bool: unmatched (and not ignored)
    gt: np.ndarray  # (G,) non-ignored ground truth per image


@dataclass
class Matching:
    image_ids: list[int]  # (G,) the evaluated images, in COCOeval's order
    classes: list[_Class]
    rec_thrs: np.ndarray  # (R,) COCOeval's recall thresholds

    @classmethod
    def of(cls, ev) -> "Matching":
        """The matching of an evaluated COCOeval (area "all", at most maxDets[-1] detections per image)."""
        p = ev.params
        img_ids, n_img, n_area = list(p.imgIds), len(p.imgIds), len(p.areaRng)
        max_det = p.maxDets[-1]
        classes = []
        for k in range(len(p.catIds)):
            scores, image, tp, ig, gt = [], [], [], [], np.zeros(n_img)
            for g in range(n_img):
                e = ev.evalImgs[k * n_area * n_img + g]  # area index 0 ("all")
                if e is None:
                    continue
                gt[g] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
                n = min(len(e["dtScores"]), max_det)
                scores.append(np.asarray(e["dtScores"][:n], np.float64))
                image.append(np.full(n, g))
                tp.append(np.asarray(e["dtMatches"])[:, :n] != 0)
                ig.append(np.asarray(e["dtIgnore"])[:, :n] != 0)
            classes.append(_concat(scores, image, tp, ig, gt, len(p.iouThrs)))
        return cls(img_ids, classes, np.asarray(p.recThrs, np.float64))

    def ap(self, weights: np.ndarray) -> np.ndarray:
        """(B,) AP with image g counted weights[b, g] times ((B, G) array): the mean over classes that have ground
        truth in the resample of each class's mean precision over IoU thresholds and recall points; NaN where no
        class has."""
        w = np.asarray(weights, np.float64)
        per_class = np.stack([_class_ap(c, w, self.rec_thrs) for c in self.classes], axis=1)  # (B, K)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row is a NaN result, not a warning
            return np.nanmean(per_class, axis=1)


def _concat(scores, image, tp, ig, gt, n_thr: int) -> _Class:
    if not scores:
        empty = np.zeros((n_thr, 0), bool)
        return _Class(np.zeros(0, np.int64), empty, empty, gt)
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="mergesort")  # COCOeval.accumulate's order: images in order, then stable by score
    tp_all, ig_all = np.concatenate(tp, axis=1)[:, order], np.concatenate(ig, axis=1)[:, order]
    return _Class(np.concatenate(image)[order], tp_all & ~ig_all, ~tp_all & ~ig_all, gt)


def _class_ap(c: _Class, w: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """(B,) one class's AP under image weights `w` (B, G); NaN where the resample holds none of its ground truth."""
    n_gt = w @ c.gt  # (B,)
    out = np.full(w.shape[0], np.nan)
    has = n_gt > 0
    if c.image.size == 0:
        out[has] = 0.0
        return out
    n_thr, n = c.tp.shape
    step = max(1, _CHUNK // (n_thr * n))
    for b0 in range(0, w.shape[0], step):
        wb = w[b0:b0 + step, c.image]  # (b, n): each detection's weight
        tps = np.cumsum(wb[:, None, :] * c.tp[None], axis=2)  # (b, T, n)
        fps = np.cumsum(wb[:, None, :] * c.fp[None], axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            rc = tps / n_gt[b0:b0 + step, None, None]
        pr = tps / (tps + fps + np.spacing(1))
        pr = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]  # COCOeval's precision envelope
        q = _at_recall(rc.reshape(-1, n), pr.reshape(-1, n), rec_thrs)  # (b*T, R)
        out[b0:b0 + step] = q.reshape(-1, n_thr * rec_thrs.size).mean(axis=1)
    out[~has] = np.nan
    return out


def _at_recall(rc: np.ndarray, pr: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """(rows, R) precision at each recall threshold: pr at the first position whose recall reaches it (searchsorted
    'left', as COCOeval), 0 past the end; every row at once and with COCOeval's exact float comparisons.

    reached[r, j] = how many thresholds rc[r, j] reaches (one searchsorted over all cells, against the thresholds
    themselves); rc grows along a row, so threshold i is first reached at the count of cells with reached <= i.
    That count is found for all rows by one integer searchsorted, row r offset by r * (R + 1)."""
    rows, n = rc.shape
    n_thr = rec_thrs.size
    rc = np.where(np.isfinite(rc), rc, 0.0)  # a row without ground truth: its value is discarded by the caller
    reached = np.searchsorted(rec_thrs, rc.ravel(), side="right").reshape(rows, n)  # (rows, n) in [0, R]
    off = (n_thr + 1) * np.arange(rows, dtype=np.int64)[:, None]
    pos = np.searchsorted((reached + off).ravel(), (np.arange(n_thr)[None, :] + off).ravel(), side="right")
    pos = pos.reshape(rows, n_thr) - (np.arange(rows) * n)[:, None]  # (rows, R) position within the row
    inside = pos < n
    q = np.zeros(pos.shape)
    r_idx = np.broadcast_to(np.arange(rows)[:, None], pos.shape)
    q[inside] = pr[r_idx[inside], pos[inside]]
    return q
