"""Classifier training with a Lipschitz regularizer, on lipkit's run skeleton (run.py).

One step = one optimizer step on one batch of `batch_size` training images (`steps` counts
them; the CLI's --epochs E sets steps = E * (train_size // batch_size), one epoch being one
pass of TensorBatches, which drops the ragged tail). The loss is
    cross_entropy + lam * penalty
with the penalty of the --reg method (lipkit.methods). Methods without a penalty (sn, sn-conv,
frobenius) are constraints (lk.constrain): lam is unused there and must stay 0.

Splits (all in [0, 1], no normalization, so eps is in pixel units):
- val: `val_size` images of the TRAINING split, disjoint from train; the only split a
  lambda may be tuned on (compare-clf --tune);
- train: the next `train_size` images of the same seeded permutation (seed = config.seed,
  so every --reg sees the same examples under the same seed);
- test: a fixed subset (seed 0, the same for every run) of the test split; its first
  pgd_size images are attacked / certified, its first lower_bound_size seed the lower bound.

RNG streams: global torch RNG (model init only), the batch stream (own seed per epoch),
`penalty_rng` (igp's Rademacher projections). All are checkpointed, and so is SNR's power
iteration state, so resume is exact. Evaluation draws from no stream and touches no state
(PGD starts at the clean point; eval-mode forwards never advance power iteration).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils import parametrize

from .. import data as lkdata
from .. import models
from ..bounds import lipschitz_bound, lipschitz_lower_bound
from ..data import get_data
from ..losses import hkr_loss, margin_cross_entropy
from ..methods import Batch, apply_method
from ..metrics.robust import robust_report
from . import compiling, distributed
from .clf_config import ClfConfig, resolve_config, steps_for_epochs
from .precision import Precision, at_least_fp32
from .run import run, scalars_to_host

__all__ = ["ClfConfig", "ClfTask", "fit", "resolve_config", "steps_for_epochs"]
EVAL_BATCH = 1000  # images per forward when measuring accuracy / loss


def load_data(c: ClfConfig) -> dict[str, tuple[Tensor, Tensor]]:
    """{"train", "val", "test"}: (images, labels) as described in the module docs."""
    spec = get_data(c.data)
    pool, test = spec.split("train"), spec.split("test")
    if int(test.labels.max()) >= pool.num_classes:  # a class the model never trains on
        raise ValueError(f"{c.data}: test label {int(test.labels.max())} is not among the training split's "
                         f"classes 0..{pool.num_classes - 1}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(c.seed))
    val_idx, train_idx = order[:c.val_size], order[c.val_size:c.val_size + c.train_size]
    test_idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:c.test_size]
    return {"train": (pool.images[train_idx], pool.labels[train_idx]),
            "val": (pool.images[val_idx], pool.labels[val_idx]),
            "test": (test.images[test_idx], test.labels[test_idx])}


def classification_loss(c: ClfConfig, logits: Tensor, labels: Tensor) -> Tensor:
    """The training loss --loss names: cross-entropy, the Lipschitz-margin cross-entropy (with
    the margin of a 1-Lipschitz network: --reg lipnet, or a constrained model whose certified
    constant is 1), or HKR."""
    if c.loss == "hkr":
        return hkr_loss(logits, labels, alpha=c.hkr_alpha, margin=c.hkr_margin)
    if c.loss == "margin":
        return margin_cross_entropy(c.temperature * logits, labels, eps=c.margin_eps * c.temperature)
    return F.cross_entropy(c.temperature * logits, labels)


def build_model(c: ClfConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if c.model == "mlp":
        return models.mlp_classifier(shape, num_classes, c.width, c.depth)
    return models.cnn_classifier(shape, num_classes, c.width, c.hidden)  # type: ignore[arg-type]


class ClfTask:
    """Model, optimizer, data, penalty and RNG streams of one classifier run."""

    # A mean cross-entropy above this needs logit gaps of ~1e4 on wrong classes (it starts at
    # log K ~ 2.3): the run has diverged even though every number is still finite (--lr 1e6).
    divergence_limits = {"loss_ce": 1e4}

    def __init__(self, config: ClfConfig) -> None:
        c = self.config = config
        self.device = torch.device(c.device)
        torch.manual_seed(c.seed)  # model init only
        self.splits = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in load_data(c).items()}
        x_train, y_train = self.splits["train"]
        self.shape = tuple(x_train.shape[1:])
        self.num_classes = int(max(int(y.max()) for _, y in self.splits.values())) + 1
        self.model = build_model(c, self.shape, self.num_classes).to(self.device)
        self.shard = distributed.current_shard()  # a torchrun job: this rank's rows of each batch
        distributed.check_divisible("batch_size", c.batch_size)
        self.method = apply_method(self.model, c.reg, dataclasses.asdict(c), "classifier")
        if c.compile:
            compiling.check_compilable(self.method, self.device)
            compiling.compile_models(self.model)
        if c.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum)
        distributed.average_gradients_before_step(self.optimizer)
        distributed.refuse_fp16_ranks(c.precision)
        self.precision = Precision(c.precision, self.device)
        self.batches = lkdata.TensorBatches((x_train, y_train), c.batch_size, seed=c.seed)
        self.penalty_rng = torch.Generator().manual_seed(c.seed + 2)

    def train_step(self, step: int) -> dict[str, float]:
        x, y = next(self.batches)
        if self.shard is not None:
            x, y = self.shard.take(x), self.shard.take(y)
        self.model.train()
        with self.precision.autocast():
            logits = at_least_fp32(self.model(x))
            ce = F.cross_entropy(logits, y)  # logged for every loss, comparable across runs
            task_loss = classification_loss(self.config, logits, y)
            # lam weights the method's penalty (zero for a constraint-only method)
            penalty = self.method.unweighted_penalty(Batch(x, y, loss=task_loss, generator=self.penalty_rng,
                                                           shard=self.shard))
        loss = task_loss + self.config.lam * penalty
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward_step(loss, self.optimizer)
        self.method.after_step(self.model)  # projection-mode constraints act after the update
        accuracy = (logits.detach().argmax(1) == y).float().mean()
        stats = {"loss": loss, "loss_ce": ce, "penalty": penalty, "batch_acc": accuracy}
        return scalars_to_host(stats)  # one host sync per step (NaN guard)

    @torch.no_grad()
    def accuracy_loss(self, split: str) -> tuple[float, float]:
        """Accuracy and mean cross-entropy of the model (eval mode) on a whole split."""
        x, y = self.splits[split]
        correct, total = 0.0, 0.0
        with parametrize.cached():  # the weights are fixed here: each constraint map runs once, not per batch
            for i in range(0, len(y), EVAL_BATCH):
                logits = self.model(x[i:i + EVAL_BATCH])
                correct += float((logits.argmax(1) == y[i:i + EVAL_BATCH]).sum())
                total += float(F.cross_entropy(logits, y[i:i + EVAL_BATCH], reduction="sum"))
        return correct / len(y), total / len(y)

    def evaluate(self, step: int, folder: Path) -> dict[str, float]:
        """Accuracy / loss on every split and the generalization gap; at the end (and every
        robust_every steps) the Lipschitz bounds and robust accuracies too."""
        c = self.config
        self.model.eval()
        try:
            out: dict[str, float] = {}
            for split in ("train", "val", "test"):
                out[f"{split}_acc"], out[f"{split}_loss"] = self.accuracy_loss(split)
            out["gap_acc"] = out["train_acc"] - out["test_acc"]
            out["gap_loss"] = out["test_loss"] - out["train_loss"]
            if c.robust_eval and (step == c.steps or (c.robust_every and step % c.robust_every == 0)):
                out |= self.robustness()
            return out
        finally:
            self.model.train()

    def robustness(self) -> dict[str, float]:
        """Empirical lower / certified upper Lipschitz bounds, PGD and certified accuracies."""
        c = self.config
        x, y = self.splits["test"]
        upper = float(lipschitz_bound(self.model, self.shape).upper) if c.certify else None
        lower = lipschitz_lower_bound(self.model, x[:c.lower_bound_size], steps=c.lower_bound_steps)
        with parametrize.cached():  # PGD reads every weight twice per attack step: once per weight here
            report = robust_report(self.model, x[:c.pgd_size], y[:c.pgd_size], c.eps, upper, c.pgd_steps)
        return {"lipschitz_lower": float(lower), "lipschitz_upper": math.nan if upper is None else upper,
                **report.as_metrics()}

    def finish(self, folder: Path) -> dict[str, Any]:
        return {"parameters": sum(p.numel() for p in self.model.parameters()),
                "sizes": {k: len(y) for k, (_, y) in self.splits.items()}, "num_classes": self.num_classes}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "batches": self.batches.state_dict(), "penalty_rng": self.penalty_rng.get_state(),
                "method": self.method.state_dict(), "scaler": self.precision.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # the model first: a penalty's state refers to its weights
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        self.penalty_rng.set_state(state["penalty_rng"])
        self.method.load_state_dict(state["method"])
        self.precision.load_state_dict(state.get("scaler", {}))


def fit(config: ClfConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train a classifier as `config` says (None fields resolved first); returns the summary."""
    return run(resolve_config(config), ClfTask, resume=resume)
