"""Options of the commands: shared groups, composed into one config per command, checked in one place.

    cfg = TrainConfig(shards="shards/train2017", arch="ffc", lr=0.05)   # flat option names (as the CLI passes them)
    cfg.optim.lr, cfg.loop.epochs, cfg.data.shards                       # ... land in their group
    asdict(cfg)      # what config.json holds: {"arch": ..., "data": {...}, "optim": {...}, "loop": {...}, ...}

Groups shared by the training commands:
    Optim   optimizer, lr, momentum, weight_decay, warmup_steps, label_smoothing
    Loop    epochs, max_steps, steps_per_epoch, batch_size, seed, device, amp, workers, log_every,
            checkpoint_every, resume, overwrite (+ world_size, filled in)
    Data    shards, val_shards, image_size (train and distill; transfer names its targets --train / --val)
    Net     retries, timeout, backoff: how remote shard reads retry (scenectl.data.remote; unset: the
            environment's $SCENECTL_*, else the defaults) (train and distill)
Each command states only its own defaults (`group(Loop, epochs=30)`). Every field carries its --help text, so the
command line options are generated from these classes (scenectl/cli/_config.py) and a default lives in one place.
Option names are unique across a config's groups: `--lr` is `cfg.optim.lr` whatever the command.

Every numeric option has one range, declared by its name in scenectl.options.RANGES; `cfg.check()` (the one
generic check of scenectl.options) checks ranges and choices of every config, `load_config` a config file's values.
"""

from __future__ import annotations

import functools
import os
import subprocess
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from scenectl import __version__
from scenectl.data.remote import Net, file_value_problem
from scenectl.errors import ScenectlError
from scenectl.io import read_json
from scenectl.options import (RANGES, Options, alternatives, flag, group, is_group, leaves, option,
                              option_fields, option_name, option_specs, range_problem, with_options)

OPTIMIZERS = ("sgd", "adamw")
# options that may change between the sessions of one run (--resume): they change speed, logging or where the
# data is read from, not what is computed (another --workers changes the batch order; docs/training.md)
RESUMABLE = frozenset({"max_steps", "workers", "log_every", "checkpoint_every", "tensorboard", "skip_corrupt",
                       "resume", "overwrite", "device", "shards", "val_shards", "train", "val", "out", "retries",
                       "timeout", "backoff"})
# keys a run folder's config.json holds beside the options: never read back as options
RECORD_ONLY = ("scenectl", "run")


# --help of options that several commands write by hand (scenectl/cli/), so that one name keeps one meaning
DEVICE_HELP = "auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."
LOADER_WORKERS_HELP = "DataLoader processes decoding shards (0: decode in the main process)."


# --------------------------------------------------------------------------------------------------------------
# the shared groups


@dataclass
class Optim:
    optimizer: str = option("adamw", "sgd (Nesterov momentum) or adamw.", choices=OPTIMIZERS)
    lr: float | None = option(1e-3, "Peak learning rate; unset: 0.1 x global batch / 256 (sgd), 1e-3 (adamw).")
    momentum: float = option(0.9, "SGD momentum (Nesterov when > 0); adamw ignores it.")
    weight_decay: float | None = option(0.05, "Weight decay (not on biases and norm weights); unset: 1e-4 (sgd), "
                                              "0.05 (adamw).")
    warmup_steps: int | None = option(None, "Linear warm-up steps, then cosine decay to 0; unset: 5% of all steps.")
    label_smoothing: float = option(0.0, "Label smoothing of the training loss (validation: plain cross-entropy).")


