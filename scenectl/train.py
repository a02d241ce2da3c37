"""`scenectl train`: learn to name the hidden object from its context (torchvision-references style).

    cfg = TrainConfig(shards="shards/train2017", val_shards="shards/val2017", arch="ffc", out="runs/ffc")
    metrics = train(cfg)

One run folder per run: config.json, metrics.jsonl (one JSON line per logged step and per epoch, flushed as
written), last.pt (every epoch, every --checkpoint-every steps, on SIGINT/SIGTERM) and best.pt (best val top-1).
Under `torchrun --nproc_per_node N -m scenectl train ...` it runs DistributedDataParallel: every rank reads its own
shards, metrics are all-reduced, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from scenectl import distributed as D
from scenectl.checkpoint import classes_match, load_checkpoint, save_checkpoint
from scenectl.data.loader import Augment, Loader, ShardSet, SkipCounter, make_eval_loader, make_train_loader, \
    open_shard_set
from scenectl.errors import ScenectlError
from scenectl.io import read_json, remove_stale_tmp, write_json_atomic
from scenectl.models import create_model, resolve_name

RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "tensorboard")
# options that may change on --resume: they affect speed / logging, not what is computed
# (workers changes the order in which batches are drawn; see docs/training.md)
RESUMABLE_CHANGES = {"max_steps", "workers", "log_every", "checkpoint_every", "tensorboard", "skip_corrupt",
                     "resume", "overwrite", "device", "shards", "val_shards", "out"}


@dataclass
class TrainConfig:
    shards: str = "shards/train2017"  # build-shards' default output for train2017
    val_shards: str = "shards/val2017"
    out: str = "runs/train"
    arch: str = "resnet18"
    image_size: int | None = None  # None: the training shards' image size (build-shards default 256)
    epochs: int = 30
    max_steps: int = 0  # stop after this many steps in all (0: no limit); the schedule still spans all epochs
    steps_per_epoch: int | None = None  # None: training samples // (batch_size * world_size)
    batch_size: int = 64
    lr: float | None = None  # None: 0.1 * batch_size * world_size / 256 for sgd, 1e-3 for adamw
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None  # None: 1e-4 for sgd, 0.05 for adamw
    label_smoothing: float = 0.1
    warmup_steps: int | None = None  # None: 5% of all steps
    workers: int = min(4, os.cpu_count() or 1)
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler)
    mask_channel: bool = True
    pretrained: str | None = None
    min_scale: float = 0.35
    flip: float = 0.5
    jitter: float = 0.2
    augment: bool = True
    shuffle_buffer: int = 1000
    tensorboard: bool = False
    skip_corrupt: bool = False
    resume: bool = False
    overwrite: bool = False
    log_every: int = 50
    checkpoint_every: int = 500
    world_size: int = 1  # filled in: number of DDP processes


# --------------------------------------------------------------------------------------------------------------
# data


def load_data(cfg: TrainConfig) -> tuple[ShardSet, ShardSet]:
    """Open the training and validation shard sets and check that they name the same classes."""
    train_set, val_set = open_shard_set(cfg.shards), open_shard_set(cfg.val_shards)
    train_set.require_masked("--shards")
    val_set.require_masked("--val-shards")
    if not classes_match(train_set.classes, val_set.classes):
        raise ScenectlError(f"class lists differ between --shards {cfg.shards} ({len(train_set.classes)} classes) "
                            f"and --val-shards {cfg.val_shards} ({len(val_set.classes)} classes): build both "
                            "from the same annotation categories")
    return train_set, val_set


def resolve_config(cfg: TrainConfig, train_set: ShardSet, world_size: int) -> TrainConfig:
    """Fill the data-dependent defaults so config.json records what actually ran."""
    c = TrainConfig(**asdict(cfg))
    c.arch, c.world_size = resolve_name(c.arch), world_size
    if c.optimizer not in ("sgd", "adamw"):
        raise ScenectlError(f"--optimizer must be sgd or adamw, not {c.optimizer!r}")
    for name in ("epochs", "batch_size"):
        if getattr(c, name) < 1:
            raise ScenectlError(f"--{name.replace('_', '-')} must be at least 1")
    c.image_size = c.image_size or train_set.image_size
    c.steps_per_epoch = c.steps_per_epoch or max(1, train_set.num_samples // (c.batch_size * world_size))
    if c.lr is None:
        c.lr = 0.1 * c.batch_size * world_size / 256 if c.optimizer == "sgd" else 1e-3
    if c.weight_decay is None:
        c.weight_decay = 1e-4 if c.optimizer == "sgd" else 0.05
    if c.warmup_steps is None:
        c.warmup_steps = round(0.05 * c.epochs * c.steps_per_epoch)
    return c


# --------------------------------------------------------------------------------------------------------------
# model, optimiser, schedule


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on norms and biases (1-d parameters), as in the torchvision references
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay to zero, stepped once per optimisation step."""
    total = cfg.epochs * cfg.steps_per_epoch
    warm = min(cfg.warmup_steps, total - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm))
    if warm <= 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warm])


