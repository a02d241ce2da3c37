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
- one writer per folder: a kernel lock on `.scenectl-lock` (filelock; released by the kernel when its process ends,
  however it ends; the file removed on release) refuses a second writer while the first lives; the sidecar
  `.scenectl-lock.json` names the holder.
  Part builds (build-shards --part) lock their part and exclude a whole-folder writer, and the other way round.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from filelock import FileLock, Timeout

from scenectl import __version__
from scenectl.data.format import SET_FILES
from scenectl.errors import ScenectlError
from scenectl.io import read_json, write_json_atomic

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
    leaf: bool = False  # holds only its own files: no folder or file of another command goes inside it


_RUN_FILES = ("config.json", "metrics.jsonl", "last.pt", "best.pt", "tensorboard", "curves.png")
_EXPERIMENT_FILES = (*_RUN_FILES, "report.json", "report.md")
KINDS: dict[str, Kind] = {
    "shards": Kind("build-shards", "a shard set", SET_FILES,
                   ("manifest.json", "progress.json", "manifest.part-*.json", "progress.part-*.json"), True, True),
    "run": Kind("train", "a training run", _RUN_FILES, ("last.pt", "metrics.jsonl"), True),
    "eval": Kind("eval", "an evaluation report", ("config.json", "report.json", "report.md", "predictions.h5", "*.png",
                                                   "sets"), ("predictions.h5",)),
    # an experiment's top folder and its per-run sub-folders (context/, scratch/; kd/, ce/) are all of its kind
    "transfer": Kind("transfer", "a transfer experiment", ("context", "scratch", *_EXPERIMENT_FILES),
                     ("context", "scratch"), True),
    "distill": Kind("distill", "a distillation experiment", ("kd", "ce", *_EXPERIMENT_FILES), ("kd", "ce"), True),
    "fuse": Kind("fuse", "a fusion report", ("config.json", "report.json", "report.md", "*.png"), ()),
    "rescore": Kind("rescore", "a rescore report", ("config.json", "report.json", "report.md", "rescored.json", "*.png"), ()),
    "ooc": Kind("build-ooc", "an out-of-context set", SET_FILES, (), leaf=True),
    "export": Kind("export-imagefolder", "an ImageFolder export", ("*",), ("export.json",), leaf=True),
    # (.scenectl-synthetic: the marker of folders written before `sample` claimed its folder)
    "scenes": Kind("sample", "synthetic scenes", ("annotations", "train2017", "val2017", "config.json", "README.md",
                                                  ".scenectl-synthetic"), (".scenectl-synthetic",)),
    # by its marker only: a project folder holding shards/*/manifest.json is no quickstart run (README's commands)
    "quickstart": Kind("quickstart", "a quickstart run", ("config.json",)),
    "compare": Kind("compare", "a comparison report", ("config.json", "report.json", "report.md", "*.png"), ()),
}


def _internal(name: str) -> bool:
    """The marker, the locks and their holder records, and files being written (`scenectl.io.tmp_name`): never a
    kind's files (a writer's temporary file must not make its folder look foreign to a process meeting it)."""
    return name == MARKER or name.startswith(LOCK) or _TMP.fullmatch(name) is not None


_TMP = re.compile(r"\..+\.tmp-\d+")


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
        kind = None
        with contextlib.suppress(ScenectlError):
            kind = read_json(marker, "folder marker").get("kind")
        if kind not in KINDS:
            raise ScenectlError(f"{marker} is damaged or names an unknown kind ({kind!r}); remove it by hand if "
                                f"{path} is yours to reuse")
        return kind
    if not path.is_dir():
        return None
    if all(_internal(p.name) for p in path.iterdir()):  # empty but for the marker, locks and files being written
        return None
    for kind, k in KINDS.items():
        if any(next(path.glob(s), None) is not None for s in k.signature):
            return "ooc" if kind == "shards" and _manifest_task(path) == "ooc" else kind
    return "foreign"


