"""Classifier training with a Lipschitz regularizer, on lipkit's run skeleton (run.py).

One step = one optimizer step on one batch of `batch_size` training images (`steps` counts
them; the CLI's --epochs E sets steps = E * (train_size // batch_size), one epoch being one
pass of TensorBatches, which drops the ragged tail). The loss is
    cross_entropy + lam * penalty
with the penalty of --reg (REGS). sn / sn-conv are constraints (lk.constrain reparametrization),
not penalties: lam is unused there and must stay 0.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import data as lkdata
from .. import models
from ..bounds import lipschitz_bound, lipschitz_lower_bound
from ..constraints import constrain
from ..metrics.robust import robust_report
from ..penalties import SpectralPenalty, frobenius_penalty, input_gradient_penalty, l2_penalty, weight_gradient_penalty
from .run import RunConfig, run, scalars_to_host

REGS = ("none", "l2", "frobenius", "snr", "sn", "sn-conv", "igp", "wgnp")
CONSTRAINT_REGS = ("none", "sn", "sn-conv")  # no penalty: lam unused
# Starting points, not tuned values: tune on the validation split (compare-clf --tune).
DEFAULT_LAM = {"none": 0.0, "sn": 0.0, "sn-conv": 0.0, "l2": 1e-4, "frobenius": 1e-3, "snr": 1e-2,
               "igp": 1e-1, "wgnp": 1e-2}
MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd")
IGP_KINDS = ("loss", "logits")
EVAL_BATCH = 1000  # images per forward when measuring accuracy / loss


@dataclass
class ClfConfig(RunConfig):
    """A classifier run. None means "resolved from the data set / model" (resolve_config)."""

    out: str = "runs/clf"  # output folder (config.json, metrics.jsonl, ckpt-*.pt, summary.json)
    steps: int = 1000  # optimizer steps, one batch each (--epochs E: E * (train_size // batch_size))
    data: str = "digits"  # digits|fashion-mnist|a folder holding the four MNIST-format idx files
    train_size: int | None = None  # training images (seeded subset); None: all left after val
    val_size: int | None = None  # validation images carved from the training split; None: min(1000, 20%)
    test_size: int | None = None  # test images for accuracy / loss (fixed subset); None: all
    model: str = "cnn"  # mlp|cnn (models.mlp_classifier / models.cnn_classifier)
    width: int | None = None  # None: 256 (mlp hidden width), 32 (cnn first conv channels)
    depth: int = 2  # mlp hidden layers
    hidden: int = 128  # cnn fully connected hidden width
    reg: str = "none"  # none|l2|frobenius|snr|sn|sn-conv|igp|wgnp
    lam: float | None = None  # penalty weight; None: DEFAULT_LAM[reg] (0 for none/sn/sn-conv)
    sn_iter: int = 1  # power-iteration rounds per step (sn, sn-conv, snr)
    sn_bound: float = 1.0  # sn / sn-conv: every layer's sigma is held at this value
    max_norm: float = 1.0  # frobenius: penalty sum relu(||W||_F - max_norm)^2
    igp_kind: str = "loss"  # igp: loss (double backprop) | logits (Jacobian Frobenius norm)
    optimizer: str = "adam"  # adam|sgd
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # sgd momentum
    batch_size: int = 64  # images per optimizer step
    eps: tuple[float, ...] = (0.1, 0.25, 0.5)  # L2 radii of the robust accuracies (inputs in [0, 1])
    pgd_size: int = 500  # test images attacked and certified
    pgd_steps: int = 30  # PGD steps (step size 2.5 * eps / pgd_steps)
    lower_bound_size: int = 64  # test images seeding lk.lipschitz_lower_bound
    lower_bound_steps: int = 10  # its gradient-ascent steps
    robust_eval: bool = True  # robustness metrics (bounds, PGD, certified) at the end
    robust_every: int = 0  # ...and every this many steps (0: only at the end)
    certify: bool = True  # certified lk.lipschitz_bound and certified robust accuracy


def _split_sizes(data: str) -> tuple[int, int]:
    train, test = load_split(data, "train"), load_split(data, "test")
    return len(train), len(test)


def load_split(data: str, split: str) -> lkdata.ImageSet:
    if data == "digits":
        return lkdata.load_digits(split)
    if data == "fashion-mnist":
        return lkdata.load_idx_images(None, split)
    if Path(data).is_dir():
        return lkdata.load_idx_images(data, split, name="mnist")
    raise ValueError(f"data={data!r}: expected digits, fashion-mnist or a folder holding the four "
                     "MNIST-format idx files")


def resolve_config(config: ClfConfig) -> ClfConfig:
    """A complete copy: every None filled in and every value checked (the saved config)."""
    _check_choices(config)
    pool, test = _split_sizes(config.data)
    val = config.val_size if config.val_size is not None else min(1000, pool // 5)
    train = config.train_size if config.train_size is not None else pool - val
    lam = config.lam if config.lam is not None else DEFAULT_LAM[config.reg]
    resolved = dataclasses.replace(
        config, val_size=val, train_size=train, test_size=config.test_size if config.test_size is not None else test,
        width=config.width or (256 if config.model == "mlp" else 32), lam=float(lam), eps=tuple(config.eps))
    _check_values(resolved, pool, test)
    return resolved


def _check_choices(c: ClfConfig) -> None:
    for name, allowed in (("reg", REGS), ("model", MODELS), ("optimizer", OPTIMIZERS), ("igp_kind", IGP_KINDS)):
        if getattr(c, name) not in allowed:
            raise ValueError(f"{name}={getattr(c, name)!r} is not allowed; choose one of {allowed}")
    if c.reg in CONSTRAINT_REGS and c.lam not in (None, 0, 0.0):
        raise ValueError(f"reg={c.reg!r} adds no penalty, so lam={c.lam!r} would be ignored: leave --lam "
                         "unset (sn / sn-conv take --sn-bound and --sn-iter)")


def _check_values(c: ClfConfig, pool: int, test: int) -> None:
    minimum = {"val_size": 1, "train_size": 1, "test_size": 1, "width": 1, "depth": 1, "hidden": 1, "sn_iter": 1,
               "batch_size": 1, "pgd_size": 1, "pgd_steps": 1, "lower_bound_size": 1, "lower_bound_steps": 0,
               "robust_every": 0}
    for name, low in minimum.items():
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for name, positive in (("lam", False), ("lr", True), ("sn_bound", True), ("max_norm", False), ("momentum", False)):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                or (positive and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    if c.val_size + c.train_size > pool:
        raise ValueError(f"val_size {c.val_size} + train_size {c.train_size} > {pool} images in the training "
                         f"split of {c.data}: lower one of them")
    if c.test_size > test:
        raise ValueError(f"test_size={c.test_size} > {test} images in the test split of {c.data}")
    if c.batch_size > c.train_size:
        raise ValueError(f"batch_size={c.batch_size} > train_size={c.train_size}: every batch must be full")
    if not c.eps or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < math.inf
                        for e in c.eps):
        raise ValueError(f"eps must be one or more finite radii >= 0, got {c.eps!r}")


def steps_for_epochs(config: ClfConfig, epochs: float) -> int:
    """Optimizer steps in `epochs` passes over the training set (at least 1)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not 0 < epochs < math.inf:
        raise ValueError(f"epochs must be a finite number > 0, got {epochs!r}")
    resolved = resolve_config(config)
    return max(1, round(epochs * (resolved.train_size // resolved.batch_size)))


def load_data(c: ClfConfig) -> dict[str, tuple[Tensor, Tensor]]:
    """{"train", "val", "test"}: (images, labels) as described in the module docs."""
    pool, test = load_split(c.data, "train"), load_split(c.data, "test")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(c.seed))
    val_idx, train_idx = order[:c.val_size], order[c.val_size:c.val_size + c.train_size]
    test_idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:c.test_size]
    return {"train": (pool.images[train_idx], pool.labels[train_idx]),
            "val": (pool.images[val_idx], pool.labels[val_idx]),
            "test": (test.images[test_idx], test.labels[test_idx])}


def build_model(c: ClfConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if c.model == "mlp":
        return models.mlp_classifier(shape, num_classes, c.width, c.depth)
    return models.cnn_classifier(shape, num_classes, c.width, c.hidden)  # type: ignore[arg-type]


Penalty = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x, y, cross-entropy) -> scalar


class ClfTask:
    """Model, optimizer, data, penalty and RNG streams of one classifier run."""

    def __init__(self, config: ClfConfig) -> None:
        c = self.config = config
        self.device = torch.device(c.device)
        torch.manual_seed(c.seed)  # model init only
        self.splits = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in load_data(c).items()}
        x_train, y_train = self.splits["train"]
        self.shape = tuple(x_train.shape[1:])
        self.num_classes = int(max(int(y.max()) for _, y in self.splits.values())) + 1
        self.model = build_model(c, self.shape, self.num_classes).to(self.device)
        self.snr: SpectralPenalty | None = None
        if c.reg in ("sn", "sn-conv"):
            constrain(self.model, "spectral", n_iter=c.sn_iter, bound=c.sn_bound,
                      operator="conv" if c.reg == "sn-conv" else "reshape")
        elif c.reg == "snr":
            self.snr = SpectralPenalty(self.model, n_iter=c.sn_iter)
        self.penalty = self._make_penalty()
        if c.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum)
        self.batches = lkdata.TensorBatches((x_train, y_train), c.batch_size, seed=c.seed)
        self.penalty_rng = torch.Generator().manual_seed(c.seed + 2)

    def _make_penalty(self) -> Penalty | None:
        c, model = self.config, self.model
        if c.reg == "l2":
            return lambda x, y, ce: l2_penalty(model)
        if c.reg == "frobenius":
            return lambda x, y, ce: frobenius_penalty(model, c.max_norm)
        if c.reg == "snr":
            snr = self.snr
            return lambda x, y, ce: snr()  # type: ignore[misc]
        if c.reg == "igp":
            return lambda x, y, ce: input_gradient_penalty(model, x, y, kind=c.igp_kind, generator=self.penalty_rng)
        if c.reg == "wgnp":  # the paper's form (arXiv 2202.03599): the norm, not its square
            return lambda x, y, ce: weight_gradient_penalty(model, ce, squared=False)
        return None

    def train_step(self, step: int) -> dict[str, float]:
        x, y = next(self.batches)
        self.model.train()
        logits = self.model(x)
        ce = F.cross_entropy(logits, y)
        penalty = self.penalty(x, y, ce) if self.penalty is not None else torch.zeros((), device=x.device)
        loss = ce + self.config.lam * penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        accuracy = (logits.detach().argmax(1) == y).float().mean()
        stats = {"loss": loss, "loss_ce": ce, "penalty": penalty, "batch_acc": accuracy}
        return scalars_to_host(stats)  # one host sync per step (NaN guard)

    @torch.no_grad()
    def accuracy_loss(self, split: str) -> tuple[float, float]:
        """Accuracy and mean cross-entropy of the model (eval mode) on a whole split."""
        x, y = self.splits[split]
        correct, total = 0.0, 0.0
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
        report = robust_report(self.model, x[:c.pgd_size], y[:c.pgd_size], c.eps, upper, c.pgd_steps)
        return {"lipschitz_lower": float(lower), "lipschitz_upper": math.nan if upper is None else upper,
                **report.as_metrics()}

    def finish(self, folder: Path) -> dict[str, Any]:
        return {"parameters": sum(p.numel() for p in self.model.parameters()),
                "sizes": {k: len(y) for k, (_, y) in self.splits.items()}, "num_classes": self.num_classes}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "batches": self.batches.state_dict(), "penalty_rng": self.penalty_rng.get_state(),
                "snr": self.snr.state_dict() if self.snr is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])  # the model first: SNR's state refers to its weights
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        self.penalty_rng.set_state(state["penalty_rng"])
        if self.snr is not None:
            self.snr.load_state_dict(state["snr"])


def fit(config: ClfConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train a classifier as `config` says (None fields resolved first); returns the summary."""
    return run(resolve_config(config), ClfTask, resume=resume)
