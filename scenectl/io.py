"""Atomic file writes (nothing half-written is ever visible under its final name) and bounded reads (JSON read
only from regular files, within size, depth and number-length limits, of the expected top-level type).

Every output that a later step trusts (manifests, checkpoints, reports, HDF5 files) is written to a temporary name
in the same folder and renamed into place only when whole; `os.replace` is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from scenectl.errors import ScenectlError


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


# --------------------------------------------------------------------------------------------------------------
# bounded reads: every JSON (configs, manifests, markers, locks, sample metadata) and HDF5 file scenectl reads

MAX_JSON_BYTES = 64 << 20  # a config, manifest or marker is kilobytes; COCO annotation files pass their own limit
MAX_NUMBER_CHARS = 64  # digits of one JSON number: a 5000-digit integer is no count, index or setting


def open_regular(path: str | os.PathLike, what: str) -> BinaryIO:
    """`path` opened for reading (binary) if it is a regular file; a FIFO, device or folder is refused at once
    (opened non-blocking, so a FIFO never hangs the process, whose stop signals then still work). The one way
    scenectl opens a file named by a user or a file: images, JSON, HDF5, checksummed files."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ScenectlError(f"{what} not found: {path}") from None
    except OSError as e:
        raise ScenectlError(f"cannot read {what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ScenectlError(f"{what} {path} is not a regular file (a FIFO, device or folder is not read)")
    return os.fdopen(fd, "rb")  # O_NONBLOCK changes nothing for a regular file's reads


def read_regular(path: str | os.PathLike, what: str, limit: int) -> bytes:
    """The bytes of the regular file `path` (open_regular), at most `limit` of them; a larger file is refused
    without reading it."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ScenectlError(f"{what} {path} is {size} bytes, more than the {limit} read for one")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise ScenectlError(f"{what} {path} is more than the {limit} bytes read for one")
    return data


def file_sha256(path: str | os.PathLike, what: str = "file") -> str:
    """The sha256 of a regular file's bytes (a checkpoint's identity, a shard set's checksums)."""
    h = hashlib.sha256()
    with open_regular(path, what) as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike, what: str = "JSON file", expect: type | None = dict,
              limit: int = MAX_JSON_BYTES) -> Any:
    """Read JSON from a regular file within `limit` bytes, of top-level type `expect` (None: any), turning every
    problem (missing, not a regular file, too large, malformed, too deep, a number too long) into a one-line
    ScenectlError naming the file."""
    return parse_json(read_regular(path, what, limit), f"{what} {path}", expect, limit)


def parse_json(data: bytes | str, where: str, expect: type | None = dict, limit: int = MAX_JSON_BYTES) -> Any:
    """JSON from bytes read elsewhere (a remote manifest, a tar member); `where` names it in errors ("manifest URL")."""
    if len(data) > limit:
        raise ScenectlError(f"{where} is {len(data)} bytes, more than the {limit} read for one")
    try:
        value = json.loads(data, parse_int=_number(int), parse_float=_number(float))
    except (json.JSONDecodeError, UnicodeDecodeError, _NumberTooLong) as e:
        raise ScenectlError(f"{where} is not valid JSON: {e}") from None
    except RecursionError:
        raise ScenectlError(f"{where} is not valid JSON: nested too deeply") from None
    if expect is not None and not isinstance(value, expect):
        raise ScenectlError(f"{where} is not a JSON {_JSON_NAMES.get(expect, expect.__name__)} "
                            f"(its top level is {_JSON_NAMES.get(type(value), type(value).__name__)})")
    return value


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


class _NumberTooLong(ValueError):
    pass


def _number(kind: type):
    def parse(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            raise _NumberTooLong(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
        return kind(text)
    return parse