def _manifest_task(path: Path) -> str | None:
    with contextlib.suppress(ScenectlError):
        return read_json(path / "manifest.json", "manifest").get("task")
    return None


def _refuse_another_kind(path: Path, kind: str, option: str) -> str | None:
    """The folder's owner (None: new or empty) unless another kind or foreign files hold it: refused."""
    found, me = owner(path), KINDS[kind]
    if found == "foreign":
        first = min((p.name for p in path.iterdir() if not _internal(p.name)), default="?")
        raise ScenectlError(f"{option} {path} is not empty and holds files scenectl did not write ({first}, ...): "
                            f"`scenectl {me.command}` writes only into a new or empty folder or one of its own")
    if found not in (None, kind):
        other = KINDS[found]
        raise ScenectlError(f"{option} {path} holds {other.what} (written by `scenectl {other.command}`): "
                            f"`scenectl {me.command}` never writes into or deletes from it; choose another {option}")
    return found


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
    _refuse_inside_leaf(path, option)
    _refuse_another_kind(path, kind, option)  # before locking: no lock file is left in another kind's folder
    created = _first_missing(path)
    path.mkdir(parents=True, exist_ok=True)
    held = _acquire(path, kind, lock, option)  # refused: another process writes here, so nothing is ours to remove
    try:
        try:
            folder = _enter(path, kind, resume, overwrite, config, set(keep), option)
        except BaseException:
            if created is not None:  # still holding the lock: no other writer can have moved in
                shutil.rmtree(created, ignore_errors=True)
            raise
        yield folder
    finally:
        _release(held)


def _enter(path: Path, kind: str, resume: bool, overwrite: bool, config: dict | None, keep: set[str],
           option: str) -> Folder:
    found = _refuse_another_kind(path, kind, option)  # again, now that no other writer can change it
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
            if _internal(p.name):
                continue
            if p.is_dir() and owner(p) not in (None, kind, "foreign"):
                continue  # a folder of another kind inside ours (e.g. runs/train/eval): not ours to delete
            # (a sub-folder of unmarked files that our pattern names, e.g. an export's class folder, is ours)
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
        with contextlib.suppress(ScenectlError):
            recorded = get(read_json(path / name, "recorded options"))
            if isinstance(recorded, dict):
                return recorded
    return None


