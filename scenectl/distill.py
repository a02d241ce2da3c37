"""`scenectl distill`: teach an object classifier with the context model as teacher (Hinton et al., 2015).

    cfg = DistillConfig(teacher="runs/train/best.pt", student="resnet18", shards="shards/train-obj",
                        val_shards="shards/val-obj", out="runs/distill")
    report = distill(cfg)

The two models look at the same instance through complementary views (docs/transfer.md says why this helps):

    student: object.jpg, the unmasked crop of the instance        (B, 3, S, S)   -> logits s (B, C)
    teacher: jpg + mask.png, the scene with the instance hidden   (B, 4, S', S') -> logits t (B, C), frozen

    loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL( softmax(t / T) || softmax(s / T) )

T^2 keeps the soft term's gradient on the scale of the hard term's as T changes (Hinton et al., sec. 2). With
`compare` (default) the same student is also trained with alpha = 0 (plain cross-entropy) at the same budget and
seed, so the report shows what the teacher adds. Output: OUT/kd/ and OUT/ce/ are run folders like `train`'s;
OUT/report.json (last), report.md and curves.png compare them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from scenectl import distributed as D
from scenectl.devices import parse_device
from scenectl.checkpoint import classes_match
from scenectl.data.imagefolder import Target, make_loader
from scenectl.data.loader import REBUILD_HINT, make_eval_loader, open_shard_set
from scenectl.errors import ScenectlError
from scenectl.evaluate import load_model
from scenectl.io import write_json_atomic
from scenectl.models import create_model, resolve_name
from scenectl.transfer import (Run, checkpoint_image_size, evaluate_target, fit, param_groups, prepare_top,
                               write_report)


@dataclass
class DistillConfig:
    teacher: str = "runs/train/best.pt"  # a context checkpoint (`scenectl train`)
    student: str = "resnet18"  # architecture of the object classifier
    shards: str = "shards/train2017"  # built with --with-object
    val_shards: str = "shards/val2017"
    out: str = "runs/distill"
    temperature: float = 4.0
    alpha: float = 0.5
    compare: bool = True  # also train the student without the teacher (alpha = 0)
    epochs: int = 10
    max_steps: int = 0
    steps_per_epoch: int | None = None  # None: training samples // batch_size
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_steps: int | None = None
    image_size: int | None = None  # student input size; None: the shards' image size
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    amp: bool = True
    resume: bool = False
    overwrite: bool = False
    log_every: int = 10
    checkpoint_every: int = 0


# --------------------------------------------------------------------------------------------------------------
# the loss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> dict[str, torch.Tensor]:
    """Hinton's distillation loss, batch-mean. Returns {'loss', 'ce', 'kl'} (kl before the T^2 factor).

    student_logits, teacher_logits: (B, C); labels: (B,) int64.
    """
    ce = F.cross_entropy(student_logits, labels)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)  # (B, C)
    # KL(p_t || p_s) = sum_c p_t(c) (log p_t(c) - log p_s(c)), averaged over the batch
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return {"loss": (1 - alpha) * ce + alpha * temperature ** 2 * kl, "ce": ce, "kl": kl}


class KDCriterion:
    """criterion(student_logits, labels) for scenectl.train.train_one_epoch; the teacher's logits of the same
    batch are bound just before (see `with_teacher`), because that loop passes only (logits, labels)."""

    def __init__(self, temperature: float, alpha: float):
        self.temperature, self.alpha = temperature, alpha
        self.teacher_logits: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.teacher_logits is None or self.teacher_logits.shape != logits.shape:
            raise RuntimeError("KDCriterion: no teacher logits bound for this batch")
        t, self.teacher_logits = self.teacher_logits, None  # one batch only
        return kd_loss(logits, t, labels, self.temperature, self.alpha)["loss"]


def with_teacher(batches: Iterable[dict], teacher: nn.Module, criterion: KDCriterion,
                 device: torch.device) -> Iterator[dict]:
    """Yield each batch after binding the teacher's logits on its masked scenes (`scene_input`) to criterion."""
    for batch in batches:
        with torch.no_grad():
            criterion.teacher_logits = teacher(batch["scene_input"].to(device)).float()  # (B, C)
        yield batch


# --------------------------------------------------------------------------------------------------------------
# main


def open_sets(cfg: DistillConfig, tckpt: dict) -> tuple[Target, Target]:
    sets = {}
    for option, spec in (("--shards", cfg.shards), ("--val-shards", cfg.val_shards)):
        s = open_shard_set(spec)
        if not s.manifest.get("params", {}).get("with_object"):
            raise ScenectlError(f"{option} {spec} has no object crops (object.jpg) beside the masked scenes; "
                                f"{REBUILD_HINT.replace(' (or `--task object`)', '')}")
        s.object_member()
        if not classes_match(tckpt["classes"], s.classes):
            raise ScenectlError(f"{option} {spec}: its classes differ from the teacher's ({len(s.classes)} vs "
                                f"{len(tckpt['classes'])} classes, or other names/ids); teacher and student must "
                                "name the same classes")
        sets[option] = Target(spec, list(s.classes), shards=s)
    return sets["--shards"], sets["--val-shards"]


