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

Every numeric option of every command has one range, declared once by its name in RANGES (one meaning per option
name, docs/options.md): the CLI checks it while parsing (scenectl/cli/_app.py), a config file while reading it
(load_config) and a config built in Python in its command's check (check_ranges).
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from scenectl import __version__
from scenectl.data.masks import MAX_MARGIN
from scenectl.data.remote import MAX_WAIT, NET_HELP, file_value_problem, net_options
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
    """A config field that is also a command line option (flags: its names when not --field-name). A list default
    (a repeatable option) is copied for every config."""
    if isinstance(default, list):
        return field(default_factory=functools.partial(list, default), metadata={"help": help, "flags": flags})
    return field(default=default, metadata={"help": help, "flags": flags})


def group(cls: type, help: dict[str, str] | None = None, **defaults: Any) -> Any:
    """A config field holding option group `cls`, with this command's defaults (and --help texts) for it."""
    return field(default_factory=functools.partial(cls, **defaults), metadata={"group": cls, "help": help or {}})


# --------------------------------------------------------------------------------------------------------------
# the range of every numeric option, by name: the same for every command that has the option (docs/options.md)


@dataclass(frozen=True)
class Range:
    """The values a numeric option accepts: from lo to hi (an open end excludes its bound); never nan or inf."""

    lo: float
    hi: float
    integer: bool = True
    lo_open: bool = False
    hi_open: bool = False

    def interval(self) -> str:
        """[lo, hi] with ( or ) at an open end, as --help states it."""
        lo, hi = (f"{self.lo}", f"{self.hi}") if self.integer else (f"{self.lo:g}", f"{self.hi:g}")
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def text(self) -> str:
        return f"an integer from {self.lo} to {self.hi}" if self.integer else f"in {self.interval()}"

    def problem(self, value: Any) -> str | None:
        """Why `value` is not in this range ("must be ..."), or None."""
        if self.integer:
            ok = isinstance(value, int) and not isinstance(value, bool) and self.lo <= value <= self.hi
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (self.lo < value if self.lo_open else self.lo <= value)
                  and (value < self.hi if self.hi_open else value <= self.hi))
        return None if ok else f"must be {self.text()}, got {value!r}"


