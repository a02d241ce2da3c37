"""Output folders: every command writes through `claim`, the one guard of ownership, resume and writers.

    with claim("runs/train", "run", resume=cfg.resume, overwrite=cfg.overwrite, config=asdict(cfg)) as folder:
        ...  # folder.path exists, is this kind's, and no other live process writes it

Rules (the same for every command, docs/reliability.md):
- a folder is owned by one *kind* (shard set, run, eval report, ...), named in its marker file `.scenectl.json`
  (folders written before markers existed are recognised by their files). A command writes only into a new or
  empty folder, or one its own kind owns; it never writes or deletes a file of a folder another kind owns, not
  even with --overwrite.
- an owned folder needs --resume (continue it) or --overwrite (remove this kind's files, then start afresh);
  --resume refuses a folder with nothing to resume and any changed option, naming the option and both values,
  before anything is deleted.
- one writer per folder: a lock file (`.scenectl-lock`, owner pid, host and command) refuses a second writer
  while the first lives; a lock whose process is gone (same host) is reported and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from scenectl import __version__
from scenectl.data.format import SET_FILES
from scenectl.errors import ScenectlError
from scenectl.io import write_json_atomic

MARKER = ".scenectl.json"
LOCK = ".scenectl-lock"
MARKER_FORMAT = "scenectl-folder/1"


@dataclass(frozen=True)
class Kind:
    command: str  # the command that writes this kind
    what: str  # how messages name it
    own: tuple[str, ...]  # glob patterns of the files (and sub-folders) this kind writes: what --overwrite removes
    signature: tuple[str, ...] = ()  # files that identify a folder written before markers existed
    resumable: bool = False  # the command has --resume


_RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "tensorboard", "curves.png")
_EXPERIMENT_FILES = (*_RUN_FILES, "report.json", "report.md")
KINDS: dict[str, Kind] = {
    "shards": Kind("build-shards", "a shard set", SET_FILES,
                   ("manifest.json", "progress.json", "manifest.part-*.json", "progress.part-*.json"), True),
    "run": Kind("train", "a training run", _RUN_FILES, ("last.pt", "metrics.jsonl"), True),
    "eval": Kind("eval", "an evaluation report", ("config.json", "report.json", "report.md", "predictions.h5", "*.png",
                                                   "sets"), ("predictions.h5",)),
    # an experiment's top folder and its per-run sub-folders (context/, scratch/; kd/, ce/) are all of its kind
    "transfer": Kind("transfer", "a transfer experiment", ("context", "scratch", *_EXPERIMENT_FILES),
                     ("context", "scratch"), True),
    "distill": Kind("distill", "a distillation experiment", ("kd", "ce", *_EXPERIMENT_FILES), ("kd", "ce"), True),
    "fuse": Kind("fuse", "a fusion report", ("config.json", "report.json", "report.md", "*.png"), ()),
    "ooc": Kind("build-ooc", "an out-of-context set", SET_FILES, ()),
    "export": Kind("export-imagefolder", "an ImageFolder export", ("*",), ("export.json",)),
    "scenes": Kind("sample", "synthetic scenes", ("annotations", "train2017", "val2017", "README.md",
                                                  ".scenectl-synthetic"), (".scenectl-synthetic",)),
    "quickstart": Kind("quickstart", "a quickstart run", ("config.json",), ("shards/*/manifest.json",)),
    "compare": Kind("compare", "a comparison report", ("config.json", "report.json", "report.md", "*.png"), ()),
}
_INTERNAL = (MARKER, LOCK)


@dataclass(frozen=True)
class Folder:
    path: Path
    kind: str
    fresh: bool  # True: nothing of a previous run is left (new, empty or overwritten)


def owner(path: Path) -> str | None:
    """The kind owning `path`: its marker's, or one recognised by its files; None for a missing or empty folder.
    A non-empty folder of unknown files is 'foreign'."""
    marker = path / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind not in KINDS:
            raise ScenectlError(f"{marker} is damaged or names an unknown kind ({kind!r}); remove it by hand if "
                                f"{path} is yours to reuse")
        return kind
    if not path.is_dir():
        return None
    names = [p.name for p in path.iterdir() if not p.name.startswith(LOCK)]
    if not names:
        return None
    for kind, k in KINDS.items():
        if any(next(path.glob(s), None) is not None for s in k.signature):
            return "ooc" if kind == "shards" and _manifest_task(path) == "ooc" else kind
    return "foreign"


def _manifest_task(path: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((path / "manifest.json").read_text()).get("task")
    return None


def _refuse_other(path: Path, kind: str, found: str, option: str) -> None:
    me = KINDS[kind]
    if found == "foreign":
        first = sorted(p.name for p in path.iterdir() if p.name not in _INTERNAL)[0]
        raise ScenectlError(f"{option} {path} is not empty and holds files scenectl did not write ({first}, ...): "
                            f"`scenectl {me.command}` writes only into a new or empty folder or one of its own")
    other = KINDS[found]
    raise ScenectlError(f"{option} {path} holds {other.what} (written by `scenectl {other.command}`): "
                        f"`scenectl {me.command}` never writes into or deletes from it; choose another {option}")


# --------------------------------------------------------------------------------------------------------------
# claiming a folder


@contextlib.contextmanager
def claim(path: str | os.PathLike, kind: str, *, resume: bool = False, overwrite: bool = False,
          config: dict | None = None, keep: Iterable[str] = (), option: str = "--out",
          lock: str = "") -> Iterator[Folder]:
    """Make `path` this command's output folder for the duration of the block (see the module's rules).

    config: the command's resolved options, recorded in the marker; --resume compares them with the recorded ones,
    except the names in `keep` (options that may change between sessions of one run, e.g. workers).
    lock: a suffix for concurrent writers of disjoint files in one folder (build-shards --part i/n).
    A refusal leaves nothing behind: a folder this call created is removed again.
    """
    path = Path(path)
    if resume and overwrite:
        raise ScenectlError("--resume and --overwrite exclude each other")
    if path.exists() and not path.is_dir():
        raise ScenectlError(f"{option} {path} exists and is not a folder")
    created = _first_missing(path)
    path.mkdir(parents=True, exist_ok=True)
    held = _acquire(path, kind, lock, option)  # refused: another process writes here, so nothing is ours to remove
    try:
        try:
            folder = _enter(path, kind, resume, overwrite, config, set(keep), option)
        except BaseException:
            _remove_created(created)  # still holding the lock: no other writer can have moved in
            raise
        yield folder
    finally:
        if held is not None:
            _release(held)


def _enter(path: Path, kind: str, resume: bool, overwrite: bool, config: dict | None, keep: set[str],
           option: str) -> Folder:
    found = owner(path)
    if found not in (None, kind):
        _refuse_other(path, kind, found, option)
    what = KINDS[kind].what
    if found is None and resume:
        raise ScenectlError(f"--resume: {option} {path} holds no {what.split(' ', 1)[1]} to resume; "
                            "start it without --resume")
    if found == kind and not (resume or overwrite):
        how = "pass --resume to continue it or --overwrite to replace it" if KINDS[kind].resumable else \
            "pass --overwrite to replace it"
        raise ScenectlError(f"{option} {path} holds {what}: {how}")
    if found == kind and resume:
        if config is not None:
            check_same_options(path, config, keep, option)
        return Folder(path, kind, fresh=False)
    if found == kind and overwrite:
        remove_own(path, kind)
    write_json_atomic(path / MARKER, {"format": MARKER_FORMAT, "kind": kind, "command": KINDS[kind].command,
                                      "scenectl_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      "config": _plain(config) if config is not None else None})
    return Folder(path, kind, fresh=True)


def remove_own(path: Path, kind: str) -> None:
    """Delete the files and sub-folders of `path` that kind writes (never the marker, the lock or anything else)."""
    for pattern in KINDS[kind].own:
        for p in sorted(path.glob(pattern)):
            if p.name in _INTERNAL or p.name.startswith(LOCK):
                continue
            if p.is_dir() and owner(p) not in (None, kind):
                continue  # a folder of another kind inside ours (e.g. runs/train/eval): not ours to delete
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def check_same_options(path: Path, config: dict, keep: set[str], option: str = "--out") -> None:
    """--resume continues the same run: refuse any recorded option that changed, naming it and both values."""
    old = recorded_config(path)
    if old is None:
        return
    new, old = _flat(_plain(config)), _flat(old)
    changed = [k for k in new if k in old and old[k] != new[k] and k.rsplit(".", 1)[-1] not in keep and k not in keep]
    if changed:
        diffs = "; ".join(f"--{k.rsplit('.', 1)[-1].replace('_', '-')}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ScenectlError(f"--resume: options differ from the run in {option} {path} ({diffs}); resume with the "
                            "same options or start a new run")


def recorded_config(path: Path) -> dict | None:
    """The options recorded when the folder was started: the marker's, else (older folders) config.json's."""
    for name, get in ((MARKER, lambda d: d.get("config")), ("config.json", lambda d: d)):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(get(data), dict):
            return get(data)
    return None


def check_file_target(path: str | os.PathLike, option: str = "--out") -> None:
    """A command that writes one file (a PNG, a report) refuses a place inside a folder some kind owns."""
    parent = Path(path).resolve().parent
    found = owner(parent) if parent.is_dir() else None
    if found not in (None, "foreign"):
        raise ScenectlError(f"{option} {path} is inside {KINDS[found].what} ({parent}, written by "
                            f"`scenectl {KINDS[found].command}`): choose a place outside it")


def _plain(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what mkdir(parents=True) would create)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_created(created: Path | None) -> None:
    if created is not None and created.is_dir():
        shutil.rmtree(created, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# one writer per folder


def _identity() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid())}


def _start_time(pid: int) -> str | None:
    """The process's start time (Linux /proc), so a recycled pid is not taken for the lock's owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _start_time(pid)
    return info.get("start") is None or start is None or start == info.get("start")


def _acquire(path: Path, kind: str, suffix: str, option: str) -> Path:
    lock = path / (LOCK + suffix)
    me = {**_identity(), "command": KINDS[kind].command, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _check_holder(lock, path, option)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return lock
    raise ScenectlError(f"{option} {path}: could not take its writer lock {lock.name}")


def _check_holder(lock: Path, path: Path, option: str) -> None:
    """Refuse while the lock's process lives; report and remove a stale lock (its process is gone)."""
    try:
        info = json.loads(lock.read_text())
    except FileNotFoundError:
        return  # released meanwhile: try again
    except (OSError, ValueError):
        info = {}
    who = (f"`scenectl {info.get('command', '?')}` (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
           f"since {info.get('since', '?')})")
    if info.get("host") == socket.gethostname() and not _alive(info):
        import sys

        print(f"note: {option} {path}: removed the stale writer lock of {who}, which is no longer running",
              file=sys.stderr)
        lock.unlink(missing_ok=True)
        return
    where = "" if info.get("host") == socket.gethostname() else " on another machine"
    raise ScenectlError(f"{option} {path} is being written by {who}{where}: wait for it to finish, or, if that "
                        f"process is gone, delete {lock}")


def _release(lock: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            lock.unlink()
