"""`--device`: one parser for every command; how many CPU threads a process computes with beside its loader workers.

    parse_device("auto")      # this process's GPU when torch sees one, else the CPU
    parse_device("cpu")
    parse_device("cuda")      # GPU LOCAL_RANK % count (torchrun gives each process its own)
    parse_device("cuda:1")    # that GPU (refused under torchrun, where each process takes its LOCAL_RANK's GPU)
"""

from __future__ import annotations

import os
import re

import torch

from scenectl.errors import ScenectlError

_FORM = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment, (0, 1, 0) outside it; each value checked (a whole
    number, 0 <= rank < world_size <= 65536, local_rank < 65536), else a one-line error naming the variable."""
    values = []
    for name, default in zip(TORCHRUN_ENV, ("0", "1", "0")):
        text = os.environ.get(name, "").strip() or default
        if not (text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65536):
            raise ScenectlError(f"environment variable {name}={text[:40]!r} is not a whole number in 0..65536 "
                                "(torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; unset them to run one process)")
        values.append(int(text))
    rank, world, local_rank = values
    if world < 1 or rank >= world:
        raise ScenectlError(f"environment variables RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE")
    return rank, world, local_rank


def parse_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch.device for `--device name`; a one-line error naming the option for anything else."""
    m = _FORM.fullmatch(str(name).strip())
    if not m or (m[2] is not None and m[1] != "cuda"):
        raise ScenectlError(f"--device must be auto, cpu, cuda or cuda:N, not {name!r}")
    kind, index = m[1], m[2]
    if local_rank is None:
        local_rank = torchrun_env()[2]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ScenectlError(f"--device {name}: torch sees no CUDA GPU on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    if index is None:
        return torch.device("cuda", local_rank % count)
    if torchrun_env()[1] > 1:
        raise ScenectlError(f"--device {name}: under torchrun each process takes its own GPU (LOCAL_RANK); "
                            "pass --device cuda")
    if int(index) >= count:
        raise ScenectlError(f"--device {name}: this machine has {count} GPU{'s' if count != 1 else ''} "
                            f"(cuda:0..cuda:{count - 1})")
    return torch.device("cuda", int(index))


THREADS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # the user's own choice, always kept


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a cluster job's share, not the whole machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads(cores: int) -> int:
    """Intra-op threads for a process computing on the CPU: one per core it may run on (its affinity, so a cluster
    job's share is not oversubscribed). Leaving the loader workers cores of their own (cores - workers) was measured
    slower on an idle 2-core box with 2 workers: 0.64x at 64 px and 0.63x at 128 px (benchmarks/threads.py,
    docs/performance.md): the model's steps want every core and the workers' decoding fits between them."""
    return max(1, cores)


def set_cpu_threads(device: torch.device, workers: int) -> str:
    """Set torch's intra-op threads for computing on `device` (cpu_threads); `workers`, the loader processes beside
    it, are named in the line. On a GPU, or where $OMP_NUM_THREADS / $MKL_NUM_THREADS is set, torch's own setting is
    kept. Returns what holds, for a run's start-up line: "2 intra-op threads (2 cores, 2 loader workers)"."""
    given = next((v for v in THREADS_ENV if os.environ.get(v)), None)
    cores = available_cores()
    if device.type == "cpu" and given is None:
        torch.set_num_threads(cpu_threads(cores))
    n = torch.get_num_threads()
    why = f"set by ${given}" if given else f"{cores} cores"
    return f"{n} intra-op thread{'s' * (n != 1)} ({why}, {workers} loader worker{'s' * (workers != 1)})"
