"""Session-wide fixtures: the real COCO excerpts in ../shared/data, and small synthetic scenes and shards.

    shared_data        Path to ../shared/data (skips where absent, e.g. a user's clone)
    coco_sample        Path to ../shared/data/coco-sample (COCO layout: annotations/, train2017/, val2017/)
    synthetic_scenes   Path to synthetic scenes in COCO layout (120 train / 40 val images), generated once
    synthetic_shards   {'train': Path, 'val': Path}: shard sets built once from synthetic_scenes
                       (image_size 64, shape square, with_object, workers 1)
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real COCO excerpts not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco_sample(shared_data: Path) -> Path:
    path = shared_data / "coco-sample"
    if not (path / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def synthetic_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        from scenectl.data.synthetic import generate_scenes
    except ImportError:
        pytest.skip("scenectl.data.synthetic is not available")
    out = tmp_path_factory.mktemp("synthetic") / "scenes"
    generate_scenes(out=out, n_train=120, n_val=40, seed=0)
    return out


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
