"""transfer/distill targets and export-imagefolder read shard sets through the one shard reader
(scenectl.data.imagefolder over scenectl.data.loader): a damaged set is refused by both."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

from damaged_sets import damage
from scenectl.data.export import export_imagefolder
from scenectl.data.configs import ExportConfig
from scenectl.data.imagefolder import make_loader, open_target
from scenectl.errors import ScenectlError
from kit import write_shards

KINDS = [None, "zero_sample_shard", "keys_across_shards", "cls_disagrees_with_json", "truncated_tar"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("imagefolder") / "src", n=12, per_shard=12, size=16, with_object=True)


@pytest.mark.parametrize("kind", KINDS)
def test_export_imagefolder_reads_through_the_reader(source, tmp_path, kind):
    d = damage(source, tmp_path / "set", kind)
    cfg = ExportConfig(shards=str(d.path), out=str(tmp_path / "out"))
    if kind is None:
        assert export_imagefolder(cfg)["images"] == len(list((tmp_path / "out").rglob("*.jpg"))) == 12
        return
    with pytest.raises(ScenectlError, match=d.match):
        export_imagefolder(cfg)
    assert not (tmp_path / "out" / "export.json").exists()  # the folder never looks complete


@pytest.mark.parametrize("kind", KINDS)
def test_a_shard_target_is_read_by_the_object_view(source, tmp_path, kind):
    d = damage(source, tmp_path / "set", kind)
    loader = make_loader(open_target(str(d.path)), image_size=16, batch_size=5)
    if kind is None:
        batches = list(loader)
        assert sum(len(b["key"]) for b in batches) == 12 and batches[0]["input"].shape == (5, 3, 16, 16)
        return
    with pytest.raises(ScenectlError, match=d.match):
        list(loader)


def test_a_fifo_among_a_folders_images_is_an_error_naming_it(tmp_path):
    """transfer/distill's ImageFolder targets open images through io.open_regular (issue 23: a FIFO hung the run,
    and SIGTERM with it)."""
    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.jpg")
    os.mkfifo(tmp_path / "b" / "2.jpg")
    loader = make_loader(open_target(str(tmp_path)), image_size=8, batch_size=5)
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("reading the folder hung on a FIFO"))
    signal.alarm(20)
    try:
        with pytest.raises(ScenectlError, match="b/2.jpg is not a regular file"):
            list(loader)
    finally:
        signal.alarm(0)
