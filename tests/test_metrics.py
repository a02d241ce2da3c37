"""scenectl.metrics against hand-computed small cases (every expected number is worked out in the comments)."""

import json
import math

import numpy as np
import pytest
import torch

from scenectl import metrics as M
from scenectl.data.cooccurrence import Cooccurrence
from scenectl.errors import ScenectlError

# --- a 4-class example -------------------------------------------------------------------------------------------
# sample  scores                    label  ranking (ties: lower index first)   rank of label
#   0     [.10, .70, .15, .05]      1      1 2 0 3                              0
#   1     [.50, .20, .20, .10]      2      0 1 2 3   (1 and 2 tie -> 1 first)   2
#   2     [.30, .40, .20, .10]      0      1 0 2 3                              1
#   3     [.25, .25, .25, .25]      0      0 1 2 3   (all tie)                  0
#   4     [.60, .10, .10, .20]      0      0 3 1 2                              0
#   5     [.40, .30, .20, .10]      3      0 1 2 3                              3
SCORES = np.array([
    [.10, .70, .15, .05],
    [.50, .20, .20, .10],
    [.30, .40, .20, .10],
    [.25, .25, .25, .25],
    [.60, .10, .10, .20],
    [.40, .30, .20, .10],
])
LABELS = np.array([1, 2, 0, 0, 0, 3])


def test_topk_hits_hand_computed():
    hits = M.topk_hits(SCORES, LABELS, [1, 2, 3])
    assert hits[1].tolist() == [True, False, False, True, True, False]  # rank 0
    assert hits[2].tolist() == [True, False, True, True, True, False]  # rank <= 1
    assert hits[3].tolist() == [True, True, True, True, True, False]  # rank <= 2


def test_topk_micro_hand_computed():
    acc = M.topk_accuracy(SCORES, LABELS, [1, 2, 3])
    # top-1: 3 of 6; top-2: 4 of 6; top-3: 5 of 6
    assert acc == pytest.approx({1: 3 / 6, 2: 4 / 6, 3: 5 / 6})


def test_topk_balanced_hand_computed():
    acc = M.balanced_topk_accuracy(SCORES, LABELS, [1, 2], num_classes=4)
    # top-1 per class: c0 = samples 2,3,4 -> 2/3; c1 = sample 0 -> 1; c2 = sample 1 -> 0; c3 = sample 5 -> 0
    #   balanced = (2/3 + 1 + 0 + 0) / 4 = 5/12
    # top-2 per class: c0 3/3, c1 1, c2 0, c3 0 -> 2/4
    assert acc == pytest.approx({1: 5 / 12, 2: 0.5})


def test_ties_lower_index_wins():
    # all four scores equal: the ranking is 0 1 2 3, so only label 0 is a top-1 hit and label 3 is not a top-3 hit
    s = np.zeros((4, 4))
    hits = M.topk_hits(s, np.arange(4), [1, 3])
    assert hits[1].tolist() == [True, False, False, False]
    assert hits[3].tolist() == [True, True, True, False]
    assert M.ranking(np.array([[1.0, 2.0, 2.0, 0.0]])).tolist() == [[1, 2, 0, 3]]


def test_topk_agrees_with_counting_definition():
    # independent definition: label y is a top-k hit iff #{c: s_c > s_y} + #{c < y: s_c == s_y} < k
    rng = np.random.default_rng(0)
    s = rng.integers(0, 3, size=(200, 7)).astype(float)  # few distinct values: many ties
    y = rng.integers(0, 7, size=200)
    sy = s[np.arange(200), y][:, None]
    before = (s > sy).sum(1) + ((s == sy) & (np.arange(7)[None, :] < y[:, None])).sum(1)
    for k, h in M.topk_hits(s, y, [1, 2, 5]).items():
        assert h.tolist() == (before < k).tolist()


def test_k_clamped_to_num_classes():
    acc = M.topk_accuracy(SCORES, LABELS, [4, 10])
    assert acc == {4: 1.0, 10: 1.0}  # top-4 of 4 classes holds every label
    assert M.balanced_topk_accuracy(SCORES, LABELS, [10], 4) == {10: 1.0}
    with pytest.raises(ScenectlError):
        M.topk_accuracy(SCORES, LABELS, [0])


def test_torch_tensors_accepted():
    acc = M.topk_accuracy(torch.tensor(SCORES, dtype=torch.float32), torch.tensor(LABELS), [1, 2])
    assert acc == pytest.approx({1: 0.5, 2: 4 / 6})


def test_balanced_differs_from_micro_when_one_class_dominates():
    # always predict class 0; 8 labels of class 0, one of class 1, one of class 2, none of class 3
    s = np.tile([1.0, 0.0, 0.0, 0.0], (10, 1))
    y = np.array([0] * 8 + [1, 2])
    assert M.topk_accuracy(s, y, [1])[1] == pytest.approx(0.8)  # 8 / 10
    # mean over the 3 PRESENT classes: (1 + 0 + 0) / 3; class 3 is excluded (it would give 1/4)
    assert M.balanced_topk_accuracy(s, y, [1], 4)[1] == pytest.approx(1 / 3)


def test_per_class_accuracy_with_absent_class():
    s = np.tile([1.0, 0.0, 0.0, 0.0], (10, 1))
    y = np.array([0] * 8 + [1, 2])
    rows = M.per_class_accuracy(s, y, 4)
    assert [r["support"] for r in rows] == [8, 1, 1, 0]
    assert [r["correct"] for r in rows] == [8, 0, 0, 0]
    assert [r["accuracy"] for r in rows] == [1.0, 0.0, 0.0, None]
    assert [r["accuracy"] for r in M.per_class_accuracy(s, y, 4, k=2)] == [1.0, 1.0, 0.0, None]


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(ScenectlError, match="labels"):
        M.topk_accuracy(SCORES, np.array([0, 1, 2, 3, 4, 0]), [1])  # label 4 with C = 4
    with pytest.raises(ScenectlError, match="labels"):
        M.topk_accuracy(SCORES, LABELS[:3], [1])
    with pytest.raises(ScenectlError, match="NaN"):
        M.topk_accuracy(np.full((2, 4), np.nan), [0, 1], [1])
    with pytest.raises(ScenectlError, match="num_classes"):
        M.balanced_topk_accuracy(SCORES, LABELS, [1], 5)


