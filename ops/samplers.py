"""Samplers for training (seeded, sharded, resumable mid-epoch) and evaluation (no padding).

Training: every epoch has one global permutation of the dataset, a function of
``(seed, epoch)`` only. With ``W`` processes, process ``r`` takes positions
``r, r + W, r + 2W, ...`` of it (like ``DistributedSampler``), so global batch
``k`` of a run with per-process batch ``B`` is the permutation's slice
``[k*B*W, (k+1)*B*W)`` whatever ``W`` is: one process with batch 64 sees the
same samples per step as four processes with batch 16. The sampler can start
at any position of its shard (``start``), which is how a run resumed from a
mid-epoch checkpoint continues with exactly the batches it had not yet seen.

Evaluation: :class:`ShardSampler` splits the list into strided shards
*without padding*, so across processes every video is counted once; the
caller all-reduces the sums of correct predictions and counts.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from ops.stop_signal import ignore_interrupt


def epoch_permutation(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The global order of ``epoch``: a permutation seeded by ``(seed, epoch)``, or ``0..n-1``."""
    if not shuffle:
        return list(range(num_samples))
    generator = torch.Generator()
    # Two 32-bit halves keep epochs of different seeds from colliding (seed + epoch would).
    generator.manual_seed(((int(seed) << 32) ^ int(epoch)) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randperm(num_samples, generator=generator).tolist()


class ResumableSampler(Sampler[int]):
    """Seeded, sharded training sampler that can start in the middle of an epoch.

    Each process yields ``num_samples_per_rank`` indices: its strided share of
    the epoch's permutation, truncated to a whole number of global batches
    when ``drop_last`` (the published trainer drops the last partial batch),
    else padded by wrapping around so every process takes as many steps.

    Args:
        num_samples: dataset length.
        batch_size: per-process batch size (used for truncation with ``drop_last``).
        num_replicas, rank: the process group's size and this process's rank.
        seed: run seed; the permutation of epoch ``e`` depends on ``(seed, e)`` only.
        drop_last: drop the samples that do not fill a whole global batch.
        shuffle: permute (training) or keep the list order.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0
        global_batch = self.batch_size * self.num_replicas
        if drop_last:
            self.num_batches = self.num_samples // global_batch
            if self.num_batches == 0:
                raise ValueError(
                    f"{self.num_samples} training samples do not fill one batch of {self.batch_size} x "
                    f"{self.num_replicas} process(es); lower --batch-size"
                )
        else:
            self.num_batches = -(-self.num_samples // global_batch)
        self.num_samples_per_rank = self.num_batches * self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch, and the position in this process's shard to start from.

        ``start`` counts samples of this process already consumed in the epoch
        (``steps_done * batch_size``).
        """
        if not 0 <= start <= self.num_samples_per_rank:
            raise ValueError(f"start {start} is outside [0, {self.num_samples_per_rank}]")
        self.epoch = int(epoch)
        self.start = int(start)

    def shard(self) -> list[int]:
        """This process's full share of the current epoch (ignoring ``start``)."""
        order = epoch_permutation(self.num_samples, self.seed, self.epoch, self.shuffle)
        total = self.num_samples_per_rank * self.num_replicas
        if total > len(order):
            order = (order * (-(-total // len(order))))[:total]
        return order[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        return self.num_samples_per_rank - self.start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` of a dataset in list order, without padding.

    Shards differ in length by at most one; together they cover every index
    exactly once, so summed counts equal the list's length.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.indices = list(range(rank, int(num_samples), int(num_replicas)))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def loader_generator(seed: int, epoch: int) -> torch.Generator:
    """The DataLoader's generator for ``epoch``: the workers' base seed comes from it,
    not from the global RNG, so creating a loader never shifts the model's random stream."""
    generator = torch.Generator()
    generator.manual_seed(((int(seed) << 32) ^ (int(epoch) + 0x5EED)) & 0xFFFF_FFFF_FFFF_FFFF)
    return generator


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` in each worker from its torch seed; ignore SIGINT.

    The dataset draws its randomness from ``(seed, epoch, index)``; this only
    keeps any other library call in a worker reproducible.
    """
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    ignore_interrupt()  # Ctrl-C: the main process finishes its step and saves (ops/stop_signal.py)
