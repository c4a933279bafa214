"""Batch streams whose state_dict() resumes exactly: `TensorBatches` shuffles fixed tensors,
`SampleBatches` draws fresh batches from a sampler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor

from .checks import _check_count


@dataclass
class TensorBatches:
    """Endless shuffled batches of fixed tensors, one permutation per epoch.

    The permutation of epoch e comes from seed + e, so the state is three integers and a
    resumed run draws exactly the batches the interrupted one would have.
    """

    tensors: tuple[Tensor, ...]
    batch_size: int
    seed: int = 0
    epoch: int = 0
    position: int = 0
    _order: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = self.tensors[0].shape[0]
        if any(t.shape[0] != n for t in self.tensors):
            raise ValueError(f"tensors have different first dims {[t.shape[0] for t in self.tensors]}")
        if _check_count("batch_size", self.batch_size) > n:
            raise ValueError(f"batch_size={self.batch_size} > {n} rows (batches never wrap an epoch)")

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return self

    def __next__(self) -> tuple[Tensor, ...]:
        n = self.tensors[0].shape[0]
        if self.position + self.batch_size > n:  # drop the ragged tail: every batch is full
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        index = self._order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return tuple(t[index] for t in self.tensors)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position, self._order = state["seed"], state["epoch"], state["position"], None


class SampleBatches:
    """Endless fresh batches from a sampler (a toy set's .sample): the state is the generator's."""

    def __init__(self, source: Any, batch_size: int, seed: int = 0) -> None:
        if not callable(getattr(source, "sample", None)):
            raise ValueError(f"{type(source).__name__} has no .sample(n, generator)")
        self.source, self.batch_size = source, _check_count("batch_size", batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        return self

    def __next__(self) -> tuple[Tensor, Tensor | None]:
        return self.source.sample(self.batch_size, self.generator)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