# --- a toy co-occurrence table ------------------------------------------------------------------------------------
# images (one entry per annotation):  [0,0,1] [0,1] [0] [2] [2] [0,2]     class 3 never appears
# N = 6; image counts n0 = 4, n1 = 2, n2 = 3, n3 = 0; pairs n01 = 2, n02 = 1, n12 = 0
# instance counts m = [5, 2, 3, 0] (total 10)
def toy_cooc() -> Cooccurrence:
    images = [[0, 0, 1], [0, 1], [0], [2], [2], [0, 2]]
    return Cooccurrence.count(images, coco_ids=[1, 2, 3, 4], names=["person", "dog", "boat", "toaster"])


def test_plausible_matrix_hand_computed():
    p = M.plausible_matrix(toy_cooc(), min_count=1)  # every count of the toy table is below the default threshold
    # PMI(0,1) = log[(2/6) / ((4/6)(2/6))] = log 1.5 > 0          -> plausible
    # PMI(0,2) = log[(1/6) / ((4/6)(3/6))] = log 0.5 < 0          -> not
    # PMI(1,2): never together (n12 = 0), PMI = -inf              -> not
    # diagonal: PMI(c,c) = log(N / n_c): log 1.5, log 3, log 2 > 0 -> plausible; class 3 (n3 = 0): nothing
    expected = np.array([
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
    ], dtype=bool)
    assert p.dtype == bool and (p == expected).all()
    assert (p == p.T).all()


def test_plausible_matrix_never_together_is_never_plausible():
    # two rare classes (one image each) that never meet, among many images: add-one smoothing of the joint,
    # (0 + 1)(N + 1) / ((1 + 1)(1 + 1)) = 101/4 > 1, would call them plausible; the PMI sign must not
    images = [[0], [1]] + [[2]] * 98
    p = M.plausible_matrix(Cooccurrence.count(images, [1, 2, 3], ["a", "b", "c"]), min_count=1)
    assert not p[0, 1] and not p[1, 0]
    # one shared image flips the sign, 100 * 1 > 1 * 1, but one image is below the default count threshold
    images = [[0, 1]] + [[2]] * 99
    table = Cooccurrence.count(images, [1, 2, 3], ["a", "b", "c"])
    assert M.plausible_matrix(table, min_count=1)[0, 1] and not M.plausible_matrix(table)[0, 1]


def test_plausible_pairs_need_min_count_images():
    # a and b share 3 of 100 images, a and c 2: both PMI > 0 (100 * 3 > 3 * 5, 100 * 2 > 3 * 2)
    images = [[0, 1]] * 3 + [[1]] * 2 + [[2, 0]] * 2 + [[2]] + [[3]] * 92
    table = Cooccurrence.count(images, [1, 2, 3, 4], list("abcd"))
    assert M.MIN_PAIR_COUNT == 3
    assert M.plausible_matrix(table)[0, 1] and not M.plausible_matrix(table)[0, 2]
    assert M.plausible_matrix(table, min_count=2)[0, 2] and not M.plausible_matrix(table, min_count=4)[0, 1]
    with pytest.raises(ScenectlError, match="threshold"):
        M.plausible_matrix(table, min_count=0)


def test_plausibility_at_k_hand_computed():
    p = M.plausible_matrix(toy_cooc(), min_count=1)
    visible = [[1], [], [2, 2], [1, 2]]
    scores = np.array([
        [.9, .1, .2, .8],  # top-2 = [0, 3]; V = {1}: 0 ok, 3 not            -> 1/2
        [.9, .8, .1, .1],  # V empty                                          -> excluded
        [.5, .1, .9, .2],  # top-2 = [2, 0]; V = {2}: 2 ok, 0 not (PMI(0,2)<0) -> 1/2
        [.9, .1, .8, .2],  # top-2 = [0, 2]; V = {1, 2}: 0 ok via 1, 2 ok via 2 -> 1
    ])
    expected = {"value": pytest.approx((0.5 + 0.5 + 1.0) / 3), "n": 3, "excluded": 1}
    assert M.plausibility_at_k(scores, visible, p, k=2) == expected
    # the same from already-ranked indices (extra columns beyond k are ignored)
    top = np.array([[0, 3, 1], [0, 1, 2], [2, 0, 3], [0, 2, 3]])
    assert M.plausibility_at_k(top, visible, p, k=2) == expected
    # k above C = 4 is clamped: every class counts; scene 0: {0, 1} of 4 -> 1/2; scene 2: {2} -> 1/4;
    # scene 3: {0, 1, 2} -> 3/4
    assert M.plausibility_at_k(scores, visible, p, k=10)["value"] == pytest.approx((1 / 2 + 1 / 4 + 3 / 4) / 3)
    with pytest.raises(ScenectlError):
        M.plausibility_at_k(top[:, :1], visible, p, k=2)  # too few ranked columns


def test_plausibility_all_excluded_is_none():
    p = M.plausible_matrix(toy_cooc(), min_count=1)
    assert M.plausibility_at_k(np.eye(4), [[], [], [], []], p, k=1) == {"value": None, "n": 0, "excluded": 4}


def test_plausibility_of_labels_is_top1_of_the_truth():
    p = M.plausible_matrix(toy_cooc(), min_count=1)
    visible = [[1], [], [2], [1, 2]]
    labels = np.array([0, 1, 0, 3])
    # scene 0: 0 with {1} ok; scene 1 excluded; scene 2: 0 with {2} not; scene 3: class 3 plausible with nothing
    out = M.plausibility_of_labels(labels, visible, p)
    assert out == {"value": pytest.approx(1 / 3), "n": 3, "excluded": 1}
    one_hot = np.eye(4)[labels]  # a top-1 prediction equal to the label gives the same number
    assert M.plausibility_at_k(one_hot, visible, p, k=1) == out