@dataclass
class Loop:
    epochs: int = option(10, "Epochs; the learning-rate schedule spans them all.")
    max_steps: int = option(0, "Stop after this many steps in all (0: no limit; the schedule is unchanged).")
    steps_per_epoch: int | None = option(None, "Steps per epoch; unset: training samples // (batch x processes).")
    batch_size: int = option(32, "Batch size per process.")
    seed: int = option(0, "Seed for weights, data order and augmentation.")
    device: str = option("auto", "auto (this process's GPU when torch sees one, else the CPU), cpu, cuda or cuda:N.")
    amp: bool = option(True, "Mixed precision on CUDA (bf16, or fp16 with loss scaling).")
    workers: int = option(0, "DataLoader worker processes per process (0: load in the main process).")
    log_every: int = option(10, "Write a metrics.jsonl line every N steps (0: epochs only).")
    checkpoint_every: int = option(0, "Also save last.pt every N steps within an epoch (0: at epoch ends only).")
    resume: bool = option(False, "Continue the run in --out from its last.pt; refused if an option that changes "
                                 "what is computed differs.")
    overwrite: bool = option(False, "Replace the run in --out (only scenectl's files of this command are removed).")
    world_size: int = 1  # filled in: number of DDP processes (not an option)

    def total_steps(self) -> int:
        """The run's optimisation steps: all epochs', or --max-steps where it stops the run sooner."""
        whole = self.epochs * self.steps_per_epoch
        return min(whole, self.max_steps) if self.max_steps else whole


@dataclass
class Data:
    shards: str = option("shards/train2017", "Training shard set: folder, brace pattern or URL.")
    val_shards: str = option("shards/val2017", "Validation shard set (same forms as --shards), the same classes.")
    image_size: int | None = option(None, "Input size in pixels; unset: the training shards' size.")


@dataclass
class TrainData(Data):
    shuffle_buffer: int = option(1000, "Samples held in each stream's shuffle buffer (at most one pass of "
                                       "its share).")
    skip_corrupt: bool = option(False, "Skip and count corrupt samples/shards instead of stopping.")


@dataclass
class Augmentation:
    augment: bool = option(True, "Random crop around the hidden region, flip, colour jitter (training only).")
    min_scale: float = option(0.35, "Smallest crop, as a fraction of the image area.")
    flip: float = option(0.5, "Probability of a horizontal flip.")
    jitter: float = option(0.2, "Colour jitter: brightness, contrast and saturation each x U(1 - j, 1 + j).")


class Run(Options):
    """A config that runs on a device: beyond ranges and choices, its --device must parse."""

    def check_more(self) -> None:
        from scenectl.devices import parse_device  # (torch: imported only when a command runs, not for --help)

        parse_device(self.device)


@dataclass
class Scoring:
    """Running a checkpoint over shard sets (eval, compare)."""

    device: str = option("auto", DEVICE_HELP)
    batch_size: int = option(64, "Samples per forward pass.")
    workers: int = option(2, LOADER_WORKERS_HELP)


@dataclass(init=False)
class TrainConfig(Run):
    """`scenectl train` (scenectl/train.py)."""

    data: TrainData = group(TrainData, help={"image_size": "Input size in pixels; unset: the training shards' size "
                                                            "(build-shards writes 256)."})
    arch: str = option("resnet18", "Model: resnet18/34/50, ffc_resnet18/34/50; aliases resnet, ffc.")
    out: str = option("runs/train", "Run folder (config.json, metrics.jsonl, last.pt, best.pt, curves.png).", "--out",
                      "-o")
    mask_channel: bool = option(True, "Give the model the hidden region as a 4th input channel.")
    hole_only: bool = option(False, "Hole-only control: the same model and recipe on the hidden region alone (RGB "
                                    "replaced by the fill everywhere, mask channel kept).")
    aux_visible: float = option(0.0, "Weight of an auxiliary multi-label loss: a second head on the same features "
                                     "predicts the classes still visible in the scene (0: no such head).")
    pretrained: str | None = option(None, "'imagenet' or a torchvision state-dict file (ResNets).")
    tensorboard: bool = option(False, "Also log to OUT/tensorboard (needs scenectl[tensorboard]).")
    augmentation: Augmentation = group(Augmentation)
    net: Net = group(Net)
    optim: Optim = group(Optim, optimizer="sgd", lr=None, weight_decay=None, label_smoothing=0.1)
    loop: Loop = group(Loop, epochs=30, batch_size=64, workers=min(4, os.cpu_count() or 1), log_every=50,
                       checkpoint_every=500)


