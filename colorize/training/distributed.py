"""Training on several processes (torchrun): who is who, and what DDP does that the
engine sometimes does by hand.

`train.nproc` > 1 relaunches the train stage under torchrun (`relaunch_with_torchrun`),
gloo on CPU, NCCL on CUDA. Rank 0 logs and writes; `checksums` lets every rank's final
weights be compared. Models that DDP cannot wrap (gan: its gradient penalty needs a
double backward) average their gradients with `average_gradients` and get rank 0's
buffers with `broadcast`, exactly what DDP's reducer and its buffer sync do.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params) -> None:
        """Mean of each gradient over the ranks (what DDP's reducer does), in place."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def broadcast(self, tensors) -> None:
        """Rank 0's values everywhere (DDP's start-up and per-step buffer broadcast)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t.data, 0)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor from every rank (identity in one process)."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, t)
        return torch.cat(parts)

    def checksums(self, model: nn.Module) -> list[str]:
        """SHA-256 of each rank's final weights (parameters; batch-norm running statistics
        are per-rank between DDP's broadcasts); DDP must have kept them identical."""
        digest = hashlib.sha256()
        for k, v in sorted(model.named_parameters()):
            digest.update(k.encode())
            digest.update(v.detach().cpu().contiguous().numpy().tobytes())
        mine = digest.hexdigest()
        if self.world == 1:
            return [mine]
        import torch.distributed as dist

        all_sums = [None] * self.world
        dist.all_gather_object(all_sums, mine)
        return all_sums


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch_with_torchrun(nproc: int, module: str) -> int:
    """Run `python -m module` again under torchrun with `nproc` processes; its exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", module]
    print("train: " + " ".join(cmd[1:]))
    return subprocess.call(cmd)


def init_distributed(device: torch.device) -> Dist:
    if not under_torchrun():
        return Dist()
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))


def shutdown() -> None:
    if under_torchrun():
        import torch.distributed as dist

        dist.destroy_process_group()