# --- baselines ----------------------------------------------------------------------------------------------------
def test_prior_scores_hand_computed():
    s = M.prior_scores(toy_cooc(), 3)
    # log[(m_c + 1) / (10 + 4)] with m = [5, 2, 3, 0]
    expected = np.log(np.array([6, 3, 4, 1]) / 14)
    assert s.shape == (3, 4)
    assert np.allclose(s, expected[None, :])
    assert np.exp(s[0]).sum() == pytest.approx(1.0)


def test_cooccurrence_naive_bayes_hand_computed():
    cooc = toy_cooc()
    visible = [[], [1], [2], [2, 2], [1, 2]]
    s = M.cooccurrence_scores(visible, cooc, alpha=1.0)
    prior = np.array([6, 3, 4, 1]) / 14  # P(c), as in the prior test
    # P(1 | c) = (n_c1 + 1) / (n_c + 2): c0 3/6, c1 3/4, c2 1/5, c3 1/2
    # P(2 | c) = (n_c2 + 1) / (n_c + 2): c0 2/6, c1 1/4, c2 4/5, c3 1/2
    p1 = np.array([3 / 6, 3 / 4, 1 / 5, 1 / 2])
    p2 = np.array([2 / 6, 1 / 4, 4 / 5, 1 / 2])
    assert np.allclose(s[0], np.log(prior))  # empty V: exactly the prior
    assert np.allclose(s[1], np.log(prior * p1))  # c0: 6/14 * 1/2 = 3/14 = log(0.214...)
    assert s[1][0] == pytest.approx(math.log(3 / 14))
    # V = {2}: c0 = 6/14 * 1/3 = 1/7 ~ .143, c2 = 4/14 * 4/5 = 8/35 ~ .229 -> context flips the argmax to 2
    assert s[2][2] == pytest.approx(math.log(8 / 35))
    assert np.argmax(s[0]) == 0 and np.argmax(s[2]) == 2
    assert np.allclose(s[3], s[2])  # repeats collapse: V is a set
    # V = {1, 2}: c0 = 6/14 * 1/2 * 1/3 = 1/14 ~ .071 beats c2 = 4/14 * 1/5 * 4/5 = 8/175 ~ .046
    assert np.allclose(s[4], np.log(prior * p1 * p2))
    assert np.argmax(s[4]) == 0


def test_random_scores_deterministic_by_seed():
    a, b, c = M.random_scores(5, 4, seed=3), M.random_scores(5, 4, seed=3), M.random_scores(5, 4, seed=4)
    assert a.shape == (5, 4) and (a == b).all() and not (a == c).all()
    assert ((a >= 0) & (a < 1)).all()


# --- reports ------------------------------------------------------------------------------------------------------
def test_summarize_schema_clamping_and_json():
    p = M.plausible_matrix(toy_cooc(), min_count=1)
    visible = [[1], [], [2], [1, 2], [1], [2]]
    out = M.summarize(SCORES, LABELS, visible, p, ks=[2], num_classes=4)
    assert set(out) == {"n", "topk", "topk_balanced", "plausibility@10", "plausibility_n", "plausibility_excluded",
                        "per_class", "clamped"}
    assert out["n"] == 6
    assert out["topk"] == pytest.approx({1: 0.5, 2: 4 / 6, 3: 5 / 6, 5: 1.0, 10: 1.0})  # 1, 3, 5, 10 always added
    assert out["topk_balanced"] == pytest.approx({1: 5 / 12, 2: 0.5, 3: 3 / 4, 5: 1.0, 10: 1.0})
    assert out["clamped"] == [5, 10]
    # plausibility@10 with C = 4 takes all four classes: share of plausible classes per scene,
    # {1} -> {0,1} 2/4, {2} -> {2} 1/4, {1,2} -> 3/4; scenes 0,2,3,4,5 -> (1/2 + 1/4 + 3/4 + 1/2 + 1/4) / 5
    assert out["plausibility@10"] == pytest.approx(2.25 / 5)
    assert (out["plausibility_n"], out["plausibility_excluded"]) == (5, 1)
    assert [r["support"] for r in out["per_class"]] == [3, 1, 1, 1]
    back = json.loads(json.dumps(out))  # int keys become strings in JSON
    assert back["topk"]["1"] == 0.5


def test_baselines_on_toy_table():
    cooc = toy_cooc()
    p = M.plausible_matrix(cooc)
    labels = np.array([0, 2, 2, 1])
    visible = [[1], [2], [], [0]]
    out = M.baselines(labels, visible, cooc, p, ks=[1], num_classes=4, seed=0)
    assert set(out) == {"prior", "cooccurrence", "random"}
    # prior ranks 0 first for every sample: only label 0 is a top-1 hit -> 1/4
    assert out["prior"]["topk"][1] == pytest.approx(0.25)
    # naive Bayes: V={1} -> argmax 0 (hit); V={2} -> 2 (hit); V={} -> prior 0 (miss);
    # V={0}: P(0|c) = c0 5/6, c1 3/4, c2 2/5, c3 1/2 -> c0 6/14*5/6 = .357, c1 3/14*3/4 = .161 -> 0 (miss) -> 2/4
    assert out["cooccurrence"]["topk"][1] == pytest.approx(0.5)
    assert out["random"] == M.baselines(labels, visible, cooc, p, ks=[1], num_classes=4, seed=0)["random"]


