"""scenectl.checkpoint: one reader that validates what every command relies on."""

from __future__ import annotations

import os
from dataclasses import asdict

import pytest
import torch

import kit
from scenectl.checkpoint import BuildParams, TrainingShards, read_checkpoint, save_checkpoint
from scenectl.errors import ScenectlError

CLASSES = [{"index": i, "coco_id": 10 + i, "name": f"c{i}"} for i in range(3)]


def _good(**over) -> dict:
    record = kit.checkpoint_record(CLASSES, config={"seed": 0})
    return {**record, "model": {f"module.{k}": v for k, v in record["model"].items()}, **over}  # as DDP saves it


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


# --- the training shards: a typed fact, validated when read --------------------------------------------------------
PARAMS = {"shape": "circle", "fill": "noise", "margin": 5, "image_size": 48, "max_area": 0.25, "seed": 3}


def test_training_shards_are_a_typed_fact(tmp_path):
    shards = TrainingShards("shards/train2017", BuildParams.parse(PARAMS, "manifest"))
    save_checkpoint(tmp_path / "c.pt", _good(training_shards=asdict(shards)))
    assert read_checkpoint(tmp_path / "c.pt").training_shards == shards
    assert shards.params == BuildParams("circle", "noise", 5, 48, 0.25)  # other manifest params are not facts here
    # a checkpoint written before the record: the shard set its config names, build params unknown
    save_checkpoint(tmp_path / "old.pt", _good(config={"data": {"shards": ["a", "b"]}}))
    assert read_checkpoint(tmp_path / "old.pt").training_shards == TrainingShards("a")
    save_checkpoint(tmp_path / "none.pt", _good())
    assert read_checkpoint(tmp_path / "none.pt").training_shards is None
    # an incomplete manifest records no params rather than half of them
    assert BuildParams.of_manifest({"params": {"image_size": 32}}, "m") is None


@pytest.mark.parametrize("fact,why", [
    ("shards/train", "is not {spec: str, params: dict}"), ({"spec": ""}, "is not {spec: str, params: dict}"),
    ({"spec": "s", "params": {**PARAMS, "shape": "hexagon"}}, "build param 'shape' is 'hexagon'"),
    ({"spec": "s", "params": {**PARAMS, "margin": -1}}, "build param 'margin' is -1"),
    ({"spec": "s", "params": {**PARAMS, "max_area": True}}, "build param 'max_area' is True"),
    ({"spec": "s", "params": [1]}, "the build params are not a dict"),
])
def test_bad_training_shards_are_named(tmp_path, fact, why):
    save_checkpoint(tmp_path / "c.pt", _good(training_shards=fact))
    with pytest.raises(ScenectlError, match=f"c.pt: field 'training_shards'.*{why}"):
        read_checkpoint(tmp_path / "c.pt")


def _weights(change) -> dict:
    record = kit.checkpoint_record(CLASSES)
    change(record)
    return record


CRAFTED = {  # issue 23: each loads with weights_only=True, and crashed or allocated mid-way on the previous main
    "0-d aux head": (lambda r: r.update(aux_visible=1.0, model={**r["model"], "aux_fc.weight": torch.tensor(1.0)}),
                     "aux_fc.weight"),
    "empty weight": (lambda r: r["model"].update({"fc.weight": torch.zeros(0)}), "fc.weight has shape \\(0,\\)"),
    "stride-0 head of 10^5 classes": (lambda r: r.update(
        classes=[{"index": i, "coco_id": i, "name": f"c{i}"} for i in range(100_000)], num_classes=100_000,
        model={**r["model"], "fc.weight": torch.zeros(1).expand(100_000, 512),
               "fc.bias": torch.zeros(1).expand(100_000)}), "stride-0"),
    "NaN weight": (lambda r: r["model"]["conv1.weight"].view(-1)[0].fill_(float("nan")), "NaN"),
    "integer weight": (lambda r: r["model"].update({"fc.bias": torch.zeros(3, dtype=torch.int64)}), "dense"),
    "stride-0 co-occurrence": (lambda r: r.update(cooccurrence={
        "cooccurrence": torch.zeros(1, dtype=torch.int64).expand(3, 3), "image_counts": torch.zeros(3, dtype=torch.int64),
        "instance_counts": torch.zeros(4, dtype=torch.int64), "coco_ids": torch.arange(3), "names": ["c0", "c1", "c2"],
        "n_images": 1}), "co-occurrence counts are malformed"),
}


@pytest.mark.parametrize("kind", kit.fast_first(CRAFTED, 2))
def test_crafted_but_loadable_checkpoints_are_refused_before_a_model_is_built(tmp_path, kind):
    """The weights are checked against a meta-device skeleton of the checkpoint's own architecture, classes and
    input channels (no memory) before any model is allocated: the stride-0 head declared 10^5 classes of 512
    weights (205 MB) in a file of kilobytes, and the previous main allocated and loaded it."""
    change, match = CRAFTED[kind]
    path = tmp_path / "c.pt"
    save_checkpoint(path, _weights(change))
    ckpt = read_checkpoint(path)
    with pytest.raises(ScenectlError, match=match):
        ckpt.cooccurrence if "co-occurrence" in kind else ckpt.build_model()
