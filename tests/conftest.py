"""Session-wide fixtures: COCO-format data (the real excerpts in ../shared/data, else synthetic scenes in COCO's
layout, so a fresh clone runs the same tests), and small synthetic scenes and shards.

    shared_data        a folder laid out like ../shared/data: coco-sample/ and coco128/ (real, or synthetic stand-ins)
    coco_sample        a COCO-layout root (annotations/instances_{train,val}2017.json, train2017/, val2017/):
                       ../shared/data/coco-sample, else `synthetic_coco`
    synthetic_coco     synthetic stand-in for coco-sample (160 train / 80 val images, 16 categories, a crowd
                       annotation in uncompressed RLE in every 5th image where it fits), generated once
    synthetic_scenes   Path to synthetic scenes in COCO layout (120 train / 40 val images, no crowds), generated once
    synthetic_shards   {'train': Path, 'val': Path}: shard sets built once from synthetic_scenes
                       (image_size 64, shape square, with_object, workers 1)
    trained_checkpoint best.pt of 2 training steps (resnet18, CPU) on synthetic_shards, trained once: the small
                       trained checkpoint of every test that needs one (tests must not write to it)

Shared helpers that are not fixtures (shard writer, checkpoint maker, brief training) are in tests/kit.py.

Tests that use coco_sample must hold on both kinds of data: they compute what they expect from the annotation file
(counts, categories, which image has what) rather than from facts of real COCO. To run the suite as a clone without
../shared would, point $SCENECTL_TEST_SHARED at a folder that does not exist:

    SCENECTL_TEST_SHARED=/nonexistent python3 -m pytest -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED_ENV = "SCENECTL_TEST_SHARED"  # the real-data folder; default ../shared/data beside the repository
SHARED_DATA = Path(os.environ.get(SHARED_ENV) or Path(__file__).resolve().parents[1].parent / "shared" / "data")
REAL_COCO_SAMPLE = SHARED_DATA / "coco-sample"


def _real_coco_sample() -> bool:
    return all((REAL_COCO_SAMPLE / "annotations" / f"instances_{s}.json").is_file() for s in ("train2017", "val2017"))


def pytest_report_header(config) -> str:
    if _real_coco_sample():
        return f"COCO-format test data: real excerpts in {SHARED_DATA}"
    return f"COCO-format test data: synthetic scenes ({REAL_COCO_SAMPLE} not found; ${SHARED_ENV} sets the folder)"


def _generate(tmp_path_factory: pytest.TempPathFactory, name: str, **kw) -> Path:
    from scenectl.data.synthetic import generate_scenes

    out = tmp_path_factory.mktemp(name) / "scenes"
    generate_scenes(out=out, seed=0, **kw)
    return out


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "synthetic-coco", n_train=160, n_val=80, crowd_every=5)


@pytest.fixture(scope="session")
def coco_sample(request: pytest.FixtureRequest) -> Path:
    return REAL_COCO_SAMPLE if _real_coco_sample() else request.getfixturevalue("synthetic_coco")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread for the whole suite (and, through OMP_NUM_THREADS, for the commands it starts as
    subprocesses): the tests' models are small, DataLoader workers share the same cores, and OpenMP threads
    spinning against them on a 2-core machine made runs many times slower."""
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """../shared/data, else a folder of the same layout: coco-sample (synthetic_coco) and coco128 (its first 128
    train2017 images, as the real coco128 holds the first 128 of coco-sample's train2017)."""
    if _real_coco_sample():
        return SHARED_DATA
    sample = request.getfixturevalue("synthetic_coco")
    root = tmp_path_factory.mktemp("shared-data")
    (root / "coco-sample").symlink_to(sample, target_is_directory=True)
    data = json.loads((sample / "annotations" / "instances_train2017.json").read_text())
    data["images"] = sorted(data["images"], key=lambda im: im["id"])[:128]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    (root / "coco128" / "annotations").mkdir(parents=True)
    (root / "coco128" / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    (root / "coco128" / "train2017").mkdir()
    for im in data["images"]:
        (root / "coco128" / "train2017" / im["file_name"]).symlink_to(sample / "train2017" / im["file_name"])
    return root


@pytest.fixture(scope="session")
def synthetic_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory, "synthetic", n_train=120, n_val=40)


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from scenectl.data.shards import BuildConfig, build_shards

    root = tmp_path_factory.mktemp("synthetic-shards")
    sets = {}
    for name, split in (("train", "train2017"), ("val", "val2017")):
        cfg = BuildConfig(out=root / split, coco_root=synthetic_scenes, split=split, image_size=64, shape="square",
                          with_object=True, workers=1, progress=False)
        build_shards(cfg, echo=lambda s: None)
        sets[name] = cfg.out
    return sets


@pytest.fixture(scope="session")
def trained_checkpoint(synthetic_shards: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kit import brief_training

    return brief_training(synthetic_shards["train"], synthetic_shards["val"], tmp_path_factory.mktemp("trained") / "run")
