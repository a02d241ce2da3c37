"""Atomic file writes: nothing half-written is ever visible under its final name.

Every output that a later step trusts (manifests, checkpoints, reports, HDF5 files) is written to a temporary name
in the same folder and renamed into place only when whole; `os.replace` is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def tmp_name(path: Path) -> Path:
    """The temporary name used while `path` is written (same folder, so the rename stays atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync and rename it to `path`, on failure remove it."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a failed write names no file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left in `folder` by writers that were killed (their process no longer exists).

    A SIGKILL inside `atomic_path` leaves `.NAME.tmp-PID` behind: never mistaken for output, but it holds disk.
    Files of a live process (another writer still at work) are left alone.
    """
    removed = []
    for p in Path(folder).glob(".*.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into a one-line ScenectlError."""
    from scenectl.errors import ScenectlError

    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ScenectlError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScenectlError(f"{what} {path} is not valid JSON: {e}") from None