def _real(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Range:
    return Range(lo, hi, False, lo_open, hi_open)


SEED_MAX = 2**32 - 1  # numpy's legacy seeding (np.random.seed, DataLoader workers) takes at most 2**32 - 1
COUNT_MAX = 2**31 - 1  # steps, samples and pixel counts: int32 wherever torch or numpy keeps them
RANGES: dict[str, Range] = {
    # the same everywhere: seeds, processes, batches, input sizes
    "seed": Range(0, SEED_MAX), "workers": Range(0, 256), "batch_size": Range(1, 65536), "image_size": Range(8, 4096),
    # training length and logging
    "epochs": Range(1, 100_000), "max_steps": Range(0, COUNT_MAX), "steps_per_epoch": Range(1, COUNT_MAX),
    "warmup_steps": Range(0, COUNT_MAX), "log_every": Range(0, COUNT_MAX), "checkpoint_every": Range(0, COUNT_MAX),
    "shuffle_buffer": Range(1, 1_000_000),
    # optimisation, augmentation, distillation, fusion
    "lr": _real(0, math.inf, lo_open=True, hi_open=True),  # any finite lr > 0: a diverging run stops on its nan loss
    "momentum": _real(0, 1, hi_open=True), "weight_decay": _real(0, 10),
    "label_smoothing": _real(0, 1, hi_open=True), "min_scale": _real(0, 1, lo_open=True), "flip": _real(0, 1),
    "jitter": _real(0, 1, hi_open=True), "backbone_lr_scale": _real(0, 1000), "temperature": _real(0, 1000, True),
    "alpha": _real(0, 1), "weights": _real(0, 1000), "aux_visible": _real(0, 1000),
    # building shards and samples
    "max_area": _real(0, 1, lo_open=True), "min_area": Range(0, COUNT_MAX), "margin": Range(0, MAX_MARGIN),
    "maxcount": Range(1, COUNT_MAX), "maxsize": _real(1, 1e15), "max_pairs": Range(0, COUNT_MAX),
    "train_images": Range(1, 1_000_000), "val_images": Range(1, 1_000_000),
    # scoring and reporting
    "max_samples": Range(1, COUNT_MAX), "topk": Range(1, 100_000), "top": Range(1, 100_000),
    "bootstrap": Range(0, 10_000), "min_count": Range(1, COUNT_MAX), "n": Range(1, 1024),
    # remote reads (scenectl.data.remote checks the same bounds for $SCENECTL_RETRIES, ...)
    "retries": Range(0, 1000), "timeout": _real(0, 86400, lo_open=True), "backoff": _real(0, MAX_WAIT),
}


# --help of options that several commands write by hand (scenectl/cli/), so that one name keeps one meaning
DEVICE_HELP = "auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N."
LOADER_WORKERS_HELP = "DataLoader processes decoding shards (0: decode in the main process)."


def flag(name: str) -> str:
    """The command line flag of option `name`."""
    return "--" + name.replace("_", "-")


def range_problem(name: str, value: Any) -> str | None:
    """Why `value` (a number, or a list of them for a repeatable option) is not in option `name`'s range, or None;
    None for an unset value (None) and for a name without a range."""
    rng = RANGES.get(name)
    for v in value if isinstance(value, (list, tuple)) else [value]:
        problem = None if rng is None or v is None else rng.problem(v)
        if problem:
            return problem
    return None


def check_ranges(values: dict[str, Any]) -> None:
    """Refuse the first {option name: value} out of its range, naming the option (ScenectlError)."""
    for name, value in values.items():
        problem = range_problem(name, value)
        if problem:
            raise ScenectlError(f"{flag(name)} {problem}")


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
    shuffle_buffer: int = option(1000, "Samples held in each stream's shuffle buffer (at most one pass of "
                                       "its share).")
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
    out: str = option("runs/train", "Run folder (config.json, metrics.jsonl, last.pt, best.pt, curves.png).", "--out",
                      "-o")
    mask_channel: bool = option(True, "Give the model the hidden region as a 4th input channel.")
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
    net: Net = group(Net)
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


@dataclass(init=False)
class EvalConfig(Options):
    """`scenectl eval` (scenectl/evaluate.py)."""

    checkpoint: str = option("runs/train/best.pt", "Checkpoint written by scenectl train (or transfer/distill).",
                             "--checkpoint", "-c")
    shards: list[str] = option(["shards/val2017"], "Shard set folder or webdataset URL pattern; repeat to compare "
                                                   "sets.")
    topk: list[int] = option([], "Extra k to report (repeatable); 1, 5 and 10 are always reported; k above the class "
                                 "count is clamped.", "--topk", "-k")
    out: str | None = option(None, "Output folder; unset: <checkpoint's folder>/eval.", "--out", "-o")
    device: str = option("auto", DEVICE_HELP)
    batch_size: int = option(64, "Samples per forward pass.")
    workers: int = option(2, LOADER_WORKERS_HELP)
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
    net: Net = group(Net)

    def check(self) -> None:
        """Every option, before the checkpoint or a shard set is opened."""
        check_ranges(flat(self))
        from scenectl.devices import parse_device

        parse_device(self.device)
        self.net.options()


# --------------------------------------------------------------------------------------------------------------
# checks and defaults, the same for every command

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
    check_ranges(values)
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


def load_config(cls: type, path: str | os.PathLike) -> Any:
    """A config of class `cls` (an Options class or a plain dataclass such as BuildConfig) from a config.json that a
    command wrote (nested groups, or the flat layout of older runs).

    Every value is checked against its option's type and range; unknown options are refused. --resume and
    --overwrite are never taken from a file: what to do with an existing --out is this session's choice.
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
            value = {k: _checked_value(groups[key], k, v, path, f"{key}.") for k, v in value.items()}
        elif key in own or key in where:
            value = _checked_value(groups[where[key]] if key in where else cls, key, value, path)
        else:
            raise ScenectlError(f"--config {path}: unknown option {key!r}")
        nested[key] = value
    cfg = cls(**nested)
    for name in ("resume", "overwrite"):
        _assign(cfg, name, False)
    return cfg


def _assign(cfg: Any, name: str, value: Any) -> None:
    """Set option `name` of `cfg`, in its group or its own field; nothing when `cfg` has no such option."""
    where = leaves(type(cfg))
    if name in where:
        setattr(getattr(cfg, where[name]), name, value)
    elif name in {f.name for f in fields(cfg)}:
        setattr(cfg, name, value)


def _checked_value(owner: type, key: str, value: Any, path, prefix: str = "") -> Any:
    """`value` of option `key` read from config file `path`, checked (type, range); a path-typed one as a Path."""
    hints = typing.get_type_hints(owner)
    if key not in hints or key not in owner.__dataclass_fields__:
        raise ScenectlError(f"--config {path}: unknown option '{prefix}{key}'")
    if not _json_fits(hints[key], value):
        raise ScenectlError(f"--config {path}: option '{prefix}{key}' is {value!r}, not {_type_name(hints[key])}")
    problem = range_problem(key, value)
    if problem:
        raise ScenectlError(f"--config {path}: option '{prefix}{key}' {problem}")
    return Path(value) if isinstance(value, str) and Path in _alternatives(hints[key]) else value


def _alternatives(hint: Any) -> tuple[Any, ...]:
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def _json_fits(hint: Any, value: Any) -> bool:
    """Whether a JSON `value` fits a field of type `hint`: an int where a float is wanted, a string for a path, a
    list of fitting items for a list; never a bool for a number."""
    for a in _alternatives(hint):
        if typing.get_origin(a) is list:
            (item,) = typing.get_args(a)
            if isinstance(value, list) and all(_json_fits(item, v) for v in value):
                return True
        elif type(value) in {float: (float, int), Path: (str,), type(None): (type(None),)}.get(a, (a,)):
            return True
    return False


def _type_name(hint: Any) -> str:
    names = {type(None): "null", Path: "a path (str)"}
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in _alternatives(hint))


def from_command_line(cls: type, options: dict[str, Any], given: set[str],
                      config_file: str | os.PathLike | None = None) -> Any:
    """A command's config from its flat CLI options: all of them, or with --config FILE the file's options
    overridden by those given on the command line (`given`).

    A config file is data: a `pipe:` command in it (a shard set to read through a shell) is refused unless the
    command line gives that option (URLs and local paths are read as they are)."""
    if config_file is None:
        return cls(**options)
    cfg = load_config(cls, config_file)
    for name, value in flat(cfg).items():
        for v in value if isinstance(value, list) else [value]:
            why = file_value_problem(str(v), urls=True) if isinstance(v, (str, Path)) else None
            if name not in given and why:
                raise ScenectlError(f"--config {config_file}: option '{name}' {why}; a pipe: command or a list joined "
                                    f"by '::' read from a file is not run: type it on the command line ({flag(name)} ...)")
    return replace(cfg, **{k: v for k, v in options.items() if k in given})


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


__all__ = ["Optim", "Loop", "Data", "Net", "TrainData", "Augmentation", "TrainConfig", "TransferConfig", "DistillConfig",
           "EvalConfig", "Options", "option", "group", "leaves", "option_specs", "flat", "check", "Range", "RANGES",
           "range_problem", "check_ranges", "flag", "DEVICE_HELP", "LOADER_WORKERS_HELP", "resolve_schedule",
           "load_config", "from_command_line", "provenance", "RESUMABLE"]
