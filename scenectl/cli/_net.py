"""The options of remote reads (--retries, --timeout, --backoff), declared once for every command that reads shard
sets; a command passes their values to `scenectl.data.remote.net_options`, which fills those not given from the
environment ($SCENECTL_RETRIES, ...) or the defaults."""

from __future__ import annotations

import typer

from scenectl.data.remote import NET_HELP

RETRIES = typer.Option(None, "--retries", help=NET_HELP["retries"], show_default=False)
TIMEOUT = typer.Option(None, "--timeout", help=NET_HELP["timeout"], show_default=False)
BACKOFF = typer.Option(None, "--backoff", help=NET_HELP["backoff"], show_default=False)
