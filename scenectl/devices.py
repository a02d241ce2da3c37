"""`--device`: one parser for every command.

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


def parse_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch.device for `--device name`; a one-line error naming the option for anything else."""
    m = _FORM.fullmatch(str(name).strip())
    if not m or (m[2] is not None and m[1] != "cuda"):
        raise ScenectlError(f"--device must be auto, cpu, cuda or cuda:N, not {name!r}")
    kind, index = m[1], m[2]
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ScenectlError(f"--device {name}: torch sees no CUDA GPU on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    if index is None:
        return torch.device("cuda", local_rank % count)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ScenectlError(f"--device {name}: under torchrun each process takes its own GPU (LOCAL_RANK); "
                            "pass --device cuda")
    if int(index) >= count:
        raise ScenectlError(f"--device {name}: this machine has {count} GPU{'s' if count != 1 else ''} "
                            f"(cuda:0..cuda:{count - 1})")
    return torch.device("cuda", int(index))
