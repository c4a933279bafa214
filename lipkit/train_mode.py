"""Which layers of a model behave differently in train mode, for the API calls whose answer
would silently be about another network: a certified bound is computed for the eval-mode
network (BatchNorm on running statistics, Dropout off), and a gradient penalty needs scores
that do not mix the batch (train-mode BatchNorm normalizes each sample by the batch's
statistics, so the summed-score trick gives no per-sample gradient)."""
from __future__ import annotations

import torch.nn as nn

BATCH_MIXING: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm,)  # SyncBatchNorm included
MODE_DEPENDENT: tuple[type, ...] = BATCH_MIXING + (nn.modules.dropout._DropoutNd,)


def layers_in_train_mode(model: object, kinds: tuple[type, ...]) -> list[str]:
    """Qualified names ("<root>" for the model itself) of `kinds` modules in train mode;
    [] for a plain function (nothing to inspect)."""
    if not isinstance(model, nn.Module):
        return []
    return [name or "<root>" for name, m in model.named_modules() if isinstance(m, kinds) and m.training]


def describe(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
