"""The `scenectl` command line.

Each subcommand lives in its own module of this package as a thin Typer function: it parses options into the
command's config dataclass and calls the importable function that does the work (spaCy's CLI style).
"""

from scenectl.cli._app import app, main  # noqa: F401

# Importing a command module registers its subcommand on `app`.
# Each command module adds one line here; `scenectl --help` lists the commands in this order.
from scenectl.cli import quickstart as _quickstart  # noqa: F401,E402
from scenectl.cli import sample as _sample  # noqa: F401,E402
from scenectl.cli import build_shards as _build_shards  # noqa: F401,E402
from scenectl.cli import merge_manifests as _merge_manifests  # noqa: F401,E402
from scenectl.cli import inspect_shards as _inspect_shards  # noqa: F401,E402
from scenectl.cli import verify_shards as _verify_shards  # noqa: F401,E402
from scenectl.cli import train as _train  # noqa: F401,E402
from scenectl.cli import eval as _eval  # noqa: F401,E402
from scenectl.cli import compare as _compare  # noqa: F401,E402
from scenectl.cli import predict as _predict  # noqa: F401,E402
from scenectl.cli import cooccurrence as _cooccurrence  # noqa: F401,E402
from scenectl.cli import transfer as _transfer  # noqa: F401,E402
from scenectl.cli import distill as _distill  # noqa: F401,E402
from scenectl.cli import build_ooc as _build_ooc  # noqa: F401,E402
from scenectl.cli import fuse as _fuse  # noqa: F401,E402
from scenectl.cli import export_imagefolder as _export_imagefolder  # noqa: F401,E402
from scenectl.cli import rescore as _rescore  # noqa: F401,E402
