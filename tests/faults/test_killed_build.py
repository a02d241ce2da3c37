"""build-shards killed with SIGKILL (first shard, mid-set, while writing manifest.json), then --resume, on real
COCO images. While every build runs a watcher opens each `*.tar` the moment it appears: a `.tar` must be whole
from the first moment it is visible (its bytes then equal the finished set's), and the resumed set must equal an
uninterrupted build with the same seed, byte for byte."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from faultkit import ROOT, build, cli_args, sha256, shard_hashes, subset, tar_members
from scenectl.data.loader import open_shard_set
from scenectl.errors import ScenectlError
from scenectl.data.verify import verify_shards

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
OPTS = {"maxcount": 2, "seed": 3, "shape": "circle"}  # tiny shards: many renames to watch

# A build that dies (SIGKILL, no cleanup) half-way through writing manifest.json through scenectl.io.atomic_path.
DIE_IN_MANIFEST = """
import json, os, signal, sys
from scenectl.data import format as F  # seal_set writes the manifest
from scenectl.io import atomic_path

real = F.write_json_atomic
def dying(path, obj):
    if os.path.basename(str(path)) == "manifest.json":
        data = json.dumps(obj).encode()
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    real(path, obj)
F.write_json_atomic = dying
from scenectl.cli import main
sys.argv = ["scenectl", "build-shards", *sys.argv[1:]]
main()
"""


class Watcher(threading.Thread):
    """Polls `out` every ~2 ms; reads each newly visible *.tar whole (tarfile) and records its sha256."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out, self.seen, self.torn, self.stop = out, {}, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.poll()
            time.sleep(0.002)
        self.poll()

    def poll(self):
        for p in list(self.out.glob("*.tar")) if self.out.exists() else []:
            if p.name in self.seen:
                continue
            try:
                digest = sha256(p)
                tar_members(p)  # every member readable to the end-of-archive marker
            except FileNotFoundError:
                continue  # deleted by a resume in the meantime (an unjournalled shard)
            except Exception as e:  # noqa: BLE001 - any failure to read means a torn .tar was visible
                self.torn.append(f"{p.name}: {type(e).__name__}: {e}")
                continue
            self.seen[p.name] = digest

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


@pytest.fixture(scope="module")
def source(coco_sample, tmp_path_factory):
    return subset(coco_sample, tmp_path_factory.mktemp("kill-src"), n=10)


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill-ref") / "set"
    build(source, out, **OPTS)
    return out


def _killed(cmd: list[str], out: Path, when) -> Watcher:
    """Run `cmd` under a watcher; SIGKILL it once `when(out)` holds (or let a self-killing script die)."""
    with Watcher(out) as w:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and not (when and when(out)):
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the build ended with {proc.returncode} before it was killed"
    return w


def _first_shard_started(out: Path) -> bool:
    return bool(list(out.glob("shard-*"))) if out.exists() else False


def _half(n: int):
    return lambda out: len(list(out.glob("*.tar"))) >= n


@pytest.mark.parametrize("point", ["first shard", "mid-set", "writing manifest.json"])
def test_sigkill_then_resume_equals_uninterrupted(source, reference, tmp_path, point):
    out = tmp_path / "set"
    ref = json.loads((reference / "manifest.json").read_text())
    args = cli_args(source, out, **OPTS)
    if point == "writing manifest.json":
        w1 = _killed([sys.executable, "-c", DIE_IN_MANIFEST, *args], out, None)
        assert not (out / "manifest.json").exists()  # the half-written manifest is not under its final name
        assert shard_hashes(out) == shard_hashes(reference)  # every shard was finished and renamed
        assert list(out.glob(".manifest.json.tmp-*")), "the kill was meant to land inside manifest.json's write"
    else:
        when = _first_shard_started if point == "first shard" else _half(len(ref["shards"]) // 2)
        w1 = _killed([sys.executable, "-m", "scenectl", "build-shards", *args], out, when)
        assert len(list(out.glob("*.tar"))) < len(ref["shards"])
    assert not w1.torn, w1.torn  # no .tar was ever visible half-written
    # killed: not complete, and nothing downstream takes it for a complete set
    assert not (out / "manifest.json").exists()
    with pytest.raises(ScenectlError, match="incomplete|no manifest"):
        open_shard_set(out)
    assert not verify_shards(out)["ok"]
    with pytest.raises(ScenectlError, match="--resume"):
        build(source, out, **OPTS)
    with Watcher(out) as w2:
        m = build(source, out, resume=True, **OPTS)
    # whole from the first moment visible: what the watchers read equals the finished set
    final = shard_hashes(out)
    assert not w1.torn and not w2.torn, w1.torn + w2.torn
    for name, digest in {**w1.seen, **w2.seen}.items():
        assert final.get(name) == digest, f"{name} was visible with other bytes than the finished shard's"
    assert len(w1.seen) + len(w2.seen) >= len(final)  # the watchers did see the shards appear
    # resumed == uninterrupted, byte for byte
    assert final == shard_hashes(reference)
    assert m["shards"] == ref["shards"] and m["totals"] == ref["totals"] and m["skipped"] == ref["skipped"]
    assert not list(out.glob("*.partial")) and not (out / "progress.json").exists()
    assert not list(out.glob(".*.tmp-*"))  # a killed writer's temporary file was cleared on resume
    assert verify_shards(out)["ok"]