# --- out-of-context detection: ROC AUC from ranks, flag_report -------------------------------------------------
def test_roc_auc_hand_case_with_a_tie():
    # positives score 0.9 and 0.4, negatives 0.4 and 0.1. Pairs (pos > neg): 0.9>0.4, 0.9>0.1, 0.4=0.4 (1/2),
    # 0.4>0.1 -> 3.5 of 4 = 0.875. From ranks: 0.1 -> 1, the two 0.4 -> 2.5 each, 0.9 -> 4;
    # R_pos = 4 + 2.5 = 6.5;  AUC = (6.5 - 2*3/2) / (2*2) = 3.5 / 4 = 0.875
    assert M.roc_auc([0.9, 0.4, 0.4, 0.1], [True, True, False, False]) == pytest.approx(0.875)
    assert M.roc_auc([3, 2, 1], [1, 0, 0]) == 1.0  # perfect separation
    assert M.roc_auc([1, 2, 3], [1, 0, 0]) == 0.0  # perfectly wrong
    assert M.roc_auc([5, 5, 5, 5], [1, 0, 1, 0]) == 0.5  # all tied: chance


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.random(40) < 0.4
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a in s[y] for b in s[~y]]
    assert M.roc_auc(s, y) == pytest.approx(np.mean(pairs))


def test_roc_auc_refuses_one_class_and_nan():
    with pytest.raises(ScenectlError, match="both classes"):
        M.roc_auc([0.1, 0.2], [True, True])
    with pytest.raises(ScenectlError, match="NaN"):
        M.roc_auc([0.1, float("nan")], [True, False])


def test_flag_report_on_a_hand_case():
    cooc = Cooccurrence.count([[0, 1]] * 3 + [[2]] * 3, [1, 2, 3], ["a", "b", "c"])
    logits = np.log(np.array([[0.8, 0.1, 0.1],    # class 0 in context: confident
                              [0.6, 0.2, 0.2],    # class 0 in context
                              [0.1, 0.1, 0.8],    # class 0 out of context: the model expects 2
                              [0.3, 0.4, 0.3]]))  # class 0 out of context
    rep = M.flag_report(logits, np.array([0, 0, 0, 0]), np.array([False, False, True, True]),
                        [[1], [1], [2], [2]], cooc)
    assert rep["auc_context_model"] == 1.0  # every OOC sample is more surprising than every in-context one
    assert rep["subsets"]["in_context"]["p_true_mean"] == pytest.approx(0.7)
    assert rep["subsets"]["out_of_context"]["p_true_mean"] == pytest.approx(0.2)
    assert rep["subsets"]["out_of_context"]["true_class_plausible"] == 0.0
    assert rep["subsets"]["in_context"]["true_class_plausible"] == 1.0


# --- bootstrap intervals over images -----------------------------------------------------------------------------
def _simulated(rng, n_images: int, per_image: int, p: float, correlated: bool, c: int = 5):
    """One-hot predictions whose hits have expected rate p: independent across samples, or (correlated) with each
    image's own hit rate drawn from Beta(0.6, 0.4) (mean 0.6, intra-image correlation 0.5), so the instances of an
    image tend to be all right or all wrong, as the objects of one scene are."""
    image_ids = np.repeat(np.arange(n_images), per_image) * 7 + 1000  # ids need not be contiguous
    rate = rng.beta(0.6, 0.4, n_images) if correlated else np.full(n_images, p)
    hits = rng.random(image_ids.size) < np.repeat(rate, per_image)
    labels = rng.integers(0, c, image_ids.size)
    scores = np.eye(c)[np.where(hits, labels, (labels + 1) % c)]  # (N, C): the label ranks first iff a hit
    return scores, labels, image_ids


def _coverage(correlated: bool, by_image: bool, draws: int = 200, p: float = 0.6) -> float:
    """Share of `draws` simulated evaluations whose 95% top-1 interval holds the true accuracy p."""
    rng = np.random.default_rng(1)
    covered = 0
    for d in range(draws):
        scores, labels, image_ids = _simulated(rng, 100, 8, p, correlated)
        units = image_ids if by_image else np.arange(labels.size)  # instance level: every sample its own unit
        rs = M.image_resamples(units, 1000, seed=d)
        no_context = [[] for _ in labels]
        ci = M.interval(M.resampled_metrics(scores, labels, no_context, np.zeros((5, 5), bool), [1], rs)["top-1"])
        covered += ci[0] <= p <= ci[1]
    return covered / draws


@pytest.mark.slow
def test_image_bootstrap_covers_the_true_accuracy():
    assert 0.90 <= _coverage(correlated=False, by_image=True) <= 0.99
    assert 0.90 <= _coverage(correlated=True, by_image=True) <= 0.99


@pytest.mark.slow
def test_instance_bootstrap_is_too_narrow_when_instances_of_an_image_correlate():
    # design effect 1 + (8 - 1) * 0.5 = 4.5: instance-level intervals are about 1/sqrt(4.5) as wide as they should be
    assert _coverage(correlated=True, by_image=False) < 0.80


def test_resamples_draw_whole_images_reproducibly():
    ids = np.array([5, 5, 9, 2, 9, 9, -1, -1])  # -1: no image id, each such sample an image of its own
    rs = M.image_resamples(ids, 50, seed=3)
    assert rs.n_images == 5 and rs.unknown == 2 and rs.weights.shape == (50, 5)
    assert (rs.weights.sum(axis=1) == 5).all()  # every resample draws as many images as there are
    assert rs.groups[0] == rs.groups[1] and rs.groups[2] == rs.groups[4] == rs.groups[5] != rs.groups[0]
    assert rs.groups[6] != rs.groups[7]
    assert np.array_equal(rs.weights, M.image_resamples(ids, 50, seed=3).weights)
    assert not np.array_equal(rs.weights, M.image_resamples(ids, 50, seed=4).weights)
    assert M.image_resamples(ids, 0, seed=3).weights.shape == (0, 5)  # --bootstrap 0: grouping only
    with pytest.raises(ScenectlError):
        M.image_resamples([], 10, 0)


