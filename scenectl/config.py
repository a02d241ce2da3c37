"""Options of the training commands: shared groups, composed into one config per command, checked in one place.

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
"""

from __future__ import annotations

import functools
import os
import subprocess
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from scenectl import __version__
from scenectl.data.remote import NET_HELP, net_options
from scenectl.errors import ScenectlError
from scenectl.io import read_json

OPTIMIZERS = ("sgd", "adamw")
# options that may change between the sessions of one run (--resume): they change speed, logging or where the
# data is read from, not what is computed (another --workers changes the batch order; docs/training.md)
RESUMABLE = frozenset({"max_steps", "workers", "log_every", "checkpoint_every", "tensorboard", "skip_corrupt",
                       "resume", "overwrite", "device", "shards", "val_shards", "train", "val", "out", "retries",
                       "timeout", "backoff"})
# keys a run folder's config.json holds beside the options: never read back as options
RECORD_ONLY = ("scenectl", "run")


def option(default: Any, help: str, *flags: str) -> Any:
    """A config field that is also a command line option (flags: its names when not --field-name)."""
    return field(default=default, metadata={"help": help, "flags": flags})


def group(cls: type, help: dict[str, str] | None = None, **defaults: Any) -> Any:
    """A config field holding option group `cls`, with this command's defaults (and --help texts) for it."""
    return field(default_factory=functools.partial(cls, **defaults), metadata={"group": cls, "help": help or {}})


# --------------------------------------------------------------------------------------------------------------
# the shared groups


@dataclass
class Optim:
    optimizer: str = option("adamw", "sgd (Nesterov momentum) or adamw.")
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
    world_size: int = field(default=1, metadata={"cli": False})  # filled in: number of DDP processes


@dataclass
class Data:
    shards: str = option("shards/train2017", "Training shard set: folder, brace pattern or URL.")
    val_shards: str = option("shards/val2017", "Validation shard set (same forms as --shards), the same classes.")
    image_size: int | None = option(None, "Input size in pixels; unset: the training shards' size.")


@dataclass
class Net:
    retries: int | None = option(None, NET_HELP["retries"])
    timeout: float | None = option(None, NET_HELP["timeout"])
    backoff: float | None = option(None, NET_HELP["backoff"])

    def options(self):
        """The scenectl.data.remote.NetOptions these stand for (each checked, naming its option)."""
        return net_options(self.retries, self.timeout, self.backoff)


# --------------------------------------------------------------------------------------------------------------
# composed configs: flat option names or whole groups


