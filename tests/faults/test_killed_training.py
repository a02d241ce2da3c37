"""`scenectl train` killed with SIGKILL in the middle of writing a checkpoint (real COCO shards, 48 px): last.pt
is never torn (atomic rename), metrics.jsonl keeps every completed line, and --resume continues from the last
whole checkpoint. (A plain SIGKILL between steps, on ResNet and FFC, is tests/test_train.py::
test_coco_train_killed_and_resumed.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from faultkit import ROOT
from scenectl.checkpoint import load_checkpoint
from scenectl.train import TrainConfig, train

# scenectl.train.train whose N-th torch.save writes half of its bytes and then SIGKILLs the process.
DIE_IN_SAVE = """
import io, os, signal, sys
import torch

real, calls = torch.save, [0]
def dying(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["DIE_AT_SAVE"]):
        buf = io.BytesIO()
        real(obj, buf)
        with open(f, "wb") as out:
            out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            out.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)
torch.save = dying
import json
from scenectl.train import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_sigkill_while_saving_last_pt(real_set, tmp_path):
    out = tmp_path / "run"
    opts = dict(shards=str(real_set), val_shards=str(real_set), out=str(out), arch="resnet18", image_size=48,
                batch_size=4, epochs=1, steps_per_epoch=4, checkpoint_every=1, workers=0, log_every=1,
                device="cpu", shuffle_buffer=8)
    env = {**os.environ, "DIE_AT_SAVE": "3", "OMP_NUM_THREADS": "1"}  # saves: last.pt at steps 1, 2, 3 (dies)
    proc = subprocess.run([sys.executable, "-c", DIE_IN_SAVE, json.dumps(opts)], cwd=ROOT, env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list(out.glob(".last.pt.tmp-*")), "the kill was meant to land inside the checkpoint's write"
    ck = load_checkpoint(out / "last.pt")  # whole: the previous checkpoint, untouched by the torn write
    assert ck["step"] == 2 and ck["epoch_step"] == 2
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]  # every line parses
    assert [x["step"] for x in lines if x["kind"] == "step"] == [1, 2, 3]  # completed lines all kept
    m = train(TrainConfig(**opts, resume=True))
    assert m["step"] == 4
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resume = next(x for x in lines if x["kind"] == "resume")
    assert resume["step"] == 2  # continued from the last whole checkpoint, not from zero
    assert [x["step"] for x in lines[lines.index(resume):] if x["kind"] == "step"] == [3, 4]
    assert load_checkpoint(out / "last.pt")["step"] == 4 and (out / "best.pt").is_file()
    assert not list(out.glob(".*.tmp-*"))  # the killed writer's temporary file was cleared on resume


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_cleanly_with_workers(real_set, tmp_path):
    """A cluster's time limit or Ctrl-C signals the whole process group, DataLoader workers included: the workers
    ignore it, the main process finishes its step, saves last.pt and exits with one error line (exit 2)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scenectl", "train", "--shards", str(real_set), "--val-shards", str(real_set),
           "--out", str(out), "--arch", "resnet18", "--image-size", "32", "--batch-size", "2", "--epochs", "1",
           "--steps-per-epoch", "100000", "--workers", "1", "--device", "cpu", "--log-every", "1",
           "--checkpoint-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _steps(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)  # wait until training is under way (a step line in metrics.jsonl)
        assert _steps(out), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no step in time"
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [x for x in err.decode().splitlines() if x.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "--resume" in lines[0], err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] >= max(_steps(out))  # saved after the last logged step: nothing done is lost


def _steps(out) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(x)["step"] for x in path.read_text().splitlines() if '"kind": "step"' in x]
