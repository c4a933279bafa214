"""Data-parallel training across the processes torchrun starts (issue 12).

    torchrun --nproc_per_node=N -m lipkit train-gan ...      (gloo on CPU, NCCL on CUDA)

How lipkit splits the work, and why this way:
- Every rank draws the SAME global batch from the same seeded streams and keeps its rows
  [rank * B/N, (rank + 1) * B/N) (`Shard`). Drawing costs nothing next to a step, and it
  makes every RNG stream identical on every rank: rank 0's checkpoint is every rank's, and
  an N-rank run takes the same steps as a 1-rank run on the same global batch (the tests
  compare them). The gradient penalty's interpolation weights are drawn for the global
  batch and sliced too.
- Gradients are averaged by one flattened all-reduce per optimizer step, run by a pre-step
  hook on each optimizer (`average_gradients_before_step`), rather than by wrapping the
  models in DistributedDataParallel: a critic step runs several forwards before one backward
  (real, fake, interpolates) and the gradient penalty differentiates twice, which the
  wrapper's per-forward bookkeeping is not built for; the all-reduce works for every
  method's graph. Constraint state (power-iteration vectors) is not communicated: every rank
  refreshes it from identical weights, so it stays identical.
- Losses and statistics are averaged across ranks before the run loop reads them (one
  all-reduce, `mean_across_ranks`), so every rank takes the same decision on a NaN, and a
  stop request on any rank stops all of them after the same step (`any_rank`).
- Rank 0 alone logs, evaluates and writes checkpoints; every rank resumes from them.
BatchNorm in a generator would normalize each shard by its own statistics: torch's
SyncBatchNorm runs on CUDA only, so on CPU a multi-rank run with a BatchNorm generator is
refused (pass --no-g-batch-norm); on CUDA the generator's BatchNorms become SyncBatchNorm.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's rows of every global batch."""

    rank: int
    world: int

    def rows(self, batch_size: int) -> slice:
        per_rank = batch_size // self.world
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def take(self, tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor[self.rows(tensor.shape[0])]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def current_shard() -> Shard | None:
    """This rank's Shard in a multi-process job, None in a single process."""
    if world_size() == 1:
        return None
    return Shard(dist.get_rank(), dist.get_world_size())


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_rank_zero() -> bool:
    """Rank 0 of a torchrun job (also after its process group is gone), or a lone process."""
    return int(os.environ.get("RANK", "0")) == 0


def refuse_under_torchrun(command: str, why: str) -> None:
    if launched_by_torchrun():
        raise ValueError(f"{command} does not run under torchrun ({why}); launch it as a single process")


def init_if_launched(device: str) -> bool:
    """Join the process group torchrun set up (env://); returns True if this call created it
    (the caller destroys it at the end). gloo on CPU, NCCL on CUDA (one GPU per rank)."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed: run without torchrun")
    backend = "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    dist.init_process_group(backend)
    return True


def refuse_fp16_ranks(precision: str) -> None:
    """fp16 loss scaling decides per rank whether to skip a step: ranks would part."""
    if precision == "fp16" and world_size() > 1:
        raise ValueError(f"--precision fp16 with {world_size()} ranks is not supported (each rank's loss scaler would "
                         "skip overflowing steps on its own): use --precision bf16, or one process")


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def check_divisible(name: str, batch_size: int) -> None:
    world = world_size()
    if world > 1 and batch_size % world:
        raise ValueError(f"{name}={batch_size} is not divisible by the {world} ranks of this torchrun job: every "
                         f"rank takes batch_size / world rows; pass a multiple of {world}")


def average_gradients(params: list[nn.Parameter]) -> None:
    """Every rank's .grad becomes the mean over ranks (one flattened all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def average_gradients_before_step(optimizer: torch.optim.Optimizer) -> None:
    """In a multi-rank job, average gradients across ranks before every optimizer.step()."""
    if world_size() == 1:
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: average_gradients(params))


def mean_across_ranks(values: Tensor) -> Tensor:
    """The mean of `values` over ranks (itself in a single process)."""
    if world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def any_rank(signum: int | None) -> int | None:
    """A stop signal received by any rank (the largest signal number), on every rank."""
    if world_size() == 1:
        return signum
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces CUDA tensors only
    flag = torch.tensor([signum or 0], dtype=torch.long, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) or None


def sync_batchnorm_or_refuse(model: nn.Module, device: str, flag: str) -> nn.Module:
    """A multi-rank job's BatchNorms must see the global batch: SyncBatchNorm on CUDA; on CPU,
    which SyncBatchNorm does not support, a one-line error naming `flag`."""
    if world_size() == 1 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if not device.startswith("cuda"):
        raise ValueError(f"a {world_size()}-rank run on {device} cannot synchronize BatchNorm statistics (torch's "
                         f"SyncBatchNorm runs on CUDA only): pass {flag}, or run on GPUs")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