def check_file_target(path: str | os.PathLike, option: str = "--out",
                      inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """A command that writes one file (a PNG, a report) refuses one of its own `inputs` (the file itself, a link to
    it) and a place inside a folder some kind owns."""
    target = Path(path)
    for given in inputs:
        if given and _same_file(target, Path(given)):
            raise ScenectlError(f"{option} {path} is the command's input {given}: choose another {option}, the "
                                "input is never overwritten")
    parent = target.resolve().parent
    found = owner(parent) if parent.is_dir() else None
    if found not in (None, "foreign"):
        raise ScenectlError(f"{option} {path} is inside {KINDS[found].what} ({parent}, written by "
                            f"`scenectl {KINDS[found].command}`): choose a place outside it")
    _refuse_inside_leaf(target, option)


def _same_file(a: Path, b: Path) -> bool:
    """`a` names the file `b` (the same path after resolving links, or the same inode: a hard link)."""
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def _refuse_inside_leaf(path: Path, option: str) -> None:
    """Refuse a place anywhere inside a folder of a kind that holds only its own files (a shard set, an export): its
    --overwrite, --resume and readers take every file there for its own."""
    for folder in path.resolve().parents:
        found = _leaf_owner(folder)
        if found is not None:
            raise ScenectlError(f"{option} {path} lies inside {KINDS[found].what} ({folder}, written by "
                                f"`scenectl {KINDS[found].command}`): choose a place outside it")


def _leaf_owner(folder: Path) -> str | None:
    """The leaf kind owning `folder` by its marker, or (sets written before markers) by a scenectl shard manifest;
    else None. The folder is not listed (an ancestor may be as large as /tmp), and a stray manifest.json of some
    other tool in a parent folder is not taken for a shard set."""
    with contextlib.suppress(ScenectlError, OSError):
        if (folder / MARKER).is_file():
            found = owner(folder)
            return found if KINDS[found].leaf else None
        if (folder / "manifest.json").is_file():
            manifest = read_json(folder / "manifest.json", "manifest")
            if str(manifest.get("format", "")).startswith("scenectl-shards/"):
                return "ooc" if manifest.get("task") == "ooc" else "shards"
    return None


def _plain(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what mkdir(parents=True) would create)."""
    missing = list(itertools.takewhile(lambda p: not p.exists(), [path, *path.parents]))
    return missing[-1] if missing else None


# --------------------------------------------------------------------------------------------------------------
# one writer per folder
#
# The kernel lock (filelock: flock on Unix) is the lock: taking it is atomic and the kernel releases it when its
# process ends, however it ends. The sidecar `<lock>.json` only names the holder for the refusal's message.
# A whole-folder writer holds `.scenectl-lock`; a part build (lock=".part-i-of-n") holds its own `.scenectl-lock.part-…`
# and takes `.scenectl-lock` for a moment to prove no whole-folder writer is at work; a whole-folder writer, once it
# holds `.scenectl-lock`, probes every part lock the same way. Either order, one of the two is refused.

_PART_WAIT = 5.0  # seconds a part build waits for `.scenectl-lock` (other parts hold it only for a moment)


def _acquire(path: Path, kind: str, suffix: str, option: str) -> FileLock:
    lock = path / (LOCK + suffix)
    held, sidecar = _take(lock, 0, path, option), _sidecar(lock)
    try:
        if suffix:  # a part: no whole-folder writer may be at work
            _drop(_take(path / LOCK, _PART_WAIT, path, option))
        else:  # the whole folder: no part build may be at work
            for part in sorted(path.glob(LOCK + ".*")):
                if part.suffix != ".json":
                    _drop(_take(part, 0, path, option))
        if sidecar.exists():  # left by a writer that ended without releasing (killed; its kernel lock went)
            print(f"note: {option} {path}: the previous writer {_holder(lock)} ended without finishing",
                  file=sys.stderr)
        write_json_atomic(sidecar, {"pid": os.getpid(), "host": socket.gethostname(),
                                    "command": KINDS[kind].command, "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except BaseException:
        _release(held)
        raise
    return held


def _take(lock: Path, wait: float, path: Path, option: str) -> FileLock:
    """The kernel lock on `lock`, or a refusal naming its holder (from the sidecar) after `wait` seconds."""
    held = FileLock(lock, timeout=wait)
    try:
        held.acquire()
    except Timeout:
        raise ScenectlError(f"{option} {path} is being written by {_holder(lock)}: wait for it to finish") from None
    return held


def _sidecar(lock: Path) -> Path:
    return lock.with_name(lock.name + ".json")


def _holder(lock: Path) -> str:
    info = _sidecar_info(_sidecar(lock))
    where = "" if info.get("host", socket.gethostname()) == socket.gethostname() else f" on {info['host']}"
    return (f"`scenectl {info.get('command', '?')}` (pid {info.get('pid', '?')}{where}, "
            f"since {info.get('since', '?')})")


def _sidecar_info(sidecar: Path) -> dict:
    with contextlib.suppress(OSError, ScenectlError):
        return read_json(sidecar, "writer lock record")  # a JSON object (read_json's `expect`)
    return {}


def _release(held: FileLock) -> None:
    sidecar = _sidecar(Path(held.lock_file))
    with contextlib.suppress(OSError):
        if _sidecar_info(sidecar).get("pid") == os.getpid():  # this process's record, not a later writer's
            sidecar.unlink()
    _drop(held)


def _drop(lock: FileLock) -> None:
    """Remove the lock's file, then release it: a folder is left as its writer found it. A process that opened the
    file before the removal and locks it afterwards holds a removed file, which filelock (>= 4) detects and retries
    on the file's new inode, so two holders never coexist (test_folders' race test counts them)."""
    with contextlib.suppress(OSError):
        Path(lock.lock_file).unlink()
    lock.release()
