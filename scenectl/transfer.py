"""`scenectl transfer`: reuse a context model's backbone for another classification task.

    cfg = TransferConfig(checkpoint="runs/train/best.pt", train="crops/train2017", val="crops/val2017",
                         mode="finetune", compare_scratch=True, out="runs/transfer")
    report = transfer(cfg)

Reads top to bottom:
  1. open the target (an ImageFolder tree or a shard set's object crops) and the context checkpoint
  2. build the model: the checkpoint's backbone with a new head for the target's classes (`--init context`), or
     the same architecture from random weights (`--init scratch`); the mask channel of a 4-channel context
     model is dropped (an unmasked image has an all-zero mask, so this changes no output)
  3. `linear` freezes the backbone (parameters AND BatchNorm statistics: the backbone stays in eval mode);
     `finetune` trains everything, the backbone at `lr * backbone_lr_scale`
  4. train with scenectl.train's building blocks (train_one_epoch, scheduler, run folder, resume), evaluating
     top-1/top-5, micro and class-balanced (scenectl.metrics), after every epoch
  5. with --compare-scratch, both inits at the same budget and seed: report.json, report.md, curves.png

Output: OUT/<init>/ is one run folder per init (config.json, metrics.jsonl, last.pt, best.pt, like `train`);
OUT/config.json, OUT/report.json (written last), OUT/report.md and OUT/curves.png compare them.
Single process, one device (no DDP): the targets are small.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from scenectl import distributed as D
from scenectl.devices import parse_device
from scenectl import metrics
from scenectl.checkpoint import load_checkpoint, save_checkpoint
from scenectl.data.imagefolder import Target, align_classes, make_loader, open_target
from scenectl.errors import ScenectlError
from scenectl.inference import run_model
from scenectl.report import format_table
from scenectl.io import atomic_path, write_bytes_atomic, write_json_atomic
from scenectl.models import create_model, resolve_name
from scenectl.train import RunLog, State, StopRequest, amp_setup, build_scheduler, train_one_epoch

KS = (1, 5)
TOP_FILES = ("config.json", "report.json", "report.md", "curves.png")


@dataclass
class TransferConfig:
    checkpoint: str = "runs/train/best.pt"  # the context model (`scenectl train`)
    train: str = "imagefolder/train2017"  # ImageFolder tree or shard set (object crops)
    val: str = "imagefolder/val2017"
    mode: str = "finetune"  # finetune | linear
    init: str = "context"  # context | scratch (ignored with compare_scratch: both run)
    compare_scratch: bool = False
    backbone_lr_scale: float = 1.0  # finetune from context: backbone lr = lr * this
    out: str = "runs/transfer"
    epochs: int = 10
    max_steps: int = 0  # 0: no limit
    steps_per_epoch: int | None = None  # None: training samples // batch_size
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    warmup_steps: int | None = None  # None: 5% of all steps
    image_size: int | None = None  # None: the checkpoint's training image size
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    amp: bool = True
    resume: bool = False
    overwrite: bool = False
    log_every: int = 10
    checkpoint_every: int = 0  # 0: last.pt at every epoch end only


# --------------------------------------------------------------------------------------------------------------
# 1. the context checkpoint


def load_context(path: str | Path) -> dict:
    """The checkpoint dict (weights only), refusing files that are not scenectl model checkpoints."""
    ckpt = load_checkpoint(path)
    for key in ("arch", "model", "num_classes"):
        if key not in ckpt:
            raise ScenectlError(f"{path} holds no '{key}': not a scenectl model checkpoint")
    return ckpt


def checkpoint_image_size(ckpt: dict) -> int:
    return int(ckpt.get("image_size") or (ckpt.get("config") or {}).get("image_size") or 224)


def adapt_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fit a checkpoint's weights to `model`: input convolutions trained on RGB + mask keep their RGB filters.

    Dropping the mask channel's filter equals feeding an all-zero mask ("nothing hidden"), so the backbone
    computes exactly what it computed on an unmasked scene. Head weights are dropped (a new head follows).
    """
    own = model.state_dict()
    head = set(model.head_parameter_names())
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k in head or k not in own:
            continue
        if v.shape != own[k].shape and v.ndim == 4 and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:] \
                and v.shape[1] > own[k].shape[1]:
            v = v[:, : own[k].shape[1]]  # (out, in_ckpt, kh, kw) -> (out, 3, kh, kw)
        out[k] = v
    return out


