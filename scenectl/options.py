"""How a command's options are declared and checked: once, as fields of its config dataclass.

    @dataclass
    class SampleConfig(Config):
        out: str = option("data/scenes", "Dataset root to write.", "--out", "-o", type=Path)
        seed: int = option(0, "Same seed, byte-identical dataset.")
        net: Net = group(Net)                      # a shared group of options (Options configs)

A field made by `option` is a command line option: its default, its --help text, its flags (default --field-name)
and what the command line needs beyond them (`argument=True`, `required=True`, `type=` the command line's type,
`choices=`, typer's `hidden=`/`show_default=`/`metavar=`...). scenectl/cli/_config.py generates every command's
options from these fields; nothing else declares an option.

Every numeric option has one range, declared once by its option name in RANGES (one meaning per option name,
docs/options.md): checked while the command line is parsed, when a config file is read and by `cfg.check()` for a
config built in Python; $SCENECTL_RETRIES and the other environment values are checked by the same table.

This module is at the bottom of scenectl (it imports only scenectl.errors), so scenectl.data can use it.
"""

from __future__ import annotations

import copy
import functools
import math
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from scenectl.errors import ScenectlError


def option(default: Any, help: str, *flags: str, choices: tuple = (), **cli: Any) -> Any:
    """A config field that is also a command line option (flags: its names when not --field-name; choices: the values
    it accepts; cli: see the module docstring). A list default (a repeatable option) is copied for every config."""
    meta = {"help": help, "flags": flags, "choices": tuple(choices), "cli": cli}
    if isinstance(default, list):
        return field(default_factory=functools.partial(list, default), metadata=meta)
    return field(default=default, metadata=meta)


def group(cls: type, help: dict[str, str] | None = None, **defaults: Any) -> Any:
    """A config field holding option group `cls`, with this command's defaults (and --help texts) for it."""
    return field(default_factory=functools.partial(cls, **defaults), metadata={"group": cls, "help": help or {}})


def is_option(f: Field) -> bool:
    return "help" in f.metadata


def is_group(f: Field) -> bool:
    return "group" in f.metadata


def option_name(f: Field) -> str:
    """The option's name (its long flag without dashes, `_` for `-`): the key of its range and of its errors."""
    long = [x.split("/")[0] for x in f.metadata.get("flags", ()) if x.startswith("--")]
    return long[0][2:].replace("-", "_") if long else f.name


def flag(name: str) -> str:
    """The command line flag of option `name`."""
    return "--" + name.replace("_", "-")


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

    def problem(self, value: Any) -> str | None:
        """Why `value` is not in this range ("must be ..."), or None."""
        if self.integer:
            ok = isinstance(value, int) and not isinstance(value, bool) and self.lo <= value <= self.hi
            text = f"an integer from {self.lo} to {self.hi}"
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (self.lo < value if self.lo_open else self.lo <= value)
                  and (value < self.hi if self.hi_open else value <= self.hi))
            text = f"in {self.interval()}"
        return None if ok else f"must be {text}, got {value!r}"

    def parse(self, text: str) -> Any:
        """A number typed as text (an environment value), or the text itself when it is none (refused by `problem`)."""
        try:
            return int(text.strip()) if self.integer else float(text)
        except ValueError:
            return text


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
    "alpha": _real(0, 1), "weight": _real(0, 1000), "aux_visible": _real(0, 1000),
    # building shards and samples (a margin beyond the image's longer side changes nothing: data/masks.py)
    "max_area": _real(0, 1, lo_open=True), "min_area": Range(0, COUNT_MAX), "margin": Range(0, 10_000),
    "maxcount": Range(1, COUNT_MAX), "maxsize": _real(1, 1e15), "max_pairs": Range(0, COUNT_MAX),
    "train_images": Range(1, 1_000_000), "val_images": Range(1, 1_000_000),
    # scoring and reporting
    "max_samples": Range(1, COUNT_MAX), "topk": Range(1, 100_000), "top": Range(1, 100_000),
    "bootstrap": Range(0, 10_000), "min_count": Range(1, COUNT_MAX), "n": Range(1, 1024),
    "min_class_samples": Range(1, COUNT_MAX),
    # rescoring a detector's results (scenectl rescore)
    "max_per_image": Range(1, 100_000), "min_score": _real(0, 1, hi_open=True), "relabel": Range(0, 1000),
    "calibration": _real(0, 1, lo_open=True, hi_open=True),
    # remote reads (scenectl.data.remote: also $SCENECTL_RETRIES, ...); a backoff never waits above 60 s
    "retries": Range(0, 1000), "timeout": _real(0, 86400, lo_open=True), "backoff": _real(0, 60),
}


def range_problem(name: str, value: Any) -> str | None:
    """Why `value` (a number, or a list of them for a repeatable option) is not in option `name`'s range, or None;
    None for an unset value (None) and for a name without a range."""
    rng = RANGES.get(name)
    for v in value if isinstance(value, (list, tuple)) else [value]:
        problem = None if rng is None or v is None else rng.problem(v)
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------------------------------------------
# configs: a dataclass of options and option groups, checked by one generic check