@dataclass(init=False)
class TransferConfig(Run):
    """`scenectl transfer` (scenectl/transfer.py)."""

    checkpoint: str = option("runs/train/best.pt", "Context checkpoint (scenectl train).", "--checkpoint", "-c")
    train: str = option("imagefolder/train2017", "Target training data: ImageFolder tree or shard set (object crops).")
    val: str = option("imagefolder/val2017", "Target validation data, the same classes.")
    image_size: int | None = option(None, "Input size in pixels; unset: the checkpoint's.")
    mode: str = option("finetune", "finetune (train all) or linear (head only, backbone frozen).",
                       choices=("finetune", "linear"))
    init: str = option("context", "context (the checkpoint's backbone) or scratch (random weights).",
                       choices=("context", "scratch"))
    compare_scratch: bool = option(False, "Run both inits at the same budget and seed, and compare them.")
    backbone_lr_scale: float = option(1.0, "finetune from context: backbone lr = lr x this (e.g. 0.1).")
    out: str = option("runs/transfer", "Output folder: OUT/<init>/ run folders, report and curves.", "--out", "-o")
    net: Net = group(Net)
    optim: Optim = group(Optim, help={"lr": "Learning rate of the head (the backbone's: times --backbone-lr-scale)."})
    loop: Loop = group(Loop)


@dataclass(init=False)
class DistillConfig(Run):
    """`scenectl distill` (scenectl/distill.py)."""

    teacher: str = option("runs/train/best.pt", "Context checkpoint (scenectl train): the frozen teacher.",
                          "--checkpoint", "-c", "--teacher")  # --checkpoint: its name in every command
    student: str = option("resnet18", "Student architecture (resnet18, ffc, ...).")
    data: Data = group(Data, help={"shards": "Training shard set with object.jpg (build-shards --with-object).",
                                   "val_shards": "Validation shard set with object.jpg, the same classes.",
                                   "image_size": "Student input size in pixels; unset: the shards' size."})
    temperature: float = option(4.0, "Softmax temperature T of the KD term.", "--temperature", "-T")
    alpha: float = option(0.5, "Weight of the KD term (0: plain cross-entropy).")
    compare: bool = option(True, "Also train the student without the teacher (alpha = 0).")
    out: str = option("runs/distill", "Output folder: OUT/kd/ and OUT/ce/ run folders, report and curves.",
                      "--out", "-o")
    net: Net = group(Net)
    optim: Optim = group(Optim)
    loop: Loop = group(Loop)


@dataclass(init=False)
class EvalConfig(Run):
    """`scenectl eval` (scenectl/evaluate.py)."""

    checkpoint: str = option("runs/train/last.pt", "Checkpoint written by scenectl train (or transfer/distill); "
                                                   "the default, the final weights, was not selected on val2017.",
                             "--checkpoint", "-c")
    shards: list[str] = option(["shards/val2017"], "Shard set folder or webdataset URL pattern; repeat to compare "
                                                   "sets.")
    topk: list[int] = option([], "Extra k to report (repeatable); 1, 3, 5 and 10 are always reported; a k at or above "
                                 "the class count (100 % by construction) is left out, with a note.", "--topk", "-k")
    out: str | None = option(None, "Output folder; unset: <checkpoint's folder>/eval.", "--out", "-o")
    scoring: Scoring = group(Scoring)
    seed: int = option(0, "Seed of the random baseline, the bootstrap resamples and the mask-only baseline's "
                          "held-out split.")
    bootstrap: int = option(1000, "Bootstrap resamples of the images for the 95% intervals (0: no intervals).")
    mask_only: bool = option(True, "Fit and report the mask-only baseline, the shape-leakage control (--no-mask-only: "
                                   "skip it; the report says so).", "--mask-only/--no-mask-only")
    mask_only_train: str | None = option(None, "Shard set the mask-only baseline is fitted on; unset: the "
                                               "checkpoint's training shards, from its config.")
    overwrite: bool = option(False, "Replace a report already in --out.")
    save_logits: bool = option(True, "Store the (N, C) logits in predictions.h5 beside the top-k (--no-logits: the "
                                     "top-k only).", "--logits/--no-logits")
    max_samples: int | None = option(None, "Evaluate at most this many samples per set; unset: all.")
    min_class_samples: int = option(5, "Evaluated targets a class needs to enter the balanced metrics (and to show a "
                                       "per-class interval).")
    cooccurrence: str | None = option(None, "cooccurrence.h5 to score plausibility and the label-only baselines "
                                            "with when the checkpoint carries no counts (eval refuses to use the "
                                            "evaluated split's own unless named here).")
    hole_only_checkpoint: str | None = option(None, "A train --hole-only checkpoint: scored on the same samples and "
                                                    "reported as the model minus it (the context contribution).")
    net: Net = group(Net)