def build_model(ckpt: dict, init: str, num_classes: int, seed: int) -> nn.Module:
    """The checkpoint's architecture for RGB input with a fresh `num_classes` head; context or random weights."""
    torch.manual_seed(seed)  # same fresh head (and same scratch weights) for a given seed
    model = create_model(ckpt["arch"], num_classes, in_chans=3)
    if init == "context":
        state = adapt_state(ckpt["model"], model)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in set(model.head_parameter_names())]
        if missing or unexpected:
            raise ScenectlError(f"checkpoint weights do not fit a {ckpt['arch']} model (missing {missing[:3]}, "
                                f"unexpected {list(unexpected)[:3]})")
    return model


class FrozenBackbone(nn.Module):
    """Linear probing: only the head learns. The backbone's parameters get no gradient and the backbone stays in
    eval mode even when the model is put in training mode, so its BatchNorm running statistics never move."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        head = set(net.head_parameter_names())
        for name, p in net.named_parameters():
            p.requires_grad_(name in head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, num_classes)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        super().train(mode)
        self.net.eval()
        self.net.get_classifier().train(mode)
        return self


def param_groups(net: nn.Module, lr: float, weight_decay: float, backbone_scale: float, linear: bool) -> list[dict]:
    """Optimizer groups: head at lr, backbone at lr * backbone_scale (none when linear); no decay on 1-d params
    (norms, biases), as scenectl.train.build_optimizer does."""
    head = set(net.head_parameter_names())
    groups = []
    for is_head, scale in ((False, backbone_scale), (True, 1.0)):
        if linear and not is_head:
            continue
        ps = [(n, p) for n, p in net.named_parameters() if (n in head) == is_head]
        groups += [{"params": [p for _, p in ps if p.ndim > 1], "weight_decay": weight_decay, "lr": lr * scale},
                   {"params": [p for _, p in ps if p.ndim <= 1], "weight_decay": 0.0, "lr": lr * scale}]
    return [g for g in groups if g["params"]]


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ScenectlError(f"--optimizer must be sgd or adamw, not {cfg.optimizer!r}")


# --------------------------------------------------------------------------------------------------------------
# evaluation and one training run (shared with `distill`)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Loss and top-1/top-5, micro and class-balanced (scenectl.metrics; k clamped to C)."""
    ks = [min(k, num_classes) for k in KS]
    micro = metrics.topk_accuracy(logits, labels, ks)
    bal = metrics.balanced_topk_accuracy(logits, labels, ks, num_classes)
    loss = F.cross_entropy(torch.from_numpy(logits).double(), torch.from_numpy(labels)).item()
    return {"val_loss": loss, "val_top1": micro[ks[0]], "val_top5": micro[ks[1]], "val_bal_top1": bal[ks[0]],
            "val_bal_top5": bal[ks[1]], "val_samples": int(len(labels))}


def evaluate_target(model: nn.Module, batches: Iterable[dict], device: torch.device, num_classes: int,
                    desc: str = "val") -> dict:
    model.eval()  # BatchNorm running statistics, not batch statistics; nothing learnt from validation data
    out = run_model(model, batches, device, desc=desc)
    if not out.keys:
        raise ScenectlError("the validation set yielded no samples")
    return classification_metrics(out.logits, out.labels, num_classes)


@dataclass
class Run:
    """One training run: its folder, model, optimiser groups, loss and how to draw batches."""

    name: str
    out: Path
    model: nn.Module  # what is trained (possibly a FrozenBackbone wrapper)
    net: nn.Module  # what is saved (the plain model)
    groups: list[dict]
    criterion: Callable
    batches: Callable[[int, int], Iterable[dict]]  # (epoch, start_step) -> training batches
    val_batches: Callable[[], Iterable[dict]]
    checkpoint_extra: dict  # kind, classes, cooccurrence, image_size, ...