def resolve(cfg: DistillConfig, train_t: Target) -> DistillConfig:
    c = replace(cfg, student=resolve_name(cfg.student))
    if not c.temperature > 0:
        raise ScenectlError(f"--temperature must be > 0, got {c.temperature}")
    if not 0 <= c.alpha <= 1:
        raise ScenectlError(f"--alpha must be in [0, 1], got {c.alpha}")
    for name in ("epochs", "batch_size"):
        if getattr(c, name) < 1:
            raise ScenectlError(f"--{name.replace('_', '-')} must be at least 1")
    c.image_size = c.image_size or train_t.shards.image_size
    n = train_t.num_samples
    if n < c.batch_size:
        raise ScenectlError(f"--shards {c.shards}: {n} samples, fewer than one batch (--batch-size {c.batch_size})")
    c.steps_per_epoch = c.steps_per_epoch or n // c.batch_size
    if c.warmup_steps is None:
        c.warmup_steps = round(0.05 * c.epochs * c.steps_per_epoch)
    return c


def teacher_view(tckpt: dict) -> tuple[int, bool]:
    """(image size, mask channel) the teacher was trained with."""
    mask = bool(tckpt.get("mask_channel", int(tckpt.get("in_chans", 3)) == 4))
    return checkpoint_image_size(tckpt), mask


def teacher_accuracy(teacher: nn.Module, tckpt: dict, val_t: Target, cfg: DistillConfig, dev) -> dict:
    """The teacher's own score on the validation scenes (context only), for reference."""
    size, mask = teacher_view(tckpt)
    loader = make_eval_loader(val_t.shards, image_size=size, batch_size=cfg.batch_size, workers=cfg.workers,
                              mask_channel=mask)
    return evaluate_target(teacher, loader, dev.device, len(val_t.classes), desc="teacher")


def distill(cfg: DistillConfig) -> dict:
    """Train the student with (and, with compare, without) the teacher; returns the report (OUT/report.json)."""
    dev = D.DistInfo(device=parse_device(cfg.device))
    teacher, tckpt = load_model(cfg.teacher, dev.device)  # eval mode, weights only
    if "classes" not in tckpt:
        raise ScenectlError(f"{cfg.teacher} names no classes: not a scenectl model checkpoint")
    train_t, val_t = open_sets(cfg, tckpt)
    cfg = resolve(cfg, train_t)
    runs = ["kd", "ce"] if cfg.compare and cfg.alpha > 0 else ["kd" if cfg.alpha > 0 else "ce"]
    out = Path(cfg.out)
    prepare_top(out, cfg.resume, cfg.overwrite, runs)
    write_json_atomic(out / "config.json", asdict(cfg))
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_size, t_mask = teacher_view(tckpt)
    num_classes = len(train_t.classes)
    cooc = train_t.shards.cooccurrence().to_state()
    results = {}
    for name in runs:
        torch.manual_seed(cfg.seed)  # the same initial student for both runs
        net = create_model(cfg.student, num_classes, in_chans=3)
        kd = name == "kd"
        criterion = KDCriterion(cfg.temperature, cfg.alpha) if kd else nn.CrossEntropyLoss()

        def batches(epoch: int, start: int, kd=kd, criterion=criterion):
            loader = make_loader(train_t, image_size=cfg.image_size, batch_size=cfg.batch_size, train=True,
                                 seed=cfg.seed, epoch=epoch, steps=cfg.steps_per_epoch, start_step=start,
                                 workers=cfg.workers, scene_size=t_size if kd else None, scene_mask=t_mask)
            return with_teacher(loader, teacher, criterion, dev.device) if kd else loader

        run = Run(name=name, out=out / name, model=net, net=net,
                  groups=param_groups(net, cfg.lr, cfg.weight_decay, 1.0, linear=False), criterion=criterion,
                  batches=batches,
                  val_batches=lambda: make_loader(val_t, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                                  train=False, workers=cfg.workers),
                  checkpoint_extra={"kind": "distill", "classes": train_t.classes, "cooccurrence": cooc,
                                    "image_size": cfg.image_size, "view": "object",
                                    "teacher": str(cfg.teacher) if kd else None,
                                    "temperature": cfg.temperature, "alpha": cfg.alpha if kd else 0.0})
        results[name] = fit(run, cfg, dev, num_classes)
    teacher_scores = teacher_accuracy(teacher, tckpt, val_t, cfg, dev)
    steps = cfg.steps_per_epoch * cfg.epochs
    report = {"format": "scenectl-distill/1", "out": str(out), "teacher": str(cfg.teacher),
              "teacher_arch": tckpt["arch"], "student": cfg.student, "temperature": cfg.temperature,
              "alpha": cfg.alpha, "shards": cfg.shards, "val_shards": cfg.val_shards,
              "train_samples": train_t.num_samples, "val_samples": val_t.num_samples,
              "steps": min(cfg.max_steps, steps) if cfg.max_steps else steps, "runs": results,
              "teacher_val": teacher_scores}
    notes = [f"teacher `{cfg.teacher}` ({tckpt['arch']}) sees the masked scene; student {cfg.student} sees "
             "object.jpg", f"kd: (1 - {cfg.alpha}) CE + {cfg.alpha} T^2 KL, T = {cfg.temperature}; ce: alpha = 0",
             f"train `{cfg.shards}` ({train_t.num_samples} samples), val `{cfg.val_shards}` ({val_t.num_samples})",
             f"{report['steps']} steps of batch {cfg.batch_size}, lr {cfg.lr} ({cfg.optimizer}), image size "
             f"{cfg.image_size}, seed {cfg.seed}",
             f"teacher on the validation scenes (context only): top-1 {100 * teacher_scores['val_top1']:.1f}, "
             f"top-5 {100 * teacher_scores['val_top5']:.1f}, balanced top-1 {100 * teacher_scores['val_bal_top1']:.1f}"]
    write_report(out, report, "distillation: student with and without the context teacher", notes)
    return report


def main(cfg: DistillConfig) -> dict:
    return distill(cfg)
