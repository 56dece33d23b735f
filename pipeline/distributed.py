"""Which share of a dataset this process solves, read from ``--shard`` or the launcher.

A run split over ``N`` processes gives image ``index`` (its position in the sorted input list,
:func:`pipeline.data.discover`) to shard ``index % N``. Nothing is communicated to solve: each
process reads its own images and writes its own store (:mod:`pipeline.store.shards`); the only
collective is one barrier at the end, under ``torchrun``, after which rank 0 merges.

:func:`resolve_shard` looks, in this order, at

1. ``--shard I/N`` (by hand, or from a script);
2. ``torchrun``'s ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (the GPU is ``cuda:LOCAL_RANK``);
3. a Slurm job array's ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` (shard = task id
   minus ``SLURM_ARRAY_TASK_MIN``, so ``--array=1-8`` works like ``--array=0-7``);
4. ``srun``'s ``SLURM_PROCID`` and ``SLURM_NTASKS`` (only inside a job step, i.e. with
   ``SLURM_STEP_ID`` set: a batch script's own shell also carries ``SLURM_NTASKS`` but is one
   process), with ``SLURM_LOCALID`` as the local rank.

None of them (or ``N = 1``) means one process: the run writes ``--out`` directly, as always.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from typing import Mapping

from .errors import ConfigError

__all__ = ["Shard", "resolve_shard", "parse_shard", "process_group_barrier", "restart_count"]

_SHARD_TEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_BARRIER_TIMEOUT = _dt.timedelta(hours=72)
"""How long a finished rank waits at the final barrier for the slowest one: shards are equal
shares, but a straggler on a slow node can be hours behind on a large dataset, and a dead rank
is noticed by torchrun (which stops the others) rather than by this timeout."""


@dataclass(frozen=True)
class Shard:
    """This process's share of a run.

    Attributes:
        rank: the shard number, ``0 <= rank < world``.
        world: the number of shards ``N``.
        local_rank: the process's position on its node (picks the GPU), None when unknown.
        launcher: where the numbers came from: ``"--shard"``, ``"torchrun"``, ``"slurm-array"``,
            ``"srun"`` or ``"single"``.
    """

    rank: int = 0
    world: int = 1
    local_rank: int | None = None
    launcher: str = "single"

    def __post_init__(self) -> None:
        if not (isinstance(self.world, int) and isinstance(self.rank, int)
                and self.world >= 1 and 0 <= self.rank < self.world):
            raise ConfigError(f"a shard must be I/N with 0 <= I < N, got {self.rank}/{self.world} "
                              f"(from {self.launcher})")

    @property
    def sharded(self) -> bool:
        """Whether the run is split (``N > 1``): shard stores and a merge, not ``--out`` directly."""
        return self.world > 1

    @property
    def label(self) -> str:
        """``"shard I/N"`` for messages."""
        return f"shard {self.rank}/{self.world}"

    def indices(self, total: int) -> range:
        """The positions of this shard's images in a list of ``total``: ``rank, rank + N, ...``."""
        return range(self.rank, total, self.world)

    def device(self, device: str) -> str:
        """The device this process uses when asked for ``device``: a bare ``"cuda"`` becomes
        ``cuda:<local rank>`` (modulo the visible GPUs, so one GPU per task also works); an
        explicit ``cuda:K`` or ``cpu`` is kept."""
        if device != "cuda" or self.local_rank is None:
            return device
        import torch

        count = torch.cuda.device_count()
        return f"cuda:{self.local_rank % count}" if count else device


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> :class:`Shard` (``launcher="--shard"``).

    Raises:
        ConfigError: not two integers ``I/N`` with ``0 <= I < N``.
    """
    match = _SHARD_TEXT.match(str(text))
    if not match:
        raise ConfigError(f"--shard {text!r} must be I/N, e.g. 0/4 for the first of 4 shards")
    rank, world = int(match.group(1)), int(match.group(2))
    if not 0 <= rank < world:
        raise ConfigError(f"--shard {text!r}: I must be 0 to N-1 (shards are numbered from 0)")
    return Shard(rank, world, None, "--shard")


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ConfigError(f"environment variable {name}={environ[name]!r} is not an integer") from None


def resolve_shard(text: str | None = None, environ: Mapping[str, str] | None = None) -> Shard:
    """This process's shard from ``--shard`` (``text``) or the launcher's environment.

    Args:
        text: the ``--shard`` value, or None to read ``environ``.
        environ: the environment (default ``os.environ``).

    Raises:
        ConfigError: a malformed ``--shard`` or launcher variable (e.g. an array task id beyond
            the task count).
    """
    env = os.environ if environ is None else environ
    if text is not None:
        return parse_shard(text)
    if "RANK" in env and "WORLD_SIZE" in env:
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else None
        return Shard(_int(env, "RANK"), _int(env, "WORLD_SIZE"), local, "torchrun")
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        low = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        rank, world = _int(env, "SLURM_ARRAY_TASK_ID") - low, _int(env, "SLURM_ARRAY_TASK_COUNT")
        if not 0 <= rank < world:
            raise ConfigError(
                f"Slurm array task {rank + low} is not one of {world} tasks numbered from {low}: "
                "submit a contiguous array (--array=0-<N-1>) or pass --shard I/N")
        return Shard(rank, world, None, "slurm-array")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_ID" in env:
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else None
        return Shard(_int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"), local, "srun")
    return Shard()


def restart_count(environ: Mapping[str, str] | None = None) -> int:
    """How many times torchrun has restarted this worker group (``TORCHELASTIC_RESTART_COUNT``)."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def process_group_barrier(shard: Shard, environ: Mapping[str, str] | None = None) -> bool:
    """Wait until every rank of a torchrun job gets here; False (at once) without a process group.

    A process group exists only for ``launcher == "torchrun"`` with ``N > 1`` and
    ``MASTER_ADDR`` set (torchrun sets it; Slurm arrays have none: their shards are merged by
    ``perturb merge``). The group uses gloo, which works for CPU and GPU runs alike (the barrier
    carries no tensors worth a NCCL communicator), and is destroyed before returning.
    """
    env = os.environ if environ is None else environ
    if shard.launcher != "torchrun" or not shard.sharded or "MASTER_ADDR" not in env:
        return False
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", rank=shard.rank, world_size=shard.world,
                                timeout=_BARRIER_TIMEOUT)
    try:
        dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
    return True