@dataclass(init=False)
class InspectConfig(Options):
    """`scenectl inspect-shards` (scenectl/data/inspect.py)."""

    directory: str = option("shards/val2017", "Shard set: a folder (with manifest.json), a brace pattern or a URL "
                                              "(https://host/dir/, pipe:COMMAND).", argument=True, required=True)
    n: int = option(16, "Samples on the contact sheet: from different images, drawn at random from the set (from "
                        "whole shards holding some 20,000 samples of a larger one).")
    seed: int = option(0, "Seed of the random draw of the contact sheet's samples.")
    out: Path | None = option(None, "Contact sheet PNG, outside any folder a scenectl command owns. Default: "
                                    "DIR-contact-sheet.png beside DIR.", "--out", "-o")
    net: Net = group(Net)


@dataclass(init=False)
class MergeConfig(Options):
    """`scenectl merge-manifests` (scenectl/data/shards.py)."""

    directory: Path = option(Path("shards/train2017"), "Shard folder holding manifest.part-{i}-of-{n}.json for every "
                                                       "i.", argument=True, required=True)


# the other commands' configs (here, light to import for the CLI; each command's module imports its own)

@dataclass(init=False)
class CompareConfig(Run):
    """`scenectl compare`: eval's Scoring and Net groups, for the checkpoint inputs run on --shards."""

    inputs: list[str] = option([], "Arms, each NAME=PATH[,PATH...] (one eval folder, predictions.h5 file or "
                                   "checkpoint per training seed) or a bare PATH (an arm of one seed); two or more.",
                               argument=True, required=True, metavar="ARM...")
    reference: str | None = option(None, "The input the others are compared with [default: the first].",
                                   "--reference", "-r")
    shards: list[str] = option([], "Shard set the checkpoint inputs are scored on (repeatable); eval folders carry "
                                   "their own predictions.")
    out: str = option("runs/compare", "Output folder.", "--out", "-o", type=Path)
    topk: list[int] = option([], "Extra k to report (repeatable); 1, 3, 5 and 10 are always reported.", "--topk",
                             "-k")
    bootstrap: int = option(1000, "Bootstrap resamples of the images for the intervals (0 = no intervals).")
    seed: int = option(0, "Seed of the bootstrap resamples.")
    scoring: Scoring = group(Scoring, help={"batch_size": "Samples per forward pass (checkpoint inputs)."})
    max_samples: int | None = option(None, "Score checkpoint inputs on at most this many samples per set.")
    min_class_samples: int = option(5, "Evaluated targets a class needs to enter the balanced metrics.")
    hole_only_arm: str | None = option(None, "The arm that is the hole-only control (train --hole-only): the "
                                             "reference, each other arm minus it reported as the context "
                                             "contribution.")
    overwrite: bool = option(False, "Replace a report already in --out.", "--overwrite")
    net: Net = group(Net)


DEFAULT_WEIGHTS = [round(0.1 * i, 2) for i in range(21)]  # fuse's grid of w: 0, 0.1, ..., 2.0


