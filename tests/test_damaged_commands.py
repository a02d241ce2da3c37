"""Issue 11: every command that reads shard sets refuses every damaged set that `eval` refuses.

One reader (scenectl/data/loader.py) carries the integrity checks, so eval, transfer, distill and fuse fail alike:
for each kind of damage (tests/damaged_sets.py) each command is pointed at the damaged copy of a small synthetic set
(as the set it validates on, which is read whole) and must stop with the reader's one-line error; an undamaged copy
(the control) runs through.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from damaged_sets import KINDS, damage
from scenectl.checkpoint import read_checkpoint, save_checkpoint
from scenectl.distill import distill
from scenectl.config import DistillConfig, TransferConfig
from scenectl.errors import ScenectlError
from scenectl.evaluate import EvalConfig, evaluate
from scenectl.fuse import FuseConfig, fuse
from scenectl.models import create_model
from scenectl.train import TrainConfig, train
from scenectl.transfer import transfer


@pytest.fixture(scope="module")
def models(synthetic_shards, tmp_path_factory) -> dict[str, Path]:
    """A context checkpoint (2 training steps) and an RGB object model over the same classes."""
    root = tmp_path_factory.mktemp("damaged-commands")
    s = synthetic_shards
    train(TrainConfig(shards=str(s["train"]), val_shards=str(s["val"]), out=str(root / "ctx"), epochs=1,
                      steps_per_epoch=2, batch_size=4, workers=0, device="cpu", log_every=0, checkpoint_every=0,
                      shuffle_buffer=8))
    ctx = read_checkpoint(root / "ctx" / "best.pt")
    torch.manual_seed(0)
    obj = create_model(ctx.arch, ctx.num_classes, 3)
    save_checkpoint(root / "obj.pt", {"kind": "transfer", "arch": ctx.arch, "in_chans": 3, "mask_channel": False,
                                      "num_classes": ctx.num_classes, "image_size": ctx.image_size,
                                      "model": obj.state_dict(), "classes": ctx.classes, "config": {}})
    return {"ctx": root / "ctx" / "best.pt", "obj": root / "obj.pt", "train": s["train"]}


def _run(command: str, models: dict, bad: Path, out: Path) -> None:
    loop = dict(epochs=1, steps_per_epoch=1, batch_size=4, workers=0, device="cpu", log_every=0,
                checkpoint_every=0)
    if command == "eval":
        evaluate(EvalConfig(checkpoint=str(models["ctx"]), shards=[str(bad)], out=str(out), device="cpu",
                            workers=0, batch_size=16, bootstrap=0, mask_only=False))
    elif command == "transfer":
        transfer(TransferConfig(checkpoint=str(models["ctx"]), train=str(models["train"]), val=str(bad),
                                out=str(out), **loop))
    elif command == "distill":
        distill(DistillConfig(teacher=str(models["ctx"]), shards=str(models["train"]), val_shards=str(bad),
                              out=str(out), compare=False, **loop))
    else:
        fuse(FuseConfig(context=str(models["ctx"]), object=str(models["obj"]), shards=str(bad), out=str(out),
                        device="cpu", workers=0, batch_size=16))


COMMANDS = ("eval", "transfer", "distill", "fuse")


@pytest.fixture(scope="module")
def damaged(synthetic_shards, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("damaged")
    return {kind: damage(synthetic_shards["val"], root / str(kind), kind) for kind in (None, *KINDS)}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_every_damaged_set(command, models, damaged, tmp_path):
    _run(command, models, damaged[None].path, tmp_path / "control")  # the undamaged copy reads whole
    for kind in KINDS:
        d = damaged[kind]
        with pytest.raises(ScenectlError, match=d.match):
            _run(command, models, d.path, tmp_path / kind)
