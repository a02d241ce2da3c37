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
seed, so the report shows what the teacher adds. The loss is a function of (student, batch) alone
(`distillation_loss`): the teacher's logits are computed inside it from the batch's masked scenes, so nothing is
handed to the loss on the side. Both runs are trained by scenectl.engine. Output: OUT/kd/ and OUT/ce/ are run
folders like `train`'s; OUT/report.json (last), report.md and curves.png compare them.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from scenectl import distributed as D
from scenectl.checkpoint import Checkpoint, read_checkpoint
from scenectl.data.coco import classes_match
from scenectl.config import DistillConfig, check, resolve_schedule
from scenectl.data.imagefolder import Epoch, Target, make_loader
from scenectl.data.loader import REBUILD_HINT, EvalBatches, Loader, make_eval_loader, open_shard_set
from scenectl.devices import parse_device
from scenectl.engine import LossFn, Run, cross_entropy, fit_experiment, param_groups
from scenectl.errors import ScenectlError
from scenectl.inference import validate
from scenectl.models import create_model, resolve_name
from scenectl.report import write_runs_report

TITLE = "distillation: student with and without the context teacher"

SCENE = "scene_input"  # the batch key of the teacher's view (the masked scene), as the reader names it


# --------------------------------------------------------------------------------------------------------------
# the loss


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Hinton's distillation loss, batch-mean. Returns {'loss', 'ce', 'kl'} (kl before the T^2 factor).

    student_logits, teacher_logits: (B, C); labels: (B,) int64; label_smoothing applies to the hard term.
    """
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)  # (B, C)
    # KL(p_t || p_s) = sum_c p_t(c) (log p_t(c) - log p_s(c)), averaged over the batch
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return {"loss": (1 - alpha) * ce + alpha * temperature ** 2 * kl, "ce": ce, "kl": kl}


def distillation_loss(teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float = 0.0) -> LossFn:
    """The engine's loss_fn(student, batch): the frozen teacher's logits on the batch's masked scenes, then kd_loss.
    A function of its arguments alone: nothing is bound to it between batches."""

    def loss(student: nn.Module, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(batch[SCENE]).float()  # (B, C)
        return kd_loss(student(batch["input"]), t, batch["label"], temperature, alpha, label_smoothing)["loss"]

    return loss


# --------------------------------------------------------------------------------------------------------------
# data


def open_sets(cfg: DistillConfig, teacher: Checkpoint) -> tuple[Target, Target]:
    """The training and validation shard sets: object crops beside the masked scenes, the teacher's classes."""
    sets = {}
    for option, spec in (("--shards", cfg.data.shards), ("--val-shards", cfg.data.val_shards)):
        s = open_shard_set(spec, cfg.net.options())
        if not s.manifest.get("params", {}).get("with_object"):
            raise ScenectlError(f"{option} {spec} has no object crops (object.jpg) beside the masked scenes; "
                                f"{REBUILD_HINT.replace(' (or `--task object`)', '')}")
        s.object_member()
        if not classes_match(teacher.classes, s.classes):
            raise ScenectlError(f"{option} {spec}: its classes differ from the teacher's ({len(s.classes)} vs "
                                f"{teacher.num_classes} classes, or other names/ids); teacher and student must "
                                "name the same classes")
        sets[option] = Target(spec, list(s.classes), shards=s)
    return sets["--shards"], sets["--val-shards"]


def data_stream(cfg: DistillConfig, target: Target, *, epoch: int | None = None, start: int = 0,
                teacher: Checkpoint | None = None, view: str = "object") -> Loader:
    """Every read of distill's data. view "object": the student's crops, training batches of `epoch` from step
    `start` or (epoch None) every sample once; with `teacher`, also each sample's masked scene at the teacher's
    size (batch key SCENE). view "scene": the teacher's own view of every sample once (its reference score)."""
    loop = cfg.loop
    if view == "scene":
        return make_eval_loader(target.shards, EvalBatches(image_size=teacher.image_size, batch_size=loop.batch_size,
                                                           workers=loop.workers, mask_channel=teacher.mask_channel))
    return make_loader(target, image_size=cfg.data.image_size, batch_size=loop.batch_size, workers=loop.workers,
                       epoch=None if epoch is None else Epoch(loop.seed, epoch, loop.steps_per_epoch, start),
                       scene_size=teacher.image_size if teacher else None,
                       scene_mask=teacher.mask_channel if teacher else True)


# --------------------------------------------------------------------------------------------------------------
# main