@dataclass(init=False)
class FuseConfig(Run):
    """`scenectl fuse`."""

    context: str = option("runs/train/best.pt", "Context checkpoint (scenectl train).", "--checkpoint", "-c",
                          "--context", type=Path)  # --checkpoint: its name in every command
    object: str = option("runs/distill/ce/best.pt", "Object classifier checkpoint (distill / transfer), same classes.",
                         type=Path, required=True)
    shards: str = option("shards/val2017", "Validation shard set with object.jpg (w is chosen here).")
    ooc_shards: str | None = option(None, "Out-of-context set (scenectl build-ooc).")
    out: str = option("runs/fuse", "Output folder.", "--out", "-o", type=Path)
    weights: list[float] = option(DEFAULT_WEIGHTS, "A value of w in the grid (repeatable) [default: 0, 0.1, ..., 2].",
                                  "--weight", "-w", show_default=False)
    batch_size: int = option(64, "Samples per forward pass.")
    workers: int = option(0, LOADER_WORKERS_HELP)
    device: str = option("auto", DEVICE_HELP)
    overwrite: bool = option(False, "Replace a report already in --out.", "--overwrite")
    net: Net = group(Net)

    def check_more(self) -> None:
        if not self.weights:
            raise ScenectlError("--weight: the grid of w needs at least one value")
        super().check_more()


@dataclass(init=False)
class PredictConfig(Options):
    """`scenectl predict`."""

    checkpoint: str = option("runs/train/best.pt", "Checkpoint to ask.", "--checkpoint", "-c", type=Path)
    image: str = option("", "The image (JPEG, PNG, ...).", type=Path, argument=True, required=True)
    box: str | None = option(None, "Object box x,y,w,h in pixels.")
    polygon: str | None = option(None, "Object outline x1,y1,x2,y2,... (instance shape).")
    mask_file: str | None = option(None, "Object mask PNG, image-sized, non-zero = object.", type=Path | None)
    shape: str | None = option(None, "square, circle, box or instance [default: as trained].")
    fill: str | None = option(None, "mean, black, noise or blur [default: as trained].")
    margin: int | None = option(None, "Dilation in pixels [default: as trained].")
    top: int = option(10, "Classes to list.")
    out: str | None = option(None, "PNG: the masked input beside a bar chart.", "--out", "-o", type=Path | None)
    device: str = option("auto", DEVICE_HELP)
    seed: int = option(0, "Seed of the noise / blur fills.")


@dataclass(init=False)
class CooccurrenceConfig(Options):
    """`scenectl cooccurrence`."""

    source: str = option("shards/train2017", "Shard set folder / URL, checkpoint (.pt) or cooccurrence.h5.",
                         argument=True, required=True)
    top: int = option(5, "Companions listed per class.")
    # conditional: P(j in image | i in image); pmi: log P(i, j) / (P(i) P(j))
    by: str = option("conditional", "conditional or pmi.", choices=("conditional", "pmi"))
    # PMI over-rates rare pairs
    min_count: int = option(1, "Ignore pairs seen together in fewer images.")
    out: str | None = option("cooccurrence.png", "Heatmap PNG to write.", "--out", "-o", type=Path | None)
    no_plot: bool = option(False, "Print only; write no heatmap.", "--no-plot")
    net: Net = group(Net)

    def heatmap(self) -> str | None:
        """Where the heatmap goes (None: print only)."""
        return None if self.no_plot else self.out


# --------------------------------------------------------------------------------------------------------------
# data-dependent defaults, the same for every training command

def check(cfg: Options) -> None:
    """Every option of a command's config, each error naming its --option; run before anything is created."""
    cfg.check()


