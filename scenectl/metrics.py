"""Evaluation metrics, label-only baselines and out-of-context detection (ROC AUC). Pure functions on arrays: no I/O,
no torch needed.

Shapes: N samples, C classes. `scores` (N, C) are logits, probabilities or log-probabilities (only their order
matters); `labels` (N,) are contiguous class indices; `visible[i]` lists the classes of the OTHER objects still
visible in sample i's scene (the shard's `visible_categories`; may be empty). Formulas: docs/metrics.md.

Rules that every function here shares:
- Ties: classes are ranked by a stable sort of -score, so among equal scores the LOWER class index ranks first.
- k above C is clamped to C (top-C holds every class, so such a k is always a hit).
- Torch tensors are accepted anywhere an array is (converted with .detach().cpu().numpy()).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from scenectl.data.cooccurrence import Cooccurrence
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
def plausible_matrix(cooc: Cooccurrence) -> np.ndarray:
    """(C, C) bool: [c, v] = c is a plausible companion of v, i.e. PMI(c, v) > 0 on image-level counts.

    PMI(c, v) > 0  <=>  N * n_cv > n_c * n_v  (integers: no log, defined for every zero count, symmetric).
    Shrinking the joint toward independence (any pseudo-count) leaves this sign unchanged; adding a pseudo-count
    to the joint itself would make pairs never seen together "plausible" (docs/metrics.md has the derivation).
    """
    n_cv = np.asarray(cooc.cooccurrence, dtype=np.int64)  # (C, C)
    n_c = np.asarray(cooc.image_counts, dtype=np.int64)  # (C,)
    c = n_c.shape[0]
    if n_cv.shape != (c, c):
        raise ScenectlError(f"co-occurrence table has shape {n_cv.shape}, expected ({c}, {c})")
    if not np.array_equal(n_cv, n_cv.T):
        raise ScenectlError("co-occurrence table is not symmetric")
    # int64 is exact here: N * n_cv <= N^2, far below 2^63 for any real dataset
    return int(cooc.n_images) * n_cv > n_c[:, None] * n_c[None, :]


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
    plausible = np.asarray(plausible, dtype=bool)
    c = plausible.shape[0]
    top, k = _topk_indices(pred, k, c)  # (N, k)
    if len(visible) != top.shape[0]:
        raise ScenectlError(f"visible has {len(visible)} entries but there are {top.shape[0]} predictions")
    vis = visible_mask(visible, c)  # (N, C)
    # ok[i, c] = class c is plausible with at least one visible class of scene i
    ok = (vis.astype(np.int64) @ plausible.T.astype(np.int64)) > 0  # (N, C)
    has_v = vis.any(axis=1)  # (N,)
    share = np.take_along_axis(ok, top, axis=1).mean(axis=1)  # (N,)
    n = int(has_v.sum())
    return {"value": float(share[has_v].mean()) if n else None, "n": n, "excluded": int((~has_v).sum())}


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
    """Every metric for one set of scores. ks always include 1, 5, 10; a k above C is computed at C and listed in
    "clamped". topk keys are Python ints (strings once written as JSON)."""
    s = _check_scores(scores, num_classes)
    y = _check_labels(labels, s.shape[0], num_classes)
    ks = _check_ks(set(ks) | set(DEFAULT_KS))
    plaus = plausibility_at_k(s, visible, plausible, k=PLAUSIBILITY_K)
    return {
        "n": int(s.shape[0]),
        "topk": topk_accuracy(s, y, ks),
        "topk_balanced": balanced_topk_accuracy(s, y, ks, num_classes),
        "plausibility@10": plaus["value"],
        "plausibility_n": plaus["n"],
        "plausibility_excluded": plaus["excluded"],
        "per_class": per_class_accuracy(s, y, num_classes, k=1),
        "clamped": [k for k in ks if k > num_classes],
    }


def baselines(labels, visible, cooc: Cooccurrence, plausible, ks: Iterable[int], num_classes: int, seed: int) -> dict:
    """summarize() of the three label-only baselines on the same samples: prior, co-occurrence naive Bayes, random."""
    if len(cooc.image_counts) != num_classes:
        raise ScenectlError(f"co-occurrence table has {len(cooc.image_counts)} classes, expected {num_classes}")
    n = len(_np(labels))
    if len(visible) != n:
        raise ScenectlError(f"visible has {len(visible)} entries but there are {n} labels")
    ks = list(ks)
    return {
        "prior": summarize(prior_scores(cooc, n), labels, visible, plausible, ks, num_classes),
        "cooccurrence": summarize(cooccurrence_scores(visible, cooc), labels, visible, plausible, ks, num_classes),
        "random": summarize(random_scores(n, num_classes, seed), labels, visible, plausible, ks, num_classes),
    }


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
