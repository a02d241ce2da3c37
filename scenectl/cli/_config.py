"""Command line options generated from a command's config class (scenectl.config): every option is declared once,
with its default and help, as a field of the config; the CLI function receives the finished config.

    @command("train", help=_HELP)
    @config_options(TrainConfig)
    def train(cfg: TrainConfig) -> None: ...

Each command also takes `--config FILE` (a config.json that a run wrote): its options, overridden by those given on
the command line (`given`: the options typed, as build-shards, whose options are written by hand, also asks).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Iterable, Optional

import typer
from scenectl.config import from_command_line, option_specs

CONFIG_HELP = ("Start from this config.json (what an earlier run of this command wrote into its output folder): its "
               "options, overridden by those given on the command line. A pipe: command in it is not run unless "
               "typed on the command line.")


def given(ctx: typer.Context, names: Iterable[str]) -> set[str]:
    """The options among `names` that the command line gave (not their defaults)."""
    # typer carries its own click: compare the sources by name
    return {k for k in names if ctx.get_parameter_source(k).name not in ("DEFAULT", "DEFAULT_MAP")}


def config_options(cls: type) -> Callable[[Callable], Callable]:
    """Give a `fn(cfg)` command every option of config class `cls` and --config FILE."""

    def decorate(fn: Callable) -> Callable:
        def command(ctx: typer.Context, config_file: Optional[Path] = None, **options):
            return fn(from_command_line(cls, options, given(ctx, options), config_file))

        params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
        params += [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, annotation=s.type,
                                     default=typer.Option(s.default, *s.flags, help=s.help))
                   for s in option_specs(cls)]
        params.append(inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                        default=typer.Option(None, "--config", help=CONFIG_HELP)))
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return command

    return decorate

