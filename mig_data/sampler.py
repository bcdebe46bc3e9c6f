"""Deterministic, resumable batch order: the data position is one integer.

Micro-batch k of the run is a pure function of (seed, k): epoch e shuffles with seed + e, so a run
resumed at position k continues with exactly the batches it would have seen. Under data
parallelism every rank takes its slice of each global batch.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, num_replicas: int = 1, rank: int = 0):
        if n < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.num_replicas, self.rank = start, num_replicas, rank
        self.global_batch = batch_size * num_replicas

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def batch(self, k: int) -> list[int]:
        """Indices of this rank's micro-batch k (batches may wrap across an epoch boundary)."""
        first = k * self.global_batch + self.rank * self.batch_size
        out = []
        for pos in range(first, first + self.batch_size):
            epoch, i = divmod(pos, self.n)
            out.append(self._order(epoch)[i])
        return out

    def _order(self, epoch: int) -> list[int]:
        if getattr(self, "_cached_epoch", None) != epoch:
            self._cached_epoch, self._cached = epoch, self._epoch_order(epoch)
        return self._cached

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            yield self.batch(k)
            k += 1

    def __len__(self) -> int:  # infinite stream; DataLoader only needs it for progress estimates
        return 2**31