def test_resampled_metrics_on_the_original_sample_equal_summarize():
    rng = np.random.default_rng(0)
    n, c = 300, 6
    scores, labels = rng.random((n, c)), rng.integers(0, c, n)
    labels[labels == 5] = 4  # class 5 absent: excluded from the balanced mean, as in summarize
    visible = [rng.choice(c, size=rng.integers(0, 3), replace=False).tolist() for _ in range(n)]
    plausible = rng.random((c, c)) < 0.4
    plausible |= plausible.T
    rs = M.image_resamples(rng.integers(0, 60, n), 20, seed=0)
    point = M.point_metrics(scores, labels, visible, plausible, [1, 3, 5, 10], rs)
    expect = M.summarize(scores, labels, visible, plausible, [1, 3], c)
    for k in (1, 3, 5, 10):
        assert point[f"top-{k}"] == pytest.approx(expect["topk"][k])
        assert point[f"bal top-{k}"] == pytest.approx(expect["topk_balanced"][k])
    assert point["plaus@10"] == pytest.approx(expect["plausibility@10"])
    # ranked indices give the same numbers as the scores they were ranked from (eval --no-logits)
    assert M.point_metrics(M.ranking(scores)[:, :10], labels, visible, plausible, [1, 3, 5, 10], rs) == point
    # every resample's micro top-1 is the weighted mean of the hits, weights = times each image was drawn
    dist = M.resampled_metrics(scores, labels, visible, plausible, [1], rs)
    hits = M.topk_hits(scores, labels, [1])[1]
    w = rs.weights[:, rs.groups]  # (B, N)
    assert np.allclose(dist["top-1"], (w * hits).sum(1) / w.sum(1))
    assert dist["per_class"].shape == (20, c) and np.isnan(dist["per_class"][:, 5]).all()


def test_intervals_paired_differences_and_verdicts():
    assert M.interval(np.arange(101.0)) == pytest.approx([2.5, 97.5])
    assert M.interval([np.nan, np.nan]) is None
    assert M.interval([np.nan, 1.0, 3.0], level=1.0) == [1.0, 3.0]  # NaN resamples (metric undefined) left out
    assert M.verdict([-0.1, 0.2]) == "inconclusive" and M.verdict([0.0, 0.2]) == "inconclusive"
    assert M.verdict([0.01, 0.2]) == "higher" and M.verdict([-0.3, -0.01]) == "lower" and M.verdict(None) is None
    a = {"top-1": np.array([0.5, 0.6, 0.7]), "plaus@10": np.array([0.2, 0.2, 0.2])}
    b = {"top-1": np.array([0.4, 0.4, 0.4]), "plaus@10": np.array([0.2, 0.3, 0.1])}
    d = M.paired_differences(a, b, {"top-1": 0.6, "plaus@10": 0.2}, {"top-1": 0.4, "plaus@10": None}, level=1.0)
    assert d == {"top-1": {"difference": pytest.approx(0.2), "ci": pytest.approx([0.1, 0.3]), "verdict": "higher"}}
    nested = M.nest({"top-1": 1, "bal top-1": 2, "plaus@10": 3}, [1])
    assert nested == {"topk": {1: 1}, "topk_balanced": {1: 2}, "plausibility@10": 3}


# --- plausibility: attainable maximum, the true label as a k = 1 row --------------------------------------------------
def test_plausibility_ceiling_and_rows_hand_computed():
    p = M.plausible_matrix(toy_cooc(), min_count=1)  # plausible: {0,1} with each other and themselves, 2 with 2
    visible = [[1], [], [2], [1, 2]]
    # scene 0: V = {1} makes {0, 1} plausible (m = 2); scene 2: {2} (m = 1); scene 3: {0, 1, 2} (m = 3)
    # attainable plausibility@2 = mean(min(2, m) / 2) = (1 + 1/2 + 1) / 3; @1 = 1 everywhere
    assert M.plausibility_ceiling(visible, p, k=2) == {"value": pytest.approx(2.5 / 3), "n": 3, "excluded": 1}
    assert M.plausibility_ceiling(visible, p, k=1)["value"] == 1.0
    scores = np.array([[.1, .2, .9, .0], [1, 0, 0, 0], [.9, .1, .8, 0], [0, 0, 0, 1.]])
    labels = np.array([0, 1, 0, 3])
    rows = M.plausibility_rows(scores, labels, visible, p, k=2)
    # model @1: scene 0 predicts 2 (not with 1), scene 2 predicts 0 (not with 2), scene 3 predicts 3 -> 0
    # model @2: scene 0 [2, 1] -> 1/2; scene 2 [0, 2] -> 1/2; scene 3 [3, 0] -> 1/2
    # true label: scene 0: 0 with {1} yes; scene 2: 0 with {2} no; scene 3: 3 with nothing -> 1/3
    assert rows == {"k=1": {"model": 0.0, "true label": pytest.approx(1 / 3)},
                    "k=2": {"model": pytest.approx(0.5), "attainable maximum": pytest.approx(2.5 / 3)}}
    # no predictor beats the attainable maximum: the best one lists the plausible classes first
    best = p[[1, 0, 2, 1]].astype(float) + p[[1, 0, 2, 2]]  # (4, 4) scores favouring each scene's plausible classes
    assert M.plausibility_at_k(best, visible, p, k=2)["value"] == pytest.approx(2.5 / 3)


