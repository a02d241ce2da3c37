"""The `scenectl` command line.

Each subcommand lives in its own module of this package as a thin Typer function: it parses options into the
command's config dataclass and calls the importable function that does the work (spaCy's CLI style).
"""

import importlib

from scenectl.cli._app import app, main  # noqa: F401

# Importing a command module registers its subcommand on `app`.
# Each command module adds its name here; `scenectl --help` lists the commands in this order.
_COMMANDS = ("quickstart", "sample", "build_shards", "merge_manifests", "inspect_shards", "verify_shards", "train",
             "eval", "compare", "predict", "cooccurrence", "transfer", "distill", "build_ooc", "fuse",
             "export_imagefolder", "rescore")
for _name in _COMMANDS:
    importlib.import_module(f"scenectl.cli.{_name}")