def amp_setup(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """bf16 autocast where the GPU supports it (no scaler needed), else fp16 with a GradScaler; off on CPU."""
    if device.type != "cuda" or not enabled:
        return None, torch.amp.GradScaler("cuda", enabled=False)
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, torch.amp.GradScaler("cuda", enabled=False)
    return torch.float16, torch.amp.GradScaler("cuda", enabled=True)


# --------------------------------------------------------------------------------------------------------------
# the run folder


class RunLog:
    """metrics.jsonl (rank 0 only), written and flushed one line at a time; optional TensorBoard mirror."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.f = open(out / "metrics.jsonl", "a", buffering=1) if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ScenectlError("--tensorboard needs the tensorboard package: pip install 'scenectl[tensorboard]'") \
                    from None
            self.tb = SummaryWriter(str(out / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def close(self) -> None:
        if self.f:
            self.f.close()
        if self.tb is not None:
            self.tb.close()


def prepare_out(cfg: TrainConfig) -> dict | None:
    """Check the run folder (rank 0). Returns the checkpoint to resume from, or None for a fresh run."""
    out = Path(cfg.out)
    present = [n for n in RUN_FILES if (out / n).exists()]
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise ScenectlError(f"--resume: no last.pt in {out} to resume from")
        remove_stale_tmp(out)  # a checkpoint half-written when the run was killed
        return load_checkpoint(out / "last.pt")
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            what = "holds a run (" + ", ".join(present) + ")" if present else "is not empty"
            raise ScenectlError(f"--out {out} {what}: pass --resume to continue it or --overwrite to replace it")
        if not present and any(out.iterdir()):
            raise ScenectlError(f"--out {out} is not empty and holds no run: refusing to --overwrite it")
        for n in present:  # only our own files: a mistyped --out never loses anything else
            p = out / n
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def check_resume(cfg: TrainConfig, ckpt: dict, train_set: ShardSet) -> None:
    """--resume continues the same run: refuse another architecture, class list or training configuration."""
    old = ckpt.get("config", {})
    if ckpt.get("arch") != cfg.arch:
        raise ScenectlError(f"--resume: {cfg.out}/last.pt holds a {ckpt.get('arch')} model, not {cfg.arch}")
    if not classes_match(ckpt.get("classes", []), train_set.classes):
        raise ScenectlError(f"--resume: {cfg.out}/last.pt was trained on another class list than {cfg.shards}")
    changed = [f.name for f in fields(TrainConfig)
               if f.name not in RESUMABLE_CHANGES and f.name in old and old[f.name] != getattr(cfg, f.name)]
    if changed:
        diffs = ", ".join(f"{k}: {old[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ScenectlError(f"--resume: options differ from the run in {cfg.out} ({diffs}); resume with the same "
                            "options or start a new run")


# --------------------------------------------------------------------------------------------------------------
# one epoch, validation


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, saves last.pt and stops (no half-applied step)."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._set)
        return self

    def _set(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class State:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done within the current epoch
    step: int = 0  # steps done in all
    best_top1: float = -1.0
    metrics: dict | None = None


def train_one_epoch(model, criterion, optimizer, scheduler, scaler, loader: Loader, dev: D.DistInfo,
                    cfg: TrainConfig, state: State, log: RunLog, save, stop: StopRequest, amp_dtype) -> dict:
    """Train over `loader` (the rest of epoch state.epoch). Returns {'loss', 'steps', 'stopped'}."""
    model.train()
    total_loss, n_steps, t0, seen = 0.0, 0, time.perf_counter(), 0
    bar = tqdm(total=cfg.steps_per_epoch, initial=state.epoch_step, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
               disable=not dev.is_main, dynamic_ncols=True, leave=False)
    stopped = None
    for batch in loader:
        x = batch["input"].to(dev.device, non_blocking=True)  # (B, C, H, W)
        y = batch["label"].to(dev.device, non_blocking=True)  # (B,)
        with torch.autocast(dev.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = criterion(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        # the loss and the stop flag travel together: all ranks agree on NaN and on stopping at the same step
        flags = torch.stack([loss.detach().float(), torch.tensor(float(stop.flag), device=dev.device)])
        loss_sum, stop_votes = D.all_reduce_sum(flags).tolist()
        mean_loss = loss_sum / dev.world_size
        if not math.isfinite(mean_loss):
            raise ScenectlError(f"loss is {mean_loss} at step {state.step + 1} (epoch {state.epoch + 1}): stopped; "
                                f"the last good checkpoint stays in {cfg.out}/last.pt (try a lower --lr)")
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        state.step, state.epoch_step, n_steps = state.step + 1, state.epoch_step + 1, n_steps + 1
        total_loss += mean_loss
        seen += len(y) * dev.world_size
        rate = seen / (time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.3f}", samples_s=f"{rate:.0f}")
        if cfg.log_every and state.step % cfg.log_every == 0:
            log.write({"kind": "step", "epoch": state.epoch, "step": state.step, "loss": mean_loss,
                       "lr": optimizer.param_groups[0]["lr"], "samples_per_s": rate})
        if stop_votes > 0:
            stopped = "signal"
        elif cfg.max_steps and state.step >= cfg.max_steps:
            stopped = "max_steps"
        elif cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and state.epoch_step < cfg.steps_per_epoch:
            save("last.pt")
        if stopped:
            break
    bar.close()
    return {"loss": total_loss / max(1, n_steps), "steps": n_steps, "stopped": stopped,
            "samples_per_s": seen / max(1e-9, time.perf_counter() - t0)}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Loader, device: torch.device, amp_dtype=None) -> dict:
    """Validation loss (no label smoothing), top-1 and top-5 over every sample once, summed over all ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1 hits, top-5 hits, samples
    for batch in loader:
        x, y = batch["input"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x).float()  # (B, num_classes)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        hits = top == y[:, None]  # (B, 5)
        sums += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(), hits[:, 0].sum().item(),
                              hits.any(1).sum().item(), len(y)], dtype=torch.float64)
    sums = D.all_reduce_sum(sums.to(device)).cpu()
    n = max(1.0, sums[3].item())
    return {"val_loss": sums[0].item() / n, "val_top1": sums[1].item() / n, "val_top5": sums[2].item() / n,
            "val_samples": int(sums[3].item())}