# --- top-3 and supercategories -------------------------------------------------------------------------------------
def test_field_ks_hold_top3_and_supercategory_topk_hand_computed():
    assert M.FIELD_KS == (1, 3, 5, 10)
    index, names = M.supercategory_index(["animal", "animal", "vehicle", "food"])
    assert index.tolist() == [0, 0, 1, 2] and names == ["animal", "vehicle", "food"]
    # SCORES' rankings (top of this file): 1 2 0 3 | 0 1 2 3 | 1 0 2 3 | 0 1 2 3 | 0 3 1 2 | 0 1 2 3
    # as supercategories, first-seen: A V F | A V F | A V F | A V F | A F V | A V F
    # true supercategories (labels 1 2 0 0 0 3): A V A A A F -> ranks 1 2 1 1 1 3
    assert M.supercategory_topk(SCORES, LABELS, index, ks=[1, 2, 3]) == pytest.approx({1: 4 / 6, 2: 5 / 6, 3: 1.0})
    assert M.supercategory_topk(M.ranking(SCORES), LABELS, index, ks=[1]) == pytest.approx({1: 4 / 6})
    with pytest.raises(ScenectlError, match="supercategory"):
        M.supercategory_index(["animal", ""])


# --- balanced accuracy over a declared class set; Wilson per-class intervals --------------------------------------
def test_declared_class_set_divides_every_resample_by_the_same_classes():
    y = np.array([0] * 6 + [1] * 5 + [2] * 4 + [3])  # classes 2 and 3 have fewer than 5 targets
    cls = M.declared_classes(y, 5)
    assert cls.record() == {"size": 2, "min_class_samples": 5, "sample_share": 11 / 16, "classes": [0, 1]}
    prior = np.tile([1.0, 0.5, 0.2, 0.1, 0.0], (16, 1))  # always ranks 0 first
    rs = M.image_resamples(np.arange(16) // 2, 200, seed=0)
    f = M.balanced_fields(prior, y, [1, 2], rs, cls)
    # over the declared set {0, 1}: top-1 is right on every 0, never on 1 -> 1/2; top-2 -> 1
    assert f["topk_balanced"] == {1: 0.5, 2: 1.0}
    assert f["topk_balanced_ci"] == {1: None, 2: None} and "constant predictor" in f["no_interval"]
    # every resample divides by the same set: the prior's balanced top-1 is 1/2 on each resample that draws both
    # classes; averaging over the classes PRESENT (resampled_metrics) gives 1/4 with all four classes, but 1/3 where
    # a resample misses class 3 (seen once): a distribution shifted above its own point
    fixed = M.resampled_balanced(prior, y, [1], rs, cls)["bal top-1"]
    assert np.all(fixed[np.isfinite(fixed)] == 0.5) and np.isfinite(fixed).mean() > 0.9
    present = M.resampled_metrics(prior, y, [[]] * 16, np.zeros((5, 5), bool), [1], rs)["bal top-1"]
    assert np.nanmean(present) > 0.26 and M.point_metrics(prior, y, [[]] * 16, np.zeros((5, 5), bool), [1],
                                                           rs)["bal top-1"] == 0.25
    model = np.eye(5)[np.where(np.arange(16) % 3 == 0, (y + 1) % 5, y)]  # right on 2 of 3 samples
    g = M.balanced_fields(model, y, [1], rs, cls)
    d = M.resampled_balanced(model, y, [1], rs, cls)["bal top-1"]
    assert g["no_interval"] is None and g["topk_balanced_ci"][1] == M.interval(d)
    withheld = M.balanced_fields(model, y, [1], rs, cls, no_interval="a label-only baseline")
    assert withheld["topk_balanced_ci"] == {1: None} and withheld["no_interval"] == "a label-only baseline"
    # identity resample = the balanced mean over the set: class 0 right on 4 of 6, class 1 on 3 of 5
    assert g["topk_balanced"][1] == pytest.approx((4 / 6 + 3 / 5) / 2)
    with pytest.raises(ScenectlError, match="min-class-samples"):
        M.declared_classes(y, 5, min_samples=7)


def _long_tail(rng, constant: bool, c: int = 40, n_images: int = 250):
    """A COCO-like test set: Zipf class frequencies, 1-4 targets per image, each class with its own true top-1
    accuracy, hits correlated within an image (a shared uniform draw half the time; the marginal rate stays
    exact). The constant predictor ranks class 0 first for every sample."""
    freq = 1 / np.arange(1, c + 1) ** 1.1
    acc = rng.beta(2, 3, c)
    per = rng.integers(1, 5, n_images)
    ids = np.repeat(np.arange(n_images), per)
    labels = rng.choice(c, size=ids.size, p=freq / freq.sum())
    u = np.where(rng.random(ids.size) < 0.5, np.repeat(rng.random(n_images), per), rng.random(ids.size))
    if constant:
        return np.tile(-np.arange(c, dtype=float), (ids.size, 1)), labels, ids, (np.arange(c) == 0).astype(float)
    hits = u < acc[labels]
    return np.eye(c)[np.where(hits, labels, (labels + 1) % c)], labels, ids, acc


def _balanced_coverage(constant: bool, draws: int) -> float:
    """Share of simulated test sets whose balanced top-1 (interval, or the exact point where none is given)
    holds the truth: the mean true accuracy over the declared class set."""
    rng = np.random.default_rng(5)
    covered = 0
    for d in range(draws):
        scores, labels, ids, acc = _long_tail(rng, constant)
        cls = M.declared_classes(labels, 40)
        f = M.balanced_fields(scores, labels, [1], M.image_resamples(ids, 500, seed=d), cls)
        truth, ci = acc[cls.classes].mean(), f["topk_balanced_ci"][1]
        covered += (f["topk_balanced"][1] == pytest.approx(truth)) if ci is None else ci[0] <= truth <= ci[1]
    return covered / draws


def test_balanced_bootstrap_covers_the_truth_of_the_declared_set():
    assert 0.90 <= _balanced_coverage(constant=False, draws=200) <= 0.995
    assert _balanced_coverage(constant=True, draws=20) == 1.0  # exact point, no interval


def test_wilson_and_the_design_effect():
    # Wilson 95% of 8/10 (textbook): [0.4902, 0.9433]
    assert M.wilson(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)
    # design effect 4 = the interval of 8/10 with n_eff = 2.5: as Wilson of 2/2.5
    assert M.wilson(8, 10, deff=4.0) == pytest.approx(M.wilson(2, 2.5))
    assert M.wilson(0, 7)[0] == 0.0 and M.wilson(7, 7)[1] == 1.0  # never a width-0 interval at 0 or 1
    rng = np.random.default_rng(0)
    image_hit = rng.random(200) < 0.5
    whole = np.repeat(image_hit, 4)  # the 4 targets of an image all right or all wrong: deff ~ 4
    rs = M.image_resamples(np.repeat(np.arange(200), 4), 2000, seed=0)
    assert 3.0 < M.design_effect(whole, rs) < 5.0
    independent = rng.random(800) < 0.5
    assert M.design_effect(independent, rs) < 1.5
    rows = M.per_class_accuracy(np.eye(3)[[0] * 6 + [1] * 4 + [2] * 2], np.array([0] * 6 + [1] * 4 + [2, 0]), 3)
    cis = M.per_class_wilson(rows, deff=2.0)
    assert cis[0] == pytest.approx(M.wilson(6, 7, deff=2.0)) and cis[1] is None and cis[2] is None  # < 5: hidden


# --- training seeds, Holm ------------------------------------------------------------------------------------------
def test_t_quantiles_match_tables():
    assert M.t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert M.t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)
    assert M.t_quantile(0.8, 4) == pytest.approx(0.940965, abs=1e-5)
    assert M.t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)


