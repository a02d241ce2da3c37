"""Evaluation metrics, label-only baselines, bootstrap intervals over images and out-of-context detection (ROC AUC).
Pure functions on arrays: no I/O, no torch needed.

Shapes: N samples, C classes. `scores` (N, C) are logits, probabilities or log-probabilities (only their order
matters); `labels` (N,) are contiguous class indices; `visible[i]` lists the classes of the OTHER objects still
visible in sample i's scene (the shard's `visible_categories`; may be empty). Formulas: docs/metrics.md.

Rules that every function here shares:
- Ties: classes are ranked by a stable sort of -score, so among equal scores the LOWER class index ranks first.
- k above C is clamped to C (top-C holds every class, so such a k is always a hit).
- Torch tensors are accepted anywhere an array is (converted with .detach().cpu().numpy()).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Hashable, Iterable, Sequence

import numpy as np

from scenectl.data.cooccurrence import MIN_PAIR_COUNT, Cooccurrence, plausible_matrix  # noqa: F401 (metrics.*)
from scenectl.errors import ScenectlError

FIELD_KS = (1, 3, 5, 10)  # the ks COinCO reports (top-3 beside top-1/5/10)
DEFAULT_KS = FIELD_KS  # always reported
PLAUSIBILITY_K = 10


# --- input checks ------------------------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    """numpy view of an array-like or a torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_scores(scores, num_classes: int | None = None) -> np.ndarray:
    s = _np(scores).astype(np.float64, copy=False)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ScenectlError(f"scores must be a non-empty (N, C) array, got shape {s.shape}")
    if np.isnan(s).any():
        raise ScenectlError(f"scores contain {int(np.isnan(s).sum())} NaN values")
    if num_classes is not None and s.shape[1] != num_classes:
        raise ScenectlError(f"scores have {s.shape[1]} columns but num_classes is {num_classes}")
    return s