def resolve_schedule(cfg: Options, num_samples: int, world_size: int = 1, *, data_option: str,
                     whole_batch: bool = False) -> Options:
    """A copy of `cfg` with the data-dependent defaults filled in, so config.json records what actually ran.

    whole_batch: refuse a training set smaller than one batch (a map-style set drops its last partial batch).
    """
    c = replace(cfg)
    loop, optim = c.loop, c.optim
    loop.world_size = world_size
    per_step = loop.batch_size * world_size
    if whole_batch and num_samples < per_step:
        raise ScenectlError(f"{data_option}: {num_samples} samples, fewer than one batch (--batch-size "
                            f"{loop.batch_size})")
    loop.steps_per_epoch = loop.steps_per_epoch or max(1, num_samples // per_step)
    if optim.lr is None:  # the linear scaling rule for sgd (Goyal et al. 2017)
        optim.lr = 0.1 * per_step / 256 if optim.optimizer == "sgd" else 1e-3
    if optim.weight_decay is None:
        optim.weight_decay = 1e-4 if optim.optimizer == "sgd" else 0.05
    if optim.warmup_steps is None:
        optim.warmup_steps = round(0.05 * loop.epochs * loop.steps_per_epoch)
    return c


# --------------------------------------------------------------------------------------------------------------
# config files (--config FILE) and what a run folder records


def load_config(cls: type, path: str | os.PathLike) -> Any:
    """A config of class `cls` (an Options class or a plain dataclass such as BuildConfig) from a config.json that a
    command wrote (nested groups, or the flat layout of older runs).

    Every value is checked against its option's type and range; unknown options are refused. --resume and
    --overwrite are never taken from a file: what to do with an existing --out is this session's choice.
    """
    data = read_json(path, "config file")  # a JSON object (read_json's `expect`)
    own, where, nested = {f.name: f for f in fields(cls)}, leaves(cls), {}
    groups = {name: f.metadata["group"] for name, f in own.items() if is_group(f)}
    for key, value in data.items():
        if key in RECORD_ONLY:
            continue
        if key in groups:
            if not isinstance(value, dict):
                raise ScenectlError(f"--config {path}: '{key}' must be an object of options")
            value = {k: _checked_value(groups[key], k, v, path, f"{key}.") for k, v in value.items()}
        elif key in own or key in where:
            value = _checked_value(groups[where[key]] if key in where else cls, key, value, path)
        else:
            raise ScenectlError(f"--config {path}: unknown option {key!r}")
        nested[key] = value
    cfg = cls(**nested)
    return with_options(cfg, {f.name: False for f, _ in option_fields(cfg) if f.name in ("resume", "overwrite")})


def _checked_value(owner: type, key: str, value: Any, path, prefix: str = "") -> Any:
    """`value` of option `key` read from config file `path`, checked (type, range); a path-typed one as a Path."""
    hints = typing.get_type_hints(owner)
    if key not in hints or key not in owner.__dataclass_fields__:
        raise ScenectlError(f"--config {path}: unknown option '{prefix}{key}'")
    if not _json_fits(hints[key], value):
        raise ScenectlError(f"--config {path}: option '{prefix}{key}' is {value!r}, not {_type_name(hints[key])}")
    problem = range_problem(option_name(owner.__dataclass_fields__[key]), value)
    if problem:
        raise ScenectlError(f"--config {path}: option '{prefix}{key}' {problem}")
    return Path(value) if isinstance(value, str) and Path in alternatives(hints[key]) else value


def _json_fits(hint: Any, value: Any) -> bool:
    """Whether a JSON `value` fits a field of type `hint`: an int where a float is wanted, a string for a path, a
    list of fitting items for a list; never a bool for a number."""
    for a in alternatives(hint):
        if typing.get_origin(a) is list:
            (item,) = typing.get_args(a)
            if isinstance(value, list) and all(_json_fits(item, v) for v in value):
                return True
        elif type(value) in {float: (float, int), Path: (str,), type(None): (type(None),)}.get(a, (a,)):
            return True
    return False


def _type_name(hint: Any) -> str:
    names = {type(None): "null", Path: "a path (str)"}
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in alternatives(hint))