def test_one_seed_gives_the_image_interval_and_says_so():
    rng = np.random.default_rng(0)
    dist = rng.normal(0.5, 0.02, 2000)
    r = M.seed_interval(M.Arm.of([0.5], [dist]))
    assert r["ci"] == pytest.approx(M.interval(dist)) and r["image_ci"] == pytest.approx(r["ci"])
    assert r["notes"] == [M.NO_SEED_NOISE] and r["seed_se"] == 0
    assert M.seed_summary(M.Arm.of([0.5], [dist]))["note"] == M.NO_SEED_NOISE
    # the p-value agrees with the interval: it excludes 0 exactly when p < 0.05
    diff = M.seed_interval(M.Arm.of([0.52], [dist + 0.02]), M.Arm.of([0.5], [dist * 0 + 0.5 + rng.normal(0, .02, 2000)]))
    assert (diff["p"] < 0.05) == (diff["ci"][0] > 0 or diff["ci"][1] < 0)


def test_seed_variance_widens_the_interval_hand_computed():
    # image part: a symmetric distribution with percentile half-width h; seeds 0.50 0.54 0.58 (sd 0.04, S = 3)
    z = 1.959964
    dist = np.tile(np.array([-1.0, 1.0]), 1000) * 0.0  # no image noise at all: the seed part alone
    arm = M.Arm.of([0.50, 0.54, 0.58], [dist + 0.50, dist + 0.54, dist + 0.58])
    r = M.seed_interval(arm)
    # se = 0.04 / sqrt(3); df = 2; t = 4.302653 -> half-width 0.09937
    assert r["value"] == pytest.approx(0.54) and r["df"] == pytest.approx(2.0)
    assert r["ci"] == pytest.approx([0.54 - 4.302653 * 0.04 / math.sqrt(3), 0.54 + 4.302653 * 0.04 / math.sqrt(3)])
    assert M.seed_summary(arm) == {"seeds": 3, "per_seed": [0.50, 0.54, 0.58], "mean": pytest.approx(0.54),
                                   "seed_sd": pytest.approx(0.04), "note": None}
    # paired seeds: the shared seed effect cancels (b = a - 0.1 exactly: s_d = 0)
    other = M.Arm.of(arm.points - 0.1, list(arm.dists - 0.1))
    assert M.seed_interval(arm, other)["seed_se"] == pytest.approx(math.sqrt(2 * 0.04 ** 2 / 3))  # unpaired
    seeded = lambda a: M.Arm.of(a.points, list(a.dists), seeds=[0, 1, 2])  # noqa: E731
    paired = M.seed_interval(seeded(arm), seeded(other))
    assert paired["paired"] and paired["seed_se"] == pytest.approx(0.0) and paired["ci"] == pytest.approx([0.1, 0.1])
    # both parts: each side's image se (h / z) and the seed se add in quadrature
    h = 0.03
    noisy = np.where(np.arange(2000) % 2 == 0, -h, h) + np.random.default_rng(0).normal(0, 1e-9, 2000)
    r2 = M.seed_interval(M.Arm.of(arm.points, [noisy + p for p in arm.points]))
    total = (h / z) ** 2 + 0.04 ** 2 / 3
    df = total ** 2 / ((0.04 ** 2 / 3) ** 2 / 2)
    assert r2["df"] == pytest.approx(df, rel=1e-3)
    assert r2["ci"][1] - 0.54 == pytest.approx(M.t_quantile(0.975, df) * math.sqrt(total), rel=1e-3)
    assert r2["mdd"] == pytest.approx((M.t_quantile(0.975, df) + M.t_quantile(0.8, df)) * math.sqrt(total), rel=1e-3)


def test_holm_adjustment_and_words():
    assert M.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    z = 1.959964

    def result(value, se):  # a symmetric seed_interval-like record with infinite df
        p = 2 * (1 - M._t_cdf(abs(value) / se, math.inf))
        return {"value": value, "se": [se, se], "df": math.inf, "p": p, "ci": [value - z * se, value + z * se]}

    # unadjusted, all three exclude 0 (p = 0.001, 0.02, 0.04); Holm: 0.003 < .05, 0.04 < .05, 0.04 < .05
    family = {"a": result(3.2905, 1.0), "b": result(-2.3263, 1.0), "c": result(2.0537, 1.0), "gone": None}
    out = M.holm_verdicts(family, family="3 differences of one table")
    assert [out[n]["verdict"] for n in "abc"] == ["higher", "lower", "higher"] and out["gone"] is None
    assert out["c"]["p_holm"] == pytest.approx(0.04, abs=1e-4) and out["a"]["family_size"] == 3
    # a fourth, weaker comparison (p = 0.2) turns the step-down: 0.001 * 4, 0.02 * 3 = 0.06 -> stops at b
    family["d"] = result(1.2816, 1.0)
    out = M.holm_verdicts(family, family="4 differences")
    assert [out[n]["verdict"] for n in "abcd"] == ["higher", "inconclusive", "inconclusive", "inconclusive"]
    for r in out.values():  # the Holm interval excludes 0 exactly where the word is higher or lower
        if r is not None:
            assert (r["verdict"] != "inconclusive") == (r["ci_holm"][0] > 0 or r["ci_holm"][1] < 0)


