"""`scenectl transfer`: reuse a context model's backbone for another classification task.

    cfg = TransferConfig(checkpoint="runs/train/best.pt", train="crops/train2017", val="crops/val2017",
                         mode="finetune", compare_scratch=True, out="runs/transfer")
    report = transfer(cfg)

Reads top to bottom:
  1. the context checkpoint (scenectl.checkpoint.read_checkpoint) and the model built from it: the checkpoint's
     backbone with a new head for the target's classes (`--init context`), or the same architecture from random
     weights (`--init scratch`); the mask channel of a 4-channel context model is dropped (an unmasked image has
     an all-zero mask, so this changes no output)
  2. `linear` freezes the backbone (parameters AND BatchNorm statistics: the backbone stays in eval mode);
     `finetune` trains everything, the backbone at `lr * backbone_lr_scale`
  3. the target (an ImageFolder tree or a shard set's object crops), read in one place (`data_stream`)
  4. validation: top-1/top-5, micro and class-balanced (scenectl.inference.validate), after every epoch
  5. each init trained by scenectl.engine (run folder, resume, curves); with --compare-scratch both inits at the
     same budget and seed, compared in report.json, report.md and curves.png

Output: OUT/<init>/ is one run folder per init (config.json, metrics.jsonl, last.pt, best.pt, curves.png, like
`train`'s); OUT/config.json, OUT/report.json (written last), OUT/report.md and OUT/curves.png compare them.
Single process, one device (no DDP): the targets are small.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from scenectl import distributed as D
from scenectl.checkpoint import Checkpoint, read_checkpoint, weights_problem
from scenectl.config import TransferConfig, check, resolve_schedule
from scenectl.data.imagefolder import Epoch, Target, align_classes, make_loader, open_target
from scenectl.data.loader import Loader
from scenectl.devices import parse_device
from scenectl.engine import Run, cross_entropy, fit_experiment, param_groups
from scenectl.errors import ScenectlError
from scenectl.inference import validate
from scenectl.models import create_model
from scenectl.report import write_runs_report


# --------------------------------------------------------------------------------------------------------------
# 1-2. the model from the context checkpoint


def adapt_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit a checkpoint's weights to `model`: input convolutions trained on RGB + mask keep their RGB filters.

    Dropping the mask channel's filter equals feeding an all-zero mask ("nothing hidden"), so the backbone
    computes exactly what it computed on an unmasked scene. Head weights are dropped (a new head follows).
    """
    own = model.state_dict()
    head = set(model.head_parameter_names())
    out = {}
    for k, v in state.items():
        if k in head or k not in own:
            continue
        if v.ndim == own[k].ndim == 4 and v.shape[1] > own[k].shape[1] \
                and v[:, : own[k].shape[1]].shape == own[k].shape:
            v = v[:, : own[k].shape[1]]  # (out, in_ckpt, kh, kw) -> (out, 3, kh, kw)
        out[k] = v
    return out


def build_model(ckpt: Checkpoint, init: str, num_classes: int, seed: int) -> nn.Module:
    """The checkpoint's architecture for RGB input with a fresh `num_classes` head; context or random weights."""
    torch.manual_seed(seed)  # same fresh head (and same scratch weights) for a given seed
    model = create_model(ckpt.arch, num_classes, in_chans=3)
    if init == "context":
        head = set(model.head_parameter_names())
        state = adapt_state(ckpt.model_state(), model)
        problem = weights_problem(state, {k: v for k, v in model.state_dict().items() if k not in head})
        if problem:
            raise ScenectlError(f"{ckpt.path}: weights do not fit a {ckpt.arch} model ({problem})")
        model.load_state_dict(state, strict=False)  # all but the fresh head
    return model


