"""GAN critic losses on the critic's scores of a real and a generated batch (to minimize).

    wgan   E f(fake) - E f(real)                       (WGAN: the negated W1 estimate)
    hinge  E relu(1 - f(real)) + E relu(1 + f(fake))   (SN-GAN, Miyato et al. 2018)

One table, so that a config's allowed values and the training step read the same names.
The generator minimizes -E f(G(z)) with either (train/gan.py)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

CRITIC_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "wgan": lambda on_real, on_fake: on_fake.mean() - on_real.mean(),
    "hinge": lambda on_real, on_fake: torch.relu(1 - on_real).mean() + torch.relu(1 + on_fake).mean(),
}


def check_critic_loss(kind: str) -> None:
    if kind not in CRITIC_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(CRITIC_LOSSES)}, got {kind!r}")


def critic_loss(kind: str, on_real: Tensor, on_fake: Tensor) -> Tensor:
    """The critic loss `kind` of the per-sample scores on real and generated samples."""
    check_critic_loss(kind)
    return CRITIC_LOSSES[kind](on_real, on_fake)
