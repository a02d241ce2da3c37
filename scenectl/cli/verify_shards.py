"""`scenectl verify-shards`: check every shard of a set against its manifest (exit 1 on any problem)."""

from __future__ import annotations

import json

import typer

from scenectl.cli._app import command
from scenectl.cli._config import OPTIONS_FILE_HELP
from scenectl.data.verify import VerifyConfig
from scenectl.errors import ScenectlError


@command("verify-shards", VerifyConfig, config_help=OPTIONS_FILE_HELP)
def verify_shards_cmd(cfg: VerifyConfig) -> None:
    """Check a shard set before trusting it: every shard listed and whole (sha256), every sample complete and
    decodable, cls within the class list and equal to the json's, counts equal to the manifest's, no unexpected
    or unsafe members, no leftovers of an unfinished build. Never unpickles or extracts anything.

    Prints one line per problem naming the shard, then OK or FAILED; exits 1 when there is any problem.

    Example:

      scenectl verify-shards shards/val2017 --json > verify.json
    """
    from scenectl.data.verify import format_report, main, unopened_report

    try:
        report = main(cfg)
    except ScenectlError as e:  # --json: its report first, then the one-line error (exit 2)
        if cfg.json:
            typer.echo(json.dumps(unopened_report(cfg.directory, e), indent=2))
        raise
    typer.echo(json.dumps(report, indent=2) if cfg.json else format_report(report))
    if not report["ok"]:
        raise typer.Exit(1)
