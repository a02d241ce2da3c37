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
from kit import brief_training


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
    """Not the suite's `trained_checkpoint`: the fault tests feed this model sets derived from real_set (COCO's
    classes, 48 px), so it must be trained on real_set's class list."""
    return brief_training(real_set, real_set, tmp_path_factory.mktemp("faults-run") / "run")