def make_run(cfg: DistillConfig, name: str, teacher: nn.Module, tck: Checkpoint, train_t: Target, val_t: Target,
             cooc: dict, dev: D.DistInfo) -> Run:
    """The student's run with the teacher ("kd") or without ("ce"): same initial weights, data order and budget."""
    torch.manual_seed(cfg.loop.seed)  # the same initial student for both runs
    n = len(train_t.classes)
    net = create_model(cfg.student, n, in_chans=3)
    kd, smoothing = name == "kd", cfg.optim.label_smoothing
    return Run(
        name=name, out=Path(cfg.out) / name, kind="distill", net=net, classes=train_t.classes,
        groups=param_groups(net, cfg.optim, 1.0, linear=False),
        loss_fn=distillation_loss(teacher, cfg.temperature, cfg.alpha, smoothing) if kd else cross_entropy(smoothing),
        batches=lambda epoch, start: data_stream(cfg, train_t, epoch=epoch, start=start, teacher=tck if kd else None),
        validate=lambda model: validate(model, data_stream(cfg, val_t), dev.device, n, desc=f"val {name}",
                                        total=val_t.num_samples),
        config={**asdict(cfg), "run": name}, title=f"distill, {name} student {cfg.student}: {cfg.out}/{name}",
        source={"checkpoint": str(cfg.teacher) if kd else None,
                "data": f"{cfg.data.shards} (validation {cfg.data.val_shards})", "n": train_t.num_samples},
        facts={"kind": "distill", "arch": net.arch, "in_chans": 3, "num_classes": n, "classes": train_t.classes,
               "cooccurrence": cooc, "image_size": cfg.data.image_size, "mask_channel": False, "view": "object",
               "teacher": str(cfg.teacher) if kd else None, "temperature": cfg.temperature,
               "alpha": cfg.alpha if kd else 0.0})


def distill(cfg: DistillConfig) -> dict:
    """Train the student with (and, with compare, without) the teacher; returns the report (OUT/report.json)."""
    check(cfg)
    dev = D.DistInfo(device=parse_device(cfg.loop.device))
    tck = read_checkpoint(cfg.teacher)
    train_t, val_t = open_sets(cfg, tck)
    cfg = resolve_schedule(cfg, train_t.num_samples, data_option=f"--shards {cfg.data.shards}", whole_batch=True)
    cfg.student = resolve_name(cfg.student)
    cfg.data.image_size = cfg.data.image_size or train_t.shards.image_size
    teacher = tck.build_model(dev.device).requires_grad_(False)  # eval mode, frozen
    names = ["kd", "ce"] if cfg.compare and cfg.alpha > 0 else ["kd" if cfg.alpha > 0 else "ce"]
    cooc = train_t.shards.cooccurrence().to_state()
    runs = {name: functools.partial(make_run, cfg, name, teacher, tck, train_t, val_t, cooc, dev) for name in names}
    return fit_experiment(cfg, "distill", dev, runs,
                          lambda results: finish(cfg, tck, teacher, train_t, val_t, dev, results), TITLE)


def finish(cfg: DistillConfig, tck: Checkpoint, teacher: nn.Module, train_t: Target, val_t: Target,
           dev: D.DistInfo, results: dict[str, dict]) -> dict:
    """The teacher's own score on the validation scenes (context only), then the report."""
    t = validate(teacher, data_stream(cfg, val_t, view="scene", teacher=tck), dev.device, len(val_t.classes),
                 desc="teacher", total=val_t.num_samples)
    loop = cfg.loop
    report = {"format": "scenectl-distill/1", "out": str(cfg.out), "teacher": str(cfg.teacher),
              "teacher_arch": tck.arch, "student": cfg.student, "temperature": cfg.temperature,
              "alpha": cfg.alpha, "shards": cfg.data.shards, "val_shards": cfg.data.val_shards,
              "train_samples": train_t.num_samples, "val_samples": val_t.num_samples,
              "steps": loop.total_steps(), "runs": results, "teacher_val": t}
    notes = [f"teacher `{cfg.teacher}` ({tck.arch}) sees the masked scene; student {cfg.student} sees "
             "object.jpg", f"kd: (1 - {cfg.alpha}) CE + {cfg.alpha} T^2 KL, T = {cfg.temperature}; ce: alpha = 0",
             f"train `{cfg.data.shards}` ({train_t.num_samples} samples), val `{cfg.data.val_shards}` "
             f"({val_t.num_samples})", f"{report['steps']} steps of batch {loop.batch_size}, lr {cfg.optim.lr} "
             f"({cfg.optim.optimizer}), image size {cfg.data.image_size}, seed {loop.seed}",
             f"teacher on the validation scenes (context only): top-1 {100 * t['val_top1']:.1f}, "
             f"top-5 {100 * t['val_top5']:.1f}, balanced top-1 {100 * t['val_bal_top1']:.1f}"]
    write_runs_report(Path(cfg.out), report, TITLE, notes)
    return report
