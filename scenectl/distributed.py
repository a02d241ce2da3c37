"""torch.distributed set-up for `torchrun` (DistributedDataParallel), and the single-process case.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process it starts; when
WORLD_SIZE > 1 we join the process group from those variables ("env://"): nccl on CUDA, gloo on CPU. Multi-node:
run the same torchrun line on every node with `--nnodes N --node_rank i --master_addr HOST --master_port PORT`
(or `--rdzv_backend c10d --rdzv_endpoint HOST:PORT`); nothing here changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from scenectl.devices import parse_device, torchrun_env


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; otherwise a single process (rank 0 of 1)."""
    rank, world, local_rank = torchrun_env()
    dev = parse_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                world_size=world, rank=rank)
    return DistInfo(rank, world, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (in place, returned); a no-op in a single process."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    """Send a picklable object from rank 0 to all ranks (only control data: never used for shard content)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
