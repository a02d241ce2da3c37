"""Every training batch is a sample of the whole split (scenectl.data.loader's training streams, docs/training.md).

The adversarial set: samples written sorted by class, so each shard holds a few classes and each shard's first
samples differ from its last (the old image-id order of build-shards is the mild form of this). Over one epoch the
batch x class table of the real training loader (DataLoader workers, ranks simulated by rank / world_size) must be
as homogeneous as a random partition of the same samples into batches: a chi-square statistic compared with its
permutation null. Batches that each come from one stream's few shards, or from one end of a shard, fail it; an
epoch that draws a sample twice (a stream resampling shards) fails the coverage check.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from kit import write_shards

from scenectl.data.loader import SHARDS_OPEN, TrainBatches, _stream_share, make_train_loader, open_shard_set

N_CLASSES = 8
BATCH = 16
CLASSES = [{"index": i, "coco_id": i + 1, "name": f"c{i}"} for i in range(N_CLASSES)]


def sorted_set(folder: Path, shards: int, per_shard: int) -> Path:
    """`shards` shards of `per_shard` samples, classes in ascending order across the whole set (equal counts)."""
    n = shards * per_shard
    labels = [i * N_CLASSES // n for i in range(n)]
    return write_shards(folder, per_shard=per_shard, size=16, classes=CLASSES, labels=labels)


def chi2(table: np.ndarray) -> float:
    """Pearson's chi-square of a batches x classes count table (B, C)."""
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return float(((table - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())


def homogeneity_p(batches: list[np.ndarray], permutations: int = 999, seed: int = 0) -> float:
    """Permutation p-value of the batch x class chi-square: the null deals the same labels into batches of the
    same sizes at random (an ideal epoch shuffle)."""
    labels = np.concatenate(batches)
    batch_of = np.repeat(np.arange(len(batches)), [len(b) for b in batches])
    shape = (len(batches), N_CLASSES)

    def stat(lab: np.ndarray) -> float:
        return chi2(np.bincount(batch_of * N_CLASSES + lab, minlength=shape[0] * shape[1]).reshape(shape))

    rng = np.random.default_rng(seed)
    observed = stat(labels)
    null = np.array([stat(rng.permutation(labels)) for _ in range(permutations)])
    return float((1 + (null >= observed).sum()) / (1 + permutations))


@pytest.mark.parametrize("shards,workers,ranks", [(1, 2, 1), (2, 2, 1), (3, 2, 1), pytest.param(16, 4, 1, marks=pytest.mark.slow),
                                                   pytest.param(4, 2, 2, marks=pytest.mark.slow)])
def test_each_batch_is_a_sample_of_the_split(tmp_path, shards, workers, ranks):
    per_shard = {1: 128, 2: 64, 3: 64, 16: 16, 4: 64}[shards]  # samples: a multiple of batch x streams
    s = open_shard_set(sorted_set(tmp_path / "set", shards, per_shard))
    steps = s.num_samples // (BATCH * ranks)  # one epoch, as `scenectl train` sizes it
    labels, keys = [], []
    for rank in range(ranks):
        for b in make_train_loader(s, TrainBatches(steps=steps, batch_size=BATCH, image_size=8, seed=0, epoch=0,
                                                   rank=rank, world_size=ranks, workers=workers)):
            labels.append(b["label"].numpy())
            keys += b["key"]
    assert len(labels) == steps * ranks
    assert len(set(keys)) == len(keys) == s.num_samples  # the epoch is one pass: every sample once
    p = homogeneity_p(labels)
    assert p > 0.01, f"batch x class table not homogeneous (permutation p = {p:.3f})"


def test_the_homogeneity_test_rejects_batches_of_one_shard():
    """The statistic itself: batches cut from the class-sorted order are rejected, shuffled ones are not."""
    labels = np.repeat(np.arange(N_CLASSES), 32)
    assert homogeneity_p(np.split(labels, 16)) <= 0.001
    assert homogeneity_p(np.split(np.random.default_rng(1).permutation(labels), 16)) > 0.01


@pytest.mark.parametrize("shards,streams", [(1, 2), (3, 2), (31, 4), (32, 2), (64, 4), (100, 8), (40, 3)])
def test_streams_split_samples_of_few_shards_and_shards_of_many(shards, streams):
    """Each sample of the set belongs to exactly one stream's share; a set of fewer than 2 x SHARDS_OPEN shards is
    read whole by every stream, one of at least SHARDS_OPEN x streams shards is dealt out shard by shard (each shard
    read by one stream), and in between every stream reads at least SHARDS_OPEN shards."""
    rng = np.random.default_rng(shards)
    sizes = {f"s{i}.tar": int(rng.integers(1, 50)) for i in range(shards)}
    shares = [_stream_share(list(sizes), sizes, [0, 3, g, streams]) for g in range(streams)]
    kept = Counter((u, j) for sh in shares for u in sh.shards for j in range(sizes[u])
                   if (sh.offsets[u] + j) % sh.m == sh.k)
    assert kept == Counter((u, j) for u, n in sizes.items() for j in range(n))
    assert sum(sh.per_pass for sh in shares) == sum(sizes.values())
    reads = Counter(u for sh in shares for u in sh.shards)  # streams reading each shard
    if shards < 2 * SHARDS_OPEN:
        assert all(reads[u] == streams for u in sizes)
    if shards >= SHARDS_OPEN * streams:
        assert all(reads[u] == 1 for u in sizes)
    assert all(len(sh.shards) >= min(shards, SHARDS_OPEN) for sh in shares)
