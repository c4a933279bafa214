"""THE registry of Lipschitz methods: one entry per method, read by train-gan (--critic),
train-clf / compare-clf (--reg), `lipkit bench` (--modes) and the claim experiments.

A method is (constraint, penalties) plus its published hyperparameters per use:
- `constraint`: a function that constrains a model in place (usually lk.constrain) and
  returns the hooks to run after every optimizer.step() (projections, bias clamps);
- `penalties`: terms, each `weight * term(batch)` added to the loss;
- `critic`: the GAN-critic hyperparameters it was published with (optimizer, lr, betas,
  n_critic, its options); None means the method is not offered for critics;
- `classifier`: the classifier defaults ({"lam": ...}); None: not offered for classifiers;
  `grid`: the lambdas compare-clf --tune tries.
Adding a method is one `register_method(Method(...))` call (builtin.py holds lipkit's own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch
import torch.nn as nn
from torch import Tensor

from ..named import NamedRegistry

USES = ("critic", "classifier")
CLASSIFIER_WEIGHT = "lam"  # a classifier weights its method's penalty by config.lam


@dataclass
class Batch:
    """What a penalty term may read in one training step.

    inputs: the real batch (GAN) or the training inputs (classifier); labels: their labels
    (None for an unconditional GAN); fake: the generated batch (GAN only); loss: the task
    loss (classifier: cross-entropy, read by the weight-gradient penalty); generator: the
    penalty's own RNG stream (interpolation points, random projections), checkpointed;
    shard: in a multi-rank job, which rows of the global batch these are (random draws per
    sample are made for the global batch and sliced, so N ranks equal 1 rank).
    """

    inputs: Tensor
    labels: Tensor | None = None
    fake: Tensor | None = None
    loss: Tensor | None = None
    generator: torch.Generator | None = None
    shard: Any = None  # train.distributed.Shard: these are this rank's rows of a global batch


class TermFn(Protocol):
    def __call__(self, batch: Batch) -> Tensor: ...


StepHook = Callable[[nn.Module], None]
Attach = Callable[[nn.Module, Mapping[str, Any]], "tuple[StepHook, ...]"]


@dataclass(frozen=True)
class PenaltyTerm:
    """One penalty of a method. make(model, hp) -> term(batch) -> scalar tensor; a term with
    state (SNR's power iteration) also has state_dict() / load_state_dict(). `weight`: the
    hyperparameter that weights it in critic use (a classifier always uses `lam`)."""

    name: str
    make: Callable[[nn.Module, Mapping[str, Any]], TermFn]
    weight: str = CLASSIFIER_WEIGHT
    double_backward: bool = False  # differentiates a gradient (GP, IGP, WGNP): torch.compile cannot


@dataclass(frozen=True)
class Method:
    """One Lipschitz method (module docs)."""

    name: str
    summary: str
    constraint: Attach | None = None
    penalties: tuple[PenaltyTerm, ...] = ()
    critic: Mapping[str, Any] | None = None
    classifier: Mapping[str, Any] | None = None
    grid: tuple[float, ...] = ()

    @property
    def double_backward(self) -> tuple[str, ...]:
        """Its penalties that differentiate a gradient (GP, IGP, WGNP): torch.compile cannot."""
        return tuple(t.name for t in self.penalties if t.double_backward)

    def offered_for(self, use: str) -> bool:
        return (self.critic if use == "critic" else self.classifier) is not None


@dataclass
class AppliedMethod:
    """A method attached to one model: its weighted penalty terms and its after-step hooks."""

    name: str
    terms: list[tuple[float, TermFn]] = field(default_factory=list)
    hooks: tuple[StepHook, ...] = ()
    double_backward: tuple[str, ...] = ()  # its terms that differentiate a gradient (GP, IGP, WGNP)

    def penalty(self, batch: Batch) -> Tensor:
        """sum_i weight_i * term_i(batch) (a zero tensor when the method has no penalty)."""
        zero = torch.zeros((), device=batch.inputs.device)
        return sum((w * term(batch) for w, term in self.terms), zero)

    def unweighted_penalty(self, batch: Batch) -> Tensor:
        """sum_i term_i(batch): what a classifier multiplies by its lam."""
        zero = torch.zeros((), device=batch.inputs.device)
        return sum((term(batch) for _, term in self.terms), zero)

    def after_step(self, model: nn.Module) -> None:
        """Run after every optimizer.step(): projections act on the updated raw weights."""
        for hook in self.hooks:
            hook(model)

    def state_dict(self) -> dict[str, Any]:
        """The state of every stateful term, by position (exact resume)."""
        return {str(i): term.state_dict() for i, (_, term) in enumerate(self.terms) if hasattr(term, "state_dict")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load after the model's own state (a term's state refers to the model's weights)."""
        for i, (_, term) in enumerate(self.terms):
            if str(i) in state:
                term.load_state_dict(state[str(i)])  # type: ignore[attr-defined]


_METHODS: NamedRegistry[Method] = NamedRegistry("method", Method)


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add `method` to the registry (replace=True to redefine a name); returns it."""
    return _METHODS.register(method.name, method, replace=replace)


def unregister_method(name: str) -> None:
    """Remove a method (tests and plugins that registered one temporarily)."""
    _METHODS.unregister(name)


def method_names(use: str | None = None) -> tuple[str, ...]:
    """Registered method names in registration order; use="critic"/"classifier": only those offered."""
    if use is not None and use not in USES:
        raise ValueError(f"use={use!r}: expected one of {USES}")
    return _METHODS.names(None if use is None else lambda m: m.offered_for(use))


def get_method(name: str, use: str | None = None) -> Method:
    """The method called `name`; with `use`, it must be offered for that use."""
    allowed = method_names(use)
    if name not in allowed:
        what = f"a {use} method" if use else "a registered method"
        raise ValueError(f"{name!r} is not {what}; allowed: {', '.join(allowed)}")
    return _METHODS[name]


def apply_method(model: nn.Module, name: str, hp: Mapping[str, Any], use: str) -> AppliedMethod:
    """Constrain `model` in place as method `name` says and build its penalty terms, with the
    resolved hyperparameters `hp` (a run's config as a dict)."""
    method = get_method(name, use)
    hooks = method.constraint(model, hp) if method.constraint is not None else ()
    terms = []
    for term in method.penalties:
        key = CLASSIFIER_WEIGHT if use == "classifier" else term.weight
        if key not in hp:
            raise ValueError(f"method {name!r}: penalty {term.name!r} is weighted by {key!r}, which this {use} "
                             f"config does not have; its weights: {sorted(k for k in hp if not k.startswith('_'))}")
        terms.append((hp[key], term.make(model, hp)))
    return AppliedMethod(name, terms, tuple(hooks), method.double_backward)
