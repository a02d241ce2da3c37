"""DistributedDataParallel under torchrun: 2 CPU processes with gloo on loopback write one run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from scenectl.checkpoint import load_checkpoint
from kit import write_shards

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_torchrun_two_processes_gloo(tmp_path):
    train = write_shards(tmp_path / "train", n=32, per_shard=8, size=32)  # 4 shards: 2 per rank
    val = write_shards(tmp_path / "val", n=12, per_shard=4, size=32, seed=1)  # 3 shards: uneven split over ranks
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "scenectl", "train",
           "--shards", str(train), "--val-shards", str(val), "--out", str(out), "--epochs", "1", "--batch-size", "4",
           "--workers", "0", "--device", "cpu", "--log-every", "1", "--image-size", "32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["loop"]["world_size"] == 2 and config["loop"]["steps_per_epoch"] == 32 // (4 * 2)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "step"] == list(range(1, 5))  # rank 0 alone logs, once a step
    epochs = [x for x in lines if x["kind"] == "epoch"]
    assert len(epochs) == 1 and all(x["val_samples"] == 12 for x in epochs)  # all-reduced over both ranks
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 4 and ck["config"]["loop"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in ck["model"])  # the plain model, loadable without DDP
    assert sorted(p.name for p in out.iterdir()) == [".scenectl.json", "best.pt", "config.json", "curves.png", "last.pt",
                                                     "metrics.jsonl"]  # one writer: no second copy, no lock left
