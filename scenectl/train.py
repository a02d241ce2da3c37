"""`scenectl train`: learn to name the hidden object from its context (torchvision-references style).

    cfg = TrainConfig(shards="shards/train2017", val_shards="shards/val2017", arch="ffc", out="runs/ffc")
    metrics = train(cfg)

What is trained: a `--arch` model on the masked scenes (RGB + the hidden region as a 4th channel), cross-entropy
with label smoothing (with --aux-visible W, plus W x a multi-label loss of a second head predicting the classes
still visible in the scene; engine.cross_entropy), validated by loss and top-1 / top-5, micro and class-balanced,
over every validation sample (scenectl.inference.validate). How: scenectl.engine (one run folder: config.json,
metrics.jsonl, last.pt, best.pt, curves.png; resume; stop signals). Under `torchrun --nproc_per_node N -m scenectl
train ...` it runs DistributedDataParallel: every rank reads its own shards, metrics are all-reduced, and only rank 0
writes files.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn

from scenectl import distributed as D
from scenectl.checkpoint import BuildParams, SampleSet, TrainingShards
from scenectl.data.coco import classes_match
from scenectl.config import TrainConfig, check, resolve_schedule
from scenectl.data.loader import (Augment, EvalBatches, Loader, ShardSet, SkipCounter, TrainBatches, make_eval_loader,
                                  make_train_loader, open_shard_set)
from scenectl.data.transforms import make_hole_only
from scenectl.engine import Run, cross_entropy, decay_groups, fit, require_tensorboard
from scenectl.errors import ScenectlError
from scenectl.inference import validate
from scenectl.models import create_model, resolve_name


def load_data(cfg: TrainConfig) -> tuple[ShardSet, ShardSet]:
    """Open the training and validation shard sets and check that they name the same classes."""
    data = cfg.data
    net = cfg.net.options()
    train_set, val_set = open_shard_set(data.shards, net), open_shard_set(data.val_shards, net)
    train_set.require_masked("--shards")
    val_set.require_masked("--val-shards")
    if not classes_match(train_set.classes, val_set.classes):
        raise ScenectlError(f"class lists differ between --shards {data.shards} ({len(train_set.classes)} classes) "
                            f"and --val-shards {data.val_shards} ({len(val_set.classes)} classes): build both "
                            "from the same annotation categories")
    return train_set, val_set


def resolve_config(cfg: TrainConfig, train_set: ShardSet, world_size: int) -> TrainConfig:
    """Check every option and fill the data-dependent defaults, so config.json records what actually ran."""
    check(cfg)
    if cfg.hole_only and not cfg.mask_channel:
        raise ScenectlError("--hole-only trains on the mask channel alone: it cannot go with --no-mask-channel")
    if cfg.tensorboard:
        require_tensorboard()
    c = resolve_schedule(cfg, train_set.num_samples, world_size, data_option=f"--shards {cfg.data.shards}")
    c.arch = resolve_name(c.arch)
    c.data.image_size = c.data.image_size or train_set.image_size
    return c


def data_stream(cfg: TrainConfig, shards: ShardSet, dev: D.DistInfo, counter: SkipCounter, *,
                epoch: int | None = None, start: int = 0) -> Loader:
    """Every read of train's data: this rank's training batches of `epoch` from step `start`, or (epoch None) its
    share of the validation samples. Batches: input (B, 3 or 4, S, S), label (B,)."""
    d, loop, a = cfg.data, cfg.loop, cfg.augmentation
    gpu = dev.device.type == "cuda"  # JPEGs decoded per batch on the GPU (transforms.batch_to_device)
    if epoch is None:
        return make_eval_loader(shards, EvalBatches(
            image_size=d.image_size, batch_size=loop.batch_size, workers=loop.workers, mask_channel=cfg.mask_channel,
            skip_corrupt=d.skip_corrupt, rank=dev.rank, world_size=dev.world_size, counter=counter, defer_jpeg=gpu))
    return make_train_loader(
        shards, TrainBatches(steps=loop.steps_per_epoch, batch_size=loop.batch_size, image_size=d.image_size,
        mask_channel=cfg.mask_channel, augment=Augment(a.min_scale, a.flip, a.jitter, a.augment), seed=loop.seed,
        epoch=epoch, rank=dev.rank, world_size=dev.world_size, start_step=start, workers=loop.workers,
        shuffle_buffer=d.shuffle_buffer, skip_corrupt=d.skip_corrupt, counter=counter, defer_jpeg=gpu))


def fingerprinted(batches, val_set: ShardSet, dev: D.DistInfo, into: dict):
    """`batches` passed through, their keys hashed at the end into `into["selected_on"]` (a SampleSet: best.pt is
    picked on these samples). Under DDP a rank sees only its share of the keys: the manifest's hash alone."""
    keys = []
    for batch in batches:
        keys.extend(batch["key"])
        yield batch
    fact = SampleSet.of(val_set.location, val_set.manifest, keys if dev.world_size == 1 else None)
    into["selected_on"] = asdict(fact)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run; returns the last validation metrics."""
    dev = D.init_distributed(cfg.loop.device)
    try:
        return _train(cfg, dev)
    finally:
        D.cleanup()


def _train(cfg: TrainConfig, dev: D.DistInfo) -> dict:
    train_set, val_set = load_data(cfg)
    cfg = resolve_config(cfg, train_set, dev.world_size)
    torch.manual_seed(cfg.loop.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    in_chans = 4 if cfg.mask_channel else 3
    aux_classes = len(train_set.classes) if cfg.aux_visible else 0  # --aux-visible: visible classes, multi-label
    model = create_model(cfg.arch, len(train_set.classes), in_chans,
                         pretrained=None if cfg.loop.resume else cfg.pretrained, aux_classes=aux_classes).to(dev.device)
    if cfg.hole_only:  # the control: RGB replaced by the fill at the model's input, mask channel kept
        make_hole_only(model)
    counter = SkipCounter()
    selection: dict = {}  # best.pt's "selected_on": the validation samples, fingerprinted on the first validation

    def validate_run(net: nn.Module) -> dict:
        batches = data_stream(cfg, val_set, dev, counter)
        if not selection:
            batches = fingerprinted(batches, val_set, dev, selection)
        val = validate(net, batches, dev.device, len(val_set.classes), reduce=True)
        return {**val, "skipped_corrupt": int(D.all_reduce_sum(torch.tensor([counter.value], device=dev.device)).item())}

    # the checkpoint's record of what the model was trained on: --shards and the set's build params
    where = f"--shards {cfg.data.shards}"
    trained_on = TrainingShards(str(cfg.data.shards), BuildParams.of_manifest(train_set.manifest, where))
    run = Run(
        name="train", out=Path(cfg.out), kind="run", net=model, classes=train_set.classes,
        groups=decay_groups(model.parameters(), cfg.optim.weight_decay),
        loss_fn=cross_entropy(cfg.optim.label_smoothing, cfg.aux_visible),
        batches=lambda epoch, start: data_stream(cfg, train_set, dev, counter, epoch=epoch, start=start),
        validate=validate_run, config=asdict(cfg), tensorboard=cfg.tensorboard,
        title=f"train {cfg.arch}: {Path(cfg.out).name}",  # the folder's name: a title never holds a temporary path
        best_facts=selection, source={"data": f"{cfg.data.shards} (validation {cfg.data.val_shards})",
                                      "n": train_set.num_samples},
        facts={"kind": "context", "arch": cfg.arch, "in_chans": in_chans, "num_classes": len(train_set.classes),
               "classes": train_set.classes, "cooccurrence": train_set.cooccurrence().to_state(),
               "image_size": cfg.data.image_size, "mask_channel": cfg.mask_channel, "aux_visible": cfg.aux_visible,
               "hole_only": cfg.hole_only, "training_shards": asdict(trained_on)})
    return fit(run, cfg, dev, resume=cfg.loop.resume, overwrite=cfg.loop.overwrite)


__all__ = ["TrainConfig", "load_data", "train", "resolve_config", "data_stream"]
