"""Data-parallel helpers for ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on GPU).

Every rank draws the same GLOBAL batch (same seeded order), takes its contiguous shard, and
scales its loss so that DDP's gradient *average* equals the gradient of the global-batch
loss. Relational KD losses see the whole global batch: student embeddings/logits are
all-gathered WITH gradient (``torch.distributed.nn.functional.all_gather``).

From the command line: ``torchrun --nproc_per_node N -m volkd.cli train-teacher ...`` (any
``volkd`` train command and its options; see :mod:`volkd.cli.__main__`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's rank and the world size (``world == 1``: plain single process)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistContext:
    """The current context: from an initialised process group, else single-process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def init_from_env(device: str = "cpu") -> DistContext:
    """Initialise the process group from torchrun's environment (no-op without ``WORLD_SIZE > 1``):
    nccl for a CUDA ``device`` (``auto`` on a machine with CUDA), else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return context()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return context()


def shard_sizes(n: int, world: int) -> list[int]:
    """Sizes of the contiguous shards of a global batch of ``n`` (differ by at most one; the
    first ``n % world`` shards hold the extra scan, as ``np.array_split``)."""
    q, r = divmod(n, world)
    return [q + 1 if i < r else q for i in range(world)]


def shard(global_batch: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous part of a global batch."""
    if not ctx.enabled:
        return global_batch
    sizes = shard_sizes(len(global_batch), ctx.world)
    start = sum(sizes[:ctx.rank])
    return global_batch[start:start + sizes[ctx.rank]]


def gather_with_grad(local: torch.Tensor, ctx: DistContext, sizes: list[int]) -> torch.Tensor:
    """All ranks' ``local`` rows concatenated in rank order; gradients flow back to each rank.

    Shards may differ in size by one: they are zero-padded for the collective, then trimmed.
    """
    if not ctx.enabled:
        return local
    from torch.distributed.nn.functional import all_gather

    m = max(sizes)
    pad = m - local.shape[0]
    padded = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))]) if pad else local
    parts = all_gather(padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of a (detached) tensor over ranks."""
    if not ctx.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Average floating buffers (BatchNorm running statistics) over ranks and take rank 0's
    integer buffers, so every rank evaluates, early-stops and saves the same model."""
    if not ctx.enabled:
        return
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b.data, op=dist.ReduceOp.SUM)
            b.data.div_(ctx.world)
        else:
            dist.broadcast(b.data, src=0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op single-process)."""
    if ctx.enabled:
        dist.barrier()


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: str = "cpu") -> torch.nn.Module:
    """Wrap in DDP when distributed. On CUDA, BatchNorm becomes SyncBatchNorm; on CPU (gloo),
    where SyncBatchNorm is unsupported, BatchNorm uses each rank's shard statistics."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DDP(model, device_ids=[torch.device(device).index or 0])
    return DDP(model)


if __name__ == "__main__":  # the former torchrun entry point: say where it went instead of doing nothing
    sys.exit("volkd.train.distributed is no longer a command; run: torchrun ... -m volkd.cli <volkd train command> [options]")
