"""The one place that makes command line options: generated from a command's config class, whose fields declare each
option once (default, help, flags, positional arguments, repeatable options: scenectl.options). The CLI function
receives the finished config.

    @command("train", TrainConfig, help=_HELP)   # scenectl/cli/_app.py: registers it with config_options(TrainConfig)
    def train(cfg: TrainConfig) -> None: ...

Every numeric option takes its range from scenectl.options.RANGES by its option name: checked while the command
line is parsed (a callback, so that nan, inf and open ends are refused as the config check refuses them; click's
range types accept nan) and stated in --help. A numeric option without a declared range is a programming error,
refused when the command is made.

Each command also takes `--config FILE` (a config.json that a run wrote, or one written by hand): its options,
overridden by those given on the command line (`given`).
"""

from __future__ import annotations

import importlib
import inspect
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import typer
import typer.core

from scenectl.config import from_command_line
from scenectl.options import RANGES, OptionSpec, alternatives, as_declared, option_name, option_specs, range_problem

# typer >= 0.20 carries its own copy of click (typer._click); older versions use click itself
_click = getattr(typer.core, "_click", None) or importlib.import_module("click")
CONFIG_HELP = ("Start from this config.json (what an earlier run of this command wrote into its output folder): its "
               "options, overridden by those given on the command line. A pipe: command or a '::' list in it is not "
               "run unless typed on the command line.")
OPTIONS_FILE_HELP = ("Start from the options in this JSON file ({\"option\": value, ...}), overridden by those given "
                     "on the command line. A pipe: command or a '::' list in it is not run unless typed on the command line.")
_OURS = ("argument", "required", "type", "cli_default")  # cli keys of scenectl.options.option, not typer's


def given(ctx: typer.Context, names: Iterable[str]) -> set[str]:
    """The options among `names` that the command line gave (not their defaults)."""
    # typer carries its own click: compare the sources by name
    return {k for k in names if ctx.get_parameter_source(k).name not in ("DEFAULT", "DEFAULT_MAP")}


Build = Callable[[type, dict, set, Optional[Path]], Any]


def config_options(cls: type, build: Build = from_command_line, config_help: str | None = CONFIG_HELP):
    """Give a `fn(cfg)` command every option of config class `cls` and --config FILE (config_help: its --help; None:
    no --config). `build(cls, options, given, config_file)` makes what `fn` receives (default: the config)."""
    specs = list(option_specs(cls))

    def decorate(fn: Callable) -> Callable:
        def command(ctx: typer.Context, config_file: Optional[Path] = None, **options):
            options = {s.name: as_declared(options[s.name], s.type) for s in specs}
            return fn(build(cls, options, given(ctx, options), config_file))

        params = [_param("ctx", typer.Context, inspect.Parameter.empty)]
        params += [_param(s.name, *_typer_param(s, fn.__name__)) for s in specs]
        if config_help is not None:
            params.append(_param("config_file", Optional[Path], typer.Option(None, "--config", help=config_help)))
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return command

    return decorate


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _typer_param(spec: OptionSpec, command: str) -> tuple[Any, Any]:
    """(annotation, typer.Option or typer.Argument) of one option, its range attached when it is numeric."""
    cli, flags = spec.field.metadata["cli"], spec.field.metadata["flags"]
    hint = cli.get("type", spec.type)
    default = ... if cli.get("required") else cli.get("cli_default", spec.default)
    extra, help = {k: v for k, v in cli.items() if k not in _OURS}, spec.help
    if _numeric(hint):
        name = option_name(spec.field)
        if name not in RANGES:
            raise TypeError(f"scenectl {command}: numeric option {name!r} has no range in scenectl.options.RANGES")
        extra["callback"] = _check_range(name)
        help = f"{help} Range: {RANGES[name].interval()}.".strip()
    if cli.get("argument"):
        return hint, typer.Argument(default, help=help or None, **extra)
    return hint, typer.Option(default, *flags, help=help or None, **extra)


def _numeric(hint: Any) -> bool:
    """int or float, also inside Optional[...] or List[...] (never bool)."""
    for a in alternatives(hint):
        a = typing.get_args(a)[0] if typing.get_origin(a) in (list, tuple) else a
        if a in (int, float):
            return True
    return False


def _check_range(name: str) -> Callable:
    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        problem = range_problem(name, value)
        if problem:
            raise _click.exceptions.UsageError(f"{max(param.opts, key=len)} {problem}", ctx)
        return value

    return check
