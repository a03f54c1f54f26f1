"""Processes under torchrun: setting one up, summing numbers over all, gathering their shards,
leaving.

Without torchrun there is one process (rank 0 of 1) and every helper is the identity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..core.errors import UserError


@dataclass
class Process:
    """Where this process runs: its rank among ``world`` processes and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this is the process that writes (rank 0)."""
        return self.rank == 0


def setup_process(device: str) -> Process:
    """One process, or one of torchrun's (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"the device {device!r} was asked for but no CUDA device is available (use cpu)"
        )
    if world == 1:
        return Process(0, 1, torch.device(device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return Process(dist.get_rank(), world, torch.device(f"cuda:{local}" if cuda else "cpu"))


def leave_process_group() -> None:
    """Destroy the process group this process joined, if any, while the interpreter is whole.

    Left to the interpreter's exit, Gloo's worker threads can still hold the tensors of the last
    collective and abort the process (SIGABRT) as they free them; a process that leaves right
    after a collective, as extraction's non-main processes do, is the one that dies.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], proc: Process) -> list[float]:
    """Sums of ``values`` over every process (the values themselves in a single process)."""
    if proc.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=proc.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_shards(out: dict[str, np.ndarray], world: int) -> dict[str, np.ndarray]:
    """Put the per-sample arrays of every process (process ``rank`` took samples ``rank::world``)
    back into one array each, in the subset's order."""
    shards: list[dict | None] = [None] * world
    dist.all_gather_object(shards, out)
    merged = dict(out)
    for key in ("ratios", "input_mean", "input_logstd", "predictions", "features"):
        n = sum(len(sh[key]) for sh in shards)
        full = np.empty((n, *out[key].shape[1:]), out[key].dtype)
        for rank, sh in enumerate(shards):
            full[rank::world] = sh[key]
        merged[key] = full
    return merged
