"""Issue 11: every command that reads shard sets refuses every damaged set that `eval` refuses.

One reader (scenectl/data/loader.py) carries the integrity checks, so eval, transfer, distill and fuse fail alike:
for each kind of damage (tests/damaged_sets.py) each command is pointed at the damaged copy of a small synthetic set
(as the set it validates on, which is read whole) and must stop with the reader's one-line error; an undamaged copy
(the control) runs through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import kit
from damaged_sets import KINDS, damage
from scenectl.checkpoint import read_checkpoint
from scenectl.distill import distill
from scenectl.config import DistillConfig, TransferConfig
from scenectl.errors import ScenectlError
from scenectl.evaluate import EvalConfig, evaluate
from scenectl.fuse import FuseConfig, fuse
from scenectl.transfer import transfer


@pytest.fixture(scope="module")
def models(synthetic_shards, trained_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The session's briefly trained context checkpoint and an RGB object model over the same classes."""
    ctx = read_checkpoint(trained_checkpoint)
    obj = kit.checkpoint(tmp_path_factory.mktemp("damaged-commands") / "obj.pt", ctx.classes, 3, kind="transfer",
                         image_size=ctx.image_size)
    return {"ctx": trained_checkpoint, "obj": obj, "train": synthetic_shards["train"]}


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
