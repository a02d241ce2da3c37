"""Fixtures of the fault suite: one small shard set of COCO-format images and a briefly trained checkpoint on it.

"real" means built by the product from an annotation file and its JPEGs (coco_sample: ../shared/data/coco-sample,
or its synthetic stand-in where that is absent), as opposed to the hand-made inputs of single tests.

    real_source   (annotations, images): the first 10 val2017 images of coco_sample
    real_set      shard set of real_source: 48 px, --with-object, maxcount 8 (several shards)
    real_ckpt     best.pt of 2 training steps (resnet18, CPU) on real_set
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faultkit import build, subset


@pytest.fixture(scope="session")
def real_source(coco_sample, tmp_path_factory) -> tuple[Path, Path]:
    return subset(coco_sample, tmp_path_factory.mktemp("faults-src"), n=10)


@pytest.fixture(scope="session")
def real_set(real_source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults-set") / "val"
    build(real_source, out, with_object=True, maxcount=8)
    return out


@pytest.fixture(scope="session")
def real_ckpt(real_set, tmp_path_factory) -> Path:
    from scenectl.train import TrainConfig, train

    run = tmp_path_factory.mktemp("faults-run") / "run"
    train(TrainConfig(shards=str(real_set), val_shards=str(real_set), out=str(run), epochs=1, steps_per_epoch=2,
                      batch_size=4, workers=0, device="cpu", log_every=0, checkpoint_every=0, shuffle_buffer=8))
    return run / "best.pt"
