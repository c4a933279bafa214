"""A classifier run's config (every field a flag of `lipkit train-clf`) and its resolution:
None filled in from the data set and the method's defaults, every value checked."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..constraints.options import check_bjorck_order
from ..data import get_data
from ..methods import get_method
from ..methods.attach import check_lipnet_conv
from .run_config import MAX_DEPTH, RunConfig

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd")
IGP_KINDS = ("loss", "logits")
LOSSES = ("ce", "margin", "hkr")
# Fields a method's classifier preset may set (lipnet: its loss, temperature, margin and conv
# kind, so `compare-clf --regs lipnet,sn-conv` trains each with its own); these values otherwise.
METHOD_DEFAULTS = {"loss": "ce", "temperature": 1.0, "margin_eps": 0.5, "lipnet_conv": "aol"}


@dataclass
class ClfConfig(RunConfig):
    """A classifier run. None means "resolved from the data set / model" (resolve_config)."""

    out: str = "runs/clf"  # output folder (config.json, metrics.jsonl, ckpt-*.pt, summary.json)
    steps: int = 1000  # optimizer steps, one batch each (--epochs E: E * (train_size // batch_size))
    data: str = "digits"  # a registered image set (digits, fashion-mnist) or a folder of the four idx files
    train_size: int | None = None  # training images (seeded subset); None: all left after val
    val_size: int | None = None  # validation images carved from the training split; None: min(1000, 20%)
    test_size: int | None = None  # test images for accuracy / loss (fixed subset); None: all
    model: str = "cnn"  # mlp|cnn (models.mlp_classifier / models.cnn_classifier)
    width: int | None = None  # None: 256 (mlp hidden width), 32 (cnn first conv channels)
    depth: int = 2  # mlp hidden layers
    hidden: int = 128  # cnn fully connected hidden width
    reg: str = "none"  # a classifier method of the registry (lipkit.methods): l2, snr, sn, igp, ...
    lam: float | None = None  # penalty weight; None: the method's default (0 for methods without a penalty)
    sn_iter: int = 1  # per step: snr power steps; sn / sn-conv: lk.constrain n_iter (Krylov depth n_iter+1 / +2)
    sn_bound: float = 1.0  # sn / sn-conv: every layer's sigma is held at this value
    max_norm: float = 1.0  # frobenius: ||W||_F <= max_norm; frobenius-penalty: sum relu(||W||_F - max_norm)^2
    igp_kind: str = "loss"  # igp: loss (double backprop) | logits (Jacobian Frobenius norm)
    group_size: int = 2  # lipnet: GroupSort group size replacing each ReLU (2: MaxMin)
    bjorck_iters: int = 20  # lipnet: Bjorck iterations per Linear weight read
    bjorck_order: int = 2  # lipnet: Taylor order of each Bjorck step, 1-3
    # None below: the method's classifier preset (methods/builtin.py), else the value in METHOD_DEFAULTS
    lipnet_conv: str | None = None  # lipnet: each conv as aol (certified, stateless) | sn-conv (true norm held at 1)
    loss: str | None = None  # ce | margin (Lipschitz-margin CE) | hkr
    margin_eps: float | None = None  # margin: the l2 radius to certify (sqrt(2) * margin_eps added to other logits)
    temperature: float | None = None  # ce / margin: logits times this before the softmax (1-Lipschitz nets: small logits)
    hkr_alpha: float = 10.0  # hkr: weight of the hinge term against -KR
    hkr_margin: float = 0.5  # hkr: the hinge margin on each one-vs-all score
    optimizer: str = "adam"  # adam|sgd
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # sgd momentum
    batch_size: int = 64  # images per optimizer step
    eps: tuple[float, ...] = (0.1, 0.25, 0.5)  # L2 radii of the robust accuracies (inputs in [0, 1])
    pgd_size: int = 500  # test images attacked and certified (at most: all of them if the test set is smaller)
    pgd_steps: int = 30  # PGD steps (step size 2.5 * eps / pgd_steps)
    lower_bound_size: int = 64  # test images seeding lk.lipschitz_lower_bound (at most, as pgd_size)
    lower_bound_steps: int = 10  # its gradient-ascent steps
    robust_eval: bool = True  # robustness metrics (bounds, PGD, certified) at the end
    robust_every: int = 0  # ...and every this many steps (0: only at the end)
    certify: bool = True  # certified lk.lipschitz_bound and certified robust accuracy


def _split_sizes(data: str) -> tuple[int, int]:
    spec = get_data(data)
    return len(spec.split("train")), len(spec.split("test"))


def resolve_config(config: ClfConfig) -> ClfConfig:
    """A complete copy: every None filled in and every value checked (the saved config)."""
    preset = get_method(config.reg, "classifier").classifier  # a clear error naming the classifier methods
    config = dataclasses.replace(config, **{k: preset.get(k, default) if getattr(config, k) is None
                                            else getattr(config, k) for k, default in METHOD_DEFAULTS.items()})
    _check_choices(config)
    pool, test = _split_sizes(config.data)
    val = config.val_size if config.val_size is not None else min(1000, pool // 5)
    train = config.train_size if config.train_size is not None else pool - val
    lam = config.lam if config.lam is not None else preset["lam"]
    resolved = dataclasses.replace(
        config, val_size=val, train_size=train, test_size=config.test_size if config.test_size is not None else test,
        width=config.width if config.width is not None else (256 if config.model == "mlp" else 32), lam=float(lam),
        eps=tuple(config.eps))
    _check_values(resolved, pool, test)
    return resolved


def _check_choices(c: ClfConfig) -> None:
    method = get_method(c.reg, "classifier")
    for name, allowed in (("model", MODELS), ("optimizer", OPTIMIZERS), ("igp_kind", IGP_KINDS), ("loss", LOSSES)):
        if getattr(c, name) not in allowed:
            raise ValueError(f"{name}={getattr(c, name)!r} is not allowed; choose one of {allowed}")
    if not method.penalties and c.lam not in (None, 0, 0.0):
        raise ValueError(f"reg={c.reg!r} adds no penalty, so lam={c.lam!r} would be ignored: leave --lam "
                         "unset (sn / sn-conv take --sn-bound and --sn-iter)")


def _check_values(c: ClfConfig, pool: int, test: int) -> None:
    if isinstance(c.val_size, int) and c.val_size >= pool:  # before train_size = pool - val_size goes negative
        raise ValueError(f"val_size={c.val_size} leaves no training image: the training split of {c.data} has "
                         f"{pool} images")
    minimum = {"val_size": 1, "train_size": 1, "test_size": 1, "width": 1, "depth": 1, "hidden": 1, "sn_iter": 1,
               "batch_size": 1, "pgd_size": 1, "pgd_steps": 1, "lower_bound_size": 1, "lower_bound_steps": 0,
               "robust_every": 0, "group_size": 1, "bjorck_iters": 0, "bjorck_order": 1}
    for name, low in minimum.items():
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for name, positive in (("lam", False), ("lr", True), ("sn_bound", True), ("max_norm", False), ("momentum", False),
                           ("margin_eps", False), ("temperature", True), ("hkr_alpha", False), ("hkr_margin", False)):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                or (positive and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    check_bjorck_order("bjorck_order", c.bjorck_order)
    check_lipnet_conv(c.lipnet_conv)
    if c.depth > MAX_DEPTH:  # built layer by layer in Python: a typo would hang, not fail
        raise ValueError(f"depth must be an int in [1, {MAX_DEPTH}], got {c.depth}")
    if c.val_size + c.train_size > pool:
        raise ValueError(f"val_size {c.val_size} + train_size {c.train_size} > {pool} images in the training "
                         f"split of {c.data}: lower one of them")
    if c.test_size > test:
        raise ValueError(f"test_size={c.test_size} > {test} images in the test split of {c.data}")
    if c.momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {c.momentum!r}")
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