# --------------------------------------------------------------------------------------------------------------
# the whole run


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run; returns the last validation metrics."""
    dev = D.init_distributed(cfg.device)
    try:
        return _train(cfg, dev)
    finally:
        D.cleanup()


def _train(cfg: TrainConfig, dev: D.DistInfo) -> dict:
    train_set, val_set = load_data(cfg)
    cfg = resolve_config(cfg, train_set, dev.world_size)
    # rank 0 checks the run folder; every rank learns the verdict, so none is left waiting on the others
    verdict = None
    if dev.is_main:
        try:
            prepare_out(cfg)
        except ScenectlError as e:
            verdict = str(e)
    verdict = D.broadcast_object(verdict)
    if verdict:
        raise ScenectlError(verdict)
    ckpt = load_checkpoint(Path(cfg.out) / "last.pt") if cfg.resume else None
    if ckpt is not None:
        check_resume(cfg, ckpt, train_set)

    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    in_chans = 4 if cfg.mask_channel else 3
    model = create_model(cfg.arch, len(train_set.classes), in_chans,
                         pretrained=None if ckpt else cfg.pretrained).to(dev.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    amp_dtype, scaler = amp_setup(dev.device, cfg.amp)
    state = State()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = State(ckpt["epoch"], ckpt.get("epoch_step", 0), ckpt["step"], ckpt.get("best_top1", -1.0),
                      ckpt.get("metrics"))
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[dev.device.index] if dev.device.type == "cuda"
                                              else None) if dev.distributed else model
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    cooc = train_set.cooccurrence().to_state()
    out = Path(cfg.out)
    if dev.is_main:
        write_json_atomic(out / "config.json", asdict(cfg))
    log = RunLog(out, dev.is_main, cfg.tensorboard)

    def save(name: str) -> None:
        if not dev.is_main:
            return
        save_checkpoint(out / name, {
            "kind": "context", "arch": cfg.arch, "in_chans": in_chans, "num_classes": len(train_set.classes),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": state.epoch, "epoch_step": state.epoch_step, "step": state.step,
            "best_top1": state.best_top1, "config": asdict(cfg), "classes": train_set.classes,
            "cooccurrence": cooc, "metrics": state.metrics or {}, "image_size": cfg.image_size,
            "mask_channel": cfg.mask_channel,
        })

    if ckpt is not None:
        log.write({"kind": "resume", "epoch": state.epoch, "step": state.step, "epoch_step": state.epoch_step})
    counter = SkipCounter()
    augment = Augment(cfg.min_scale, cfg.flip, cfg.jitter, cfg.augment)
    try:
        with StopRequest() as stop:
            while state.epoch < cfg.epochs and not (cfg.max_steps and state.step >= cfg.max_steps):
                t0 = time.perf_counter()
                loader = make_train_loader(
                    train_set, steps=cfg.steps_per_epoch, batch_size=cfg.batch_size, image_size=cfg.image_size,
                    mask_channel=cfg.mask_channel, augment=augment, seed=cfg.seed, epoch=state.epoch,
                    rank=dev.rank, world_size=dev.world_size, start_step=state.epoch_step, workers=cfg.workers,
                    shuffle_buffer=cfg.shuffle_buffer, skip_corrupt=cfg.skip_corrupt, counter=counter)
                result = train_one_epoch(ddp, criterion, optimizer, scheduler, scaler, loader, dev, cfg, state, log,
                                         save, stop, amp_dtype)
                if result["stopped"] == "signal":
                    save("last.pt")
                    raise ScenectlError(f"interrupted at step {state.step}: saved {out / 'last.pt'}; "
                                        "continue with --resume")
                epoch_done = state.epoch_step >= cfg.steps_per_epoch
                if epoch_done:
                    state.epoch, state.epoch_step = state.epoch + 1, 0
                # the plain module: DDP's forward would sync buffers, and ranks hold unequal numbers of val batches
                val = evaluate(model, make_eval_loader(val_set, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                                     workers=cfg.workers, mask_channel=cfg.mask_channel,
                                                     skip_corrupt=cfg.skip_corrupt, rank=dev.rank,
                                                     world_size=dev.world_size, counter=counter), dev.device, amp_dtype)
                skipped = int(D.all_reduce_sum(torch.tensor([counter.value], device=dev.device)).item())
                state.metrics = {"epoch": state.epoch, "step": state.step, "train_loss": result["loss"], **val,
                                 "train_samples_per_s": result["samples_per_s"], "skipped_corrupt": skipped,
                                 "seconds": time.perf_counter() - t0}
                log.write({"kind": "epoch" if epoch_done else "partial_epoch", **state.metrics})
                if dev.is_main:
                    tqdm.write(f"epoch {state.epoch} step {state.step}: train loss {result['loss']:.3f}, "
                               f"val loss {val['val_loss']:.3f}, top-1 {val['val_top1']:.3f}, "
                               f"top-5 {val['val_top5']:.3f}")
                if val["val_top1"] > state.best_top1:
                    state.best_top1 = val["val_top1"]
                    save("best.pt")
                save("last.pt")
    finally:
        log.close()
    return state.metrics or {}


def load_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a run folder's config.json (unknown keys refused)."""
    data: dict[str, Any] = read_json(path, "training config")
    names = {f.name for f in fields(TrainConfig)}
    unknown = set(data) - names
    if unknown:
        raise ScenectlError(f"{path}: unknown training options {sorted(unknown)}")
    return TrainConfig(**data)


def main(cfg: TrainConfig) -> dict:
    return train(cfg)


__all__ = ["TrainConfig", "load_data", "train_one_epoch", "evaluate", "train", "main", "load_config",
           "resolve_config", "build_optimizer", "build_scheduler"]