class Options:
    """Base of a command's config (a dataclass of its own fields and option groups).

    Built from whole groups (`optim=Optim(...)`), dicts (`optim={...}`, as config.json holds them) or flat option
    names (`lr=0.1`, as the CLI passes them); an unknown name is a TypeError, as for any dataclass.
    """

    def __init__(self, **options: Any):
        own = {f.name: f for f in fields(self)}
        for f in own.values():
            setattr(self, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
        where = leaves(type(self))
        for name in sorted(options, key=lambda n: n not in own):  # whole groups before single options
            value = options[name]
            if name in own and "group" in own[name].metadata:
                current = getattr(self, name)
                setattr(self, name, replace(current, **value) if isinstance(value, dict) else replace(value))
            elif name in own:
                setattr(self, name, value)
            elif name in where:
                setattr(getattr(self, where[name]), name, value)
            else:
                raise TypeError(f"{type(self).__name__} has no option {name!r}")


def leaves(cls: type) -> dict[str, str]:
    """{option name: group field} for every option inside a group of config class `cls`."""
    out: dict[str, str] = {}
    for f in fields(cls):
        for leaf in fields(f.metadata["group"]) if "group" in f.metadata else ():
            if leaf.name in out or leaf.name in cls.__dataclass_fields__:
                raise TypeError(f"{cls.__name__}: option {leaf.name!r} is defined twice")
            out[leaf.name] = f.name
    return out


@dataclass(frozen=True)
class OptionSpec:
    name: str
    type: Any
    default: Any
    help: str
    flags: tuple[str, ...]


def option_specs(cls: type) -> Iterator[OptionSpec]:
    """Every command line option of config class `cls`, in field order, with this command's default."""
    default = cls()
    for f in fields(cls):
        if "group" in f.metadata:
            g = f.metadata["group"]
            hints = typing.get_type_hints(g)
            for leaf in fields(g):
                if leaf.metadata.get("cli", True):
                    yield OptionSpec(leaf.name, hints[leaf.name], getattr(getattr(default, f.name), leaf.name),
                                     f.metadata["help"].get(leaf.name, leaf.metadata["help"]), leaf.metadata["flags"])
        elif f.metadata.get("cli", True):
            yield OptionSpec(f.name, typing.get_type_hints(cls)[f.name], getattr(default, f.name), f.metadata["help"],
                             f.metadata["flags"])


@dataclass
class TrainData(Data):
    shuffle_buffer: int = option(1000, "Samples held in each stream's shuffle buffer.")
    skip_corrupt: bool = option(False, "Skip and count corrupt samples/shards instead of stopping.")


@dataclass
class Augmentation:
    augment: bool = option(True, "Random crop around the hidden region, flip, colour jitter (training only).")
    min_scale: float = option(0.35, "Smallest crop, as a fraction of the image area.")
    flip: float = option(0.5, "Probability of a horizontal flip.")
    jitter: float = option(0.2, "Colour jitter: brightness, contrast and saturation each x U(1 - j, 1 + j).")


@dataclass(init=False)
class TrainConfig(Options):
    """`scenectl train` (scenectl/train.py)."""

    data: TrainData = group(TrainData, help={"image_size": "Input size in pixels; unset: the training shards' size "
                                                            "(build-shards writes 256)."})
    arch: str = option("resnet18", "Model: resnet18/34/50, ffc_resnet18/34/50; aliases resnet, ffc.")
    out: str = option("runs/train", "Run folder (config.json, metrics.jsonl, last.pt, best.pt, curves.png).")
    mask_channel: bool = option(True, "Give the model the hidden region as a 4th input channel.")
    pretrained: str | None = option(None, "'imagenet' or a torchvision state-dict file (ResNets).")
    tensorboard: bool = option(False, "Also log to OUT/tensorboard (needs scenectl[tensorboard]).")
    augmentation: Augmentation = group(Augmentation)
    net: Net = group(Net)
    optim: Optim = group(Optim, optimizer="sgd", lr=None, weight_decay=None, label_smoothing=0.1)
    loop: Loop = group(Loop, epochs=30, batch_size=64, workers=min(4, os.cpu_count() or 1), log_every=50,
                       checkpoint_every=500)


@dataclass(init=False)
class TransferConfig(Options):
    """`scenectl transfer` (scenectl/transfer.py)."""

    checkpoint: str = option("runs/train/best.pt", "Context checkpoint (scenectl train).", "--checkpoint", "-c")
    train: str = option("imagefolder/train2017", "Target training data: ImageFolder tree or shard set (object crops).")
    val: str = option("imagefolder/val2017", "Target validation data, the same classes.")
    image_size: int | None = option(None, "Input size in pixels; unset: the checkpoint's.")
    mode: str = option("finetune", "finetune (train all) or linear (head only, backbone frozen).")
    init: str = option("context", "context (the checkpoint's backbone) or scratch (random weights).")
    compare_scratch: bool = option(False, "Run both inits at the same budget and seed, and compare them.")
    backbone_lr_scale: float = option(1.0, "finetune from context: backbone lr = lr x this (e.g. 0.1).")
    out: str = option("runs/transfer", "Output folder: OUT/<init>/ run folders, report and curves.", "--out", "-o")
    optim: Optim = group(Optim, help={"lr": "Learning rate of the head (the backbone's: times --backbone-lr-scale)."})
    loop: Loop = group(Loop)


@dataclass(init=False)
class DistillConfig(Options):
    """`scenectl distill` (scenectl/distill.py)."""

    teacher: str = option("runs/train/best.pt", "Context checkpoint (scenectl train): the frozen teacher.")
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


# --------------------------------------------------------------------------------------------------------------
# checks and defaults, the same for every command

_INT_RANGES = {"epochs": 1, "batch_size": 1, "max_steps": 0, "steps_per_epoch": 1, "workers": 0, "log_every": 0,
               "checkpoint_every": 0, "warmup_steps": 0, "image_size": 8, "shuffle_buffer": 1}
_FLOAT_RULES = {"lr": (lambda v: v > 0, "> 0"), "weight_decay": (lambda v: v >= 0, ">= 0"),
                "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"), "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
                "min_scale": (lambda v: 0 < v <= 1, "in (0, 1]"), "flip": (lambda v: 0 <= v <= 1, "in [0, 1]"),
                "jitter": (lambda v: 0 <= v < 1, "in [0, 1)"), "backbone_lr_scale": (lambda v: v >= 0, ">= 0"),
                "temperature": (lambda v: v > 0, "> 0"), "alpha": (lambda v: 0 <= v <= 1, "in [0, 1]")}