def from_command_line(cls: type, options: dict[str, Any], given: set[str],
                      config_file: str | os.PathLike | None = None) -> Any:
    """A command's config from its flat CLI options: all of them, or with --config FILE the file's options
    overridden by those given on the command line (`given`).

    A config file is data: a `pipe:` command in it (a shard set to read through a shell) is refused unless the
    command line gives that option (URLs and local paths are read as they are)."""
    if config_file is None:
        return cls(**options)
    cfg = load_config(cls, config_file)
    for f, value in option_fields(cfg):
        for v in value if isinstance(value, list) else [value]:
            why = file_value_problem(str(v), urls=True) if isinstance(v, (str, Path)) else None
            if f.name not in given and why:
                raise ScenectlError(f"--config {config_file}: option '{f.name}' {why}; a pipe: command or a list joined "
                                    f"by '::' read from a file is not run: type it on the command line "
                                    f"({flag(option_name(f))} ...)")
    return with_options(cfg, {k: v for k, v in options.items() if k in given})


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """scenectl's version and, when it runs from a git checkout, the commit (and whether the tree had changes)."""
    root = Path(__file__).resolve().parents[1]
    out: dict[str, Any] = {"version": __version__, "git_commit": None}
    if not (root / ".git").exists():
        return out
    try:
        git = functools.partial(subprocess.run, capture_output=True, text=True, timeout=10, cwd=root, check=True)
        out["git_commit"] = git(["git", "rev-parse", "HEAD"]).stdout.strip()
        out["git_dirty"] = bool(git(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


__all__ = ["Optim", "Loop", "Data", "Net", "TrainData", "Augmentation", "Scoring", "Run", "TrainConfig",
           "TransferConfig", "DistillConfig", "EvalConfig", "InspectConfig", "MergeConfig", "RescoreConfig", "Options", "option",
           "group", "leaves", "option_specs", "check", "RANGES", "range_problem", "flag", "DEVICE_HELP",
           "LOADER_WORKERS_HELP", "resolve_schedule", "load_config", "from_command_line", "provenance", "RESUMABLE"]


# --------------------------------------------------------------------------------------------------------------
# scenectl rescore (scenectl/rescore.py)

RESCORE_GRID = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]  # the values of w rescore tries by default


@dataclass(init=False)
class RescoreConfig(Run):
    """`scenectl rescore` (scenectl/rescore.py)."""

    detections: str | None = option(None, "COCO results JSON of any detector: [{image_id, category_id, bbox, score}, "
                                          "...] (required).")
    images: str | None = option(None, "Folder of the images the results are of (required).")
    annotations: str | None = option(None, "COCO instances JSON of those images: sizes, categories, and the ground "
                                           "truth of the evaluation (required).")
    checkpoint: str = option("runs/train/best.pt", "Context model (scenectl train); its classes must be the "
                                                   "annotation file's, by name.", "--checkpoint", "-c")
    out: str = option("runs/rescore", "Output folder: rescored.json, report.json, report.md, delta_ap.png, "
                                      "changed.png, config.json.", "--out", "-o")
    max_per_image: int = option(100, "Keep at most this many detections per image (highest scores).")
    min_score: float = option(0.0, "Keep detections scoring above this.")
    relabel: int = option(0, "Also add rows for the context model's K most likely other classes of each box.")
    calibration: float = option(0.5, "Share of the images (seeded split by image id) on which w is chosen; AP is "
                                     "reported on the rest.")
    weights: list[float] = option(RESCORE_GRID, "A value of the context weight w to try on the calibration part "
                                                "(repeatable); one value fixes w: no calibration split, every image "
                                                "is evaluated.", "--weight", "-w")
    bootstrap: int = option(1000, "Bootstrap resamples of the evaluation images for the ΔAP interval (0: none).")
    seed: int = option(0, "Seed of the calibration split, the bootstrap and noise/blur fills.")
    batch_size: int = option(64, "Hidden boxes per forward pass (across images).")
    device: str = option("auto", DEVICE_HELP)
    workers: int = option(0, "DataLoader processes decoding and masking images (0: in the main process).")
    overwrite: bool = option(False, "Replace a rescore report already in --out.")

    def check_more(self) -> None:
        """The required inputs, the grid of w and the device, before any file is read."""
        for name, value in (("--detections", self.detections), ("--images", self.images),
                            ("--annotations", self.annotations)):
            if not value:
                raise ScenectlError(f"{name} is required")
        if not self.weights:
            raise ScenectlError("--weight: the grid of w needs at least one value")
        if not Path(self.images).is_dir():
            raise ScenectlError(f"--images {self.images} is not a folder")
        super().check_more()
