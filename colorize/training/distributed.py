"""Training on several processes (torchrun): who is who, and what DDP does that the
engine sometimes does by hand.

`train.nproc` > 1 or `train.nnodes` > 1 relaunches the train stage under torchrun
(`relaunch_with_torchrun`), gloo on CPU, NCCL on CUDA. Global rank 0 (node 0's first
process) logs and writes; `checksums` lets every rank's final weights be compared.
Models that DDP cannot wrap (gan: its gradient penalty needs a double backward) average
their gradients with `average_gradients` and get rank 0's buffers with `broadcast`,
exactly what DDP's reducer and its buffer sync do.
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
    local_world: int = 1  # processes on this machine (world / nnodes)

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

    def share(self, obj):
        """Rank 0's `obj` on every rank (identity in one process)."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a tensor from every rank (identity in one process)."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, t)
        return torch.cat(parts)

    def collect(self, obj) -> list:
        """`obj` of every rank, in rank order."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def checksums(self, model: nn.Module) -> list[str]:
        """SHA-256 of each rank's final weights (parameters; batch-norm running statistics
        are per-rank between DDP's broadcasts); DDP must have kept them identical."""
        digest = hashlib.sha256()
        for k, v in sorted(model.named_parameters()):
            digest.update(k.encode())
            digest.update(v.detach().cpu().contiguous().numpy().tobytes())
        return self.collect(digest.hexdigest())


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def node_rank() -> int:
    """This machine's place among the nodes, under torchrun (GROUP_RANK: static
    rendezvous sets it from --node-rank)."""
    return int(os.environ.get("GROUP_RANK", "0"))


def relaunch_with_torchrun(nproc: int, module: str, nnodes: int = 1, node: int = 0,
                           master: tuple[str, int] | None = None) -> int:
    """Run `python -m module` again under torchrun with `nproc` processes on this machine;
    its exit code.

    One machine: `--standalone`. Several: torchrun's static rendezvous at node 0's
    `master` (host, port), ranks assigned node by node from `--node-rank`, so node 0's
    first process is global rank 0 and writes the outputs where `dvc repro` runs. Not
    c10d's dynamic rendezvous: there global rank 0 can land on any node, and the node
    running DVC would then not write its outputs. Static also makes MASTER_ADDR the
    address given, so no `--local-addr` trouble with hostnames that resolve otherwise."""
    if nnodes == 1:
        launch = ["--standalone", f"--nproc_per_node={nproc}"]
    else:
        host, port = master
        launch = ["--nnodes", str(nnodes), "--node-rank", str(node), "--nproc-per-node", str(nproc),
                  "--master-addr", host, "--master-port", str(port)]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", module]
    print("train: " + " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd)


def init_distributed(device: torch.device) -> Dist:
    if not under_torchrun():
        return Dist()
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL's object collectives (share, gather) use the current device
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]), local_world)


def shutdown() -> None:
    if under_torchrun():
        import torch.distributed as dist

        dist.destroy_process_group()
