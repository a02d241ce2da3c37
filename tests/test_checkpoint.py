"""scenectl.checkpoint: one reader that validates what every command relies on."""

from __future__ import annotations

import os

import pytest
import torch

from scenectl.checkpoint import read_checkpoint, save_checkpoint
from scenectl.errors import ScenectlError
from scenectl.models import create_model

CLASSES = [{"index": i, "coco_id": 10 + i, "name": f"c{i}"} for i in range(3)]


def _good(**over) -> dict:
    model = create_model("resnet18", 3, 4)
    return {"kind": "context", "arch": "resnet18", "in_chans": 4, "num_classes": 3, "mask_channel": True,
            "image_size": 32, "model": {f"module.{k}": v for k, v in model.state_dict().items()},
            "classes": CLASSES, "config": {"seed": 0}, **over}


def test_round_trip_gives_a_working_model(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _good())
    ck = read_checkpoint(tmp_path / "c.pt")
    assert (ck.arch, ck.num_classes, ck.in_chans, ck.mask_channel, ck.image_size) == ("resnet18", 3, 4, True, 32)
    model = ck.build_model()  # the DDP `module.` prefix is dropped
    assert not model.training and model(torch.zeros(1, 4, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("field,value,why", [
    ("arch", "vgg16", "unknown model"), ("arch", None, "missing"), ("in_chans", 5, "not an integer in"),
    ("image_size", -3, "not an integer in"), ("image_size", "256", "not an integer in"),
    ("mask_channel", False, "disagrees with in_chans"), ("num_classes", 7, "differs from the 3 classes"),
    ("classes", [{"index": 1, "coco_id": 1, "name": "a"}], "entry 0"), ("kind", "other", "not one of"),
    ("model", {"w": "not a tensor"}, "not a dict of tensors"), ("config", [1], "is not a dict"),
])
def test_bad_fields_are_named(tmp_path, field, value, why):
    save_checkpoint(tmp_path / "c.pt", _good(**{field: value}))
    with pytest.raises(ScenectlError, match=f"field '{field}' .*{why}"):
        read_checkpoint(tmp_path / "c.pt")


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "t.pt").write_text("hello world\n")
    with pytest.raises(ScenectlError, match="is not a readable scenectl checkpoint .truncated or corrupt"):
        read_checkpoint(tmp_path / "t.pt")
    for name, data in [("x.pt", b"x"), ("noise.pt", bytes(range(131, 256)) * 20)]:  # bytes a pickle reader rejects
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ScenectlError, match=f"{name} is not a scenectl checkpoint .not a readable torch file"):
            read_checkpoint(tmp_path / name)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(ScenectlError, match="no 'scenectl-checkpoint/1' format tag"):
        read_checkpoint(tmp_path / "plain.pt")

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"format": "scenectl-checkpoint/1", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ScenectlError, match="refusing to load .* never unpickles code"):
        read_checkpoint(tmp_path / "evil.pt")