def fit(run: Run, cfg, dev: D.DistInfo, num_classes: int) -> dict:
    """Train `run` for cfg.epochs (or cfg.max_steps) with scenectl.train's loop; returns the last val metrics.

    `cfg` needs the TrainConfig fields train_one_epoch reads (epochs, steps_per_epoch, max_steps, log_every,
    checkpoint_every, out) plus lr, optimizer, momentum, warmup_steps, amp, seed, resume.
    """
    rcfg = replace(cfg, out=str(run.out))
    ckpt = prepare_run_folder(run.out, cfg.resume, cfg.overwrite)
    optimizer = build_optimizer(run.groups, rcfg)
    scheduler = build_scheduler(optimizer, rcfg)
    amp_dtype, scaler = amp_setup(dev.device, rcfg.amp)
    state = State()
    if ckpt is not None:
        run.net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state = State(ckpt["epoch"], ckpt.get("epoch_step", 0), ckpt["step"], ckpt.get("best_top1", -1.0),
                      ckpt.get("metrics"))
    run.model.to(dev.device)
    write_json_atomic(run.out / "config.json", {**asdict(rcfg), "run": run.name})
    log = RunLog(run.out, True, False)

    def save(name: str) -> None:
        save_checkpoint(run.out / name, {
            **run.checkpoint_extra, "arch": run.net.arch, "in_chans": 3, "num_classes": num_classes,
            "model": run.net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": state.epoch, "epoch_step": state.epoch_step, "step": state.step,
            "best_top1": state.best_top1, "config": {**asdict(rcfg), "run": run.name, "mask_channel": False},
            "metrics": state.metrics or {}, "mask_channel": False,
        })

    if ckpt is not None:
        log.write({"kind": "resume", "epoch": state.epoch, "step": state.step, "epoch_step": state.epoch_step})
    try:
        with StopRequest() as stop:
            while state.epoch < rcfg.epochs and not (rcfg.max_steps and state.step >= rcfg.max_steps):
                t0 = time.perf_counter()
                result = train_one_epoch(run.model, run.criterion, optimizer, scheduler, scaler,
                                         run.batches(state.epoch, state.epoch_step), dev, rcfg, state, log, save,
                                         stop, amp_dtype)
                if result["stopped"] == "signal":
                    save("last.pt")
                    raise ScenectlError(f"interrupted at step {state.step}: saved {run.out / 'last.pt'}; "
                                        "continue with --resume")
                epoch_done = state.epoch_step >= rcfg.steps_per_epoch
                if epoch_done:
                    state.epoch, state.epoch_step = state.epoch + 1, 0
                val = evaluate_target(run.model, run.val_batches(), dev.device, num_classes, desc=f"val {run.name}")
                state.metrics = {"epoch": state.epoch, "step": state.step, "train_loss": result["loss"], **val,
                                 "seconds": time.perf_counter() - t0}
                log.write({"kind": "epoch" if epoch_done else "partial_epoch", **state.metrics})
                tqdm.write(f"[{run.name}] epoch {state.epoch} step {state.step}: train loss {result['loss']:.3f}, "
                           f"val top-1 {val['val_top1']:.3f}, top-5 {val['val_top5']:.3f}, "
                           f"balanced top-1 {val['val_bal_top1']:.3f}")
                if val["val_top1"] > state.best_top1:
                    state.best_top1 = val["val_top1"]
                    save("best.pt")
                save("last.pt")
    finally:
        log.close()
    if state.metrics is None:  # resumed a run that had already finished
        raise ScenectlError(f"{run.out}: the run had already finished; nothing to resume")
    return {**state.metrics, "best_top1": state.best_top1}


RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt")


def prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> dict | None:
    """Like scenectl.train.prepare_out for one run folder: the checkpoint to resume from, or None (fresh)."""
    if resume and (out / "last.pt").is_file():
        return load_checkpoint(out / "last.pt")
    present = [n for n in RUN_FILES if (out / n).exists()]
    if present and not overwrite and not resume:
        raise ScenectlError(f"{out} holds a run ({', '.join(present)}): pass --resume or --overwrite")
    for n in present:
        (out / n).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None


