"""`lipkit bound TARGET --input-shape C,H,W`: per-layer table, certified upper bound and
empirical lower bound of a network (a run folder, a checkpoint, a saved module or a factory)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

from ..bounds import BOUND_METHODS, lipschitz_bound, lipschitz_lower_bound
from .values import count_at_least, parse_shape


def load_model(target: str) -> nn.Module:
    """TARGET: a lipkit run folder or checkpoint (its critic is rebuilt from the saved
    config), a torch.save of a module or of a dict whose "model" entry is one, or
    `package.module:factory`, a callable returning a module. Checkpoints are unpickled:
    load only files you trust."""
    if os.path.isdir(target):
        from ..train.checkpoint import load_latest

        state, _ = load_latest(Path(target))
        return _run_critic(state)
    if os.path.isfile(target):
        obj = _load_file(target)
        if isinstance(obj, dict) and "config" in obj and "task" in obj:
            return _run_critic(obj)
        if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
            obj = obj["model"]
        if not isinstance(obj, nn.Module):
            raise ValueError(f"{target} holds a {type(obj).__name__}, not a module, a dict with a "
                             "'model' module, or a lipkit run checkpoint")
        return obj
    if ":" not in target:
        raise ValueError(f"{target!r} is neither a file, a folder nor `module:factory` (e.g. lipkit.examples:mlp)")
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {target!r}: {err}") from None
    try:
        model = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    except Exception as err:  # noqa: BLE001 - the user's factory: report its failure in one line
        raise ValueError(f"{target}() raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{target} returned a {type(model).__name__}, not an nn.Module")
    return model


def _load_file(target: str) -> object:
    """torch.load of a trusted file; an unreadable one or a pickle whose classes cannot be
    imported here is named in one line."""
    try:
        return torch.load(target, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{target} pickles a class that cannot be imported here ({err}): import or install "
                         "the module that defines the model, or save a state_dict and pass module:factory") from err
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise ValueError(f"{target} is not a readable torch file (truncated or corrupt?): "
                         f"{type(err).__name__}: {' '.join(str(err).split())[:200]}") from err


def _run_critic(state: dict) -> nn.Module:
    """The model of a training checkpoint, rebuilt from its config with its state loaded:
    the classifier of a train-clf run, the critic of a train-gan run."""
    if "reg" in state["config"]:
        from ..train.classify import ClfConfig, ClfTask

        task = ClfTask(ClfConfig(**{**state["config"], "device": "cpu"}))
        task.load_state_dict(state["task"])
        return task.model
    from ..train.gan import GanConfig, GanTask

    gan = GanTask(GanConfig(**{**state["config"], "device": "cpu"}))
    gan.load_state_dict(state["task"])
    return gan.critic


def cmd_bound(args: argparse.Namespace) -> int:
    model = load_model(args.target).eval()  # the network as deployed: BatchNorm running stats, no dropout
    result = lipschitz_bound(model, args.input_shape, method=args.method, merge=args.merge,
                             progress=sys.stderr.isatty())
    print(result.table())
    print(f"\ncertified upper bound ({args.method}, eval mode): {result.upper:.6g}")
    if args.samples > 0:
        gen = torch.Generator().manual_seed(args.seed)
        inputs = torch.randn((args.samples, *args.input_shape), generator=gen)
        lower = lipschitz_lower_bound(model, inputs, steps=args.steps)
        print(
            f"empirical lower bound ({args.samples} Gaussian inputs, {args.steps} ascent "
            f"steps): {lower:.6g}"
        )
        print(f"the true Lipschitz constant lies in [{lower:.6g}, {result.upper:.6g}]")
    return 0


def add_bound_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bound", help="per-layer norms and the network's Lipschitz bounds")
    p.add_argument("target", help="run folder or checkpoint of lipkit train-gan / train-clf, a saved module, "
                   "or module:factory (e.g. lipkit.examples:mlp)")
    p.add_argument("--input-shape", type=parse_shape, required=True,
                   help="one sample's shape without batch dim, e.g. 3,32,32")
    p.add_argument("--method", choices=BOUND_METHODS, default="gram",
                   help="certified per-layer method (default: gram)")
    p.add_argument("--no-merge", dest="merge", action="store_false",
                   help="multiply every layer's bound (default: consecutive linear layers, e.g. conv + eval "
                   "BatchNorm, are bounded as one map, which is tighter)")
    p.add_argument("--samples", type=count_at_least(0), default=64,
                   help="random inputs for the empirical lower bound (0: skip it)")
    p.add_argument("--steps", type=count_at_least(0), default=100, help="gradient-ascent steps for the lower bound")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bound)
