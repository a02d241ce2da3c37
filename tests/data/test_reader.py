"""Every kind of damaged shard set is refused by the one shard reader (scenectl.data.loader) for every view, by the
eval and the train pipeline alike, and counted instead with skip_corrupt (tests/damaged_sets.py makes the sets)."""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from damaged_sets import KINDS, damage
from scenectl.data.loader import EvalBatches, TrainBatches, make_eval_loader, make_train_loader, open_shard_set
from scenectl.errors import ScenectlError
from kit import write_shards

READ_KINDS = [k for k in KINDS if k != "shard_listed_twice"]
VIEWS = {"scene": {}, "object": {"view": "object"}, "object+scene": {"view": "object", "scene_size": 16}}
# eval with skip_corrupt: (samples delivered, skip count) for 12 samples in 3 shards of 4
SKIPPED = {"zero_sample_shard": (8, 1), "shard_copied": (12, 4), "fewer_than_manifest": (11, 1),
           "more_than_manifest": (13, 1), "keys_across_shards": (11, 1), "key_twice_in_shard": (11, 1),
           "cls_disagrees_with_json": (11, 1)}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("reader") / "src", n=12, per_shard=12, size=16, with_object=True)


@pytest.fixture(scope="module")
def damaged(source, tmp_path_factory):
    root, made = tmp_path_factory.mktemp("damaged"), {}

    def get(kind: str | None):
        if kind not in made:
            made[kind] = damage(source, root / str(kind), kind)
        return made[kind]

    return get


def _eval(d, skip_corrupt=False, workers=0, **view):
    loader = make_eval_loader(open_shard_set(d.path), EvalBatches(image_size=16, batch_size=5, workers=workers,
                              skip_corrupt=skip_corrupt, **view))
    return [k for b in loader for k in b["key"]], loader.skipped


def _train(d, skip_corrupt=False, **view):  # 24 samples drawn from a set of 12: every shard is read
    loader = make_train_loader(open_shard_set(d.path), TrainBatches(steps=6, batch_size=4, image_size=16,
                                                                    shuffle_buffer=4, skip_corrupt=skip_corrupt, **view))
    return [k for b in loader for k in b["key"]], loader.skipped


@pytest.mark.parametrize("view", VIEWS)
def test_the_undamaged_copy_reads_whole(damaged, view):
    d = damaged(None)
    keys, skipped = _eval(d, **VIEWS[view])
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 12 and skipped == 0
    keys, skipped = _train(d, **VIEWS[view])
    assert len(keys) == 24 and skipped == 0


@pytest.mark.parametrize("view", VIEWS)
def test_a_shard_listed_twice_is_refused_at_open(damaged, view):
    d = damaged("shard_listed_twice")
    assert d.at_open
    with pytest.raises(ScenectlError, match=d.match):
        open_shard_set(d.path)


@pytest.mark.parametrize("pipeline", ["eval", "train"])
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("kind", READ_KINDS)
def test_every_view_and_pipeline_refuses(damaged, kind, view, pipeline):
    d = damaged(kind)
    with pytest.raises(ScenectlError, match=d.match):
        (_eval if pipeline == "eval" else _train)(d, **VIEWS[view])


@pytest.mark.parametrize("view", ["scene", "object"])
@pytest.mark.parametrize("kind", READ_KINDS)
def test_skip_corrupt_counts_instead(damaged, kind, view):
    d = damaged(kind)
    keys, skipped = _eval(d, skip_corrupt=True, **VIEWS[view])
    assert len(keys) == len(set(keys)), "a duplicate key got through"
    if kind == "truncated_tar":  # the shard's samples after the cut are lost with it; the sample cut in two
        assert skipped in (1, 2) and 8 <= len(keys) < 12  # (its members before the cut) may count too
    else:
        assert (len(keys), skipped) == SKIPPED[kind]
    keys, skipped = _train(d, skip_corrupt=True, **VIEWS[view])
    assert len(keys) == 24 and skipped >= 1


@pytest.mark.parametrize("kind", ["keys_across_shards", "shard_copied", "zero_sample_shard"])
def test_eval_with_workers_refuses(damaged, kind):
    """Duplicate keys in shards read by different DataLoader workers are caught where the batches meet."""
    d = damaged(kind)
    with pytest.raises(ScenectlError, match=d.match):
        _eval(d, workers=2, view="object")


@pytest.mark.parametrize("pipeline", ["eval", "train"])
def test_a_shard_that_is_a_fifo_is_refused_never_a_hang(damaged, tmp_path, pipeline):
    """A FIFO in a shard's place is a one-line error naming it, never a read that blocks the run (and its stop
    signals) for good: open_shard_set takes only regular files as shards, and remote.open_stream opens a local
    shard through io.open_regular (a shard swapped for a FIFO after the set was opened)."""
    d = damaged(None)
    folder = shutil.copytree(d.path, tmp_path / "set")
    shard = sorted(folder.glob("*.tar"))[1]
    shard.unlink()
    os.mkfifo(shard)
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("the reader hung on a FIFO shard"))
    signal.alarm(60)
    try:
        with pytest.raises(ScenectlError, match=shard.name):
            (_eval if pipeline == "eval" else _train)(replace(d, path=folder))
    finally:
        signal.alarm(0)