def prepare_top(out: Path, resume: bool, overwrite: bool, runs: list[str]) -> None:
    """The top folder: refuse to mix into a folder that holds something else."""
    if resume and overwrite:
        raise ScenectlError("--resume and --overwrite exclude each other")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise ScenectlError(f"--out {out} is not empty: pass --resume to continue it or --overwrite to replace it")
    if overwrite and out.exists():
        own = set(TOP_FILES) | set(runs) | {"ce", "kd", "context", "scratch"}
        strangers = [p.name for p in out.iterdir() if p.name not in own]
        if strangers:
            raise ScenectlError(f"--out {out} holds files scenectl did not write ({strangers[0]}, ...): "
                                "refusing to --overwrite it")
        for name in TOP_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)  # until the new one is whole, the folder must not look complete


# --------------------------------------------------------------------------------------------------------------
# reports


def read_curve(run_dir: Path) -> list[dict]:
    """The epoch records of a run's metrics.jsonl (after a resume, the latest record of each step wins)."""
    recs = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") in ("epoch", "partial_epoch"):
            recs[r["step"]] = r
    return [recs[s] for s in sorted(recs)]


def plot_curves(run_dirs: dict[str, Path], path: Path, title: str) -> None:
    """curves.png: validation top-1 and training loss against steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    for name, d in run_dirs.items():
        c = read_curve(d)
        steps = [r["step"] for r in c]
        a0.plot(steps, [r["val_top1"] for r in c], marker="o", label=f"{name} top-1")
        a0.plot(steps, [r["val_bal_top1"] for r in c], marker=".", linestyle="--", label=f"{name} balanced top-1")
        a1.plot(steps, [r["train_loss"] for r in c], marker="o", label=f"{name} (epoch mean)")
    a0.set_xlabel("step")
    a0.set_ylabel("validation accuracy")
    a0.set_ylim(0, 1)
    a0.legend(fontsize=8)
    a1.set_xlabel("step")
    a1.set_ylabel("training loss")
    a1.legend(fontsize=8)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


COLUMNS = ["top-1", "top-5", "bal top-1", "bal top-5"]


def table_rows(results: dict[str, dict]) -> dict[str, dict]:
    return {name: {"top-1": r["val_top1"], "top-5": r["val_top5"], "bal top-1": r["val_bal_top1"],
                   "bal top-5": r["val_bal_top5"]} for name, r in results.items()}


def write_report(out: Path, report: dict, title: str, notes: list[str]) -> None:
    """report.md, curves.png, then report.json (last: its presence marks a complete report)."""
    runs = {name: out / name for name in report["runs"]}
    plot_curves(runs, out / "curves.png", title)
    lines = [f"# {title}", "", *[f"- {n}" for n in notes], "",
             "Validation accuracy (percent) after the same budget; `bal` = class-balanced.", "",
             format_table(table_rows(report["runs"]), COLUMNS, markdown=True), "", "![curves](curves.png)", ""]
    write_bytes_atomic(out / "report.md", ("\n".join(lines) + "\n").encode())
    write_json_atomic(out / "report.json", report)


def summary_text(report: dict) -> str:
    return "\n".join([format_table(table_rows(report["runs"]), COLUMNS),
                      f"wrote {report['out']}/{{report.json, report.md, curves.png, "
                      f"{', '.join(report['runs'])}/}}"])


# --------------------------------------------------------------------------------------------------------------
# main


def resolve(cfg: TransferConfig, ckpt: dict, train_t: Target) -> TransferConfig:
    c = replace(cfg)
    if c.mode not in ("finetune", "linear"):
        raise ScenectlError(f"--mode must be finetune or linear, not {c.mode!r}")
    if c.init not in ("context", "scratch"):
        raise ScenectlError(f"--init must be context or scratch, not {c.init!r}")
    for name in ("epochs", "batch_size"):
        if getattr(c, name) < 1:
            raise ScenectlError(f"--{name.replace('_', '-')} must be at least 1")
    if not c.lr > 0 or not c.backbone_lr_scale >= 0:
        raise ScenectlError("--lr must be > 0 and --backbone-lr-scale >= 0")
    c.image_size = c.image_size or checkpoint_image_size(ckpt)
    n = train_t.num_samples
    if n < c.batch_size:
        raise ScenectlError(f"--train {c.train}: {n} samples, fewer than one batch (--batch-size {c.batch_size})")
    c.steps_per_epoch = c.steps_per_epoch or n // c.batch_size
    if c.warmup_steps is None:
        c.warmup_steps = round(0.05 * c.epochs * c.steps_per_epoch)
    return c


def open_targets(cfg: TransferConfig) -> tuple[Target, Target, list[str]]:
    """The training and validation targets, the validation side re-indexed to the training classes; notes."""
    train_t, val_t = open_target(cfg.train, "--train"), open_target(cfg.val, "--val")
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


def transfer(cfg: TransferConfig) -> dict:
    """Run the transfer (one init, or both with compare_scratch); returns the report (also OUT/report.json)."""
    ckpt = load_context(cfg.checkpoint)
    resolve_name(ckpt["arch"])
    train_t, val_t, data_notes = open_targets(cfg)
    cfg = resolve(cfg, ckpt, train_t)
    inits = ["context", "scratch"] if cfg.compare_scratch else [cfg.init]
    out = Path(cfg.out)
    prepare_top(out, cfg.resume, cfg.overwrite, inits)
    write_json_atomic(out / "config.json", asdict(cfg))
    dev = D.DistInfo(device=parse_device(cfg.device))
    num_classes = len(train_t.classes)
    cooc = train_t.shards.cooccurrence().to_state() if train_t.shards is not None else None
    results = {}
    for init in inits:
        net = build_model(ckpt, init, num_classes, cfg.seed)
        linear = cfg.mode == "linear"
        scale = cfg.backbone_lr_scale if init == "context" else 1.0  # a random backbone needs the full rate
        run = Run(
            name=init, out=out / init, model=FrozenBackbone(net) if linear else net, net=net,
            groups=param_groups(net, cfg.lr, cfg.weight_decay, scale, linear),
            criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
            batches=lambda epoch, start: make_loader(train_t, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                                     train=True, seed=cfg.seed, epoch=epoch, steps=cfg.steps_per_epoch,
                                                     start_step=start, workers=cfg.workers),
            val_batches=lambda: make_loader(val_t, image_size=cfg.image_size, batch_size=cfg.batch_size, train=False,
                                            workers=cfg.workers),
            checkpoint_extra={"kind": "transfer", "classes": train_t.classes, "cooccurrence": cooc,
                              "image_size": cfg.image_size, "init": init, "source_checkpoint": str(cfg.checkpoint)},
        )
        results[init] = fit(run, cfg, dev, num_classes)
    report = {"format": "scenectl-transfer/1", "out": str(out), "checkpoint": str(cfg.checkpoint),
              "arch": ckpt["arch"], "mode": cfg.mode, "train": cfg.train, "val": cfg.val,
              "classes": [c["name"] for c in train_t.classes], "train_samples": train_t.num_samples,
              "val_samples": val_t.num_samples, "notes": data_notes, "steps": cfg.steps_per_epoch * cfg.epochs if not cfg.max_steps
              else min(cfg.max_steps, cfg.steps_per_epoch * cfg.epochs), "runs": results}
    notes = [f"context checkpoint `{cfg.checkpoint}` ({ckpt['arch']}), mode `{cfg.mode}`",
             f"train `{cfg.train}` ({train_t.num_samples} samples, {num_classes} classes), val `{cfg.val}` "
             f"({val_t.num_samples})", f"{report['steps']} steps of batch {cfg.batch_size}, lr {cfg.lr} "
             f"({cfg.optimizer}), image size {cfg.image_size}, seed {cfg.seed}", *data_notes]
    write_report(out, report, f"transfer ({cfg.mode})", notes)
    return report


def main(cfg: TransferConfig) -> dict:
    return transfer(cfg)