def _arms(rng, effect: float, seed_sd: float = 0.04, n_images: int = 300, per_image: int = 3):
    """Two arms of three training seeds on the same images: each run's true accuracy is 0.5 (+ effect for arm
    a) plus its own seed effect (SD seed_sd); hits independent given the run. -> (Arm a, Arm b)."""
    ids = np.repeat(np.arange(n_images), per_image)
    labels = rng.integers(0, 5, ids.size)
    rs = M.image_resamples(ids, 400, seed=int(rng.integers(1 << 30)))
    arms = []
    for base in (0.5 + effect, 0.5):
        points, dists = [], []
        for _ in range(3):
            rate = base + rng.normal(0, seed_sd)
            hits = rng.random(ids.size) < rate
            scores = np.eye(5)[np.where(hits, labels, (labels + 1) % 5)]
            d = M.resampled_metrics(scores, labels, [[]] * ids.size, np.zeros((5, 5), bool), [1], rs)["top-1"]
            points.append(float(hits.mean()))
            dists.append(d)
        arms.append(M.Arm.of(points, dists))
    return arms


@pytest.mark.slow
def test_planted_difference_found_and_null_called_inconclusive():
    rng = np.random.default_rng(3)
    a, b = _arms(rng, effect=0.25)
    found = M.holm_verdicts({"planted": M.seed_interval(a, b)}, family="one comparison")["planted"]
    assert found["verdict"] == "higher" and found["ci"][0] > 0
    # null comparisons: the seed-aware interval keeps its level; the image-only one calls many nulls a difference
    seed_aware = image_only = 0
    for _ in range(40):
        a, b = _arms(rng, effect=0.0)
        r = M.seed_interval(a, b)
        seed_aware += r["ci"][0] > 0 or r["ci"][1] < 0
        image_only += r["image_ci"][0] > 0 or r["image_ci"][1] < 0
    assert seed_aware <= 4 and image_only >= 10
    r = M.holm_verdicts({"null": M.seed_interval(*_arms(np.random.default_rng(11), 0.0))}, family="one")
    assert r["null"]["verdict"] == "inconclusive"


def test_seed_table_words_every_difference_over_one_family():
    rng = np.random.default_rng(7)
    ids = np.repeat(np.arange(200), 3)
    labels = rng.integers(0, 5, ids.size)
    rs = M.image_resamples(ids, 300, seed=0)
    none = [[] for _ in labels]

    def runs(rate: float, seeds):
        out = []
        for s in seeds:
            hits = rng.random(ids.size) < rate + 0.01 * s
            scores = np.eye(5)[np.where(hits, labels, (labels + 1) % 5)]
            args = (scores, labels, none, np.zeros((5, 5), bool), [1, 3], rs)
            out.append(M.SeedRun(M.point_metrics(*args), M.resampled_metrics(*args), s))
        return out

    arms = {"base": runs(0.4, [0, 1, 2]), "better": runs(0.7, [0, 1, 2]), "same": runs(0.4, [0, 1, 2]),
            "single": runs(0.4, [5])}
    names = ["top-1", "top-3", "plaus@10"]  # plausibility is undefined here (no scene has a visible class)
    t = M.seed_table(arms, "base", names)
    assert t["family"].startswith("3 arm(s) minus base on 3 metrics: 6 differences, Holm")
    assert t["differences"]["better"]["top-1"]["verdict"] == "higher"
    assert t["differences"]["better"]["top-1"]["family_size"] == 6 and t["differences"]["better"]["top-1"]["paired"]
    assert t["differences"]["same"]["top-1"]["verdict"] == "inconclusive"
    assert t["differences"]["better"]["plaus@10"] is None and t["arms"]["base"]["plaus@10"] is None
    assert t["arms"]["better"]["top-1"]["seeds"] == 3 and len(t["arms"]["better"]["top-1"]["per_seed"]) == 3
    assert t["arms"]["single"]["top-1"]["note"] == M.NO_SEED_NOISE
    assert M.NO_SEED_NOISE in t["differences"]["single"]["top-1"]["notes"]
    for by_metric in t["differences"].values():  # finite df, asymmetric sides: the words still match ci_holm
        for r in filter(None, by_metric.values()):
            assert (r["verdict"] != "inconclusive") == (r["ci_holm"][0] > 0 or r["ci_holm"][1] < 0)
            assert r["ci_holm"][0] <= r["ci"][0] and r["ci_holm"][1] >= r["ci"][1]  # never narrower
    # two seeds (t with 1 df): intervals of shares stay within [0, 1], of differences within [-1, 1]
    wild = {"base": runs(0.4, [0, 1]), "other": runs(0.4, [0, 55])}  # top-1 about 0.4 and 0.95: seed SD 0.39
    raw = M.seed_interval(M._arm(wild["other"], "top-1"))
    assert raw["ci"][0] < 0 and raw["ci"][1] > 1  # the t interval itself reaches past, so the clip is tested
    two = M.seed_table(wild, "base", ["top-1"])
    assert two["arms"]["other"]["top-1"]["ci"] == [0.0, 1.0]
    assert all(-1 <= v <= 1 for v in two["differences"]["other"]["top-1"]["ci_holm"])
    with pytest.raises(ScenectlError, match="reference"):
        M.seed_table(arms, "missing", names)
