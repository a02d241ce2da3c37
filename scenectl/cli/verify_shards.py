"""`scenectl verify-shards`: check every shard of a set against its manifest (exit 1 on any problem)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from scenectl.cli._app import command
from scenectl.cli._net import BACKOFF, RETRIES, TIMEOUT


@command("verify-shards")
def verify_shards_cmd(
    directory: str = typer.Argument(..., help="Shard-set folder (with manifest.json), or a remote set's folder URL "
                                    "(https://host/dir/, pipe:COMMAND-PREFIX/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (machine-readable)."),
    check_hashes: bool = typer.Option(True, "--hashes/--no-hashes", help="Compare each shard's sha256 with the manifest's."),
    workers: int = typer.Option(0, "--workers", help="Processes verifying shards in parallel; 0: the main process "
                                                     "alone (so does 1)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    retries: Optional[int] = RETRIES,
    timeout: Optional[float] = TIMEOUT,
    backoff: Optional[float] = BACKOFF,
) -> None:
    """Check a shard set before trusting it: every shard listed and whole (sha256), every sample complete and
    decodable, cls within the class list and equal to the json's, counts equal to the manifest's, no unexpected
    or unsafe members, no leftovers of an unfinished build. Never unpickles or extracts anything.

    Prints one line per problem naming the shard, then OK or FAILED; exits 1 when there is any problem.

    Example:

      scenectl verify-shards shards/val2017 --json > verify.json
    """
    from scenectl.data.remote import net_options
    from scenectl.data.verify import VerifyConfig, format_report, main

    cfg = VerifyConfig(directory=directory, json=as_json, check_hashes=check_hashes, workers=workers,
                       progress=progress, net=net_options(retries, timeout, backoff))
    report = main(cfg)
    typer.echo(json.dumps(report, indent=2) if cfg.json else format_report(report))
    if not report["ok"]:
        raise typer.Exit(1)