def option_fields(cfg: Any) -> Iterator[tuple[Field, Any]]:
    """(field, value) of every option of config `cfg`, those inside its groups included."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_group(f):
            yield from option_fields(value)
        elif is_option(f):
            yield f, value


def check_options(cfg: Any) -> None:
    """Refuse the first option of `cfg` out of its range or its choices, naming the option (ScenectlError)."""
    for f, value in option_fields(cfg):
        name, choices = option_name(f), f.metadata["choices"]
        problem = range_problem(name, value)
        if choices and value is not None and value not in choices:
            problem = f"must be one of {', '.join(choices)}, got {value!r}"
        if problem:
            raise ScenectlError(f"{flag(name)} {problem}")
    if getattr(cfg, "resume", False) and getattr(cfg, "overwrite", False):
        raise ScenectlError("--resume and --overwrite exclude each other")


class Config:
    """Base of a command's config dataclass (and of an option group with checks of its own): `check()` checks every
    option (ranges, choices), then what its groups and this command ask beyond them (`check_more`), before anything
    is read or written."""

    def check(self) -> None:
        check_options(self)
        for f in filter(is_group, fields(self)):
            if isinstance(getattr(self, f.name), Config):
                getattr(self, f.name).check_more()
        self.check_more()

    def check_more(self) -> None:
        """A command's own checks beyond ranges and choices (the device, a folder that must exist, ...)."""


class Options(Config):
    """Base of a config made of option groups (a dataclass(init=False) of its own fields and groups).

    Built from whole groups (`optim=Optim(...)`), dicts (`optim={...}`, as config.json holds them) or flat option
    names (`lr=0.1`, as the CLI passes them), its own fields also positionally; an unknown name is a TypeError, as
    for any dataclass. A flat name also reads its group's field (`cfg.lr` is `cfg.optim.lr`).
    """

    def __init__(self, *args: Any, **options: Any):
        own = {f.name: f for f in fields(self)}
        if len(args) > len(own) or set(options) & set(list(own)[:len(args)]):
            raise TypeError(f"{type(self).__name__}: too many positional options, or one given twice")
        options.update(zip(own, args))  # positional: in field order, as a dataclass's __init__ takes them
        for f in own.values():
            setattr(self, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
        for name in sorted(options, key=lambda n: n not in own):  # whole groups before single options
            value = options[name]
            if name in own and is_group(own[name]):
                current = getattr(self, name)
                setattr(self, name, replace(current, **value) if isinstance(value, dict) else replace(value))
            else:
                assign(self, name, value)

    def __getattr__(self, name: str) -> Any:
        where = leaves(type(self)).get(name) if not name.startswith("_") else None
        if where is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(getattr(self, where), name)


@functools.lru_cache(maxsize=None)
def leaves(cls: type) -> dict[str, str]:
    """{option name: group field} for every option inside a group of config class `cls`."""
    out: dict[str, str] = {}
    for f in fields(cls):
        for leaf in fields(f.metadata["group"]) if is_group(f) else ():
            if leaf.name in out or leaf.name in cls.__dataclass_fields__:
                raise TypeError(f"{cls.__name__}: option {leaf.name!r} is defined twice")
            out[leaf.name] = f.name
    return out


def assign(cfg: Any, name: str, value: Any) -> None:
    """Set option `name` of `cfg`, in its group or its own field (TypeError when `cfg` has no such option)."""
    where = leaves(type(cfg))
    if name in where:
        setattr(getattr(cfg, where[name]), name, value)
    elif name in cfg.__dataclass_fields__:
        setattr(cfg, name, value)
    else:
        raise TypeError(f"{type(cfg).__name__} has no option {name!r}")


def with_options(cfg: Any, values: dict[str, Any]) -> Any:
    """A copy of `cfg` with these {option name: value} (flat names land in their group)."""
    out = copy.deepcopy(cfg)
    for name, value in values.items():
        assign(out, name, value)
    return out


@dataclass(frozen=True)
class OptionSpec:
    """One command line option of a config class, with this command's default and help."""

    name: str
    type: Any
    default: Any
    help: str
    field: Field


def option_specs(cls: type) -> Iterator[OptionSpec]:
    """Every command line option of config class `cls`, in field order, with this command's default."""
    default, hints = cls(), typing.get_type_hints(cls)
    for f in fields(cls):
        if is_group(f):
            g, ghints, value = f.metadata["group"], typing.get_type_hints(f.metadata["group"]), getattr(default, f.name)
            for leaf in filter(is_option, fields(g)):
                yield OptionSpec(leaf.name, ghints[leaf.name], getattr(value, leaf.name),
                                 f.metadata["help"].get(leaf.name, leaf.metadata["help"]), leaf)
        elif is_option(f):
            yield OptionSpec(f.name, hints[f.name], getattr(default, f.name), f.metadata["help"], f)


def alternatives(hint: Any) -> tuple[Any, ...]:
    """The types of a union (X | None: X, NoneType), else the type itself."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def as_declared(value: Any, hint: Any) -> Any:
    """A command line value as its field declares it: a Path for a path field given as text, text for a text field
    given as a Path (also inside a list)."""
    if isinstance(value, (list, tuple)):
        return [as_declared(v, hint) for v in value]
    kinds = {a if typing.get_origin(a) is not list else typing.get_args(a)[0] for a in alternatives(hint)}
    if isinstance(value, Path) and Path not in kinds:
        return str(value)
    if isinstance(value, str) and Path in kinds and str not in kinds:
        return Path(value)
    return value


__all__ = ["option", "group", "option_name", "flag", "Range", "RANGES", "SEED_MAX", "COUNT_MAX", "range_problem",
           "check_options", "Config", "Options", "leaves", "assign", "with_options", "OptionSpec",
           "option_specs", "option_fields", "alternatives", "as_declared"]