_CHOICES = {"optimizer": OPTIMIZERS, "mode": ("finetune", "linear"), "init": ("context", "scratch")}


def flat(cfg: Options) -> dict[str, Any]:
    """{option name: value} over a config and its groups."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        out.update(asdict(value) if "group" in f.metadata else {f.name: value})
    return out


def check(cfg: Options) -> None:
    """The checks every training command shares, each error naming its --option; run before anything is created."""
    values = flat(cfg)
    for name, choices in _CHOICES.items():
        if name in values and values[name] not in choices:
            raise ScenectlError(f"--{name} must be {' or '.join(choices)}, not {values[name]!r}")
    for name, lo in _INT_RANGES.items():
        v = values.get(name)
        if v is not None and v < lo:
            raise ScenectlError(f"--{name.replace('_', '-')} must be at least {lo}, not {v}")
    for name, (ok, what) in _FLOAT_RULES.items():
        v = values.get(name)
        if v is not None and not ok(v):
            raise ScenectlError(f"--{name.replace('_', '-')} must be {what}, not {v}")
    if values["resume"] and values["overwrite"]:
        raise ScenectlError("--resume and --overwrite exclude each other")
    from scenectl.devices import parse_device  # (torch: imported only when a command runs, not for --help)

    parse_device(values["device"])
    if hasattr(cfg, "net"):
        cfg.net.options()


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


def load_config(cls: type, path: str | os.PathLike) -> Options:
    """A config of class `cls` from a run folder's config.json (nested, or the flat layout of older runs).

    Every value is checked against its option's type; unknown options are refused. --resume and --overwrite are
    never taken from a file: what to do with an existing --out is this session's choice.
    """
    data = read_json(path, "config file")
    if not isinstance(data, dict):
        raise ScenectlError(f"--config {path}: not a JSON object of options")
    own, where, nested = {f.name: f for f in fields(cls)}, leaves(cls), {}
    groups = {name: f.metadata["group"] for name, f in own.items() if "group" in f.metadata}
    for key, value in data.items():
        if key in RECORD_ONLY:
            continue
        if key in groups:
            if not isinstance(value, dict):
                raise ScenectlError(f"--config {path}: '{key}' must be an object of options")
            for k, v in value.items():
                _check_value(groups[key], k, v, path, f"{key}.")
        elif key in own or key in where:
            _check_value(groups[where[key]] if key in where else cls, key, value, path)
        else:
            raise ScenectlError(f"--config {path}: unknown option {key!r}")
        nested[key] = value
    cfg = cls(**nested)
    cfg.loop.resume = cfg.loop.overwrite = False
    return cfg


def _check_value(owner: type, key: str, value: Any, path, prefix: str = "") -> None:
    hints = typing.get_type_hints(owner)
    if key not in hints or key not in owner.__dataclass_fields__:
        raise ScenectlError(f"--config {path}: unknown option '{prefix}{key}'")
    allowed = _json_types(hints[key])
    if type(value) not in allowed:
        raise ScenectlError(f"--config {path}: option '{prefix}{key}' is {value!r}, not "
                            f"{' or '.join(t.__name__ for t in allowed)}")


def _json_types(hint: Any) -> tuple[type, ...]:
    """The JSON value types a field of type `hint` accepts (an int where a float is wanted; never a bool for an int)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    out: tuple[type, ...] = ()
    for a in typing.get_args(hint) if union else (hint,):
        out += {float: (float, int)}.get(a, (a,))
    return out


def from_command_line(cls: type, options: dict[str, Any], given: set[str],
                      config_file: str | os.PathLike | None = None) -> Options:
    """A command's config from its flat CLI options: all of them, or with --config FILE the file's options
    overridden by those given on the command line (`given`)."""
    if config_file is None:
        return cls(**options)
    return replace(load_config(cls, config_file), **{k: v for k, v in options.items() if k in given})


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


__all__ = ["Optim", "Loop", "Data", "Net", "TrainData", "Augmentation", "TrainConfig", "TransferConfig", "DistillConfig", "Options", "option", "group", "leaves", "option_specs", "flat", "check",
           "resolve_schedule", "load_config", "from_command_line", "provenance", "RESUMABLE"]