def _check_labels(labels, n: int, num_classes: int) -> np.ndarray:
    y = _np(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ScenectlError(f"labels must have shape ({n},), got {y.shape}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes):
        raise ScenectlError(f"labels must be integer class indices in [0, {num_classes}), got {y.dtype} "
                            f"in [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ScenectlError(f"top-k values must be positive integers, got {ks}")
    return ks


def visible_mask(visible: Sequence[Iterable[int]], num_classes: int) -> np.ndarray:
    """(N, C) bool: mask[i, v] = class v is visible in scene i. Repeats in visible[i] collapse (a set)."""
    mask = np.zeros((len(visible), num_classes), dtype=bool)
    for i, vs in enumerate(visible):
        vs = np.asarray(list(vs), dtype=np.int64)
        if vs.size and (vs.min() < 0 or vs.max() >= num_classes):
            raise ScenectlError(f"visible classes of sample {i} must lie in [0, {num_classes}), got {vs.tolist()}")
        mask[i, vs] = True
    return mask


# --- top-k -------------------------------------------------------------------------------------------------------
def ranking(scores) -> np.ndarray:
    """(N, C) class indices, best first; ties: lower class index first (stable sort of -score)."""
    s = _check_scores(scores)
    return np.argsort(-s, axis=1, kind="stable")


def topk_hits(scores, labels, ks: Iterable[int]) -> dict[int, np.ndarray]:
    """{k: (N,) bool}, True where the label is among the k best-ranked classes (k clamped to C)."""
    s = _check_scores(scores)
    y = _check_labels(labels, s.shape[0], s.shape[1])
    # rank of the true label = position of y in the ranking; a hit at k means rank < k
    rank = np.argmax(ranking(s) == y[:, None], axis=1)  # (N,)
    return {k: rank < min(k, s.shape[1]) for k in _check_ks(ks)}


def topk_accuracy(scores, labels, ks: Iterable[int]) -> dict[int, float]:
    """Micro top-k accuracy: share of SAMPLES whose label is in the top k."""
    return {k: float(h.mean()) for k, h in topk_hits(scores, labels, ks).items()}


def balanced_topk_accuracy(scores, labels, ks: Iterable[int], num_classes: int) -> dict[int, float]:
    """Class-balanced top-k: mean over the classes PRESENT in `labels` of each class's top-k accuracy.

    Classes with no sample are excluded (their accuracy is undefined), so the mean is over <= C classes.
    """
    s = _check_scores(scores, num_classes)
    y = _check_labels(labels, s.shape[0], num_classes)
    support = np.bincount(y, minlength=num_classes)  # (C,)
    present = support > 0
    return {k: float(np.mean(np.bincount(y, weights=hits, minlength=num_classes)[present] / support[present]))
            for k, hits in topk_hits(s, y, ks).items()}


def per_class_accuracy(scores, labels, num_classes: int, k: int = 1) -> list[dict]:
    """One row per class: {"class", "support", "correct", "accuracy"}; accuracy is None where support is 0."""
    s = _check_scores(scores, num_classes)
    y = _check_labels(labels, s.shape[0], num_classes)
    hits = topk_hits(s, y, [k])[int(k)]
    support = np.bincount(y, minlength=num_classes)
    correct = np.bincount(y[hits], minlength=num_classes)
    return [
        {"class": c, "support": int(support[c]), "correct": int(correct[c]),
         "accuracy": float(correct[c] / support[c]) if support[c] else None}
        for c in range(num_classes)
    ]


# --- co-occurrence plausibility -----------------------------------------------------------------------------------
def _topk_indices(pred, k: int, num_classes: int) -> np.ndarray:
    """(N, k) class indices from either scores (N, C) float or already-ranked indices (N, >=k) int."""
    k = min(int(k), num_classes)
    p = _np(pred)
    if p.ndim == 1:
        p = p[:, None]  # a single prediction per sample
    if np.issubdtype(p.dtype, np.integer):
        if p.ndim != 2 or p.shape[1] < k:
            raise ScenectlError(f"top-k indices must have shape (N, >= {k}), got {p.shape}")
        if p.size and (p.min() < 0 or p.max() >= num_classes):
            raise ScenectlError(f"top-k indices must lie in [0, {num_classes})")
        return p[:, :k].astype(np.int64)
    return ranking(_check_scores(p, num_classes))[:, :k]


def plausibility_at_k(pred, visible: Sequence[Iterable[int]], plausible: np.ndarray, k: int = PLAUSIBILITY_K) -> dict:
    """Mean over scenes with >= 1 visible class V of: share of the top-k predictions plausible with SOME v in V.

    `pred`: scores (N, C) float, or ranked class indices (N, >= k) int (a 1-D int array is one prediction each).
    Returns {"value": float | None (None when no scene qualifies), "n": scenes used, "excluded": scenes with empty V}.
    """
    share, has_v = plausible_shares(pred, visible, plausible, k)
    n = int(has_v.sum())
    return {"value": float(share[has_v].mean()) if n else None, "n": n, "excluded": int((~has_v).sum())}


def plausible_shares(pred, visible: Sequence[Iterable[int]], plausible: np.ndarray,
                     k: int = PLAUSIBILITY_K) -> tuple[np.ndarray, np.ndarray]:
    """Per scene: (share of its top-k that is plausible with some visible class (N,) float, has a visible class
    (N,) bool). plausibility@k is the mean of the first over the scenes where the second holds."""
    plausible = np.asarray(plausible, dtype=bool)
    c = plausible.shape[0]
    top = _topk_indices(pred, k, c)  # (N, k)
    if len(visible) != top.shape[0]:
        raise ScenectlError(f"visible has {len(visible)} entries but there are {top.shape[0]} predictions")
    vis = visible_mask(visible, c)  # (N, C)
    # ok[i, c] = class c is plausible with at least one visible class of scene i
    ok = (vis.astype(np.int64) @ plausible.T.astype(np.int64)) > 0  # (N, C)
    return np.take_along_axis(ok, top, axis=1).mean(axis=1), vis.any(axis=1)  # (N,), (N,)


def plausibility_of_labels(labels, visible: Sequence[Iterable[int]], plausible: np.ndarray) -> dict:
    """Ground-truth ceiling: plausibility@1 of a "prediction" equal to the true label (share of scenes whose
    hidden class is plausible with their visible classes). Same dict as plausibility_at_k."""
    y = _check_labels(labels, len(_np(labels)), np.asarray(plausible).shape[0])
    return plausibility_at_k(y[:, None], visible, plausible, k=1)


def plausibility_ceiling(visible: Sequence[Iterable[int]], plausible: np.ndarray, k: int = PLAUSIBILITY_K) -> dict:
    """The attainable maximum of plausibility@k on these scenes: that of a predictor listing first the m classes a
    scene's visible classes make plausible (min(k, m) / k per scene). Same dict as plausibility_at_k."""
    plausible = np.asarray(plausible, dtype=bool)
    vis = visible_mask(visible, plausible.shape[0]).astype(np.int64)  # (N, C)
    best = ((vis @ plausible.T.astype(np.int64)) > 0).astype(np.float64)  # (N, C): 1 for each plausible class
    return plausibility_at_k(best, visible, plausible, k)


def plausibility_rows(pred, labels, visible: Sequence[Iterable[int]], plausible: np.ndarray,
                      k: int = PLAUSIBILITY_K) -> dict:
    """The plausibility table: {"k=1": {"model": @1, "true label": the hidden class's own plausibility},
    f"k={k}": {"model": @k, "attainable maximum": plausibility_ceiling}} (values; None where no scene qualifies).
    The true label is a k = 1 "prediction", so it belongs beside the model's @1, never in the @k column."""
    return {"k=1": {"model": plausibility_at_k(pred, visible, plausible, k=1)["value"],
                    "true label": plausibility_of_labels(labels, visible, plausible)["value"]},
            f"k={k}": {"model": plausibility_at_k(pred, visible, plausible, k=k)["value"],
                       "attainable maximum": plausibility_ceiling(visible, plausible, k)["value"]}}


# --- supercategories (COCO's `supercategory` field) ------------------------------------------------------------------
def supercategory_index(supercategories: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Class -> supercategory: ((C,) int64 index into the names, the distinct names in first-seen order)."""
    for i, name in enumerate(supercategories):
        if not isinstance(name, str) or not name:
            raise ScenectlError(f"class {i} has no supercategory name (got {name!r})")
    names = list(dict.fromkeys(supercategories))
    return np.asarray([names.index(name) for name in supercategories], dtype=np.int64), names


SUPER_KS = (1, 5)  # supercategory top-k reported (COinCO's supercategory accuracy)


def supercategory_topk(pred, labels, super_of: np.ndarray, ks: Iterable[int] = SUPER_KS) -> dict[int, float]:
    """Micro supercategory top-k: share of samples whose true class's supercategory is among the first k DISTINCT
    supercategories of the class ranking (k = 1: the supercategory of the top-1 class). `pred`: scores (N, C) or
    ranked class indices (N, C) int (every class ranked); `super_of`: (C,) supercategory of each class."""
    return {k: float(h.mean()) for k, h in supercategory_hits(pred, labels, super_of, ks).items()}


def supercategory_hits(pred, labels, super_of: np.ndarray, ks: Iterable[int] = SUPER_KS) -> dict[int, np.ndarray]:
    """{k: (N,) bool}: the per-sample hits behind supercategory_topk (their image-resampled means give its
    intervals)."""
    super_of = np.asarray(super_of, dtype=np.int64)
    c = super_of.shape[0]
    top = _topk_indices(pred, c, c)  # (N, C)
    y = _check_labels(labels, top.shape[0], c)
    ranked = super_of[top]  # (N, C) supercategory of each ranked class
    # first-seen position: a class's supercategory is new iff no better-ranked class has the same one
    seen_before = np.zeros_like(ranked, dtype=bool)
    for j in range(1, c):
        seen_before[:, j] = (ranked[:, :j] == ranked[:, j:j + 1]).any(axis=1)
    order = np.cumsum(~seen_before, axis=1)  # (N, C): 1-based rank of each class's supercategory
    true_rank = np.where(ranked == super_of[y][:, None], order, c + 1).min(axis=1)  # (N,)
    return {k: true_rank <= k for k in _check_ks(ks)}


def supercategory_fields(pred, labels, super_of: np.ndarray | None, rs: Resamples, level: float = 0.95) -> dict:
    """Report fields of supercategory top-k (SUPER_KS) on these samples: {"supercategory_topk": {k: value},
    "supercategory_topk_ci": {k: [lo, hi] | None}} (intervals over the resamples of `rs`; none with 0 resamples),
    or {} where the classes carry no supercategories (`super_of` None)."""
    if super_of is None:
        return {}
    hits = supercategory_hits(pred, labels, super_of)
    ones = np.ones(len(_np(labels)), dtype=bool)
    return {"supercategory_topk": {k: float(h.mean()) for k, h in hits.items()},
            "supercategory_topk_ci": {k: interval(resampled_mean(h.astype(np.float64), ones, rs), level)
                                      if rs.n_resamples else None for k, h in hits.items()}}


# --- baselines: scores (N, C) from labels and counts only, never from pixels --------------------------------------
def _log_prior(cooc: Cooccurrence, alpha: float) -> np.ndarray:
    """(C,) log P(c) from training INSTANCE counts (one sample hides one instance), Laplace alpha."""
    inst = np.asarray(cooc.instance_counts, dtype=np.float64)
    return np.log(inst + alpha) - np.log(inst.sum() + alpha * inst.shape[0])


def prior_scores(cooc: Cooccurrence, n: int, alpha: float = 1.0) -> np.ndarray:
    """(n, C): the class-frequency prior, log P(c) = log[(m_c + a) / (sum m + a C)], the same row for every sample."""
    if alpha <= 0:
        raise ScenectlError(f"alpha must be > 0, got {alpha}")
    return np.tile(_log_prior(cooc, alpha), (int(n), 1))


def cooccurrence_scores(visible: Sequence[Iterable[int]], cooc: Cooccurrence, alpha: float = 1.0) -> np.ndarray:
    """(N, C) naive-Bayes context scores from the visible LABELS: log P(c) + sum_{v in V} log P(v present | c present).

    P(v | c) = (n_cv + a) / (n_c + 2a) (Bernoulli, Laplace a, image-level counts); V is a set (repeats collapse);
    absent classes are not used as evidence. Empty V gives exactly the prior.
    """
    if alpha <= 0:
        raise ScenectlError(f"alpha must be > 0, got {alpha}")
    n_cv = np.asarray(cooc.cooccurrence, dtype=np.float64)  # (C, C)
    n_c = np.asarray(cooc.image_counts, dtype=np.float64)  # (C,)
    log_cond = np.log(n_cv + alpha) - np.log(n_c + 2 * alpha)[:, None]  # (C, C): [c, v] = log P(v | c)
    vis = visible_mask(visible, n_c.shape[0]).astype(np.float64)  # (N, C)
    return _log_prior(cooc, alpha)[None, :] + vis @ log_cond.T  # (N, C)


def random_scores(n: int, num_classes: int, seed: int) -> np.ndarray:
    """(n, C) i.i.d. uniform [0, 1) scores from numpy's PCG64 seeded with `seed` (chance level)."""
    return np.random.default_rng(seed).random((int(n), int(num_classes)))


# --- reports -----------------------------------------------------------------------------------------------------
def summarize(scores, labels, visible, plausible, ks: Iterable[int], num_classes: int,
              cls: ClassSet | None = None) -> dict:
    """Every metric for one set of scores, in report.json's layout: the point estimates of point_metrics (the one
    computation behind points and intervals; balanced over the declared class set `cls` when given), the top-1
    per-class rows and the plausibility counts. ks always include DEFAULT_KS (1, 3, 5, 10); a k above C is
    computed at C and listed in "clamped". topk keys are Python ints (strings once written as JSON)."""
    s = _check_scores(scores, num_classes)
    y = _check_labels(labels, s.shape[0], num_classes)
    ks = _check_ks(set(ks) | set(DEFAULT_KS))
    n = int(s.shape[0])
    point = point_metrics(s, y, visible, plausible, ks, Resamples(np.arange(n), np.ones((1, n)), seed=0), cls)
    has_v = visible_mask(visible, num_classes).any(axis=1)
    return {"n": n, **nest(point, ks), "plausibility_n": int(has_v.sum()), "plausibility_excluded": int((~has_v).sum()),
            "per_class": per_class_accuracy(s, y, num_classes, k=1), "clamped": [k for k in ks if k > num_classes]}


def baseline_scores(labels, visible, cooc: Cooccurrence, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """The scores (N, C) of the three label-only baselines on these samples: prior, co-occurrence naive Bayes and
    random."""
    if len(cooc.image_counts) != num_classes:
        raise ScenectlError(f"co-occurrence table has {len(cooc.image_counts)} classes, expected {num_classes}")
    n = len(_np(labels))
    if len(visible) != n:
        raise ScenectlError(f"visible has {len(visible)} entries but there are {n} labels")
    return {"prior": prior_scores(cooc, n), "cooccurrence": cooccurrence_scores(visible, cooc),
            "random": random_scores(n, num_classes, seed)}


def baselines(labels, visible, cooc: Cooccurrence, plausible, ks: Iterable[int], num_classes: int, seed: int) -> dict:
    """summarize() of the three label-only baselines on the same samples: prior, co-occurrence naive Bayes, random."""
    ks = list(ks)
    return {name: summarize(s, labels, visible, plausible, ks, num_classes)
            for name, s in baseline_scores(labels, visible, cooc, num_classes, seed).items()}


# --- out-of-context detection (`scenectl fuse` on a `build-ooc` set) --------------------------------------------
def log_softmax(z) -> np.ndarray:
    """(N, C) normalised log-probabilities of scores `z` (float64, max-shifted so exp never overflows)."""
    z = _np(z).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def roc_auc(scores, positive) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties counting 1/2.

    Mann-Whitney from ranks: AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with R_pos the sum of the
    positives' ranks (1-based, ascending scores, tied scores sharing their average rank).
    """
    s = _np(scores).astype(np.float64)
    pos = _np(positive).astype(bool)
    if s.shape != pos.shape or s.ndim != 1:
        raise ScenectlError(f"scores {s.shape} and labels {pos.shape} must be equal-length 1-d arrays")
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        raise ScenectlError(f"ROC AUC needs both classes, got {n1} positive and {n0} negative samples")
    if np.isnan(s).any():
        raise ScenectlError("scores contain NaN")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each group of tied scores
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # (N,) average rank
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def flag_report(ctx_logits, labels, is_ooc, visible: Sequence[Iterable[int]], cooc: Cooccurrence) -> dict:
    """How a context model reacts to out-of-context objects, per subset and as a detector (surprise = -log p(true)),
    beside the label-only naive Bayes on the visible classes."""
    logp = log_softmax(ctx_logits)  # (N, C)
    y = _np(labels).astype(np.int64)
    is_ooc = _np(is_ooc).astype(bool)
    p_true = np.exp(logp[np.arange(len(y)), y])  # (N,)
    plausible = plausible_matrix(cooc)
    nb = log_softmax(cooccurrence_scores(visible, cooc))  # (N, C)
    out = {"n": int(len(y)), "auc_context_model": roc_auc(-np.log(np.maximum(p_true, 1e-300)), is_ooc),
           "auc_label_only_naive_bayes": roc_auc(-nb[np.arange(len(y)), y], is_ooc), "subsets": {}}
    k5 = min(5, logp.shape[1])
    for name, sel in (("out_of_context", is_ooc), ("in_context", ~is_ooc)):
        if not sel.any():
            continue
        vis = [visible[i] for i in np.flatnonzero(sel)]
        acc = topk_accuracy(logp[sel], y[sel], [1, k5])
        out["subsets"][name] = {
            "n": int(sel.sum()), "p_true_mean": float(p_true[sel].mean()),
            "p_true_median": float(np.median(p_true[sel])),
            "top1": acc[1], "top5": acc[k5],
            "plausibility@10": plausibility_at_k(logp[sel], vis, plausible)["value"],
            "true_class_plausible": plausibility_of_labels(y[sel], vis, plausible)["value"],
        }
    return out


# --- 95% intervals: percentile bootstrap over images (docs/metrics.md) -------------------------------------------
LEVEL = 0.95
INCONCLUSIVE = "inconclusive"  # the word for an interval that holds 0


def metric_names(ks: Iterable[int]) -> list[str]:
    """The flat metric names of tables and resampled distributions: top-k, bal top-k (each k), plaus@10."""
    ks = _check_ks(ks)
    return [f"top-{k}" for k in ks] + [f"bal top-{k}" for k in ks] + ["plaus@10"]


def nest(flat: dict, ks: Iterable[int]) -> dict:
    """{"top-1": x, "bal top-1": y, "plaus@10": z} -> {"topk": {1: x}, "topk_balanced": {1: y}, "plausibility@10": z}
    (the layout of summarize() and of report.json); a metric missing from `flat` becomes None."""
    ks = _check_ks(ks)
    return {"topk": {k: flat.get(f"top-{k}") for k in ks}, "topk_balanced": {k: flat.get(f"bal top-{k}") for k in ks},
            "plausibility@10": flat.get("plaus@10")}


@dataclass(frozen=True)
class Resamples:
    """B bootstrap resamples of the G images behind N samples, drawn once and shared by every set of predictions
    scored on these samples, so that differences between them are paired."""

    groups: np.ndarray  # (N,) int64: the image of each sample, in [0, G)
    # (B, G) float32: how often resample b draws image g (each row sums to G); float32 halves the cost of the
    # products and holds every count and per-image sum exactly (integers below 2^24)
    weights: np.ndarray
    seed: int
    unknown: int = 0  # samples without an image id, each resampled as an image of its own

    @property
    def n_resamples(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.weights.shape[1])

    def identity(self) -> Resamples:
        """The original sample as the single "resample" (every image once): its metrics are the point estimates."""
        return Resamples(self.groups, np.ones((1, self.n_images)), self.seed, self.unknown)  # float64: exact


def image_resamples(image_ids, n_resamples: int, seed: int) -> Resamples:
    """Draw `n_resamples` resamples of the images (G draws with replacement from the G distinct ids) from numpy's
    PCG64 seeded with `seed` (0 resamples: only the grouping, for point estimates). An id below 0 means "unknown":
    such a sample is an image of its own."""
    ids = _np(image_ids).astype(np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ScenectlError(f"image ids must be a non-empty (N,) array, got shape {ids.shape}")
    if int(n_resamples) < 0:
        raise ScenectlError(f"the number of bootstrap resamples must be >= 0, got {n_resamples}")
    unknown = ids < 0
    ids = np.where(unknown, ids.max() + 1 + np.arange(ids.size), ids)  # unknowns: distinct new ids
    _, groups = np.unique(ids, return_inverse=True)
    b, g = int(n_resamples), int(groups.max()) + 1
    draws = np.random.default_rng(seed).integers(0, g, size=(b, g))  # (B, G) drawn image indices
    rows = np.arange(b, dtype=np.int64)[:, None] * g
    counts = np.bincount((draws + rows).ravel(), minlength=b * g).reshape(b, g)  # (B, G) times drawn
    return Resamples(groups.astype(np.int64), counts.astype(np.float32), int(seed), int(unknown.sum()))


def _per_image(rs: Resamples, values: np.ndarray) -> np.ndarray:
    """(G,) sum of `values` (N,) over each image's samples."""
    return np.bincount(rs.groups, weights=values, minlength=rs.n_images).astype(rs.weights.dtype)


def _per_image_class(rs: Resamples, labels: np.ndarray, values: np.ndarray, c: int) -> np.ndarray:
    """(G, C) sum of `values` (N,) over each image's samples of each class."""
    flat = np.bincount(rs.groups * c + labels, weights=values, minlength=rs.n_images * c)
    return flat.reshape(rs.n_images, c).astype(rs.weights.dtype)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise in float64, NaN where den is 0 (a resample with nothing to average)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)


def resampled_metrics(pred, labels, visible, plausible, ks: Iterable[int], rs: Resamples,
                      cls: ClassSet | None = None) -> dict[str, np.ndarray]:
    """summarize()'s metrics on every resample of `rs`: {"top-k": (B,), "bal top-k": (B,), "plaus@10": (B,),
    "per_class": (B, C) top-1 accuracy}; NaN where a resample has nothing to average (no scene with a visible
    class, no sample of a class). `pred`: scores (N, C), or ranked class indices (N, >= max(ks, 10)).
    Balanced top-k averages over the declared class set `cls` (every resample divides by the same set: a resample
    missing one of its classes is NaN, left out of the interval); without one, over the classes each resample
    draws (the older definition, whose intervals can miss their own point).

    Every metric is a ratio of per-image sums, so a resample costs one (B, G) @ (G, ...) product per metric."""
    plausible = np.asarray(plausible, dtype=bool)
    c = plausible.shape[0]
    y = _check_labels(labels, rs.groups.shape[0], c)
    ks = _check_ks(ks)
    top = _topk_indices(pred, max(ks + [PLAUSIBILITY_K]), c)  # (N, K)
    w, ones = rs.weights, np.ones(y.shape[0])
    n = w @ _per_image(rs, ones)  # (B,) samples in each resample
    support = w @ _per_image_class(rs, y, ones, c)  # (B, C)
    present = (support > 0).sum(axis=1)  # (B,) classes in each resample
    out = {}
    for k in ks:
        hits = (top[:, :min(k, c)] == y[:, None]).any(axis=1).astype(np.float64)  # (N,)
        out[f"top-{k}"] = _ratio(w @ _per_image(rs, hits), n)
        per_class = _ratio(w @ _per_image_class(rs, y, hits, c), support)  # (B, C)
        out[f"bal top-{k}"] = (per_class[:, cls.classes].mean(axis=1) if cls is not None
                               else _ratio(np.nansum(per_class, axis=1), present))
        if k == 1:
            out["per_class"] = per_class
    out["plaus@10"] = resampled_mean(*plausible_shares(top, visible, plausible), rs)
    return out


def resampled_mean(values: np.ndarray, where: np.ndarray, rs: Resamples) -> np.ndarray:
    """(B,) the mean of `values` (N,) over the samples where `where` (N,) bool holds, on each resample (NaN where
    a resample holds none of them)."""
    where = np.asarray(where, dtype=np.float64)
    return _ratio(rs.weights @ _per_image(rs, np.asarray(values) * where), rs.weights @ _per_image(rs, where))


def point_metrics(pred, labels, visible, plausible, ks: Iterable[int], rs: Resamples,
                  cls: ClassSet | None = None) -> dict[str, float | None]:
    """The metrics of resampled_metrics() on the original samples (None where undefined), per_class left out: the
    one point-estimate path (summarize, compare), so a point and its interval are computed alike."""
    dists = resampled_metrics(pred, labels, visible, plausible, ks, rs.identity(), cls)
    return {m: (float(d[0]) if np.isfinite(d[0]) else None) for m, d in dists.items() if m != "per_class"}


def ci_fields(dists: dict[str, np.ndarray], ks: Iterable[int], level: float = LEVEL) -> dict:
    """The intervals of every metric in report.json's layout: {"topk_ci": {k: [lo, hi]}, "topk_balanced_ci": {...},
    "plausibility@10_ci": [lo, hi]} (None where no resample defines the metric)."""
    nested = nest({m: interval(dists[m], level) for m in metric_names(ks)}, ks)
    return {f"{key}_ci": v for key, v in nested.items()}


def interval(dist: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """The percentile interval [lo, hi] (central `level`) of the finite values of a bootstrap distribution (B,),
    or None when there are none."""
    d = np.asarray(dist, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    lo, hi = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def verdict(ci: list[float] | None) -> str | None:
    """How a paired difference's interval reads in words: "inconclusive" when it contains 0 (the data cannot tell
    the sign; never "no difference"), else higher/lower."""
    if ci is None:
        return None
    return INCONCLUSIVE if ci[0] <= 0 <= ci[1] else ("higher" if ci[0] > 0 else "lower")


def paired_differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray], a_point: dict[str, float],
                       b_point: dict[str, float], level: float = LEVEL) -> dict[str, dict]:
    """a - b for every metric both share, from distributions drawn on the SAME resamples (paired):
    {metric: {"difference": point a - b, "ci": [lo, hi] | None, "verdict": ...}} (per_class left out)."""
    out = {}
    for m in a_point:
        if m == "per_class" or m not in b_point or a_point[m] is None or b_point[m] is None:
            continue
        ci = interval(a[m] - b[m], level)
        out[m] = {"difference": float(a_point[m] - b_point[m]), "ci": ci, "verdict": verdict(ci)}
    return out


# --- training seeds: intervals that hold the seed-to-seed variance too (docs/metrics.md) ---------------------------
# A run's metric varies with its training seed as well as with the test images. The image bootstrap measures only
# the second. With S seeds per arm, each seed's predictions scored on the SAME image resamples, the interval of the
# arm mean (or of a difference of two arms) adds the across-seed variance s^2/S to each side's image variance and
# reads the half-width from Student's t with Welch-Satterthwaite degrees of freedom (the image part counts as known:
# infinite df). With shared seeds the arms pair per seed: s_d^2 / S with S - 1 df.
NO_SEED_NOISE = "one training seed: training noise is not in this interval"
POWER = 0.8  # the power at which the minimum detectable difference is stated


def _t_cdf(x: float, df: float) -> float:
    """Student's t CDF (numpy Simpson integration of the density; the normal CDF where df is infinite)."""
    if not math.isfinite(df) or df > 1e6:
        return NormalDist().cdf(x)
    a = abs(float(x))
    grid = np.linspace(0.0, a, 4001)  # (4001,): Simpson on 4000 intervals, error far below 1e-8 here
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(grid * grid / df))
    area = (grid[1] - grid[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()) if a > 0 else 0.0
    return 0.5 + math.copysign(float(area), x)


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with `df` (> 0, may be fractional or infinite) degrees of freedom, by bisection
    on _t_cdf (no scipy in the dependencies)."""
    if not math.isfinite(df) or df > 1e6:
        return NormalDist().inv_cdf(q)
    lo, hi = -1e3, 1e3
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Arm:
    """One metric of one arm over its training seeds, each seed scored on the same image resamples."""

    points: np.ndarray  # (S,) the metric of each seed's predictions on the original samples
    dists: np.ndarray  # (S, B) the same on each shared image resample
    seeds: tuple[int, ...] | None = None  # training seeds; two arms with the same seeds pair per seed

    @staticmethod
    def of(points: Sequence[float], dists: Sequence[np.ndarray], seeds: Sequence[int] | None = None) -> Arm:
        p = np.asarray(points, dtype=np.float64)
        d = np.stack([np.asarray(x, dtype=np.float64) for x in dists]) if len(dists) else np.zeros((0, 0))
        if p.ndim != 1 or p.size == 0 or d.shape[0] != p.size:
            raise ScenectlError(f"an arm needs one point and one resample distribution per seed, got {p.size} "
                                f"points and {d.shape[0]} distributions")
        if seeds is not None and (len(seeds) != p.size or len(set(seeds)) != len(seeds)):
            raise ScenectlError(f"an arm's seeds must be distinct, one per run, got {list(seeds)}")
        return Arm(p, d, None if seeds is None else tuple(int(x) for x in seeds))

    @property
    def n_seeds(self) -> int:
        return int(self.points.size)


def seed_summary(arm: Arm) -> dict:
    """What is printed beside an arm: {"seeds", "per_seed", "mean", "seed_sd" (None with one seed), "note"}."""
    sd = float(arm.points.std(ddof=1)) if arm.n_seeds > 1 else None
    return {"seeds": arm.n_seeds, "per_seed": arm.points.tolist(), "mean": float(arm.points.mean()),
            "seed_sd": sd, "note": NO_SEED_NOISE if arm.n_seeds == 1 else None}


def _seed_variance(a: Arm, b: Arm | None) -> tuple[float, float, bool]:
    """(variance of the seed part of mean(a) [- mean(b)], its Satterthwaite df, paired per seed)."""
    if b is not None and a.seeds is not None and a.seeds == b.seeds and a.n_seeds > 1:
        d = a.points - b.points  # (S,) per-seed differences: the seed effect common to both arms cancels
        return float(d.var(ddof=1)) / a.n_seeds, a.n_seeds - 1.0, True
    terms = [(float(x.points.var(ddof=1)) / x.n_seeds, x.n_seeds - 1.0) for x in (a, b)
             if x is not None and x.n_seeds > 1]
    v = sum(t for t, _ in terms)
    den = sum(t * t / df for t, df in terms)
    return v, (v * v / den if den > 0 else math.inf), False


def seed_interval(a: Arm, b: Arm | None = None, level: float = LEVEL) -> dict | None:
    """The interval of mean(a) - mean(b) (or of mean(a) alone) that holds the image resamples AND the training
    seeds: {"value", "ci", "image_ci", "se" [lower side, upper side], "df" (the smaller of "df_sides"), "seed_se",
    "paired", "p", "mdd", "notes"}. None where no resample defines the metric.

    Each side of the percentile interval of the image resamples (the mean over seeds of each resample's metric)
    is read as z * se_side; the seed part s^2/S is added to se_side^2 and the half-width is t(df) * sqrt(sum), df
    by Welch-Satterthwaite. With no seed variance this is exactly the percentile interval. `p`: the two-sided
    p-value of "the difference is 0" from the side facing 0 (p < 1 - level exactly when the interval excludes 0).
    `mdd`: the smallest true difference found with POWER at this level, (t_{1-a/2} + t_POWER) * se."""
    boot = a.dists.mean(axis=0) - (b.dists.mean(axis=0) if b is not None else 0.0)  # (B,)
    value = float(a.points.mean() - (b.points.mean() if b is not None else 0.0))
    image_ci = interval(boot, level)
    if image_ci is None:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    sides = [max(value - image_ci[0], 0.0) / z, max(image_ci[1] - value, 0.0) / z]  # image se below, above
    v_seed, df_seed, paired = _seed_variance(a, b)
    totals = [side * side + v_seed for side in sides]
    se = [math.sqrt(total) for total in totals]
    dfs = [total * total / (v_seed * v_seed / df_seed) if v_seed > 0 else math.inf for total in totals]
    t = [t_quantile(0.5 + level / 2, df) for df in dfs]
    toward = 0 if value > 0 else 1  # the side facing 0
    p = (2 * (1 - _t_cdf(abs(value) / se[toward], dfs[toward])) if se[toward] > 0 else float(value == 0))
    mean_se, df = math.sqrt((se[0] ** 2 + se[1] ** 2) / 2), min(dfs)
    arms = [x for x in (a, b) if x is not None]
    return {"value": value, "ci": [value - t[0] * se[0], value + t[1] * se[1]], "image_ci": image_ci, "se": se,
            "df": df, "df_sides": dfs, "seed_se": math.sqrt(v_seed), "paired": paired, "p": min(1.0, max(0.0, p)),
            "mdd": (t_quantile(0.5 + level / 2, df) + t_quantile(POWER, df)) * mean_se,
            "notes": [NO_SEED_NOISE] if any(x.n_seeds == 1 for x in arms) else []}


# --- verdict words after Holm's step-down over a declared family of comparisons ------------------------------------
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (same order): p_(j) -> max_{i <= j} min(1, (m - i + 1) p_(i)) over the ascending
    order (i 1-based). Controls the family-wise error rate at any level, for any dependence between the tests."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or (p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1)):
        raise ScenectlError(f"p-values must be a 1-d array in [0, 1], got {p}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted[np.argsort(order)]  # back in the given order


def holm_verdicts(results: dict[Hashable, dict | None], family: str, level: float = LEVEL) -> dict[Hashable, dict]:
    """Words for a declared family of comparisons {name: seed_interval(...) result (None: not compared)}: each
    result gains "family", "family_size", "p_holm", "ci_holm" and "verdict" higher / lower / inconclusive.

    A comparison is higher or lower only where its Holm-adjusted p-value is below 1 - level. Its "ci_holm" is the
    interval at the level of its Holm step, 1 - alpha / (m - j + 1) for the j-th smallest p, and for every
    comparison after the step where the procedure stopped, that step's level: so "ci_holm" excludes 0 exactly
    where the verdict is higher or lower."""
    alpha = 1 - level
    names = [n for n, r in results.items() if r is not None]
    m = len(names)
    p = np.array([results[n]["p"] for n in names])
    adjusted = holm(p) if m else np.zeros(0)
    order = np.argsort(p, kind="stable")
    rejected = adjusted[order] < alpha  # (m,) in ascending-p order: True up to where the step-down stops
    stop = int(np.argmin(rejected)) if not rejected.all() else m  # 0-based rank of the first kept hypothesis
    out = {n: None for n in results}
    for rank, i in enumerate(order):
        r = results[names[i]]
        step_alpha = alpha / (m - min(rank, stop))
        t = [t_quantile(1 - step_alpha / 2, df) for df in r.get("df_sides", [r["df"]] * 2)]
        ci = [r["value"] - t[0] * r["se"][0], r["value"] + t[1] * r["se"][1]]
        word = INCONCLUSIVE if adjusted[i] >= alpha else ("higher" if r["value"] > 0 else "lower")
        out[names[i]] = {**r, "family": family, "family_size": m, "p_holm": float(adjusted[i]), "ci_holm": ci,
                         "verdict": word}
    return out


# --- balanced accuracy over a declared class set -----------------------------------------------------------------
MIN_CLASS_SAMPLES = 5  # evaluated targets a class needs to enter the balanced mean (and to show a per-class interval)
CONSTANT_REASON = ("a constant predictor (the same ranking for every sample): its balanced accuracy over the "
                   "declared class set is fixed, so no resample can vary it")


@dataclass(frozen=True)
class ClassSet:
    """The classes a balanced metric averages over, declared once from the evaluated labels: every class with at
    least `min_samples` targets. Every resample divides by this same set (a resample-dependent set puts the
    prior's interval above its own value)."""

    classes: np.ndarray  # (K,) int64 class indices
    num_classes: int  # C
    min_samples: int
    sample_share: float  # share of the evaluated samples whose class is in the set

    def record(self) -> dict:
        return {"size": int(self.classes.size), "min_class_samples": self.min_samples,
                "sample_share": self.sample_share, "classes": self.classes.tolist()}


def declared_classes(labels, num_classes: int, min_samples: int = MIN_CLASS_SAMPLES) -> ClassSet:
    """The ClassSet of these evaluated labels (N,): classes with >= `min_samples` targets."""
    if int(min_samples) < 1:
        raise ScenectlError(f"--min-class-samples must be >= 1, got {min_samples}")
    y = _check_labels(labels, len(_np(labels)), num_classes)
    support = np.bincount(y, minlength=num_classes)  # (C,)
    classes = np.flatnonzero(support >= int(min_samples))
    if classes.size == 0:
        raise ScenectlError(f"no class has {min_samples} evaluated samples: lower --min-class-samples")
    share = float(support[classes].sum() / max(1, y.size))
    return ClassSet(classes.astype(np.int64), int(num_classes), int(min_samples), share)


def constant_predictor(pred, k: int) -> bool:
    """True when every sample's top-k (scores (N, C) or ranked indices (N, >= k)) is the same list: the prior."""
    p = _np(pred)
    if np.issubdtype(p.dtype, np.integer):  # already ranked (a 1-d array: one prediction each)
        top = (p[:, None] if p.ndim == 1 else p)[:, :int(k)]
    else:
        top = ranking(p)[:, :int(k)]
    return bool((top == top[:1]).all())


def resampled_balanced(pred, labels, ks: Iterable[int], rs: Resamples, cls: ClassSet) -> dict[str, np.ndarray]:
    """{"bal top-k": (B,)}: balanced top-k over the declared set `cls` on each resample of `rs` (rs.identity()
    for the point), as resampled_metrics(..., cls) computes it (`pred` as it takes it). A resample that draws no
    target of some class of the set cannot average over the set: NaN there (interval() leaves it out)."""
    no_context = [[]] * len(_np(labels)), np.zeros((cls.num_classes,) * 2, dtype=bool)  # plaus@10 is not asked for
    dists = resampled_metrics(pred, labels, *no_context, ks, rs, cls)
    return {m: d for m, d in dists.items() if m.startswith("bal top-")}


def balanced_fields(pred, labels, ks: Iterable[int], rs: Resamples, cls: ClassSet, level: float = LEVEL,
                    no_interval: str | None = None) -> dict:
    """Report fields of balanced top-k over the declared set: {"topk_balanced": {k: value}, "topk_balanced_ci":
    {k: [lo, hi] | None}, "class_set": cls.record(), "no_interval": reason | None}. A constant predictor gets its
    point and the reason instead of an interval; so does any predictor the caller gives a `no_interval` reason."""
    ks = _check_ks(ks)
    points = resampled_balanced(pred, labels, ks, rs.identity(), cls)
    reason = CONSTANT_REASON if constant_predictor(pred, max(ks)) else no_interval
    dists = None if reason or rs.n_resamples == 0 else resampled_balanced(pred, labels, ks, rs, cls)
    return {"topk_balanced": {k: float(points[f"bal top-{k}"][0]) for k in ks},
            "topk_balanced_ci": {k: interval(dists[f"bal top-{k}"], level) if dists else None for k in ks},
            "class_set": cls.record(), "no_interval": reason}


# --- per-class intervals: Wilson, widened by the image clustering ---------------------------------------------------
def design_effect(hits, rs: Resamples) -> float:
    """How much the clustering of samples in images inflates the variance of an accuracy: the image-bootstrap
    variance of the micro mean of `hits` (N,) over its binomial variance p (1 - p) / N; at least 1."""
    h = _np(hits).astype(np.float64)
    p = float(h.mean())
    if rs.n_resamples < 2 or p in (0.0, 1.0):
        return 1.0
    boot = resampled_mean(h, np.ones_like(h, dtype=bool), rs)  # (B,)
    return max(1.0, float(np.nanvar(boot, ddof=1)) / (p * (1 - p) / h.size))


def wilson(correct: float, n: float, level: float = LEVEL, deff: float = 1.0) -> list[float]:
    """Wilson score interval of correct / n, with n shrunk to the effective sample size n / deff."""
    n_eff = n / deff
    p = correct / n
    z = NormalDist().inv_cdf(0.5 + level / 2)
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def per_class_wilson(rows: list[dict], deff: float, min_samples: int = MIN_CLASS_SAMPLES,
                     level: float = LEVEL) -> list[list[float] | None]:
    """The interval of each per_class_accuracy() row: Wilson widened by `deff`; None (hidden) below `min_samples`
    targets, where an interval of a handful of samples says more about the interval than the class."""
    return [wilson(r["correct"], r["support"], level, deff) if r["support"] >= min_samples else None for r in rows]


# --- a table of arms (compare with several seeds per arm) -------------------------------------------------------------
@dataclass(frozen=True)
class SeedRun:
    """One training seed's predictions scored on the shared resamples: point_metrics() and resampled_metrics()."""

    point: dict  # {metric: float | None}
    dists: dict  # {metric: (B,)}
    seed: int | None = None


def _arm(runs: Sequence[SeedRun], metric: str) -> Arm | None:
    """The Arm of one metric over an arm's runs, or None where some run leaves the metric undefined."""
    if any(r.point.get(metric) is None or metric not in r.dists for r in runs):
        return None
    seeds = [r.seed for r in runs]
    return Arm.of([r.point[metric] for r in runs], [r.dists[metric] for r in runs],
                  None if any(s is None for s in seeds) else seeds)


def _clip(ci: list[float] | None, lo: float) -> list[float] | None:
    """An interval of a share (lo = 0) or of a difference of shares (lo = -1) clipped to [lo, 1]: every metric of
    the table is a share of samples, so no value outside can be true (clipping never moves 0 in or out)."""
    return None if ci is None else [min(max(ci[0], lo), 1.0), min(max(ci[1], lo), 1.0)]


def seed_table(arms: dict[str, Sequence[SeedRun]], reference: str, names: Sequence[str],
               level: float = LEVEL) -> dict:
    """Every arm's metrics with their seeds, and every other arm minus `reference`, worded over ONE family (all
    differences of the table, Holm): {"arms": {arm: {metric: seed_summary + "ci" + "notes"}}, "differences":
    {arm: {metric: holm_verdicts record | None}}, "family": its description}. Arms sharing the reference's seeds
    pair per seed. `names`: the metrics, e.g. metric_names(ks)."""
    if reference not in arms:
        raise ScenectlError(f"the reference arm {reference!r} is not among the arms {sorted(arms)}")
    table = {"arms": {}, "differences": {}}
    flat: dict[tuple[str, str], dict | None] = {}
    for name, runs in arms.items():
        table["arms"][name] = {}
        for m in names:
            a = _arm(runs, m)
            alone = seed_interval(a, level=level) if a is not None else None
            table["arms"][name][m] = None if a is None else {
                **seed_summary(a), "ci": _clip(alone["ci"], 0.0) if alone else None,
                "notes": alone["notes"] if alone else []}
            if name != reference:
                b = _arm(arms[reference], m)
                flat[name, m] = seed_interval(a, b, level) if a is not None and b is not None else None
    family = (f"{len(arms) - 1} arm(s) minus {reference} on {len(names)} metrics: "
              f"{sum(r is not None for r in flat.values())} differences, Holm")
    for (name, m), r in holm_verdicts(flat, family, level).items():
        if r is not None:  # a t interval of few seeds can reach past what a difference of shares can be
            r = {**r, "ci": _clip(r["ci"], -1.0), "ci_holm": _clip(r["ci_holm"], -1.0)}
        table["differences"].setdefault(name, {})[m] = r
    table["family"] = family
    return table
