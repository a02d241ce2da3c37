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

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from scenectl.data.cooccurrence import Cooccurrence, plausible_matrix  # noqa: F401 (metrics.plausible_matrix)
from scenectl.errors import ScenectlError

DEFAULT_KS = (1, 5, 10)
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
    out = {}
    for k, hits in topk_hits(s, y, ks).items():
        correct = np.bincount(y, weights=hits, minlength=num_classes)  # (C,)
        out[k] = float(np.mean(correct[present] / support[present]))
    return out


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
def _topk_indices(pred, k: int, num_classes: int) -> tuple[np.ndarray, int]:
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
        return p[:, :k].astype(np.int64), k
    return ranking(_check_scores(p, num_classes))[:, :k], k


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
    top, k = _topk_indices(pred, k, c)  # (N, k)
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
def summarize(scores, labels, visible, plausible, ks: Iterable[int], num_classes: int) -> dict:
    """Every metric for one set of scores, in report.json's layout: the point estimates of point_metrics (the one
    computation behind points and intervals), the top-1 per-class rows and the plausibility counts. ks always include
    1, 5, 10; a k above C is computed at C and listed in "clamped". topk keys are Python ints (strings once written
    as JSON)."""
    s = _check_scores(scores, num_classes)
    y = _check_labels(labels, s.shape[0], num_classes)
    ks = _check_ks(set(ks) | set(DEFAULT_KS))
    n = int(s.shape[0])
    point = point_metrics(s, y, visible, plausible, ks, Resamples(np.arange(n), np.ones((1, n)), seed=0))
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


def resampled_metrics(pred, labels, visible, plausible, ks: Iterable[int], rs: Resamples) -> dict[str, np.ndarray]:
    """summarize()'s metrics on every resample of `rs`: {"top-k": (B,), "bal top-k": (B,), "plaus@10": (B,),
    "per_class": (B, C) top-1 accuracy}; NaN where a resample has nothing to average (no scene with a visible
    class, no sample of a class). `pred`: scores (N, C), or ranked class indices (N, >= max(ks, 10)).

    Every metric is a ratio of per-image sums, so a resample costs one (B, G) @ (G, ...) product per metric."""
    plausible = np.asarray(plausible, dtype=bool)
    c = plausible.shape[0]
    y = _check_labels(labels, rs.groups.shape[0], c)
    ks = _check_ks(ks)
    top, _ = _topk_indices(pred, max(ks + [PLAUSIBILITY_K]), c)  # (N, K)
    w, ones = rs.weights, np.ones(y.shape[0])
    n = w @ _per_image(rs, ones)  # (B,) samples in each resample
    support = w @ _per_image_class(rs, y, ones, c)  # (B, C)
    present = (support > 0).sum(axis=1)  # (B,) classes in each resample
    out = {}
    for k in ks:
        hits = (top[:, :min(k, c)] == y[:, None]).any(axis=1).astype(np.float64)  # (N,)
        out[f"top-{k}"] = _ratio(w @ _per_image(rs, hits), n)
        per_class = _ratio(w @ _per_image_class(rs, y, hits, c), support)  # (B, C)
        out[f"bal top-{k}"] = _ratio(np.nansum(per_class, axis=1), present)
        if k == 1:
            out["per_class"] = per_class
    out["plaus@10"] = resampled_mean(*plausible_shares(top, visible, plausible), rs)
    return out


def resampled_mean(values: np.ndarray, where: np.ndarray, rs: Resamples) -> np.ndarray:
    """(B,) the mean of `values` (N,) over the samples where `where` (N,) bool holds, on each resample (NaN where
    a resample holds none of them)."""
    where = np.asarray(where, dtype=np.float64)
    return _ratio(rs.weights @ _per_image(rs, np.asarray(values) * where), rs.weights @ _per_image(rs, where))


def point_metrics(pred, labels, visible, plausible, ks: Iterable[int], rs: Resamples) -> dict[str, float | None]:
    """The metrics of resampled_metrics() on the original samples (None where undefined), per_class left out: the
    one point-estimate path (summarize, compare), so a point and its interval are computed alike."""
    dists = resampled_metrics(pred, labels, visible, plausible, ks, rs.identity())
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


def class_intervals(per_class: np.ndarray, level: float = LEVEL) -> list[list[float] | None]:
    """interval() of each column of a (B, C) distribution."""
    return [interval(per_class[:, j], level) for j in range(per_class.shape[1])]


def verdict(ci: list[float] | None) -> str | None:
    """How a paired difference's interval reads in words: "no difference" when it contains 0, else higher/lower."""
    if ci is None:
        return None
    return "no difference" if ci[0] <= 0 <= ci[1] else ("higher" if ci[0] > 0 else "lower")


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