class FrozenBackbone(nn.Module):
    """Linear probing: only the head learns. The backbone's parameters get no gradient and the backbone stays in
    eval mode even when the model is put in training mode, so its BatchNorm running statistics never move."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.requires_grad_(False)
        net.get_classifier().requires_grad_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, num_classes)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        super().train(mode)
        self.net.eval()
        self.net.get_classifier().train(mode)
        return self


# --------------------------------------------------------------------------------------------------------------
# 3. the target


def open_targets(cfg: TransferConfig) -> tuple[Target, Target, list[str]]:
    """The training and validation targets, the validation side re-indexed to the training classes; notes."""
    net = cfg.net.options()
    train_t, val_t = open_target(cfg.train, "--train", net), open_target(cfg.val, "--val", net)
    if len(train_t.classes) < 2:
        raise ScenectlError(f"--train {cfg.train}: a classifier needs at least two classes")
    notes = []
    if train_t.folder is not None and val_t.folder is not None:
        dropped = align_classes(val_t.folder, train_t.classes)
        val_t.classes = list(train_t.classes)
        if dropped:
            notes.append(f"{dropped} validation images of classes absent from --train were left out")
    elif [c["name"] for c in train_t.classes] != [c["name"] for c in val_t.classes]:
        raise ScenectlError(f"--train {cfg.train} and --val {cfg.val} have different classes "
                            f"({len(train_t.classes)} vs {len(val_t.classes)}, or other names)")
    return train_t, val_t, notes


def data_stream(cfg: TransferConfig, target: Target, *, epoch: int | None = None, start: int = 0) -> Loader:
    """Every read of transfer's data: training batches of `epoch` from step `start`, or (epoch None) every sample
    of `target` once. Batches: input (B, 3, S, S), label (B,), key, visible."""
    loop = cfg.loop
    return make_loader(target, image_size=cfg.image_size, batch_size=loop.batch_size, workers=loop.workers,
                       epoch=None if epoch is None else Epoch(loop.seed, epoch, loop.steps_per_epoch, start))


# --------------------------------------------------------------------------------------------------------------
# 5. main


def make_run(cfg: TransferConfig, ckpt: Checkpoint, init: str, train_t: Target, val_t: Target, cooc,
             dev: D.DistInfo) -> Run:
    """The run of one init: its model, parameter groups, data and validation."""
    n = len(train_t.classes)
    net = build_model(ckpt, init, n, cfg.loop.seed)
    linear = cfg.mode == "linear"
    scale = cfg.backbone_lr_scale if init == "context" else 1.0  # a random backbone needs the full rate
    return Run(
        name=init, out=Path(cfg.out) / init, kind="transfer", net=net, classes=train_t.classes,
        trained=FrozenBackbone(net) if linear else None, groups=param_groups(net, cfg.optim, scale, linear),
        loss_fn=cross_entropy(cfg.optim.label_smoothing),
        batches=lambda epoch, start: data_stream(cfg, train_t, epoch=epoch, start=start),
        validate=lambda model: validate(model, data_stream(cfg, val_t), dev.device, n, desc=f"val {init}",
                                        total=val_t.num_samples),
        config={**asdict(cfg), "run": init}, title=f"transfer ({cfg.mode}, {init} init): {cfg.out}/{init}",
        source={"checkpoint": str(cfg.checkpoint) if init == "context" else None,
                "data": f"{cfg.train} (validation {cfg.val})", "n": train_t.num_samples},
        facts={"kind": "transfer", "arch": ckpt.arch, "in_chans": 3, "num_classes": n, "classes": train_t.classes,
               "cooccurrence": cooc, "image_size": cfg.image_size, "mask_channel": False, "init": init,
               "source_checkpoint": str(cfg.checkpoint)})


def transfer(cfg: TransferConfig) -> dict:
    """Run the transfer (one init, or both with compare_scratch); returns the report (also OUT/report.json)."""
    check(cfg)
    ckpt = read_checkpoint(cfg.checkpoint)
    train_t, val_t, data_notes = open_targets(cfg)
    cfg = resolve_schedule(cfg, train_t.num_samples, data_option=f"--train {cfg.train}", whole_batch=True)
    cfg.image_size = cfg.image_size or ckpt.image_size
    dev = D.DistInfo(device=parse_device(cfg.loop.device))
    cooc = train_t.shards.cooccurrence().to_state() if train_t.shards is not None else None
    inits = ["context", "scratch"] if cfg.compare_scratch else [cfg.init]
    runs = {init: functools.partial(make_run, cfg, ckpt, init, train_t, val_t, cooc, dev) for init in inits}
    return fit_experiment(cfg, "transfer", dev, runs,
                          lambda results: finish(cfg, ckpt, train_t, val_t, data_notes, results), f"transfer ({cfg.mode})")


def finish(cfg: TransferConfig, ckpt: Checkpoint, train_t: Target, val_t: Target, data_notes: list[str],
           results: dict[str, dict]) -> dict:
    loop = cfg.loop
    report = {"format": "scenectl-transfer/1", "out": str(cfg.out), "checkpoint": str(cfg.checkpoint),
              "arch": ckpt.arch, "mode": cfg.mode, "train": cfg.train, "val": cfg.val,
              "classes": [c["name"] for c in train_t.classes], "train_samples": train_t.num_samples,
              "val_samples": val_t.num_samples, "notes": data_notes,
              "steps": loop.total_steps(), "runs": results}
    notes = [f"context checkpoint `{cfg.checkpoint}` ({ckpt.arch}), mode `{cfg.mode}`",
             f"train `{cfg.train}` ({train_t.num_samples} samples, {len(train_t.classes)} classes), val `{cfg.val}` "
             f"({val_t.num_samples})", f"{report['steps']} steps of batch {loop.batch_size}, lr {cfg.optim.lr} "
             f"({cfg.optim.optimizer}), image size {cfg.image_size}, seed {loop.seed}", *data_notes]
    write_runs_report(Path(cfg.out), report, f"transfer ({cfg.mode})", notes)
    return report
