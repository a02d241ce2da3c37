"""Product-of-experts fusion: one expert's log-probability plus w times another's log-evidence, the one rule that
`scenectl fuse` (object classifier × context model) and `scenectl rescore` (detector × context model) share.

    log q(c) = log p_a(c) + w · log e_b(c)

w = 0 is expert a alone; larger w trusts expert b more. `fuse` normalises q over the classes (both experts give a
distribution over the same classes); `rescore` keeps one detector score per box, so it uses the unnormalised form
with e_b = p_ctx(c) / prior(c), the context model's likelihood ratio: the detector's score already holds the class
prior, and multiplying by p_ctx alone would count the prior twice (docs/detectors.md).
"""

from __future__ import annotations

import numpy as np

from scenectl.metrics import log_softmax


def product_of_experts(log_a: np.ndarray, log_b: np.ndarray, w: float) -> np.ndarray:
    """log p_a + w · log p_b, elementwise in float64 (unnormalised)."""
    return np.asarray(log_a, np.float64) + float(w) * np.asarray(log_b, np.float64)


def fuse_logprobs(logp_obj: np.ndarray, logp_ctx: np.ndarray, w: float) -> np.ndarray:
    """(N, C) normalised log-probabilities of the product of experts p_obj * p_ctx^w."""
    return log_softmax(product_of_experts(logp_obj, logp_ctx, w))
